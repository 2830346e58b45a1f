"""The main job end to end on the shipped model, and every kind of bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from noveltynets.cli import app
from noveltynets.memory.store import MemoryStore
from noveltynets.models import DEFAULT_MODEL_DIR

runner = CliRunner()
FAST = ["--steps", "3", "--no-progress"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_sample_writes_pngs_grid_npz_and_manifest(tmp_path):
    out = tmp_path / "run"
    r = invoke("sample", "--class", 7, "--n", 5, "--batch-size", 2, "--seeds", "10-14", "--cfg", 2, "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(5)] + ["grid.png", "manifest.json", "samples.npz"]
    npz = np.load(out / "samples.npz")
    assert npz["images"].dtype == np.uint8 and npz["images"].shape == (5, 32, 32)
    assert npz["classes"].tolist() == [7] * 5 and npz["seeds"].tolist() == list(range(10, 15))
    assert np.array_equal(np.asarray(Image.open(out / "000003.png")), npz["images"][3])
    m = json.loads((out / "manifest.json").read_text())
    assert m["settings"]["class"] == 7 and m["settings"]["steps"] == 3 and m["settings"]["seeds"] == "10-14"
    assert m["model"]["id"].startswith("mnist5k-unet@") and m["timings"]["sampling_s"] > 0
    assert len(m["timings"]["batch_s"]) == 3
    assert not list(tmp_path.glob(".*partial"))


def test_seeds_give_the_same_images_whatever_the_batch_size(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("sample", "--class", 2, "--seeds", "3-6", "--batch-size", 4, "--out", a, *FAST).exit_code == 0
    assert invoke("sample", "--class", 2, "--seeds", "5,6", "--batch-size", 1, "--out", b, *FAST).exit_code == 0
    ia, ib = np.load(a / "samples.npz")["images"], np.load(b / "samples.npz")["images"]
    assert np.abs(ia[2:].astype(int) - ib.astype(int)).max() <= 1


def test_clean_up_is_applied_and_recorded(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("sample", "--class", 2, "--seeds", "3-4", "--out", a, *FAST).exit_code == 0
    r = invoke("sample", "--class", 2, "--seeds", "3-4", "--clean", 0.4, "--out", b, *FAST)  # re-noised to 332 of 1000
    assert r.exit_code == 0, r.output
    ia, ib = np.load(a / "samples.npz")["images"], np.load(b / "samples.npz")["images"]
    assert np.abs(ia.astype(int) - ib.astype(int)).max() > 1
    assert json.loads((b / "manifest.json").read_text())["settings"]["clean"] == 0.4


def test_novelty_asks_for_its_clean_up_and_the_manifest_says_what_ran(tmp_path):
    def clean_after(name, *args):
        r = invoke("sample", "--class", 7, "--seeds", "0-1", "--no-progress", "--out", tmp_path / name, *args)
        assert r.exit_code == 0, r.output
        return json.loads((tmp_path / name / "manifest.json").read_text())["settings"]["clean"]

    assert clean_after("late", "--steps", 20, "--guide", "novelty") == 0.05  # its push to the end, then 1 step (t=49) unguided
    assert clean_after("off", "--steps", 20, "--guide", "novelty:repair=0") == 0.0
    assert clean_after("early", "--steps", 20, "--guide", "novelty:memory_stop=0.5") == 0.0
    assert clean_after("coarse", "--steps", 3, "--guide", "novelty") == 0.0  # no timestep below 0.05·T: none
    assert clean_after("own", "--steps", 20, "--guide", "novelty", "--clean", 0.2) == 0.2


def test_unconditional_sampling_and_guidance_are_recorded(tmp_path):
    out = tmp_path / "u"
    r = invoke("sample", "--n", 3, "--guide", "point:scale=0.5,target=1", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["settings"]["class"] is None and m["settings"]["cfg"] == 1.0
    assert m["settings"]["guidance"] == [{"name": "point", "scale": 0.5, "start": 0.0, "stop": 0.95, "target": 1.0, "sigma": 1.0}]
    assert np.load(out / "samples.npz")["classes"].tolist() == [10] * 3


def test_overwrite_replaces_and_refusal_keeps_old_output(tmp_path):
    out = tmp_path / "o"
    assert invoke("sample", "--class", 1, "--n", 2, "--out", out, *FAST).exit_code == 0
    before = (out / "manifest.json").read_text()
    r = invoke("sample", "--class", 1, "--n", 3, "--out", out, *FAST)
    assert r.exit_code == 2 and "not empty" in r.stderr and (out / "manifest.json").read_text() == before
    assert invoke("sample", "--class", 1, "--n", 3, "--out", out, "--overwrite", *FAST).exit_code == 0
    assert len(list(out.glob("0*.png"))) == 3


def test_a_store_inside_the_output_folder_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "o"
    assert invoke("sample", "--class", 1, "--n", 2, "--out", out, *FAST).exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    for store in (out / "m.sqlite", out / "sub" / "m.sqlite"):  # --overwrite would have deleted it with the old folder
        r = invoke("sample", "--class", 1, "--n", 2, "--guide", "novelty", "--memory", "x", "--store", store, "--out", out,
                   "--overwrite", *FAST)
        assert r.exit_code == 2 and "inside --out" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
        assert not store.exists() and sorted(p.name for p in out.iterdir()) == before
    r = invoke("sample", "--class", 1, "--n", 2, "--guide", "novelty", "--memory", "x", "--store", tmp_path / "m.sqlite",
               "--out", out, "--overwrite", *FAST)
    assert r.exit_code == 0 and (tmp_path / "m.sqlite").exists()


def _corrupt_model(tmp_path):
    import shutil
    bad = tmp_path / "badmodel"
    shutil.copytree(DEFAULT_MODEL_DIR, bad)
    w = bad / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return bad


@pytest.mark.parametrize("args, message", [
    (["--class", 12], "unknown class 12"),
    (["--class", -1], "unknown class -1"),
    (["--n", 0], "--n must be positive"),
    (["--n", -3], "--n must be positive"),
    (["--seeds", "9-2"], "end is before start"),
    (["--seeds", "x"], "bad seed range"),
    (["--seeds", "0-3", "--n", 5], "does not match"),
    (["--batch-size", 0], "--batch-size must be positive"),
    (["--steps", 0], "--steps must be positive"),
    (["--guide", "nope"], "unknown guidance"),
    (["--scheduler", "euler"], "unknown scheduler"),
    (["--device", "tpu"], "unknown device"),
    (["--model", "/nonexistent/model"], "no model at"),
    (["--grad-mode", "fast"], "--grad-mode"),
    (["--guide", "novelty", "--guide", "novelty:scale=2"], "more than once"),  # the second had no memory: a traceback (fuzz)
    # out-of-range and non-finite numbers (each gave all-black images or noise with exit 0, or a traceback, or a hang)
    (["--eta", 1.5], "--eta must be a number in [0, 1]"),
    (["--eta", "inf"], "--eta must be a number in [0, 1]"),
    (["--eta", -0.1], "--eta must be a number in [0, 1]"),
    (["--temperature", "inf"], "--temperature must be a number in (0, 10]"),
    (["--temperature", 0], "--temperature must be a number in (0, 10]"),
    (["--cfg", "inf"], "--cfg must be a number in [0, 100]"),
    (["--cfg", "nan"], "--cfg must be a number in [0, 100]"),
    (["--steps", 100000], "steps must be in 1..1000"),
    (["--clean", 1.5], "--clean must be a number in [0, 1]"),
    (["--clean", 0.05], "--clean 0.05 is below the run's last timestep (332 of 1000): give at least 0.333 or more steps"),
    (["--steps", 1001, "--scheduler", "dpm++"], "steps must be in 1..1000"),
    (["--steps", 5000, "--scheduler", "ddpm"], "steps must be in 1..1000"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    r = invoke("sample", "--out", out, *FAST, *args)  # args last: they win over FAST
    assert r.exit_code == 2, r.output
    assert message in r.stderr and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_corrupt_model_and_unwritable_output(tmp_path):
    r = invoke("sample", "--model", _corrupt_model(tmp_path), "--out", tmp_path / "x", *FAST)
    assert r.exit_code == 2 and "cannot load model" in r.stderr and not (tmp_path / "x").exists()
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    r = invoke("sample", "--n", 1, "--out", blocker, *FAST)
    assert r.exit_code == 2 and "not a folder" in r.stderr
    r = invoke("sample", "--n", 1, "--out", blocker / "sub", *FAST)
    assert r.exit_code == 2 and "cannot create the output folder" in r.stderr


def test_an_output_that_would_replace_the_working_folder_or_a_bad_model_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    for out in (".", "..", str(tmp_path)):
        r = invoke("sample", "--n", 1, "--out", out, "--overwrite", *FAST)
        assert r.exit_code == 2 and "current folder" in r.stderr, out
    assert (tmp_path / "keep.txt").read_text() == "mine"
    import shutil
    bad = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, bad)
    (bad / "unet" / "config.json").write_text("{not json")
    r = invoke("sample", "--n", 1, "--model", bad, "--out", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "unet/config.json is not a readable JSON config" in r.stderr


def test_failure_mid_run_leaves_no_partial_output(tmp_path, monkeypatch):
    import noveltynets.sampling as sampling
    import noveltynets.sampling.loop as loop

    def boom(*a, **k):
        raise RuntimeError("killed")
    out = tmp_path / "o"
    assert invoke("sample", "--n", 1, "--out", out, *FAST).exit_code == 0
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(sampling, "sample", boom)
    monkeypatch.setattr(loop, "generate", boom)
    r = invoke("sample", "--n", 2, "--out", out, "--overwrite", *FAST)
    assert r.exit_code != 0
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_partial_output(tmp_path):
    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "-m", "noveltynets.cli", "sample", "--n", "64", "--steps", "200", "--no-progress",
                          "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".o.*.partial")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert list(tmp_path.glob(".o.*.partial")), "the run never started writing"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 143 and "terminated" in p.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_partial_folders_of_dead_runs_are_cleaned_at_the_next_run(tmp_path):
    dead = next(pid for pid in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{pid}"))
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".o.{dead}.abc123_x.partial", tmp_path / f".o.old-{dead}"]
        kept = [tmp_path / f".o.{alive.pid}.zzz.partial", tmp_path / f".other.{dead}.abc.partial", tmp_path / ".o.2.x.y.partial"]
        for d in stale + kept:
            d.mkdir()
        assert invoke("sample", "--n", 1, "--out", tmp_path / "o", *FAST).exit_code == 0
        assert not any(d.exists() for d in stale) and all(d.exists() for d in kept)
    finally:
        alive.kill()


def test_console_script_reports_errors_without_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "noveltynets.cli", "sample", "--class", "11", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: unknown class 11") and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "noveltynets.cli", "sample", "--n", "abc"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def _novelty(out, store, *extra):
    return invoke("sample", "--class", 4, "--n", 4, "--batch-size", 2, "--guide", "novelty", "--memory", "fours",
                  "--store", store, "--pool-size", 6, "--out", out, *FAST, *extra)


def test_novelty_memory_persists_across_runs(tmp_path):
    store = tmp_path / "mem.sqlite"
    r = _novelty(tmp_path / "a", store)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["memory"]["name"] == "fours" and m["memory"]["n_seen"] == 4
    assert m["settings"]["guidance"][0]["name"] == "novelty"
    assert _novelty(tmp_path / "b", store).exit_code == 0
    m2 = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m2["memory"]["n_seen"] == 8 and m2["memory"]["version_before"] == m["memory"]["version_after"]
    a, b = np.load(tmp_path / "a" / "samples.npz")["images"], np.load(tmp_path / "b" / "samples.npz")["images"]
    listing = invoke("memory", "list", "--store", store)
    assert listing.exit_code == 0 and "fours" in listing.output and "8 seen" in listing.output
    show = invoke("memory", "show", "fours", "--store", store)
    assert json.loads(show.output)["samples_recorded"] == 8
    assert invoke("memory", "export", "fours", tmp_path / "fours.db", "--store", store).exit_code == 0
    assert invoke("memory", "reset", "fours", "--store", store).exit_code == 0
    assert "0 seen" in invoke("memory", "list", "--store", store).output
    assert invoke("memory", "import", tmp_path / "fours.db", "--name", "copy", "--store", store).exit_code == 0
    assert "8 seen" in invoke("memory", "list", "--store", store).output
    assert invoke("memory", "delete", "fours", "--store", store).exit_code == 0
    r = invoke("memory", "show", "fours", "--store", store)
    assert r.exit_code == 2 and "no memory named 'fours'" in r.stderr
    # what the memory remembered is the first run's images: the second run was pushed away from those, further
    # than the same seeds are pushed by a memory that remembered 4 other images (seeds 100-103) instead
    for out, seeds in (("o", "100-103"), ("d", "0-3")):
        r = invoke("sample", "--class", 4, "--seeds", seeds, "--batch-size", 2, "--guide", "novelty", "--memory", "others",
                   "--store", store, "--pool-size", 6, "--out", tmp_path / out, *FAST)
        assert r.exit_code == 0, r.output
    d = np.load(tmp_path / "d" / "samples.npz")["images"]
    first = a.reshape(len(a), -1).astype(np.float64)
    nearest_first = lambda x: np.sqrt(((x.reshape(len(x), 1, -1) - first[None]) ** 2).sum(-1)).min(1)  # noqa: E731
    assert (nearest_first(b) > nearest_first(d)).all(), (nearest_first(b), nearest_first(d))


def test_memory_commands_on_a_missing_store_create_nothing(tmp_path):
    missing = tmp_path / "no" / "s.sqlite"
    for args in (["list"], ["show", "a"], ["reset", "a"], ["delete", "a"], ["export", "a", tmp_path / "e.db"]):
        r = invoke("memory", *args, "--store", missing)
        assert r.exit_code == 2 and "no memory store at" in r.stderr and len(r.stderr.strip().splitlines()) == 1, args
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    r = invoke("memory", "import", empty, "--store", tmp_path / "s.sqlite")
    assert r.exit_code == 2 and "is empty" in r.stderr and empty.read_bytes() == b""
    r = invoke("sample", "--n", 2, "--guide", "novelty", "--memory", "../z", "--store", tmp_path / "s.sqlite",
               "--out", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "bad memory name" in r.stderr and not (tmp_path / "o").exists()


def test_memory_errors_are_clear(tmp_path):
    store = tmp_path / "mem.sqlite"
    assert _novelty(tmp_path / "a", store).exit_code == 0
    r = _novelty(tmp_path / "b", store, "--embedder", "pooled-pixels:4")
    assert r.exit_code == 2 and "was made with embedder 'pooled-pixels:32'" in r.stderr and not (tmp_path / "b").exists()
    # without --embedder an existing memory is used with its own (a memory made before the default changed keeps working)
    assert _novelty(tmp_path / "e", tmp_path / "old.sqlite", "--embedder", "pooled-pixels:8").exit_code == 0
    r = _novelty(tmp_path / "f", tmp_path / "old.sqlite")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "f" / "manifest.json").read_text())["memory"]["embedder"] == "pooled-pixels:8"
    r = invoke("sample", "--n", 2, "--memory", "x", "--store", store, "--out", tmp_path / "c", *FAST)
    assert r.exit_code == 2 and "--memory needs a method that keeps a history" in r.stderr
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 500)
    r = _novelty(tmp_path / "d", bad)
    assert r.exit_code == 2 and "unreadable" in r.stderr
    r = invoke("memory", "list", "--store", bad)
    assert r.exit_code == 2


def test_session_memory_without_a_name(tmp_path):
    r = invoke("sample", "--class", 1, "--n", 4, "--batch-size", 2, "--guide", "novelty:scale=0.2", "--negatives", "real",
               "--store", tmp_path / "cache.sqlite", "--out", tmp_path / "o", *FAST)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["memory"]["scope"] == "session" and m["memory"]["n_seen"] == 4


def test_memory_pretrain_from_dataset(tmp_path):
    store = tmp_path / "p.sqlite"
    r = invoke("memory", "pretrain", "prior", "--from-dataset", "--class", 3, "--epochs", 1, "--steps", 2, "--pool-size", 4,
               "--store", store, "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads(invoke("memory", "show", "prior", "--store", store).output)
    assert info["scope"] == "service" and info["n_seen"] == 450 and info["samples_recorded"] == 450
    r = invoke("memory", "pretrain", "other", "--store", store)
    assert r.exit_code == 2 and "--from-dataset" in r.stderr
    coded = ("--from-dataset", "--class", 3, "--epochs", 1, "--steps", 2, "--pool-size", 4, "--store", store, "--no-progress",
             "--memory-option", "codes_capacity=100000")
    assert invoke("memory", "pretrain", "coded", *coded).exit_code == 0  # a service-wide memory that will recall by codes
    mem, _ = MemoryStore(store).load("coded")
    assert mem.codes is not None and mem.codes.n_offered == mem.n_seen == 450
    for name, option, says in (("coded", "codes_capacity=100000", "exists: its settings were fixed"),
                               ("third", "codes_capacity=100", "codes_train in 256..codes_capacity")):
        r = invoke("memory", "pretrain", name, *coded[:-1], option)
        assert r.exit_code == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def _peer(out, store, *method):
    return invoke("sample", "--class", 4, "--n", 4, "--batch-size", 2, *method, "--store", store, "--out", out, *FAST)


@pytest.mark.parametrize("method, kind", [(["--guide", "repel:radius=2"], "exact"), (["--filter", "knn-filter:radius=2"], "exact"),
                                          (["--filter", "lsh-filter:bits=4,bands=2"], "lsh"), (["--filter", "oversample:k=2"], "exact")])
def test_peer_histories_persist_across_runs_under_a_name(tmp_path, method, kind):
    store = tmp_path / "h.sqlite"
    r = _peer(tmp_path / "a", store, *method, "--memory", "peer")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())["memory"]
    assert m["name"] == "peer" and m["kind"] == kind and m["n_seen"] == 4
    assert _peer(tmp_path / "b", store, *method, "--memory", "peer").exit_code == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["memory"]["n_seen"] == 8
    assert f"peer\t{kind}\tuser\t8 seen" in invoke("memory", "list", "--store", store).output
    assert _peer(tmp_path / "c", store, *method).exit_code == 0  # without --memory: a history of this command only
    first, again, alone = (np.load(tmp_path / d / "samples.npz")["images"] for d in "abc")
    assert np.array_equal(first, alone)  # no name, no history: the same images as the first run
    gap = np.abs(again[:, None].astype(int) - first[None].astype(int)).reshape(len(again), len(first), -1).max(-1)
    if kind == "exact":  # the named history remembered the first run: on the same seeds, no image of the second repeats
        # one of the first (each differs from every first-run image somewhere by more than 8 grey levels), as all of "alone" do
        assert (gap.min(1) > 8).all(), gap
    else:  # a 4-bit LSH sketch keeps no distances: it rejects what collides with history, and when every candidate
        # collides it may keep a repeat; it must still have rejected more candidates than against an empty history
        generated = [json.loads((tmp_path / d / "manifest.json").read_text())["settings"]["filter"]["generated"] for d in "ab"]
        assert generated[1] > generated[0] and (gap.min(1) > 8).any(), (generated, gap)


def test_history_errors_are_clear(tmp_path):
    store = tmp_path / "h.sqlite"
    assert _peer(tmp_path / "a", store, "--guide", "repel", "--memory", "r").exit_code == 0
    cases = [
        (["--guide", "particle", "--memory", "p"], "--memory needs a method that keeps a history"),
        (["--filter", "oversample:k=2,select=kmedoids", "--guide", "repel", "--memory", "r"], "each keep one"),
        (["--guide", "repel:embedder=pooled-pixels:4", "--memory", "r"], "was made with embedder 'pooled-pixels:8'"),
        (["--filter", "lsh-filter", "--memory", "r"], "is an exact history"),
        (["--guide", "novelty", "--memory", "r"], "is an exact history"),
        (["--guide", "repel", "--embedder", "pooled-pixels:4", "--memory", "r"], "--embedder is the novelty memory's"),
    ]
    for args, message in cases:
        r = _peer(tmp_path / "x", store, *args)
        assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output, (args, r.output)
        assert not (tmp_path / "x").exists()
    assert json.loads(invoke("memory", "show", "r", "--store", store).output)["kind"] == "exact"
