"""The default model, its trainer, and the evaluation embedder."""

import json

import pytest
import torch

from noveltynets.bench.model_check import check_model
from noveltynets.data import load_split
from noveltynets.errors import NoveltynetsError
from noveltynets.models import DEFAULT_MODEL_DIR, build_unet, load_model, save_model
from noveltynets.models.embedder import EvalEmbedder, load_eval_embedder, train_embedder
from noveltynets.models.trainer import TrainConfig, train_model
from noveltynets.models.unet import model_id

from .conftest import TINY


def test_default_architecture_is_small_and_class_conditional():
    n = sum(p.numel() for p in build_unet().parameters())
    assert 1e6 <= n <= 4e6
    assert build_unet().config.num_class_embeds == 11


def test_shipped_model_is_diffusers_format_fp16_and_small():
    weights = DEFAULT_MODEL_DIR / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 12 * 2**20
    from safetensors import safe_open
    with safe_open(weights, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    m = load_model()
    assert m.num_classes == 10 and m.image_shape == (1, 32, 32) and m.model_id.startswith("mnist5k-unet@")
    assert next(m.unet.parameters()).dtype == torch.float32


def test_save_load_round_trip_and_model_id(tmp_path):
    torch.manual_seed(0)
    unet = build_unet(**TINY)
    save_model(unet, tmp_path / "m")
    m = load_model(tmp_path / "m")
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([10, 900]), torch.tensor([1, 10])
    assert torch.allclose(m.unet(x, t, class_labels=y).sample, unet(x, t, class_labels=y).sample, atol=2e-2)  # fp16 on disk
    first = model_id(tmp_path / "m")
    with torch.no_grad():
        next(unet.parameters()).add_(1.0)
    save_model(unet, tmp_path / "m")
    assert model_id(tmp_path / "m") != first


def test_missing_or_corrupt_model_is_a_clear_error(tmp_path):
    with pytest.raises(NoveltynetsError, match="no model at"):
        load_model(tmp_path / "nothing")
    save_model(build_unet(**TINY), tmp_path / "m")
    weights = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(NoveltynetsError, match="cannot load model"):
        load_model(tmp_path / "m")


def _tiny_train(out, steps):
    import noveltynets.models.trainer as trainer
    orig = trainer.build_unet
    trainer.build_unet = lambda: orig(**TINY)
    try:
        # tiny model on 8×8 crops of the data is enough to exercise the loop
        return train_model(out, TrainConfig(steps=steps, batch_size=4, log_every=1, checkpoint_every=2, warmup=2), show_progress=False)
    finally:
        trainer.build_unet = orig


@pytest.fixture
def crop_data(monkeypatch):
    import noveltynets.models.trainer as trainer
    from noveltynets.data import Split
    small = load_split("train")
    monkeypatch.setattr(trainer, "load_split", lambda name: Split(small.images[:64, :, 12:20, 12:20], small.labels[:64]))


def test_training_resumes_exactly_where_it_stopped(tmp_path, crop_data, monkeypatch):
    import noveltynets.models.trainer as trainer
    _tiny_train(tmp_path / "straight", 6)
    save = trainer._atomic_torch_save

    def save_then_die(obj, path):  # the process is killed right after the checkpoint at step 4
        save(obj, path)
        if obj["step"] == 4:
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "_atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _tiny_train(tmp_path / "resumed", 6)
    assert not (tmp_path / "resumed" / "unet").exists()
    monkeypatch.setattr(trainer, "_atomic_torch_save", save)
    _tiny_train(tmp_path / "resumed", 6)  # the same command again continues from step 4
    a, b = load_model(tmp_path / "straight"), load_model(tmp_path / "resumed")
    for (k, p), q in zip(a.unet.state_dict().items(), b.unet.state_dict().values()):
        assert torch.equal(p, q), k
    log = [json.loads(line) for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] > 0 for r in log)


def test_shipped_embedder_is_accurate_on_the_heldout_split():
    emb = load_eval_embedder()
    held = load_split("heldout")
    acc = (emb.predict(held.images) == held.labels).float().mean().item()
    assert acc >= 0.97
    assert emb.features(held.images[:7]).shape == (7, emb.dim)


def test_embedder_trainer_learns_and_round_trips(tmp_path):
    result = train_embedder(tmp_path / "e", epochs=1, show_progress=False)
    assert result["heldout_accuracy"] > 0.3  # one epoch: far above chance (0.1)
    emb = load_eval_embedder(tmp_path / "e")
    x = load_split("heldout").images[:5]
    assert isinstance(emb, EvalEmbedder) and emb.predict(x).shape == (5,)
    (tmp_path / "e" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(NoveltynetsError, match="cannot load evaluation embedder"):
        load_eval_embedder(tmp_path / "e")


def test_shipped_model_follows_the_requested_class():
    """A small CPU version of the acceptance check (the full one is in docs/training/)."""
    r = check_model(load_model(), load_eval_embedder(), per_class=4, n_uncond=20, cfg=2.0, steps=15, batch_size=60, show_progress=False)
    assert r["adherence"] >= 0.9
    assert sum(r["uncond_counts"]) == 20 and sum(c > 0 for c in r["uncond_counts"]) >= 5
