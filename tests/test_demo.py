"""`make demo`'s judging, table and picture on tiny inputs (the full demo samples for minutes)."""

import json

import numpy as np
import torch
from PIL import Image

from noveltynets.bench import demo


class TinyJudge:
    """The keep judge's interface: judge(images, history) → metrics; ev.features; tau."""

    tau = 0.5

    class ev:
        @staticmethod
        def features(x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :64].double()  # random images: far apart

    def __init__(self):
        self.calls = []

    def __call__(self, images, history=None):
        self.calls.append((len(images), 0 if history is None else len(history)))
        return {"near_dup": 0.25, "precision": 1.0, "novelty": 0.1}


def test_judge_runs_each_run_against_earlier_runs_of_its_method(tmp_path):
    rng = np.random.default_rng(0)
    fresh = lambda: rng.integers(0, 256, size=(8, 32, 32), dtype=np.uint8)
    run1 = fresh()
    runs = {"plain": [run1, run1.copy()], "novelty": [fresh(), fresh()]}  # plain run 2 repeats run 1 exactly
    judge = TinyJudge()
    results = demo.judge_runs(runs, judge)
    assert judge.calls == [(8, 0), (8, 8), (8, 0), (8, 8)]  # run 1 against nothing, run 2 against run 1
    assert all(results["plain"][1]["flags"])             # every copy is a near-dup of run 1
    assert not any(results["novelty"][1]["flags"])       # random images are far from each other
    assert results["plain"][0]["flags"][0] is False      # the first sample has nothing earlier

    demo.picture(runs, results, tmp_path / "demo.png")
    img = np.asarray(Image.open(tmp_path / "demo.png"))
    assert img.ndim == 3 and img.shape[0] > 2 * 32 * demo.SCALE and img.shape[1] > 2 * 32 * demo.SCALE
    assert ((img[..., 0] > 200) & (img[..., 1] < 80)).any()  # red frames around near-dups

    text = json.dumps([[r["near_dup"] for r in rows] for rows in results.values()])
    assert text == "[[0.25, 0.25], [0.25, 0.25]]"
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(demo.table(results, n=8, seconds={"plain": [1.0, 2.0], "novelty": [3.0, 4.0]}))
    out = console.export_text()
    assert "run 1" in out and "nothing" in out and "8-15" in out and "0.250" in out


def test_commands_share_one_memory_and_disjoint_seeds(tmp_path):
    cmds = demo.commands(tmp_path, klass=7, n=32, steps=25)
    assert list(cmds) == [("novelty", 1), ("novelty", 2), ("plain", 1), ("plain", 2)]
    for (method, r), cmd in cmds.items():
        assert cmd[cmd.index("--seeds") + 1] == ["0-31", "32-63"][r - 1]
        assert ("--memory" in cmd) == (method == "novelty")
        assert "--overwrite" in cmd and "--no-progress" in cmd
    assert cmds["novelty", 1][cmds["novelty", 1].index("--memory") + 1] == "demo-sevens"
    assert cmds["novelty", 2][cmds["novelty", 2].index("--store") + 1] == str(tmp_path / "store.sqlite")
