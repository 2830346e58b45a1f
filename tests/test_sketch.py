"""The fixed-size LSH sketch (noveltynets.embed.sketch) and a novelty memory whose recall head it is."""

import json
import math

import pytest
import torch

from noveltynets.embed.sketch import L2Sketch, collision_probability, optimal_hashes
from noveltynets.errors import NoveltynetsError
from noveltynets.memory import MemoryConfig, NoveltyMemory
from noveltynets.memory.store import MemoryStore


def auc(pos, neg):
    pos, neg = torch.as_tensor(pos).float(), torch.as_tensor(neg).float()
    return ((pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()).mean().item()


def test_collision_probability_matches_the_tables_it_describes():
    """One table of one direction: the share of pairs at distance c·w that share a cell is p(c) (Datar et al.)."""
    g = torch.Generator().manual_seed(0)
    for c in (0.25, 1.0, 3.0):
        sketches = [L2Sketch(8, tables=1, projections=1, width=1.0, nbits=2**12, hashes=1, seed=s) for s in range(400)]
        x = torch.randn(1, 8, generator=g)
        step = torch.randn(1, 8, generator=g)
        y = x + c * step / step.norm()
        same = sum(int(s.keys(x)[0, 0] == s.keys(y)[0, 0]) for s in sketches) / len(sketches)
        assert abs(same - float(collision_probability(c))) < 0.07, (c, same)
    assert float(collision_probability(1e-6)) > 0.999 and float(collision_probability(100.0)) < 0.01


def test_sketch_recalls_added_points_in_a_fixed_size_and_near_ones_more_than_far_ones():
    g = torch.Generator().manual_seed(1)
    s = L2Sketch(16, tables=12, projections=6, width=1.0, nbits=2**18, hashes=3, seed=0)
    size = s.nbytes
    added = torch.randn(2000, 16, generator=g) * 3
    assert int(s.hits(added).max()) == 0  # an empty sketch holds nothing
    for chunk in added.split(500):
        s.add(chunk)
    assert s.nbytes == size == 2**15 and s.n_added == 2000  # the same size whatever it holds
    assert bool((s.hits(added) == 12).all())  # every added point: its cell in every table
    step = torch.randn(2000, 16, generator=g)
    step = step / step.norm(dim=1, keepdim=True)
    near, far = s.hits(added + 0.2 * step), s.hits(added + 6.0 * step)
    fresh = s.hits(torch.randn(2000, 16, generator=g) * 3)
    assert near.float().mean() > far.float().mean() + 3 and auc(near, fresh) > 0.95
    assert 0 < s.false_positive_rate() < s.fill() < 1


def test_sketch_is_the_same_for_the_same_seed_and_refuses_bad_input():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    a, b, c = (L2Sketch(4, nbits=4096, seed=s) for s in (0, 0, 1))
    for s in (a, b, c):
        s.add(x)
    assert torch.equal(a.bits, b.bits) and not torch.equal(a.bits, c.bits)
    with pytest.raises(NoveltynetsError, match="finite"):
        a.hits(torch.full((1, 4), float("nan")))
    with pytest.raises(NoveltynetsError, match=r"\(N, 4\)"):
        a.add(torch.zeros(3, 5))
    with pytest.raises(NoveltynetsError, match="sketch: need"):
        L2Sketch(4, width=1.0, width_min=2.0)
    assert optimal_hashes(10 * 1000, 1000) == round(10 * math.log(2))


def sketch_cfg(**kw):
    base = dict(dim=8, embedder_id="test", hidden=64, steps_per_observe=5, batch_size=64, fourier=64, projection=0,
                sketch_mb=0.25, sketch_capacity=20_000, replay_size=500)
    return MemoryConfig(**{**base, **kw})


@pytest.fixture
def rows():
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 3000, 8, generator=g)  # history, fresh, reference: one distribution


def test_a_sketch_memory_recalls_every_sample_of_a_long_history_in_a_fixed_size(rows):
    """The net recall head forgets a history much longer than its training (measured: seen AUC 0.578 at 100k);
    the sketch holds every sample in the bytes it was made with."""
    history, fresh, ref = rows
    mem, net = NoveltyMemory(sketch_cfg()), NoveltyMemory(sketch_cfg(sketch_mb=0))
    assert mem.recall_net is None and net.sketch is None
    for m in (mem, net):
        m.set_reference(ref[:128])
    sizes = []
    for chunk in history.split(250):
        for m in (mem, net):
            m.observe(chunk)
        sizes.append(sum(v.numel() * v.element_size() for v in mem.state_tensors().values()))
    assert len(set(sizes[2:])) == 1  # flat once the 500-row replay is full: the sketch's bits were there from the start
    seen = history[torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:500]]
    with torch.no_grad():
        sketch_auc = auc(mem.seen_probability(seen), mem.seen_probability(fresh[:500]))
        net_auc = auc(net.seen_probability(seen), net.seen_probability(fresh[:500]))
    assert sketch_auc > 0.99 and sketch_auc > net_auc + 0.2, (sketch_auc, net_auc)


def test_a_sketch_memory_round_trips_through_its_bytes_and_the_store(rows, tmp_path):
    history, fresh, ref = rows
    mem = NoveltyMemory(sketch_cfg())
    mem.set_reference(ref[:128])
    before = mem.seen_probability(history[:100])
    assert bool((before < 0.1).all())  # nothing observed yet: nothing seen
    store = MemoryStore(tmp_path / "m.sqlite")
    store.create("big", mem)
    version = 1
    for chunk in history[:1000].split(200):
        mem, version = store.observe("big", mem, version, chunk)
    again, v = store.load("big")
    assert v == version and again.sketch.n_added == 1000 and again.sketch_unit == mem.sketch_unit > 0
    assert torch.equal(again.sketch.bits, mem.sketch.bits)
    assert torch.equal(again.seen_probability(history[:1000]), mem.seen_probability(history[:1000]))
    assert bool((again.seen_probability(history[:1000]) > 0.9).all())
    again.reset()
    assert again.sketch.n_added == 0 and int(again.sketch.bits.sum()) == 0  # reset forgets the sketch too
    bad = {**again.state_tensors(), "sketch.bits": torch.zeros(8, dtype=torch.uint8)}
    from safetensors.torch import save as st_save
    from dataclasses import asdict
    blob = st_save(bad, metadata={"format_version": "2", "config": json.dumps(asdict(again.config))})
    with pytest.raises(NoveltynetsError, match="sketch does not match"):
        NoveltyMemory.from_bytes(blob)


def test_a_format_1_state_loads_as_it_was(rows):
    from safetensors.torch import save as st_save

    history, fresh, ref = rows
    mem = NoveltyMemory(sketch_cfg(sketch_mb=0))
    mem.set_reference(ref[:128])
    mem.observe(history[:300])
    blob = mem.to_bytes()
    meta = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])["__metadata__"]
    old = NoveltyMemory.from_bytes(st_save(mem.state_tensors(), metadata={**meta, "format_version": "1"}))
    assert old.sketch is None and torch.equal(old.seen_probability(fresh[:50]), mem.seen_probability(fresh[:50]))


def _twins():
    """A reference in 4 of 16 dims, so a 4-d projection keeps exactly those; history varies off them too, and each
    fresh row is a history row's twin in those 4 dims that differs only off them, where the projection cannot see."""
    g = torch.Generator().manual_seed(5)
    ref = torch.cat([torch.randn(128, 4, generator=g) * 4, torch.zeros(128, 12)], 1)
    history = torch.cat([torch.randn(2000, 4, generator=g) * 4, torch.randn(2000, 12, generator=g)], 1)
    fresh = torch.cat([history[:500, :4], torch.randn(500, 12, generator=g)], 1)
    return ref, history, fresh


def test_full_embedding_tables_tell_apart_rows_the_projection_merges_in_the_same_bits(tmp_path):
    ref, history, fresh = _twins()
    mems = {}
    for full in (0, 8):
        m = NoveltyMemory(sketch_cfg(dim=16, projection=4, sketch_tables=16, sketch_full_tables=full))
        m.set_reference(ref)
        for chunk in history.split(250):
            m.observe(chunk)
        mems[full] = m
    proj, split = mems[0], mems[8]
    assert split.sketch.tables == 8 and split.sketch_full.tables == 8 and split.sketch_full.dim == 16
    size = lambda m: sum(s.nbytes for s in (m.sketch, m.sketch_full) if s is not None)  # noqa: E731
    assert size(split) == size(proj)  # the same bits, shared by the two kinds of table
    with torch.no_grad():
        seen = {k: m.seen_probability(history[:500]) for k, m in mems.items()}
        twin = {k: m.seen_probability(fresh) for k, m in mems.items()}
    assert bool((seen[8] > 0.9).all()) and bool((seen[0] > 0.9).all())  # every observed row hits every table
    assert auc(seen[0], twin[0]) == 0.5 and auc(seen[8], twin[8]) > 0.95, auc(seen[8], twin[8])  # ties: the same cells
    store = MemoryStore(tmp_path / "m.sqlite")  # through the store: bits and both units come back
    store.create("split", split)
    again, _ = store.load("split")
    assert torch.equal(again.sketch_full.bits, split.sketch_full.bits) and again.sketch_full_unit == split.sketch_full_unit > 0
    assert torch.equal(again.seen_probability(fresh), twin[8])
    again.reset()
    assert again.sketch_full.n_added == 0 and int(again.sketch_full.bits.sum()) == 0
    again.observe(history[:10])  # after a reset the full tables still know their unit
    assert again.sketch_full_unit == split.sketch_full_unit and bool((again.seen_probability(history[:10]) > 0.9).all())
    lost = {k: v for k, v in split.state_tensors().items() if k != "sketch.full_unit"}
    from safetensors.torch import save as st_save
    from dataclasses import asdict
    with pytest.raises(NoveltynetsError, match="full-embedding sketch tables"):
        NoveltyMemory.from_bytes(st_save(lost, metadata={"format_version": "3", "config": json.dumps(asdict(split.config))}))


@pytest.mark.parametrize("change, message", [({"sketch_mb": -1}, "sketch_mb must be >= 0"),
                                             ({"sketch_width_min": 2.0}, "sketch's widths"),
                                             ({"negatives": "jitter", "target": "classify"}, "needs reference negatives"),
                                             ({"sketch_mb": 1e4}, "between"),
                                             ({"sketch_full_tables": 17}, "sketch_full_tables must be in 0..sketch_tables")])
def test_bad_sketch_settings_are_refused(change, message):
    with pytest.raises(NoveltynetsError, match=message):
        sketch_cfg(**change)


def test_the_cli_makes_sketch_and_codes_memories_and_refuses_bad_memory_options(tmp_path):
    from typer.testing import CliRunner

    from noveltynets.cli import app

    store = tmp_path / "m.sqlite"
    run = lambda *a: CliRunner().invoke(app, [str(x) for x in ("sample", "--class", 7, "--n", 2, "--steps", 3, "--no-progress",  # noqa: E731
                                                               "--guide", "novelty", "--store", store, *a)])
    r = run("--memory", "big", "--memory-option", "sketch_mb=0.5", "--memory-option", "replay_size=1000", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    mem, _ = MemoryStore(store).load("big")
    assert mem.sketch is not None and mem.sketch.nbytes == 2**19 and mem.sketch.n_added == 2
    assert mem.config.replay_size == 1000 and mem.recall_net is None
    r = run("--memory", "coded", "--memory-option", "codes_capacity=100000", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    mem, _ = MemoryStore(store).load("coded")  # the codes recall head (tests/test_codes.py): its first rows kept as they are
    assert mem.codes is not None and mem.codes.n_offered == 2 and mem.recall_net is None and mem.config.codes_bytes == 12
    shown = {n: json.loads(CliRunner().invoke(app, ["memory", "show", n, "--store", str(store)]).output) for n in ("big", "coded")}
    assert shown["big"]["recall_head"] == "sketch" and shown["big"]["state_bytes"] > 2**19
    assert shown["coded"]["recall_head"] == "codes" and shown["coded"]["codes_stored"] == 2 and not shown["coded"]["codes_trained"]
    for args, message in ((["--memory", "big", "--memory-option", "sketch_mb=1"], "exists: its settings were fixed"),
                          (["--memory", "other", "--memory-option", "sketch_mbb=1"], "expected KEY=VALUE"),
                          (["--memory", "other", "--memory-option", "sketch_mb=lots"], "not a valid float"),
                          (["--memory", "other", "--memory-option", "sketch_mb=-2"], "sketch_mb must be >= 0"),
                          (["--memory", "other", "--memory-option", "codes_capacity=100"], "codes_train in 256..codes_capacity")):
        r = run(*args, "--out", tmp_path / "b")
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
        assert not (tmp_path / "b").exists()
