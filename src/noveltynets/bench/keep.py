"""``noveltynets bench --keep R``: the keep-sampling protocol (BENCHMARK.md, protocol 2).

R runs of N samples per class; run r (1-based) uses seeds S + (r − 1)·N .. S + r·N − 1 (S, the
seed offset, is 0 unless another draw on disjoint seeds is asked for), made ``batch_size`` at a
time. Every method keeps one history per class across the runs, in the store
``histories.sqlite`` of the output folder under a name of its own (a novelty memory; the exact
history of repel, knn-filter and oversample; the LSH history of lsh-filter), and every run loads
it afresh from the store, as a new process would. The method key ``memory`` says what the history
is across runs:

- ``continued`` (default): one history that learns every run;
- ``fresh``: emptied before every run (a novelty memory keeps its reference pool);
- ``unrelated``: before run r it is fed plain samples of the class from other seeds (from
  ``UNRELATED_SEED_BASE`` + S on), as many as a continued history has observed by then ((r − 1)·N,
  with their x̂0 where a trajectory memory observes), and it never learns the method's own samples.

Each run is judged against every earlier sample of the method's history (earlier runs and
earlier in the run), in the evaluation embedder's space: near-dup rate, history novelty,
precision, adherence; cumulatively over runs: Vendi, coverage of the real class and distinct modes
(greedy cover at the near-dup radius τ). Beside every method, the real-data floor: the class's
real images in a fixed random order, N per run while they last. Costs per run: wall time and its
ratio to plain in the same run (a new memory's reference pool counts in its first run, for every
method that needs it), the history's bytes, and the mean time of one guided step and one update of
the history-keeping terms.

The output folder is written as the runs go (``keep.json``: settings; ``rows.jsonl``; ``runs/``: each
run's images; the store), so a killed benchmark keeps every completed run, and ``--resume``
continues it: each history is first put back to its checkpoint of its last completed run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..data import from_uint8, load_mnist5k, to_uint8
from ..errors import NoveltynetsError
from ..session import history_owners, open_session, pool_key, pool_run
from ..memory.store import MemoryStore
from ..models.embedder import load_eval_embedder
from .methods import Context, Method, _split
from .report import slug
from .runner import UNCOND, BenchConfig, Judge

UNRELATED_SEED_BASE = 2 * 10**12  # the unrelated control's plain samples: far from the runs' seeds and the pools'
REAL_ORDER_SEED = 0
RUN_KEYS = ["near_dup", "novelty", "precision", "recall", "adherence", "vendi_all", "coverage_all", "modes"]


def history_name(method: Method, label, index: int) -> str:
    return f"{slug(method.label)}.class{label}.{index}"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Timed:
    """Wraps a callable attribute of an object, summing the seconds of its calls."""

    def __init__(self, obj, attr: str):
        self.fn, self.calls, self.seconds = getattr(obj, attr), 0, 0.0
        setattr(obj, attr, self)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - t0

    @property
    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.calls if self.calls else 0.0


def validate_methods(cfg: BenchConfig) -> list[Method]:
    """The methods of ``cfg`` (plain first); a ``memory`` mode other than continued needs a history to apply to."""
    methods = cfg.validate()
    for m in methods:
        if m.memory != "continued" and not history_owners(*_split(m.build(None, None))):
            raise NoveltynetsError(f"method {m.label!r}: memory={m.memory} needs a method that keeps a history")
    return methods


class KeepBench:
    """One keep-sampling benchmark in its output folder (see the module doc)."""

    def __init__(self, cfg: BenchConfig, runs: int, model, out: Path, resume: bool = False, overwrite: bool = False):
        if runs < 1:
            raise NoveltynetsError(f"--keep needs at least 1 run, got {runs}")
        self.cfg, self.runs, self.model, self.out = cfg, runs, model, Path(out)
        self.methods = validate_methods(cfg)
        cfg.check_seeds(runs)
        self.settings = {**asdict(cfg), "model": model.model_id}
        if self.out.exists() and not self.out.is_dir():
            raise NoveltynetsError(f"output path {self.out} exists and is not a folder")
        if self.out.is_dir() and any(self.out.iterdir()) and not resume:
            if not overwrite:
                raise NoveltynetsError(f"output folder {self.out} is not empty (pass --resume to continue a keep benchmark "
                                       "there, or --overwrite to replace it)")
            shutil.rmtree(self.out)
        state_path = self.out / "keep.json"
        self.state = {"settings": self.settings, "runs": runs, "pool_seconds": {}}
        if resume and state_path.exists():
            old = json.loads(state_path.read_text())
            if old["settings"] != self.settings:
                diff = sorted(k for k in self.settings if old["settings"].get(k) != self.settings[k])
                raise NoveltynetsError(f"--resume: {self.out} holds a keep benchmark with other settings ({', '.join(diff)})")
            self.state["pool_seconds"] = old.get("pool_seconds", {})
        elif resume and self.out.exists() and any(self.out.iterdir()):
            raise NoveltynetsError(f"--resume: {self.out} holds no keep benchmark (no keep.json)")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "runs").mkdir(exist_ok=True)
        self._save_state()
        self.store = MemoryStore(self.out / "histories.sqlite")
        self.ctx = Context(model=model, steps=cfg.steps, batch_size=cfg.batch_size, device=cfg.device, store=self.store)
        self.rows = self._read_rows()
        self.evaluator = load_eval_embedder(device="cpu")

    # -- state on disk -------------------------------------------------------------------
    def _save_state(self) -> None:
        _atomic_write(self.out / "keep.json", json.dumps(self.state, indent=2).encode())

    def _read_rows(self) -> list[dict]:
        path = self.out / "rows.jsonl"
        rows = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:  # a line cut short by a kill: that run is redone
                    pass
        return [r for r in rows if r["method"] == "real" or self._images_path(r["setting"], r["class"], r["run"]).exists()]

    def _append_row(self, row: dict) -> None:
        with open(self.out / "rows.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)

    def _images_path(self, setting: str, label, run: int) -> Path:
        return self.out / "runs" / slug(setting) / f"class={label}" / f"run{run:02d}.npz"

    def _done(self, setting: str, label, run: int) -> bool:
        return any(r["setting"] == setting and str(r["class"]) == str(label) and r["run"] == run for r in self.rows)

    def images(self, setting: str, label, upto: int) -> torch.Tensor | None:
        """All images of runs 1..upto of one method and class (as judged: the uint8 images a user gets)."""
        parts = [from_uint8(np.load(self._images_path(setting, label, r))["images"]) for r in range(1, upto + 1)]
        return torch.cat(parts) if parts else None

    # -- the protocol --------------------------------------------------------------------
    def run(self, advance=lambda **kw: None, log=lambda row: None) -> dict:
        for label in self.cfg.classes:
            klass = None if label == UNCOND else label
            judge = Judge(klass, evaluator=self.evaluator)
            self._real_rows(label, klass, judge, log)
            for r in range(1, self.runs + 1):
                plain_seconds = None
                for m in self.methods:
                    if self._done(m.label, label, r):
                        plain_seconds = plain_seconds or next(x["seconds"] for x in self.rows if x["setting"] == m.label
                                                              and str(x["class"]) == str(label) and x["run"] == r)
                        advance(klass=label, run=r, method=m.label)
                        continue
                    row = self._run_one(m, label, klass, r, judge, plain_seconds)
                    plain_seconds = plain_seconds or row["seconds"]
                    log(row)
                    advance(klass=label, run=r, method=m.label, seconds=round(row["seconds"], 1))
        return self.result()

    def _real_rows(self, label, klass, judge: Judge, log) -> None:
        """The real-data floor: the class's real images in a fixed random order, N per run while they last."""
        if any(r["method"] == "real" and str(r["class"]) == str(label) for r in self.rows):
            return
        data = load_mnist5k()
        real = data.images if klass is None else data.of_class(klass)
        real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(REAL_ORDER_SEED))]
        n = self.cfg.n
        for r in range(1, self.runs + 1):
            run = real[(r - 1) * n:r * n]
            if len(run) < 6:
                break
            history = real[:(r - 1) * n] if r > 1 else None
            m = judge(run, history)
            row = {"class": label, "method": "real", "setting": "real images", "run": r, "n": len(run),
                   **{k: m[k] for k in ("near_dup", "novelty", "precision", "recall")},
                   **judge.cumulative(real[:r * n])}
            self._append_row(row)
            log(row)

    def _run_one(self, m: Method, label, klass, r: int, judge: Judge, plain_seconds: float | None) -> dict:
        n = self.cfg.n
        seeds = list(range(self.cfg.seed_offset + (r - 1) * n, self.cfg.seed_offset + r * n))
        built = m.build(self.ctx, klass)
        owners = history_owners(*_split(built))
        setup, names, updates = 0.0, [], []
        for i, owner in enumerate(owners):
            name = history_name(m, label, i)
            names.append(name)
            setup += self._open(m, built, i, owner, name, label, klass, r, updates)
        steps = [Timed(o, "grad") for o in owners if hasattr(o, "grad")]
        out = m.generate(self.ctx, klass, seeds, built)
        images = from_uint8(to_uint8(out.images))  # judged as the user gets them: 8-bit images
        history = self.images(m.label, label, r - 1)
        metrics_ = judge(images, history)
        path = self._images_path(m.label, label, r)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, images=to_uint8(out.images), seeds=np.array(seeds, dtype=np.int64))
        _atomic_write(path, buf.getvalue())
        for name in names:  # the run is complete: this is what a resumed benchmark goes back to
            self.store.checkpoint(name, f"run{r}")
        seconds = out.seconds + setup
        row = {"class": label, "method": m.name, "setting": m.label, "memory": m.memory, "run": r, "n": len(images),
               "seconds": seconds, "setup_seconds": setup, "per_sample_s": seconds / len(images),
               "cost_ratio": seconds / plain_seconds if plain_seconds else 1.0,
               "generated_per_kept": (out.generated or len(images)) / len(images),
               "history_bytes": sum(self.store.info(nm).state_bytes for nm in names),
               "history_n": sum(self.store.info(nm).n_seen for nm in names),
               "step_ms": float(np.mean([t.mean_ms for t in steps])) if steps else 0.0,
               "update_ms": float(np.mean([u.mean_ms for u, _ in updates])) if updates else 0.0,
               "learn_ms": float(np.mean([learn.mean_ms for _, learn in updates])) if updates else 0.0,
               **metrics_, **judge.cumulative(torch.cat([history, images]) if history is not None else images)}
        self._append_row(row)
        return row

    def _open(self, m: Method, built: list, i: int, owner, name: str, label, klass, r: int, updates: list) -> float:
        """Attach history ``name`` to ``owner`` (history owner ``i`` of ``built``) for run r as ``m.memory`` says;
        returns the setup seconds to charge."""
        store = self.store
        if store.exists(name):  # back to the last completed run (a killed run left batches of the next one)
            tag = f"run{r - 1}"
            if r > 1 and store.has_checkpoint(name, tag):
                store.restore(name, tag)
            elif r == 1:
                store.delete(name)
        if m.memory == "fresh" and store.exists(name):
            store.reset(name)
        config, terms_filt = m.config(self.ctx, klass), _split(built)
        t0 = time.perf_counter()
        session = open_session(m.model_for(self.ctx), config, *terms_filt, memory=name, store=store, owner=i,
                               embedder=m.history_embedder(self.ctx, owner) if owner.history_kind == "novelty" else None,
                               learn=m.memory != "unrelated",
                               settings={"class": klass, "cfg": m.cfg, "steps": self.cfg.steps, "method": m.label}, **m.memory_options(owner))
        charge = time.perf_counter() - t0 - session.pool_seconds
        # a new memory's reference pool counts in its first run, for every method that needs it
        key = self._pool_key(m, owner, session, config)
        if session.pool_seconds:
            self.state["pool_seconds"][key] = session.pool_seconds
            self._save_state()
        if r == 1 and key is not None:
            charge += self.state["pool_seconds"].get(key, 0.0)
        if m.memory == "unrelated":  # frozen: taught other plain samples, it never learns the method's own
            session.history, session.version = self._feed_unrelated(m, owner, name, session.embedder, session.history,
                                                                    session.version, klass, (r - 1) * self.cfg.n)
            owner.memory = session.history
        else:  # the update as a whole (learn, then persist in the store) and its learning part alone
            updates.append((Timed(owner, "observer"), Timed(session.history, "observe")))
        return charge

    def _pool_key(self, m: Method, owner, session, config) -> str | None:
        """The store key of the reference pool ``owner``'s memory was made with, or None if it has none."""
        hist = session.history
        if owner.history_kind != "novelty" or hist.config.negatives != "pool":
            return None
        traj = owner.observed_steps(self.cfg.steps) if hist.config.trajectory else []
        return pool_key(m.model_for(self.ctx), session.embedder, config, m.memory_options(owner).get("pool_size", 128), traj)

    def _feed_unrelated(self, m: Method, owner, name, emb, history, version, klass, target: int):
        """Teach history ``name`` plain samples of the class from other seeds until it has seen ``target``."""
        have = history.n_seen
        if have >= target:
            return history, version
        traj = owner.observed_steps(self.cfg.steps) if owner.history_kind == "novelty" and history.config.trajectory else []
        base = UNRELATED_SEED_BASE + self.cfg.seed_offset
        seeds = range(base + have, base + target)
        e = pool_run(m.model_for(self.ctx), emb, seeds, m.config(self.ctx, klass), traj).view(1 + len(traj), len(seeds), -1)
        for start in range(0, len(seeds), self.cfg.batch_size):
            chunk = e[:, start:start + self.cfg.batch_size]
            records = [{"seed": s, "class": klass, "settings": {"unrelated": True}} for s in seeds[start:start + self.cfg.batch_size]]
            history, version = self.store.observe(name, history, version, chunk[0], records,
                                                  trajectory=chunk[1:].flatten(0, 1) if traj else None)
        return history, version

    # -- results ---------------------------------------------------------------------------
    def result(self) -> dict:
        """Rows, per-class curves of distinct modes vs samples generated, and the images of every last run."""
        curves, last = {}, {}
        for label in self.cfg.classes:
            klass = None if label == UNCOND else label
            judge = None
            for m in self.methods:
                runs = max([r["run"] for r in self.rows if r["setting"] == m.label and str(r["class"]) == str(label)], default=0)
                if not runs:
                    continue
                judge = judge or Judge(klass, evaluator=self.evaluator)
                imgs = self.images(m.label, label, runs)
                curves.setdefault(str(label), {})[m.label] = metrics.greedy_cover(judge.ev.features(imgs).numpy(), judge.tau).tolist()
                last.setdefault(m.label, {})[label] = imgs[-len(imgs) // runs:]
            if judge is not None:
                data = load_mnist5k()
                real = data.images if klass is None else data.of_class(klass)
                real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(REAL_ORDER_SEED))][:self.runs * self.cfg.n]
                curves[str(label)]["real images"] = metrics.greedy_cover(judge.ev.features(real).numpy(), judge.tau).tolist()
        return {"config": {**self.settings, "runs": self.runs}, "rows": self.rows, "curves": curves, "images": last}
