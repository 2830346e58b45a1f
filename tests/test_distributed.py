"""Ray scale-out (noveltynets.distributed): sampler workers sharing one memory through a memory actor.

One local Ray of 2 CPUs for the module and two sampler workers that every test reuses (starting an actor costs
seconds here); the shipped model at a few steps. The killed-worker test kills one of them, so it comes last."""

import io
import json
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import ray
import torch
from PIL import Image
from typer.testing import CliRunner

from benchmarks.distributed_throughput import measure
from noveltynets.cli import app
from noveltynets.distributed import open_distributed, start_workers
from noveltynets.embed import PooledPixels
from noveltynets.errors import NoveltynetsError
from noveltynets.memory.store import MemoryStore
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig

CONFIG = SamplingConfig(klass=1, cfg=4.0, steps=6, batch_size=4)  # CFG 4: the ones collapse, near-copies abound
EMBED = PooledPixels(32)  # the memory's embedder (the default): the 32×32 images themselves
# the memory's push alone (no batch part), strong and to the end of the run: at the defaults the push of a memory of a
# few dozen samples is within the noise on this model (docs/benchmarks: the memory shows over many runs)
STRONG = "novelty:scale=3,memory_weight=8,memory_stop=0.95,batch_weight=0"  # measured: shared/separate 7.104/6.202


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test process samples with one torch thread, as each worker does: two threads on two cores that the workers
    share were measured several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def pool(model):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield start_workers(model, 2)
    finally:
        ray.shutdown()


def rows(store, name, order: str = "seed") -> list[tuple[int, np.ndarray]]:
    """(seed, embedding) of every sample row of memory ``name``, in seed order (``order="rowid"``: as written)."""
    db = sqlite3.connect(store)
    found = db.execute(f"SELECT seed, embedding FROM samples WHERE memory = ? ORDER BY {order}", (name,)).fetchall()
    db.close()
    return [(s, np.load(io.BytesIO(e))) for s, e in found]


@pytest.fixture(scope="module")
def shared(pool, model, tmp_path_factory):
    """32 samples of one class by two workers guided by, and teaching, one memory, in four rounds of two batches
    (one call each): each round's first batch goes to worker 0 and its second to worker 1, and both start from the
    memory of every earlier round, learnt in batch order (train_every: the round's two batches at once, whichever
    arrives first). (Within one call whichever worker is free takes the next batch: one call of 32 gave
    the workers batches, and the batches memories, that depended on timing, and the push test below flaked.)"""
    store = tmp_path_factory.mktemp("shared") / "m.sqlite"
    with open_distributed(model, CONFIG, [STRONG], memory="shared", store=store, workers=pool, train_every=8) as session:
        runs, made_by = [], []
        for r in range(4):
            runs.append(session.sample(range(8 * r, 8 * r + 8)))
            made_by += session.made_by
        info = session.info()
    images, seeds = torch.cat([r.images for r in runs]), [s for r in runs for s in r.seeds]
    return {"store": store, "images": images, "seeds": seeds, "info": info, "made_by": made_by}


def test_two_workers_one_memory_observe_every_seed_once(shared):
    images, store, info = shared["images"], shared["store"], shared["info"]
    assert shared["seeds"] == list(range(32)) and images.shape == (32, 1, 32, 32)
    assert shared["made_by"] == ([0] * 4 + [1] * 4) * 4  # each round: the first batch to worker 0, the second to 1
    found = rows(store, "shared")
    assert [s for s, _ in found] == list(range(32))  # one row per seed: none lost, none doubled
    assert MemoryStore(store).info("shared").n_seen == info["n_seen"] == 32
    assert info["version_after"] == info["version_before"] + 4  # one store transaction per round of two batches
    # each row is the embedding of the image written for that seed
    assert np.allclose(np.stack([e for _, e in found]), EMBED(images).numpy(), atol=1e-5)


def _cross_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean distance from each of ``a``'s samples to its nearest in ``b``, both ways, in the memory's embedding."""
    ea, eb = EMBED(a), EMBED(b)
    d = torch.cdist(ea, eb)
    return float((d.min(1).values.mean() + d.min(0).values.mean()) / 2)


def test_a_shared_memory_pushes_one_workers_samples_away_from_the_others(shared, pool, model, tmp_path):
    """The same seeds, in the same batches, on the same workers, each with a memory of its own (two runs side by
    side): their samples come nearer to each other's than when the workers share one memory."""
    made_by = np.array(shared["made_by"])
    mine = {w: [int(s) for s in np.array(shared["seeds"])[made_by == w]] for w in (0, 1)}

    def alone(w):
        with open_distributed(model, CONFIG, [STRONG], memory=f"own{w}", store=tmp_path / "own.sqlite", workers=[pool[w]]) as s:
            return s.sample(mine[w]).images

    with ThreadPoolExecutor(2) as ex:
        separate = dict(zip((0, 1), ex.map(alone, (0, 1))))
    together = {w: shared["images"][torch.from_numpy(made_by == w)] for w in (0, 1)}
    shared_d, separate_d = _cross_distance(together[0], together[1]), _cross_distance(separate[0], separate[1])
    print(f"cross nearest-neighbour distance: shared {shared_d:.3f}, separate {separate_d:.3f}")
    assert shared_d > 1.1 * separate_d, (shared_d, separate_d)


def test_a_resent_batch_is_observed_once_and_workers_see_the_new_weights(pool, model, tmp_path):
    store = tmp_path / "m.sqlite"
    with open_distributed(model, CONFIG.replace(steps=2), ["novelty"], memory="d", store=store, workers=pool) as session:
        session.sample(range(8))  # a batch on each worker: both hold this run's memory
        actor = session.memory
        v0 = ray.get(actor.flush.remote())
        assert ray.get([w.refresh.remote() for w in pool]) == [v0, v0] and ray.get(actor.weights.remote(v0)) is None
        images = torch.rand(3, 1, 32, 32) * 2 - 1
        batch = (EMBED(images), {"seeds": [100, 101, 102], "classes": torch.tensor([1, 1, 1])})
        assert ray.get(actor.observe.remote(7, ("extra", 0), *batch)) is True
        assert ray.get(actor.observe.remote(7, ("extra", 0), *batch)) is False  # the same batch id again: ignored
        v1 = ray.get(actor.flush.remote())
        assert v1 == v0 + 1
        version, state = ray.get(actor.weights.remote(v0))
        assert version == v1 and isinstance(state, bytes) and ray.get(actor.weights.remote(v1)) is None
        assert ray.get([w.refresh.remote() for w in pool]) == [v1, v1]
    assert [s for s, _ in rows(store, "d")] == list(range(8)) + [100, 101, 102]
    assert MemoryStore(store).info("d").n_seen == 11


def test_the_memory_actor_learns_queued_batches_in_batch_order(pool, model, tmp_path):
    """Batches that arrive out of order (a slower worker's earlier batch last) are learnt in batch order: the
    memory does not depend on which worker finished first."""
    store = tmp_path / "m.sqlite"
    with open_distributed(model, CONFIG.replace(steps=2), ["novelty"], memory="o", store=store, workers=pool,
                          train_every=100) as session:
        actor, images = session.memory, torch.rand(4, 1, 32, 32) * 2 - 1
        for batch, seeds, part in (((3, 0), [30, 31], images[:2]), ((1, 0), [10, 11], images[2:])):
            assert ray.get(actor.observe.remote(1, batch, EMBED(part), {"seeds": seeds})) is True
        ray.get(actor.flush.remote())
    assert [s for s, _ in rows(store, "o", order="rowid")] == [10, 11, 30, 31]


def test_a_history_kept_inside_each_process_is_refused_without_a_name(pool, model, tmp_path):
    """Without --memory, repel's exact history would live in each worker apart: refused, before any actor starts."""
    with pytest.raises(NoveltynetsError, match=r"repel keeps its history inside each process: name a memory"):
        open_distributed(model, CONFIG, ["repel"], store=tmp_path / "m.sqlite", workers=pool)


def test_the_throughput_benchmark_runs_with_one_and_two_workers(pool, model, tmp_path):
    """benchmarks/distributed_throughput.py's measurement (its figures are in the README; no timing is asserted)."""
    for workers in (pool[:1], pool):
        row = measure(model, workers, CONFIG.replace(steps=2), 8, tmp_path / "t.sqlite", guide=())
        assert row["workers"] == len(workers) and row["samples_per_s"] > 0 and row["n"] == 8


FAST = ["--class", "1", "--n", "6", "--batch-size", "2", "--steps", "3", "--no-progress"]


def test_cli_workers_2_writes_the_files_of_one_process(tmp_path):
    """Novelty guidance whose pushes are off, so that the images cannot depend on which worker made them or when:
    the two runs write the same files (the images to the last bit of rounding, as batch sizes and thread counts give
    them), and both memories learnt every sample."""
    args = [*FAST, "--guide", "novelty:memory_weight=0,batch_weight=0", "--memory", "m"]
    one = CliRunner().invoke(app, ["sample", *args, "--store", str(tmp_path / "one.sqlite"), "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    two = subprocess.run([sys.executable, "-m", "noveltynets.cli", "sample", *args, "--store", str(tmp_path / "two.sqlite"),
                          "--out", str(tmp_path / "two"), "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    a, b = (np.load(tmp_path / d / "samples.npz") for d in ("one", "two"))
    assert a["seeds"].tolist() == b["seeds"].tolist() == list(range(6)) and a["classes"].tolist() == b["classes"].tolist()
    assert np.abs(a["images"].astype(int) - b["images"].astype(int)).max() <= 1
    for k in range(6):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "two" / f"{k:06d}.png")), b["images"][k])
    m1, m2 = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert m1.keys() == m2.keys() and m1["timings"].keys() == m2["timings"].keys()
    assert {**m1["settings"], "workers": 2} == m2["settings"]
    assert m1["memory"]["n_seen"] == m2["memory"]["n_seen"] == 6
    assert m1["memory"].keys() == m2["memory"].keys()


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--workers", "2", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--ray-address", "nowhere"], "--ray-address must be host:port"),
    (["--workers", "2", "--device", "cuda:1"], "--device is cpu or cuda"),
])
def test_bad_workers_and_addresses_are_one_line_errors(tmp_path, args, message):
    r = CliRunner().invoke(app, ["sample", *FAST, "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and message in r.stderr, r.output
    assert not (tmp_path / "o").exists()


def test_without_ray_workers_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as where it is not installed
    r = CliRunner().invoke(app, ["sample", *FAST, "--out", str(tmp_path / "o"), "--workers", "2"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "pip install 'noveltynets[ray]'" in r.stderr


def test_importing_noveltynets_does_not_import_ray():
    code = "import sys, noveltynets, noveltynets.cli, noveltynets.distributed; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_killed_worker_loses_only_its_unfinished_batch(pool, model, tmp_path):
    """Kill a worker once the first batch is learnt: the batch it was making goes to the other worker; the store
    keeps every batch learnt before, holds one row per seed in the end, and the memory loads."""
    store, victim = tmp_path / "k.sqlite", pool[1]
    with open_distributed(model, CONFIG.replace(steps=4), ["novelty"], memory="k", store=store, workers=pool) as session:
        with ThreadPoolExecutor(1) as ex:
            running = ex.submit(session.sample, range(24))
            while not (before := ray.get(session.memory.batches.remote())):
                time.sleep(0.05)
            ray.kill(victim)
            run = running.result(timeout=120)
        after = ray.get(session.memory.batches.remote())
        assert session.workers == [pool[0]] and run.seeds == list(range(24))
    assert before.items() <= after.items()  # what was learnt before the kill stays, from the worker that sent it
    assert sorted(after) == [(b, 0) for b in range(6)]  # every batch once
    assert [s for s, _ in rows(store, "k")] == list(range(24))  # and nothing partial: one row per seed
    memory, _ = MemoryStore(store).load("k")
    assert memory.n_seen == 24
