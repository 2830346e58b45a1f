"""``bench --keep``: the keep-sampling protocol, every kind of history across runs, its controls, faults and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noveltynets.bench.keep import KeepBench, history_name
from noveltynets.bench.methods import parse_method
from noveltynets.bench.report import write_keep_outputs
from noveltynets.bench.runner import BenchConfig, Judge
from noveltynets.cli import app
from noveltynets.memory.store import MemoryStore
from noveltynets.models import load_model

runner = CliRunner()
N = 8
METHODS = ["novelty", "novelty:negatives=pool,pool=4", "novelty:memory=fresh", "novelty:memory=unrelated", "repel:radius=2",
           "knn-filter:radius=2,max_ratio=2", "lsh-filter:bits=6,bands=2,max_ratio=2", "particle"]
METRICS = ["near_dup", "novelty", "precision", "adherence", "modes", "vendi_all", "coverage_all", "history_n"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def keep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("keep") / "k"
    cfg = BenchConfig(methods=METHODS, classes=[7], n=N, steps=2, batch_size=4)
    bench = KeepBench(cfg, 2, load_model(), out)
    return bench, bench.run(), out


def _row(result, setting, run):
    return next(r for r in result["rows"] if r["setting"] == setting and r["run"] == run)


def test_every_history_persists_across_runs_as_its_memory_mode_says(keep_run):
    bench, result, out = keep_run
    n_seen = {(s, r): _row(result, s, r)["history_n"] for s in METHODS for r in (1, 2)}
    for s in ("novelty", "novelty:negatives=pool,pool=4", "repel:radius=2", "knn-filter:radius=2,max_ratio=2",
              "lsh-filter:bits=6,bands=2,max_ratio=2"):
        assert (n_seen[s, 1], n_seen[s, 2]) == (N, 2 * N), s  # continued: all history
    assert (n_seen["novelty:memory=fresh", 1], n_seen["novelty:memory=fresh", 2]) == (N, N)  # emptied each run
    # unrelated: before run r, as many plain samples of other seeds as a continued memory has seen; never its own
    assert (n_seen["novelty:memory=unrelated", 1], n_seen["novelty:memory=unrelated", 2]) == (0, N)
    assert _row(result, "particle", 2)["history_n"] == 0
    store = MemoryStore(out / "histories.sqlite")
    m = parse_method("novelty:memory=unrelated")
    seeds = [s for s, in store.db.execute("SELECT seed FROM samples WHERE memory = ?", (history_name(m, 7, 0),))]
    assert len(seeds) == N and min(seeds) >= 2 * 10**12
    kinds = {store.info(name).kind for name in store.names()}
    assert kinds == {"novelty", "exact", "lsh"}
    # a reference pool counts in its memory's first run (the shipped model's default reference, its real images, costs ~nothing)
    pools = bench.state["pool_seconds"]
    assert len(pools) == 1  # only the pool-referenced memory built one; the default reference is the shipped real images
    pool_s = next(iter(pools.values()))
    assert _row(result, "novelty:negatives=pool,pool=4", 1)["setup_seconds"] >= pool_s  # charged in its first run
    assert _row(result, "novelty:negatives=pool,pool=4", 2)["setup_seconds"] < pool_s  # and never again
    # an update (learn, then persist) is timed with its learning part; an unrelated memory never learns the run's samples
    for s in ("novelty", "repel:radius=2", "knn-filter:radius=2,max_ratio=2"):
        row = _row(result, s, 2)
        assert 0 < row["learn_ms"] <= row["update_ms"], s
    assert _row(result, "novelty:memory=unrelated", 2)["learn_ms"] == 0


def test_each_run_is_judged_against_all_earlier_samples_of_its_own_history(keep_run):
    bench, result, out = keep_run
    judge = Judge(7)
    first, second = (bench.images("plain", 7, r)[-N:] for r in (1, 2))
    expected = judge(second, first)
    row = _row(result, "plain", 2)
    assert row["near_dup"] == pytest.approx(expected["near_dup"]) and row["novelty"] == pytest.approx(expected["novelty"])
    assert row["modes"] == judge.cumulative(torch.cat([first, second]))["modes"] >= _row(result, "plain", 1)["modes"]
    real = [r for r in result["rows"] if r["method"] == "real"]
    assert [r["run"] for r in real] == [1, 2] and all(r["n"] == N for r in real)
    curves = result["curves"]["7"]
    assert len(curves["plain"]) == 2 * N and curves["plain"][-1] == row["modes"] and "real images" in curves


def test_keep_outputs_are_written(keep_run):
    bench, result, out = keep_run
    write_keep_outputs(result, out, {"command": "test"})
    for f in ("results.json", "results.csv", "keep_near_dup.png", "keep_modes.png", "report.html", "grid_plain.png"):
        assert (out / f).stat().st_size > 0, f
    report = (out / "report.html").read_text()
    assert "keep_near_dup.png" in report and "memory=unrelated" in report
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["rows"]) == len(result["rows"]) and saved["config"]["runs"] == 2


def test_a_seed_offset_draws_the_protocol_again_on_disjoint_seeds(keep_run, tmp_path):
    out = keep_run[2]
    args = ["bench", "--keep", "2", "--n", N, "--steps", 2, "--batch-size", 4, "--classes", 7, "--no-progress",
            "--method", "novelty:memory=unrelated", "--seed-offset", N, "--out", tmp_path / "o"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    saved = {run: np.load(tmp_path / "o" / "runs" / "plain" / "class=7" / f"run{run:02d}.npz") for run in (1, 2)}
    assert saved[1]["seeds"].tolist() == list(range(N, 2 * N)) and saved[2]["seeds"].tolist() == list(range(2 * N, 3 * N))
    # its run 1 is the first draw's run 2: the same seeds make the same images
    assert np.array_equal(saved[1]["images"], np.load(out / "runs" / "plain" / "class=7" / "run02.npz")["images"])
    store = MemoryStore(tmp_path / "o" / "histories.sqlite")
    m = parse_method("novelty:memory=unrelated")
    seeds = sorted(s for s, in store.db.execute("SELECT seed FROM samples WHERE memory = ?", (history_name(m, 7, 0),)))
    assert seeds == list(range(2 * 10**12 + N, 2 * 10**12 + 2 * N))  # the unrelated control's plain samples moved too
    r = invoke(*args[:-1], tmp_path / "o", "--resume", "--seed-offset", 0)
    assert r.exit_code == 2 and "seed_offset" in r.stderr  # another draw never resumes this one


KEEP = ["bench", "--keep", "3", "--n", str(N), "--steps", "2", "--batch-size", "4", "--classes", "7",
        "--method", "novelty", "--method", "repel:radius=2", "--no-progress"]


def _metrics(out):
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    return sorted((r["setting"], r["run"], *[round(r.get(k, -1), 6) for k in METRICS]) for r in rows)


def test_a_killed_keep_benchmark_resumes_from_its_last_completed_runs(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert invoke(*KEEP, "--out", whole).exit_code == 0
    p = subprocess.Popen([sys.executable, "-m", "noveltynets.cli", *KEEP, "--out", str(cut)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    done = 0
    for line in p.stderr:  # kill it as soon as run 2 of novelty (which commits after every batch) is under way
        done += line.startswith("row ") and '"run": 2' in line and '"plain"' in line
        if done:
            break
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    rows = [json.loads(line) for line in (cut / "rows.jsonl").read_text().splitlines()]
    store = MemoryStore(cut / "histories.sqlite")
    for s in ("novelty", "repel:radius=2"):
        last = max(r["run"] for r in rows if r["setting"] == s)
        name = history_name(parse_method(s), 7, 0)
        assert store.has_checkpoint(name, f"run{last}"), s  # the state a resumed run goes back to
        state, n_seen = store.db.execute("SELECT state, n_seen FROM checkpoints WHERE name = ? AND tag = ?",
                                         (name, f"run{last}")).fetchone()
        assert n_seen == last * N
    r = invoke(*KEEP, "--out", cut)
    assert r.exit_code == 2 and "--resume" in r.stderr  # a non-empty folder is never overwritten silently
    r = invoke(*KEEP, "--out", cut, "--resume")
    assert r.exit_code == 0, r.output
    assert _metrics(cut) == _metrics(whole)  # as if it had never been killed
    r = invoke(*KEEP[:2], "4", *KEEP[3:], "--out", cut, "--resume")  # a larger --keep adds runs
    assert r.exit_code == 0 and max(json.loads(x)["run"] for x in (cut / "rows.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize("args, message", [
    (["--keep", "0"], "at least 1 run"),
    (["--resume"], "--resume continues a keep benchmark"),
    (["--method", "novelty:memory=fresh"], "needs --keep"),
    (["--keep", "2", "--method", "particle:memory=fresh"], "needs a method that keeps a history"),
    (["--keep", "2", "--method", "novelty:memory=sometimes"], "memory must be one of"),
    (["--keep", "2", "--seed-offset", "-1"], "--seed-offset must lie in"),
    (["--keep", "2", "--seed-offset", str(10**12 - N)], "--seed-offset must lie in"),  # run 2 would reach the pools' seeds
])
def test_bad_keep_input_is_one_line_and_exit_2(tmp_path, args, message):
    r = invoke("bench", "--n", N, "--steps", 1, "--classes", 7, *args, "--out", tmp_path / "o", "--no-progress")
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output, r.output


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "o"
    assert invoke(*KEEP[:2], "1", *KEEP[3:], "--out", out).exit_code == 0
    r = invoke(*KEEP[:2], "1", *KEEP[3:], "--steps", "3", "--out", out, "--resume")
    assert r.exit_code == 2 and "other settings (steps)" in r.stderr


def test_keep_benchmarks_of_different_classes_merge_into_one_report(tmp_path):
    for c in (1, 7):
        args = ["bench", "--keep", "2", "--n", N, "--steps", 1, "--classes", c, "--method", "particle", "--no-progress"]
        assert invoke(*args, "--out", tmp_path / f"c{c}").exit_code == 0
    r = invoke("bench-merge", tmp_path / "c1", tmp_path / "c7", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert merged["config"]["classes"] == [1, 7] and set(merged["curves"]) == {"1", "7"}
    assert len([x for x in merged["rows"] if x["setting"] == "particle"]) == 4
    assert (tmp_path / "m" / "grid_particle_class7.png").exists() and (tmp_path / "m" / "keep_modes.png").exists()
    assert invoke("bench", "--keep", "3", "--n", N, "--steps", 1, "--classes", 3, "--method", "particle", "--no-progress",
                  "--out", tmp_path / "c3").exit_code == 0
    r = invoke("bench-merge", tmp_path / "c1", tmp_path / "c3", "--out", tmp_path / "m2")
    assert r.exit_code == 2 and "differs" in r.stderr and "runs" in r.stderr
    assert invoke("bench", "--keep", "2", "--n", N, "--steps", 1, "--classes", 3, "--method", "particle", "--no-progress",
                  "--seed-offset", 1000, "--out", tmp_path / "c3b").exit_code == 0
    r = invoke("bench-merge", tmp_path / "c1", tmp_path / "c3b", "--out", tmp_path / "m3")
    assert r.exit_code == 2 and "seed_offset" in r.stderr  # two draws are not one benchmark
