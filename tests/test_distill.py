"""Distilled novelty: the ranking, the rank embedding and its storage, sampling with ranks (CLI, bench), fine-tuning."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noveltynets.cli import app
from noveltynets.distill.model import add_rank_embedding, save_ranked
from noveltynets.distill.rank import RankConfig, anchor_bins, bin_of_position, greedy_order
from noveltynets.errors import NoveltynetsError
from noveltynets.models import build_unet, load_model, save_model
from noveltynets.sampling import CFGDenoiser, SamplingConfig, sample
from tests.conftest import TINY

TINY32 = {**TINY, "sample_size": 32}
runner = CliRunner()


def _ranked_tiny(bins=4, seed=0, rank_scale=0.0):
    """A tiny 32×32 UNet with a rank embedding; rank vectors drawn at ``rank_scale`` (0: untrained, every rank = plain)."""
    torch.manual_seed(seed)
    unet = build_unet(**TINY32).eval().requires_grad_(False)
    emb = add_rank_embedding(unet, bins)
    with torch.no_grad():
        emb.ranks.weight.copy_(torch.randn_like(emb.ranks.weight) * rank_scale)
    return unet


@pytest.fixture
def distilled_dir(tmp_path):
    """A base model folder and a distilled copy of it (ranks with distinct vectors), both fp32 on disk."""
    unet = _ranked_tiny(rank_scale=3.0)
    base = build_unet(**TINY32)
    base.load_state_dict({k.replace("class_embedding.classes.", "class_embedding."): v for k, v in unet.state_dict().items()
                          if not k.startswith("class_embedding.ranks")})
    save_model(base, tmp_path / "base", torch.float32)
    save_ranked(unet, tmp_path / "distilled", {"note": "test"}, torch.float32)
    return tmp_path / "base", tmp_path / "distilled"


# -- the ranking ------------------------------------------------------------------------------------------------
def test_the_greedy_order_by_quality_alone_is_best_first():
    q = torch.tensor([0.2, 0.9, 0.5, 0.0, 0.7])
    order, _ = greedy_order(q, torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), weight=1.0)
    assert order.tolist() == [1, 4, 2, 0, 3]


def test_the_greedy_order_visits_every_cluster_before_repeating_one():
    # three tight clusters of near-copies, equal quality: the first three picks are one of each
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    feats = torch.cat([c + 0.01 * torch.randn(6, 2) for c in centres])
    order, novelty = greedy_order(torch.full((18,), 0.5), feats, weight=0.5)
    assert sorted(int(i) // 6 for i in order[:3]) == [0, 1, 2]
    assert novelty[0] == 0 and novelty[1] > 0.5 and novelty[2] > 0.5  # far (in median pairwise distances) from those before
    assert novelty[3:].max() < 0.05  # after that only near-copies are left


def test_the_first_image_is_the_best_even_at_weight_zero():
    q = torch.tensor([0.1, 0.3, 1.0, 0.2])
    order, _ = greedy_order(q, torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), weight=0.0)
    assert order[0] == 2


def test_anchor_bins_are_the_neighbourhoods_of_the_first_ranked_images():
    # three clusters: the first three picks anchor one each, and every image joins its own cluster's anchor
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    feats = torch.cat([c + 0.5 * torch.randn(6, 2) for c in centres])
    order, _ = greedy_order(torch.rand(18), feats, weight=0.5)
    bins = anchor_bins(order, feats, 3)
    assert [bins[order[k]] for k in range(3)] == [1, 2, 3]  # an anchor is in its own bin
    for cluster in range(3):
        assert len(set(bins[cluster * 6:(cluster + 1) * 6].tolist())) == 1
    assert sorted(set(bins.tolist())) == [1, 2, 3]


def test_position_bins_are_equal_count_and_start_at_one():
    bins = bin_of_position(np.arange(450), 450, 16)
    counts = np.bincount(bins)[1:]
    assert bins[0] == 1 and bins[-1] == 16 and len(counts) == 16
    assert counts.max() - counts.min() <= 1
    assert (np.diff(bins) >= 0).all()


def test_bad_rank_settings_are_refused():
    for bad in (dict(weight=1.5), dict(bins=0), dict(features="eval"), dict(draws=0), dict(binning="kmeans"), dict(timesteps=())):
        with pytest.raises(NoveltynetsError):
            RankConfig(**bad)


# -- the rank embedding and its storage ---------------------------------------------------------------------------
def test_rank_zero_is_the_class_embedding_and_ranks_add_to_it():
    unet = _ranked_tiny(rank_scale=1.0)
    emb = unet.class_embedding
    labels = torch.tensor([7, 7 + 11 * 1, 7 + 11 * 3, 10 + 11 * 2])
    out = emb(labels)
    assert torch.equal(out[0], emb.classes.weight[7])
    assert torch.allclose(out[1], emb.classes.weight[7] + emb.ranks.weight[0])
    assert torch.allclose(out[2], emb.classes.weight[7] + emb.ranks.weight[2])
    assert torch.allclose(out[3], emb.classes.weight[10] + emb.ranks.weight[1])


def test_the_saved_model_is_a_plain_diffusers_unet_that_predicts_as_the_factored_one(distilled_dir, tmp_path):
    _, path = distilled_dir
    unet = _ranked_tiny(rank_scale=3.0)
    model = load_model(path)
    assert type(model.unet).__name__ == "UNet2DModel" and model.unet.config.num_class_embeds == 11 * 5
    assert (model.num_ranks, model.rank_stride, model.num_classes) == (4, 11, 10)
    x, t = torch.randn(4, 1, 32, 32), torch.tensor([10, 200, 500, 900])
    labels = torch.tensor([3, 3 + 11, 3 + 44, 10 + 22])
    assert torch.allclose(model.unet(x, t, class_labels=labels).sample, unet(x, t, class_labels=labels).sample, atol=1e-5)


def test_a_rank_index_that_does_not_fit_the_unet_is_refused(distilled_dir):
    _, path = distilled_dir
    (path / "ranks.json").write_text(json.dumps({"bins": 5, "stride": 11}))
    with pytest.raises(NoveltynetsError, match="rank bins"):
        load_model(path)
    (path / "ranks.json").write_text("{not json")
    with pytest.raises(NoveltynetsError, match="not readable"):
        load_model(path)


# -- sampling with ranks -----------------------------------------------------------------------------------------
class _Spy:
    def __init__(self):
        self.labels = []

    def __call__(self, x, t, class_labels):
        self.labels.append(class_labels.clone())
        return type("Out", (), {"sample": torch.zeros_like(x)})()


def test_cfg_passes_class_plus_rank_and_the_unconditional_pass_keeps_the_rank():
    spy = _Spy()
    CFGDenoiser(spy, 2.0, rank_stride=11)(torch.zeros(2, 1, 4, 4), torch.tensor([5, 5]),
                                          {"classes": torch.tensor([7, 7]), "ranks": torch.tensor([1, 3])})
    assert spy.labels[0].tolist() == [7 + 11, 7 + 33, 10 + 11, 10 + 33]
    with pytest.raises(ValueError):
        CFGDenoiser(spy, 2.0)(torch.zeros(1, 1, 4, 4), torch.tensor([5]), {"classes": torch.tensor([7]), "ranks": torch.tensor([1])})


class _ByLabel:
    """A fake UNet whose eps is its label, so the mix of passes can be read off."""

    def __call__(self, x, t, class_labels):
        return type("Out", (), {"sample": class_labels.float().view(-1, 1, 1, 1).expand_as(x).clone()})()


def test_rank_guidance_takes_the_rank_s_effect_s_times_in_one_batch():
    x, t = torch.zeros(2, 1, 2, 2), torch.tensor([5, 5])
    extra = {"classes": torch.tensor([7, 7]), "ranks": torch.tensor([1, 3])}
    cond, uncond, norank = torch.tensor([18.0, 40.0]), torch.tensor([21.0, 43.0]), torch.tensor([7.0, 7.0])
    for s in (0.0, 1.0, 4.0):
        spy = _Spy()
        CFGDenoiser(spy, 2.0, rank_stride=11, rank_scale=s)(x, t, extra)
        assert len(spy.labels) == 1  # one model call, whatever the passes
        assert spy.labels[0].tolist() == [18, 40, 21, 43] + ([7, 7] if s != 1 else [])
        eps = CFGDenoiser(_ByLabel(), 2.0, rank_stride=11, rank_scale=s)(x, t, extra)[:, 0, 0, 0]
        cfg = uncond + 2.0 * (cond - uncond)
        assert torch.allclose(eps, cfg + (s - 1) * (cond - norank))
    no_cfg = CFGDenoiser(_ByLabel(), 1.0, rank_stride=11, rank_scale=3.0)(x, t, extra)[:, 0, 0, 0]
    assert torch.allclose(no_cfg, cond + 2 * (cond - norank))
    plain = CFGDenoiser(_ByLabel(), 2.0, rank_stride=11, rank_scale=3.0)(x, t, {"classes": torch.tensor([7, 7])})
    assert torch.allclose(plain[:, 0, 0, 0], torch.tensor([4.0, 4.0]))  # no ranks: plain CFG, rank_scale idle


def test_rank_scale_one_is_the_trained_model_more_moves_further_from_no_rank_and_it_needs_ranks(distilled_dir):
    _, path = distilled_dir
    model = load_model(path)
    cfg = SamplingConfig(7, 2.0, steps=4, batch_size=4, ranks=(1, 2, 3, 4))
    ranked = sample(model, range(4), cfg).images
    assert torch.equal(sample(model, range(4), cfg.replace(rank_scale=1.0)).images, ranked)
    unranked = sample(model, range(4), cfg.replace(ranks=None)).images
    far = sample(model, range(4), cfg.replace(rank_scale=3.0)).images
    # the rank's effect grows with the scale: further from the unranked sample than at scale 1, seed for seed
    assert ((far - unranked).flatten(1).norm(dim=1) > (ranked - unranked).flatten(1).norm(dim=1)).all()
    assert "rank_scale=3.0" in cfg.replace(rank_scale=3.0).key() and "rank_scale" not in cfg.key()
    with pytest.raises(NoveltynetsError, match="give ranks too"):
        SamplingConfig(7, rank_scale=2.0)
    with pytest.raises(NoveltynetsError, match=r"rank_scale must be a number in \[0, 100\]"):
        SamplingConfig(7, ranks=(1,), rank_scale=-1.0)


def test_without_ranks_the_distilled_model_samples_as_its_base(distilled_dir):
    base, distilled = map(load_model, distilled_dir)
    cfg = SamplingConfig(7, 2.0, steps=4, batch_size=3)
    assert torch.allclose(sample(base, range(3), cfg).images, sample(distilled, range(3), cfg).images, atol=1e-5)


def test_each_sample_gets_its_rank_and_a_seed_with_its_rank_is_the_same_image_in_any_batch(distilled_dir):
    _, path = distilled_dir
    model = load_model(path)
    ranked = sample(model, range(8), SamplingConfig(7, 2.0, steps=4, batch_size=8, ranks=(1, 2, 3, 4)))
    assert ranked.ranks == [1, 2, 3, 4, 1, 2, 3, 4]
    plain = sample(model, range(8), SamplingConfig(7, 2.0, steps=4, batch_size=8))
    assert (ranked.images - plain.images).abs().flatten(1).amax(1).min() > 1e-3  # every rank moves its sample
    alone = sample(model, [5], SamplingConfig(7, 2.0, steps=4, batch_size=1, ranks=(2,)))
    assert torch.allclose(alone.images[0], ranked.images[5], atol=1e-5)


def test_ranks_are_refused_where_a_model_cannot_read_them(distilled_dir):
    base, distilled = map(load_model, distilled_dir)
    with pytest.raises(NoveltynetsError, match="no rank index"):
        sample(base, [0], SamplingConfig(7, steps=2, ranks=(1,)))
    with pytest.raises(NoveltynetsError, match=r"1\.\.4"):
        sample(distilled, [0], SamplingConfig(7, steps=2, ranks=(5,)))
    with pytest.raises(NoveltynetsError, match="ranks must be positive"):
        SamplingConfig(7, ranks=(0,))


def test_the_cli_samples_one_rank_per_sample_and_records_them(distilled_dir, tmp_path):
    _, path = distilled_dir
    out = tmp_path / "s"
    r = runner.invoke(app, ["sample", "--model", str(path), "--class", "7", "--n", "6", "--ranks", "1-3", "--steps", "3",
                            "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    z = np.load(out / "samples.npz")
    assert z["ranks"].tolist() == [1, 2, 3, 1, 2, 3]
    assert json.loads((out / "manifest.json").read_text())["settings"]["ranks"] == [1, 2, 3]
    r = runner.invoke(app, ["sample", "--model", str(path), "--class", "7", "--n", "3", "--ranks", "1-3", "--steps", "3",
                            "--rank-scale", "4", "--out", str(tmp_path / "g"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "g" / "manifest.json").read_text())["settings"]["rank_scale"] == 4.0


@pytest.mark.parametrize("args, message", [
    (["--ranks", "1-9"], "ranks must be in 1..4"),
    (["--ranks", "0-3"], "ranks must lie in 1..255"),
    (["--ranks", "a"], "bad rank range"),
    (["--ranks", "1-2", "--filter", "oversample"], "no --filter"),
    (["--ranks", "1-2", "--model", "BASE"], "no rank index"),
    (["--ranks", "1-2", "NOMODEL"], "--ranks needs a distilled model"),
    (["--ranks", "1-2", "--rank-scale", "-2"], "--rank-scale must be a number in [0, 100]"),
    (["--rank-scale", "2"], "--rank-scale scales a distilled model's ranks"),
])
def test_bad_ranks_on_the_cli_are_one_line_and_exit_2(distilled_dir, tmp_path, args, message):
    base, path = distilled_dir
    model_args = [] if "--model" in args or "NOMODEL" in args else ["--model", str(path)]
    args = [str(base) if a == "BASE" else a for a in args if a != "NOMODEL"]
    r = runner.invoke(app, ["sample", *model_args, "--class", "7", "--n", "2", "--steps", "2", "--out", str(tmp_path / "o"),
                            "--no-progress", *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o").exists()


# -- the bench's distilled method ---------------------------------------------------------------------------------
def test_the_distilled_method_samples_its_model_at_its_ranks_and_combines_with_a_memory(distilled_dir):
    from noveltynets.bench.methods import Context, parse_method

    base, path = load_model(distilled_dir[0]), distilled_dir[1]
    ctx = Context(model=base, steps=3, batch_size=4)
    m = parse_method(f"distilled:ranks=2-3,model={path}")
    got = m.run(ctx, 7, [0, 1, 2, 3]).images
    want = sample(m.model_for(ctx), [0, 1, 2, 3], SamplingConfig(7, 2.0, steps=3, batch_size=4, ranks=(2, 3))).images
    assert torch.allclose(got, want, atol=1e-6)
    assert parse_method(f"distilled:model={path}").ranks_for(ctx) == (1, 2, 3, 4)
    with pytest.raises(NoveltynetsError, match="give the distilled model"):
        parse_method("distilled:ranks=1-4")
    combo = parse_method(f"distilled:ranks=1-4,model={path}+novelty")
    assert combo.ranks_for(ctx) == (1, 2, 3, 4) and combo.model_for(ctx) is m.model_for(ctx)
    run = combo.run(ctx, 7, list(range(8)))
    assert run.images.shape == (8, 1, 32, 32) and not torch.allclose(run.images[:4], got.new_zeros(4, 1, 32, 32))
    with pytest.raises(NoveltynetsError, match="no setting"):
        parse_method("distilled:scale=2")
    scaled = parse_method(f"distilled:ranks=2-3,rank_scale=3,model={path}")
    assert scaled.config(ctx, 7).rank_scale == 3.0 and parse_method(f"{scaled.spec}+novelty").config(ctx, 7).rank_scale == 3.0
    assert torch.allclose(scaled.run(ctx, 7, [0, 1, 2, 3]).images, sample(
        m.model_for(ctx), [0, 1, 2, 3], SamplingConfig(7, 2.0, steps=3, batch_size=4, ranks=(2, 3), rank_scale=3.0)).images, atol=1e-6)
    with pytest.raises(NoveltynetsError, match="rank_scale must be"):
        parse_method(f"distilled:rank_scale=-1,model={path}")


# -- fine-tuning --------------------------------------------------------------------------------------------------
def test_distill_train_ranks_fine_tunes_resumes_and_writes_a_loadable_model(tmp_path):
    torch.manual_seed(0)
    save_model(build_unet(**TINY32), tmp_path / "base", torch.float32)
    out = tmp_path / "d"
    args = ["distill", "train", "--out", str(out), "--base", str(tmp_path / "base"), "--bins", "4", "--features", "pixels",
            "--quality-timesteps", "500", "--quality-draws", "1", "--batch-size", "8", "--no-progress"]
    r = runner.invoke(app, [*args, "--steps", "2"])
    assert r.exit_code == 0, r.output
    ranking = np.load(out / "ranking.npz")
    assert sorted(set(ranking["bin"].tolist())) == [1, 2, 3, 4] and len(ranking["bin"]) == 4500
    for c in range(10):  # each class ranked 0..449 once
        assert sorted(ranking["position"][ranking["classes"] == c].tolist()) == list(range(450))
    made = (out / "ranking.npz").stat().st_mtime_ns
    r = runner.invoke(app, [*args, "--steps", "4"])  # resumes: the ranking is reused, training goes on from step 2
    assert r.exit_code == 0, r.output
    assert (out / "ranking.npz").stat().st_mtime_ns == made
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps[-1] == 4 and torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 4
    model = load_model(out)
    assert model.num_ranks == 4
    from safetensors import safe_open

    with safe_open(out / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:  # shipped like the default model: fp16
        assert f.get_tensor("class_embedding.weight").dtype == torch.float16
    assert json.loads((out / "ranks.json").read_text())["bin_sizes"] == np.bincount(ranking["bin"])[1:].tolist()
    assert sample(model, [0, 1], SamplingConfig(7, steps=2, ranks=(1, 4))).images.shape == (2, 1, 32, 32)
    r = runner.invoke(app, ["distill", "train", "--out", str(tmp_path / "more"), "--base", str(out), *args[6:], "--steps", "1"])
    assert r.exit_code == 0, r.output  # fine-tuned further from the distilled model, with its ranking
    assert json.loads((tmp_path / "more" / "train_config.json").read_text())["base_model"] == model.model_id


def test_a_distilled_base_is_fine_tuned_further_only_with_its_own_bins_and_ranking(distilled_dir, tmp_path):
    _, path = distilled_dir
    r = runner.invoke(app, ["distill", "train", "--out", str(tmp_path / "d"), "--base", str(path), "--no-progress"])
    assert r.exit_code == 2 and "with 4 rank bins, not 16" in r.output
    r = runner.invoke(app, ["distill", "train", "--out", str(tmp_path / "d"), "--base", str(path), "--bins", "4", "--no-progress"])
    assert r.exit_code == 2 and "ranking.npz is missing" in r.output


def test_factoring_a_stored_table_gives_back_the_class_and_rank_vectors(distilled_dir):
    _, path = distilled_dir
    original = _ranked_tiny(rank_scale=3.0).class_embedding
    unet = load_model(path).unet
    emb = add_rank_embedding(unet, 4, stride=11)
    assert torch.allclose(emb.classes.weight, original.classes.weight, atol=1e-6)
    assert torch.allclose(emb.ranks.weight, original.ranks.weight, atol=1e-5)


def test_bad_distill_options_are_one_line_and_exit_2(tmp_path):
    for args, message in ((["--weight", "2"], "--weight must be"), (["--bins", "0"], "--bins must be"),
                          (["--steps", "0"], "--steps"), (["--features", "clip"], "--features must be"),
                          (["--quality-draws", "0"], "--quality-draws must be"), (["--quality-timesteps", "5,x"], "integers"),
                          (["--quality-timesteps", "1000"], "0..999"), (["--binning", "x"], "--binning must be")):
        r = runner.invoke(app, ["distill", "train", "--out", str(tmp_path / "d"), "--no-progress", *args])
        assert r.exit_code == 2 and message in r.output, (args, r.output)


def test_a_config_key_names_its_ranks_only_when_it_has_them():
    assert "ranks" not in SamplingConfig(7).key()
    assert SamplingConfig(7, ranks=(1, 2)).key().endswith("|ranks=1,2")
