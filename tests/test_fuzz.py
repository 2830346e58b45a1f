"""Property-based CLI fuzzing (hypothesis): random option values and spec strings for ``sample``, ``memory`` and
``bench-merge``. Every command exits 0 with valid outputs, or 2 with one line on stderr and nothing written: never a
traceback, never exit 1, never all-identical images. Bounded in examples (see ``EXAMPLES``) and in steps per sample."""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from noveltynets.cli import app

runner = CliRunner()
EXAMPLES = {"sample": 60, "memory": 60, "merge": 40}
# derandomized: the same examples on every run (CI stays reproducible); no shrinking: a failing example is reported as
# drawn (shrinking one sample command took over five minutes)
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None,
                phases=[Phase.explicit, Phase.generate])

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-5, 2000),
                    st.sampled_from(["abc", "", "1e999", "-0", "0x10"]))
small_ints = st.one_of(st.integers(-3, 5), st.sampled_from(["x", "", "2.5", "99999999999999999999"]))
keys = st.sampled_from(["scale", "stop", "start", "radius", "memory_weight", "batch_weight", "k", "bits", "bands", "max_ratio",
                        "objective", "bogus", "", "select", "threshold", "lam"])
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=16).map(str), st.integers(-10, 100).map(str),
                   st.sampled_from(["", "x", "seen", "unseen", "kmedoids", "true", "1,2", "=", ":"]))


def mostly(valid, junk, percent_valid: int = 93):
    """``valid`` most of the time, else ``junk``: with ~10 options, about half the commands are valid throughout."""
    return st.integers(0, 99).flatmap(lambda i: valid if i < percent_valid else junk)


@st.composite
def specs(draw, names):
    name = draw(st.sampled_from(names))
    pairs = draw(st.lists(st.tuples(keys, values), max_size=3))
    junk = draw(st.sampled_from(["", "", ",", ":", "::", "=1"]))
    return name + ((":" + ",".join(f"{k}={v}" for k, v in pairs)) if pairs else "") + junk


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _check_failure(r, tmp: Path, before: set):
    assert r.exit_code == 2, (r.exit_code, r.output, repr(r.exception))
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("error: ", "Usage:")) or "Usage:" in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert {p.name for p in tmp.iterdir()} <= before, "a failed command left files behind"


@settings(max_examples=EXAMPLES["sample"], **SETTINGS)
@given(klass=mostly(st.one_of(st.none(), st.integers(0, 9)), st.integers(-2, 12)),
       n=mostly(st.one_of(st.none(), st.integers(1, 4)), small_ints),
       steps=mostly(st.integers(1, 3), st.sampled_from([-1, 0, 100000, 1001])),
       cfg=mostly(st.floats(0, 8), numbers), eta=mostly(st.floats(0, 1), numbers), temperature=mostly(st.floats(0.5, 1.5), numbers),
       scheduler=mostly(st.sampled_from(["ddim", "ddpm", "dpm++", "unipc"]), st.sampled_from(["euler", "", "DDIM"])),
       guide=st.lists(mostly(st.sampled_from(["novelty", "repel:radius=1", "particle:scale=2", "cads", "novelty:scale=0.5"]),
                             specs(["novelty", "repel", "particle", "cads", "point", "minority", "nope", ""]), 80), max_size=2),
       filt=mostly(st.one_of(st.none(), st.sampled_from(["oversample:k=2", "knn-filter:radius=1,max_ratio=2", "lsh-filter:max_ratio=2"])),
                   specs(["oversample", "knn-filter", "lsh-filter", "nope"]), 85),
       seeds=mostly(st.one_of(st.none(), st.sampled_from(["0-3", "5,1", "7"])), st.sampled_from(["3-0", "x", "", "0-1,0-1", "-1"])),
       batch=mostly(st.one_of(st.none(), st.integers(1, 3)), small_ints))
def test_sample_never_crashes_and_never_writes_garbage(klass, n, steps, cfg, eta, temperature, scheduler, guide, filt, seeds, batch):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = tmp / "out"
        args = ["sample", "--out", out, "--no-progress", "--steps", steps, "--cfg", cfg, "--eta", eta,
                "--temperature", temperature, "--scheduler", scheduler, "--store", tmp / "s.sqlite"]
        args += ["--class", klass] if klass is not None else []
        args += ["--n", n] if n is not None else ["--n", 3] if seeds is None else []
        args += ["--seeds", seeds] if seeds is not None else []
        args += ["--batch-size", batch] if batch is not None else []
        for g in guide:
            args += ["--guide", g]
        args += ["--filter", filt] if filt is not None else []
        r = _run(*args)
        event(f"exit {r.exit_code}")
        if r.exit_code != 0:
            return _check_failure(r, tmp, {"s.sqlite", "s.sqlite-wal", "s.sqlite-shm"})
        z = np.load(out / "samples.npz")
        images = z["images"]
        assert len(images) == len(list(out.glob("0*.png"))) > 0 and (out / "manifest.json").is_file()
        assert np.isfinite(images.astype(np.float64)).all()
        if len(images) > 1 and len(set(z["seeds"].tolist())) > 1:
            assert not all(np.array_equal(images[0], x) for x in images[1:]), "all images identical"


@settings(max_examples=EXAMPLES["memory"], **SETTINGS)
@given(cmd=st.sampled_from(["list", "show", "reset", "delete", "export", "import", "bogus"]),
       name=mostly(st.just("m"), st.one_of(st.sampled_from(["../z", "a\nb", "", "x" * 300, "é", "m.v=2", "-m"]), st.text(max_size=12)),
                   60),
       target=mostly(st.sampled_from(["new.db", "export.db"]), st.sampled_from(["exists.db", "empty.db", "junk.db", "dir",
                                                                              "missing/x.db"]), 60),
       store=mostly(st.just("s.sqlite"), st.sampled_from(["missing.sqlite", "junk.db", "dir"]), 80),
       rename=mostly(st.sampled_from([None, "copy"]), st.sampled_from(["../up", "m", "", "a b"]), 70))
def test_memory_commands_never_crash(cmd, name, target, store, rename):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from noveltynets.memory import MemoryConfig, NoveltyMemory
        from noveltynets.memory.store import MemoryStore
        import torch
        s = MemoryStore(tmp / "s.sqlite")
        mem = NoveltyMemory(MemoryConfig(dim=8, embedder_id="e", hidden=8, steps_per_observe=1, fourier=4))
        mem.set_reference(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))
        s.create("m", mem)
        s.export("m", tmp / "export.db")
        s.close()
        (tmp / "exists.db").write_bytes(b"x")
        (tmp / "empty.db").write_bytes(b"")
        (tmp / "junk.db").write_bytes(b"junk" * 100)
        (tmp / "dir").mkdir()
        before = {p.name: (p.read_bytes() if p.is_file() else None) for p in tmp.iterdir()}
        args = {"list": ["list"], "show": ["show", name], "reset": ["reset", name], "delete": ["delete", name],
                "export": ["export", name, tmp / target], "import": ["import", tmp / target] + (["--name", rename] if rename is not None else []),
                "bogus": ["bogus"]}[cmd]
        r = _run("memory", *args, "--store", tmp / store)
        event(f"{cmd}: exit {r.exit_code}")
        assert r.exit_code in (0, 2), (r.exit_code, r.output, repr(r.exception))
        assert "Traceback" not in r.output
        if r.exit_code == 2:
            assert len(r.stderr.strip().splitlines()) == 1 or "Usage:" in r.stderr, r.stderr
            for p, content in before.items():  # inputs untouched
                if content is not None and p not in ("s.sqlite", "s.sqlite-wal", "s.sqlite-shm"):
                    assert (tmp / p).read_bytes() == content, p


rows = st.lists(st.one_of(st.fixed_dictionaries({"class": st.sampled_from([7, 3, "x"]), "setting": st.sampled_from(["plain", "a"]),
                                                 "method": st.sampled_from(["plain", "a"]), "n": st.sampled_from([8, 16])}),
                          st.dictionaries(st.sampled_from(["class", "setting", "n", "rows"]), st.integers(0, 3), max_size=3),
                          st.integers(), st.none()), max_size=4)
good_rows = st.lists(st.fixed_dictionaries({"class": st.sampled_from([7, 3]), "setting": st.sampled_from(["plain", "a"]),
                                            "method": st.sampled_from(["plain", "a"]), "n": st.just(8),
                                            "near_dup": st.floats(0, 1), "precision": st.floats(0, 1),
                                            "vendi": st.floats(1, 9)}), min_size=1, max_size=3)
good = st.builds(lambda r: json.dumps({"config": {"n": 8, "steps": 2, "batch_size": 4, "classes": [7], "seed_offset": 0},
                                       "rows": r}), good_rows)
results = mostly(good, st.one_of(st.just("{not json"), st.just(""), st.builds(lambda c, r: json.dumps({"config": c, "rows": r}),
                 st.one_of(st.dictionaries(st.sampled_from(["n", "steps", "classes"]), st.integers(0, 9), max_size=3), st.none()),
                 rows), rows.map(json.dumps)), 75)


@settings(max_examples=EXAMPLES["merge"], **SETTINGS)
@given(a=results, b=results, log=mostly(st.none(), rows.map(lambda rs: "\n".join("row " + json.dumps(r) for r in rs)), 80))
def test_bench_merge_never_crashes(a, b, log):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, body in (("a", a), ("b", b)):
            (tmp / name).mkdir()
            (tmp / name / "results.json").write_text(body)
        extra = []
        if log is not None:
            (tmp / "rows.log").write_text(log)
            extra = ["--rows", tmp / "rows.log"]
        r = _run("bench-merge", tmp / "a", tmp / "b", *extra, "--out", tmp / "m")
        event(f"exit {r.exit_code}")
        assert r.exit_code in (0, 2), (r.exit_code, r.output, repr(r.exception))
        assert "Traceback" not in r.output
        if r.exit_code == 2:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert not (tmp / "m").exists() and not list(tmp.glob(".m.*"))
        else:
            merged = json.loads((tmp / "m" / "results.json").read_text())
            assert all(math.isfinite(float(v)) for row in merged["rows"] for v in row.values() if isinstance(v, (int, float)))
