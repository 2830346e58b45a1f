"""``noveltynets bench``: the method registry, the runner's rows and ratios, every output file, bad input."""

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from noveltynets.bench.methods import METHODS, GuidanceMethod, Method, MethodRun, Novelty, Plain, parse_method, register
from noveltynets.bench.runner import BenchConfig, Judge, mean_rows, run_bench
from noveltynets.cli import app
from noveltynets.errors import NoveltynetsError
from noveltynets.models import load_model

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_parse_method_resolves_registry_then_guidance_terms():
    assert isinstance(parse_method("plain"), Plain)
    m = parse_method("novelty:scale=1,pool=16,embedder=pooled-pixels:4,cfg=3")
    assert isinstance(m, Novelty) and (m.pool, m.embedder, m.cfg) == (16, "pooled-pixels:4", 3.0)
    assert m.guide == "novelty:scale=1" and m.label == "novelty:scale=1,pool=16,embedder=pooled-pixels:4,cfg=3"
    g = parse_method("point:target=0.5")
    assert isinstance(g, GuidanceMethod) and g.name == "point" and g.make_terms(None, 7)[0].target == 0.5
    c = parse_method("novelty:memory_stop=0.95,clean=0.05")  # clean, like cfg, eta and temp, is the sampler's, for every method
    assert c.guide == "novelty:memory_stop=0.95" and c.clean == 0.05 and parse_method("plain").clean == 0.0


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown method 'nope'"),
    ("plain:scale=1", "no setting 'scale'"),
    ("plain:cfg=x", "not a valid float"),
    ("novelty:scale", "expected key=value"),
    ("novelty:wat=1", "no setting 'wat'"),
    ("novelty:pool=1", "pool must be at least 2"),
    ("point:cfg=-1", "non-negative"),
    ("plain:clean=2", r"clean in \[0, 1\]"),
])
def test_bad_method_specs(spec, message):
    with pytest.raises(NoveltynetsError, match=message):
        parse_method(spec)


def test_config_adds_the_plain_baseline_first_and_refuses_duplicates_and_bad_sizes():
    methods = BenchConfig(methods=["point", "novelty"]).validate()
    assert [m.spec for m in methods] == ["plain", "point", "novelty"]
    with pytest.raises(NoveltynetsError, match="listed twice"):
        BenchConfig(methods=["plain", "point", "point"]).validate()
    with pytest.raises(NoveltynetsError, match="at least 6"):
        BenchConfig(n=5).validate()
    with pytest.raises(NoveltynetsError, match="digits 0-9"):
        BenchConfig(classes=[12]).validate()
    with pytest.raises(NoveltynetsError, match=r"method 'novelty:clean=0.05': clean 0.05 is below the run's last timestep \(332"):
        BenchConfig(methods=["novelty:clean=0.05"], steps=3).validate()
    assert BenchConfig(methods=["novelty:clean=0.05"], steps=50).validate()[1].clean == 0.05


def test_judge_counts_near_dups_against_history():
    judge = Judge(7)
    real = __import__("noveltynets.data", fromlist=["x"]).load_split("heldout").of_class(7)[:20]
    fresh = judge(real)
    assert fresh["near_dup"] < 0.5 and fresh["adherence"] > 0.9 and fresh["memorization"] == 0.0  # held-out: not training images
    again = judge(real, history=real)  # every image repeats one of history
    assert again["near_dup"] == 1.0 and again["novelty"] == pytest.approx(0.0, abs=1e-4)


class Echo(Method):
    """A filter-like method for the test: "generates" 2× and keeps the plain samples, reporting 2× plain's time."""
    name = "echo-test"

    def run(self, ctx, klass, seeds):
        out = Plain("plain").run(ctx, klass, seeds)
        return MethodRun(out.images, 2 * out.seconds, generated=2 * len(seeds))


def test_runner_rows_ratios_and_a_registered_method(monkeypatch):
    real_run = Plain.run

    def fixed_time(self, ctx, klass, seeds):  # timings vary between runs: fix plain's so the ratio is exact
        out = real_run(self, ctx, klass, seeds)
        out.seconds = 0.5 * len(seeds)
        return out

    monkeypatch.setattr(Plain, "run", fixed_time)
    register(Echo)
    try:
        cfg = BenchConfig(methods=["plain", "echo-test"], classes=[1, 7], n=8, steps=2, batch_size=8)
        result = run_bench(cfg, load_model())
    finally:
        del METHODS["echo-test"]
    rows = result["rows"]
    assert [(r["class"], r["setting"]) for r in rows] == [(1, "plain"), (1, "echo-test"), (7, "plain"), (7, "echo-test")]
    for plain, echo in (rows[:2], rows[2:]):
        assert plain["cost_ratio"] == 1.0 and echo["cost_ratio"] == pytest.approx(2.0)
        assert echo["generated_per_kept"] == 2.0
        assert echo["near_dup"] == plain["near_dup"] and echo["vendi"] == plain["vendi"]  # same seeds, same images
    means = mean_rows(rows)
    assert [m["setting"] for m in means] == ["plain", "echo-test"]
    assert means[0]["precision"] == pytest.approx((rows[0]["precision"] + rows[2]["precision"]) / 2)
    assert set(result["images"]["plain"]) == {1, 7} and result["images"]["plain"][7].shape == (8, 1, 32, 32)


def test_bench_quick_writes_every_output_and_novelty_cuts_near_dups(tmp_path):
    out = tmp_path / "b"
    r = invoke("bench", "--quick", "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid_novelty.png", "grid_plain.png", "pareto.png", "report.html", "results.csv", "results.json"]
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["classes"] == [7] and res["config"]["n"] == 64 and res["config"]["steps"] == 10
    plain, novelty = res["rows"]
    assert plain["setting"] == "plain" and novelty["setting"] == "novelty" and novelty["setup_seconds"] > 0
    assert novelty["near_dup"] < plain["near_dup"]  # the memory works even in the smoke run
    assert all(np.isfinite(v) for row in res["rows"] for v in row.values() if isinstance(v, float))
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [c["class"] for c in csv_rows] == ["7", "7", "mean", "mean"]
    html = (out / "report.html").read_text()
    assert "pareto.png" in html and "grid_novelty.png" in html and "near_dup" in html
    assert "novelty" in r.output and "report.html" in r.output
    logged = [json.loads(line[4:]) for line in r.output.splitlines() if line.startswith("row ")]  # each row as it was judged
    assert [(x["setting"], x["near_dup"]) for x in logged] == [(x["setting"], round(x["near_dup"], 4)) for x in res["rows"]]


@pytest.mark.parametrize("args, message", [
    (["--classes", "x"], "comma-separated digits"),
    (["--classes", "11"], "digits 0-9"),
    (["--n", "3"], "at least 6"),
    (["-m", "warp:speed=9"], "unknown method"),
    (["-m", "novelty:scale=abc"], "not a valid float"),
    (["--device", "tpu"], "unknown device"),
])
def test_bench_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, args, message):
    """Nothing at all appears: not --out, not its (new) parent, no hidden ``.o.*.partial`` beside it, nothing in
    the working folder, the cache (the default memory store) or the temporary folder."""
    import tempfile

    for d in ("cwd", "cache", "tmp"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    tree = lambda: sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))  # noqa: E731 (hidden names too)
    before = tree()
    r = invoke("bench", "--out", tmp_path / "new" / "o", "--no-progress", *args)
    assert r.exit_code == 2 and message in r.output
    assert tree() == before == ["cache", "cwd", "tmp"]


def _fake_run(path, klass, methods=("plain", "repel")):
    path.mkdir()
    rows = [{"class": klass, "method": m, "setting": m, "n": 8, "near_dup": 0.1 * klass + i, "precision": 0.9, "vendi": 1.0 + i,
             "cost_ratio": 1.0 + i, "adherence": 1.0} for i, m in enumerate(methods)]
    config = {"methods": list(methods), "classes": [klass], "n": 8, "steps": 2, "batch_size": 8, "seed_offset": 0}
    (path / "results.json").write_text(json.dumps({"command": f"bench {klass}", "config": config, "rows": rows}))
    from noveltynets.data import make_grid, save_png
    for m in methods:
        save_png(make_grid(np.zeros((2, 32, 32), dtype=np.uint8)), path / f"grid_{m}.png")


def test_bench_merge_joins_classes_and_refuses_mismatched_runs(tmp_path):
    _fake_run(tmp_path / "a", 1)
    _fake_run(tmp_path / "b", 7)
    r = invoke("bench-merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "m" / "results.json").read_text())
    assert res["config"]["classes"] == [1, 7] and len(res["rows"]) == 4
    repel = [m for m in res["means"] if m["setting"] == "repel"][0]
    assert repel["near_dup"] == pytest.approx((0.1 + 1 + 0.7 + 1) / 2)
    for f in ["pareto.png", "report.html", "results.csv", "grid_repel_class1.png", "grid_repel_class7.png"]:
        assert (tmp_path / "m" / f).exists()
    assert "grid_repel_class7.png" in (tmp_path / "m" / "report.html").read_text()
    # a later run with more methods on a class already merged, and the rows of a killed run's log
    _fake_run(tmp_path / "c", 7, methods=("plain", "cads"))
    log = tmp_path / "killed.log"
    log.write_text("sampling...\n" + "row " + json.dumps({"class": 3, "method": "plain", "setting": "plain", "n": 8,
                                                         "near_dup": 0.5, "precision": 0.8, "vendi": 1.0}) + "\n")
    r = invoke("bench-merge", tmp_path / "b", tmp_path / "c", "--rows", log, "--out", tmp_path / "m2")
    assert r.exit_code == 0 and "1 repeated" in r.output, r.output
    res = json.loads((tmp_path / "m2" / "results.json").read_text())
    assert [(x["class"], x["setting"]) for x in res["rows"]] == [(7, "plain"), (7, "repel"), (7, "cads"), (3, "plain")]
    assert [m["n_classes"] for m in res["means"]] == [2, 1, 1]
    _fake_run(tmp_path / "d", 3)
    res_d = json.loads((tmp_path / "d" / "results.json").read_text())
    res_d["config"]["n"] = 16
    (tmp_path / "d" / "results.json").write_text(json.dumps(res_d))
    (tmp_path / "empty.log").write_text("nothing\n")
    (tmp_path / "bad.log").write_text('row {"class": 7}\n')  # JSON, but not a row
    for name, body in (("e", "{}"), ("f", "[1, 2]"), ("g", json.dumps({**res_d, "rows": [{"setting": "plain"}]}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(body)
    for args, msg in [((tmp_path / "a", tmp_path / "d"), "differs"), ((tmp_path / "a", tmp_path / "nope"), "no readable results.json"),
                      ((tmp_path / "a",), "at least two"), ((tmp_path / "a", "--rows", tmp_path / "empty.log"), "no rows"),
                      ((tmp_path / "a", tmp_path / "e"), "not a bench result"), ((tmp_path / "a", tmp_path / "f"), "not a bench result"),
                      ((tmp_path / "a", tmp_path / "g"), "a row without"), ((tmp_path / "a", "--rows", tmp_path / "bad.log"), "a row without")]:
        before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
        r = invoke("bench-merge", *args, "--out", tmp_path / "x")
        assert r.exit_code == 2 and msg in r.output, r.output
        # no x, no hidden .x.*.partial left beside it, nothing written into the runs read
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_combined_guidance_methods_run_all_their_terms():
    from noveltynets.bench.methods import Combo, Context
    m = parse_method("novelty:scale=1,pool=4,cfg=3+particle:scale=2,cfg=3")
    assert isinstance(m, Combo) and m.name == "novelty+particle" and m.cfg == 3.0
    assert m.label == "novelty:scale=1,pool=4,cfg=3+particle:scale=2,cfg=3"
    ctx = Context(model=load_model(), steps=2, batch_size=4)
    terms = m.make_terms(ctx, 7)
    assert [t.name for t in terms] == ["novelty", "particle"] and terms[0].memory is not None and terms[1].scale == 2.0
    for bad, msg in [("plain+particle", "only guidance methods"), ("particle:cfg=1+repel", "different cfg"),
                     ("particle+oversample", "only guidance methods"), ("particle+nope", "unknown method")]:
        with pytest.raises(NoveltynetsError, match=msg):
            parse_method(bad)
