"""The code table (noveltynets.memory.novelty.codes) and a novelty memory whose recall head it is."""

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import save as st_save

from noveltynets.errors import NoveltynetsError
from noveltynets.memory import MemoryConfig, NoveltyMemory
from noveltynets.memory.novelty.codes import CodeTable
from noveltynets.memory.novelty.replay import reservoir_add, reservoir_slots
from noveltynets.memory.store import MemoryStore


def auc(pos, neg):
    pos, neg = torch.as_tensor(pos).float(), torch.as_tensor(neg).float()
    return ((pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()).mean().item()


def state_bytes(mem):
    return sum(v.numel() * v.element_size() for v in mem.state_tensors().values())


def codes_cfg(**kw):
    base = dict(dim=8, embedder_id="test", hidden=64, steps_per_observe=5, batch_size=64, fourier=64, projection=0,
                replay_size=500, codes_capacity=5000, codes_bytes=6, codes_train=300)
    return MemoryConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def rows():
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 3000, 8, generator=g)  # history, fresh, reference: one distribution


def test_reservoir_slots_are_algorithm_r_as_the_replay_draws_it():
    """The code table and the replay fill their reservoirs by the same draws: the same rows end in the same slots."""
    emb = torch.arange(40.0)[:, None]
    buf, offered = torch.zeros(0, 1), 0
    table, n = torch.full((10, 1), -1.0), 0
    ga, gb = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for chunk in emb.split(7):
        buf, offered = reservoir_add(buf, chunk, offered, 10, ga)
        for i, j in enumerate(reservoir_slots(len(chunk), n, 10, gb)):
            if j >= 0:
                table[j] = chunk[i]
        n += len(chunk)
    assert offered == n == 40 and torch.equal(buf, table)
    assert reservoir_slots(3, 0, 10, gb) == [0, 1, 2]  # room: in order, no draw
    kept = torch.zeros(40)  # every row offered is kept with probability cap / offered, wherever it came
    for seed in range(300):
        slots, g = torch.full((10,), -1), torch.Generator().manual_seed(seed)
        for i, j in enumerate(reservoir_slots(40, 0, 10, g)):
            if j >= 0:
                slots[j] = i
        kept[slots] += 1
    assert (kept / 300 - 0.25).abs().max() < 0.1, kept / 300


def test_the_table_keeps_rows_until_it_trains_then_codes_in_a_fixed_size():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1200, 8, generator=g)
    t = CodeTable(8, capacity=1000, nbytes=6, train_rows=300)
    assert bool(torch.isinf(t.nearest_sq(x[:3])).all())  # empty: nothing near anything
    t.add(x[:200], g)
    assert not t.trained and t.n_stored == 200
    assert float(t.nearest_sq(x[:200]).max()) < 1e-10  # rows before training: exact
    t.add(x[200:350], g)  # crosses train_rows: trained on the first 300, every row so far encoded
    assert t.trained and t.n_stored == 350 and t.table.shape == (1000, 7) and len(t.raw) == 0
    t.add(x[350:1200], g)
    assert t.n_offered == 1200 and t.n_stored == 1000 and t.index.ntotal == 1000  # a reservoir past capacity
    fresh = torch.randn(500, 8, generator=g)
    assert auc(-t.nearest_sq(x[:500]), -t.nearest_sq(fresh)) > 0.75  # 1000 of 1200 kept, as 6-byte codes
    with pytest.raises(NoveltynetsError, match="256 <= train_rows"):
        CodeTable(8, capacity=1000, train_rows=100)


def test_a_codes_memory_keeps_near_duplicates_apart_where_the_sketch_merges_them(rows):
    """The point of the codes: at ρ = 0.3ℓ the sketch's cells no longer tell a near-duplicate from a fresh row
    (measured here 0.655, at 10^6 in docs/benchmarks/capacity 0.48), the nearest code's distance does, as exact kNN."""
    history, fresh, ref = rows
    base = dict(dim=8, embedder_id="test", hidden=64, steps_per_observe=5, batch_size=64, fourier=64, projection=0,
                replay_size=500)
    codes, sketch = NoveltyMemory(codes_cfg()), NoveltyMemory(MemoryConfig(**base, sketch_mb=0.25, sketch_capacity=20_000))
    assert codes.recall_net is None and codes.sketch is None and codes.codes is not None
    sizes = []
    for m in (codes, sketch):
        m.set_reference(ref[:128])
    for chunk in history.split(250):
        for m in (codes, sketch):
            m.observe(chunk)
        sizes.append(state_bytes(codes))
    assert len(set(sizes[1:])) == 1 and sizes[0] < sizes[1]  # rows until 300, then the table, whatever comes after
    ell = codes.neighbour_distance()
    step = torch.randn(1000, 8, generator=torch.Generator().manual_seed(4))
    near = history[:1000] + 0.3 * ell * step / step.norm(dim=1, keepdim=True)
    with torch.no_grad():
        score = {k: auc(m.seen_probability(near), m.seen_probability(fresh[:1000])) for k, m in
                 (("codes", codes), ("sketch", sketch))}
        seen = auc(codes.seen_probability(history[:1000]), codes.seen_probability(fresh[:1000]))
    exact = auc(-torch.cdist(near, history).min(1).values, -torch.cdist(fresh[:1000], history).min(1).values)
    assert seen > 0.99 and score["codes"] > exact - 0.02 and score["codes"] > score["sketch"] + 0.2, (seen, score, exact)
    assert bool((codes.seen_probability(history[:50]) > 0.5).all())


def test_a_codes_memory_round_trips_through_its_bytes_and_the_store(rows, tmp_path):
    history, fresh, ref = rows
    mem = NoveltyMemory(codes_cfg())
    mem.set_reference(ref[:128])
    assert bool((mem.seen_probability(history[:10]) == 0).all())  # nothing observed yet: nothing seen
    store = MemoryStore(tmp_path / "m.sqlite")
    store.create("big", mem)
    mem, version = store.observe("big", mem, 1, history[:200])  # still rows
    again, _ = store.load("big")
    assert not again.codes.trained and torch.equal(again.codes.raw, mem.codes.raw)
    for chunk in history[200:1000].split(200):
        mem, version = store.observe("big", mem, version, chunk)
    again, v = store.load("big")
    assert v == version and again.codes.trained and again.codes.n_offered == 1000
    assert torch.equal(again.codes.table, mem.codes.table) and again.codes.index_bytes == mem.codes.index_bytes
    assert torch.equal(again.seen_probability(fresh[:300]), mem.seen_probability(fresh[:300]))
    again.observe(history[1000:1100])  # a loaded table takes new codes as the original does
    mem.observe(history[1000:1100])
    assert torch.equal(again.codes.table, mem.codes.table)
    again.reset()
    assert again.codes.n_stored == 0 and not again.codes.trained  # reset forgets the codes and their codebooks
    meta = {"format_version": "4", "config": json.dumps(asdict(mem.config))}
    for change, message in (({"codes.table": torch.zeros(8, 7, dtype=torch.uint8)}, "codes do not match"),
                            ({"codes.index": torch.zeros(40, dtype=torch.uint8)}, "codebooks do not load"),
                            ({"codes.counters": None}, "its data none")):
        bad = {k: v for k, v in {**mem.state_tensors(), **change}.items() if v is not None}
        with pytest.raises(NoveltynetsError, match=message):
            NoveltyMemory.from_bytes(st_save(bad, metadata=meta))


@pytest.mark.parametrize("change, message", [({"codes_capacity": -1}, "codes_capacity must be >= 0"),
                                             ({"codes_train": 100}, "codes_train in 256..codes_capacity"),
                                             ({"codes_train": 6000}, "codes_train in 256..codes_capacity"),
                                             ({"codes_bytes": 0}, "codes_bytes must be in 1..64"),
                                             ({"sketch_mb": 1}, "not both"),
                                             ({"negatives": "jitter", "target": "classify"}, "reference negatives")])
def test_bad_codes_settings_are_refused(change, message):
    with pytest.raises(NoveltynetsError, match=message):
        codes_cfg(**change)

