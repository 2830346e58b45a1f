"""What the experiments share: the argument parser, the sampling config, ROC-AUC, how memories are made
(through the session layer), and the writing of rows and results."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from noveltynets.embed import embedder_from_spec
from noveltynets.embed.embedders import DEFAULT_EMBEDDER
from noveltynets.guidance import NoveltyGuidance
from noveltynets.memory.store import MemoryStore, new_memory
from noveltynets.models import load_model
from noveltynets.sampling import SamplingConfig
from noveltynets.session import POOL_SEED_BASE, open_session, pool_run, reference_pool

from . import EXPERIMENTS

CFG = 2.0  # every run of the benchmark: CFG 2, DDIM
POOL_SEEDS, UNRELATED_SEEDS, FRESH_SEEDS = POOL_SEED_BASE, 2 * 10**12, 3 * 10**12  # the session's pool seeds, and two far ranges


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties half."""
    s = np.concatenate([pos, neg])
    ranks = s.argsort().argsort().astype(float) + 1
    for v in np.unique(s):  # average ranks of ties
        m = s == v
        ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def sampling_config(args, klass: int | None, **changes) -> SamplingConfig:
    """The settings shared by every run of a command (``grad_mode`` only matters for guided runs)."""
    return SamplingConfig(klass=klass, cfg=CFG, steps=args.steps, scheduler="ddim", batch_size=args.batch, device=args.device,
                          grad_mode=args.grad_mode).replace(**changes)


def load(args):
    """The model and the guidance embedder (``--embedder``)."""
    model = load_model(device=args.device)
    return model, embedder_from_spec(args.embedder, model)


def recorded_steps(term: NoveltyGuidance, num_steps: int) -> list[int]:
    """The steps whose x̂0 ``term`` shows its memory after each batch (none unless both keep trajectories)."""
    memory = term.memory
    return term.observed_steps(num_steps) if term.trajectory and memory is not None and memory.config.trajectory else []


def embedded_run(model, embedder, seeds, config: SamplingConfig, trajectory_steps=()) -> torch.Tensor:
    """(1 + K, N, dim): ``session.pool_run``'s unguided samples' embeddings, then their x̂0's at the K steps."""
    seeds = list(seeds)
    e = pool_run(model, embedder, seeds, config.replace(batch_size=max(config.batch_size, 256)), trajectory_steps)
    return e.view(1 + len(trajectory_steps), len(seeds), -1)


def observe(memory, chunk: torch.Tensor) -> None:
    """Observe one (1 + K, B, dim) chunk of an embedded run: B finished samples, then their x̂0 at K steps."""
    memory.observe(chunk[0], trajectory=chunk[1:].flatten(0, 1) if len(chunk) > 1 else None)


class Memories:
    """How the experiments make novelty memories. :meth:`term`: a term bound by
    :func:`~noveltynets.session.open_session` to a memory for this run only, whose reference is
    ``--pool`` unguided samples (and their x̂0 at the steps the term observes), made once per
    settings by :func:`~noveltynets.session.reference_pool` and kept in ``--store`` (default: a
    temporary store, so each process samples its pools once). :meth:`with_reference`: a memory with
    a reference of the experiment's own (``new_memory`` + ``set_reference``)."""

    def __init__(self, model, embedder, args):
        self.model, self.embedder, self.args = model, embedder, args
        self.memory_config = dict(args.memory_config)
        self.negatives = self.memory_config.pop("negatives", "pool")  # open_session's, not a MemoryConfig field here
        self._tmp = None
        if args.store is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="novelty-nets-")
        self.store = MemoryStore(args.store or Path(self._tmp.name) / "pools.sqlite")

    def reference(self, config: SamplingConfig, trajectory_steps=(), size: int | None = None) -> torch.Tensor:
        """((1 + K)·N, dim): the reference pool of ``config`` (N = ``--pool``), as a memory of :meth:`term` gets it."""
        return reference_pool(self.store, self.model, self.embedder, config.replace(batch_size=max(config.batch_size, 64)),
                              size or self.args.pool, list(trajectory_steps))

    def term(self, config: SamplingConfig, learn: bool = True, **term_config) -> NoveltyGuidance:
        """A novelty term with a fresh memory that learns every batch it guides (``learn=False``: never)."""
        term = NoveltyGuidance(**term_config)
        open_session(self.model, config, [term], embedder=self.embedder, negatives=self.negatives, pool_size=self.args.pool,
                     memory_config=self.memory_config, store=self.store, learn=learn)
        return term

    def with_reference(self, ref: torch.Tensor, n_final: int | None = None, trajectory: bool = False):
        """A fresh memory with reference ``ref``: its first ``n_final`` rows finished samples (default all), then x̂0
        along their trajectories (``trajectory``: the memory may then observe x̂0 too)."""
        mem = new_memory(self.embedder, self.model.model_id, self.args.device, **{"trajectory": trajectory, **self.args.memory_config})
        mem.set_reference(ref, n_final=n_final)
        return mem

    def close(self) -> None:
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def emit(args, row: dict, rows_file: str | None = None) -> dict:
    """Print ``row`` as a JSON line; with ``--out``, also append it to ``rows_file`` there (kept if the run dies)."""
    print(json.dumps(row), flush=True)
    if args.out and rows_file:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / rows_file, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def write_result(args, result: dict) -> None:
    """With ``--out``, the whole result as ``WHAT.json`` (Path arguments as strings)."""
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.what}.json").write_text(json.dumps(result, indent=1, default=str))


def parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.novelty_nets", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=EXPERIMENTS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    p.add_argument("--quick", action="store_true", help="CPU smoke run: first class, 32 samples, 10 steps, pool 32")
    p.add_argument("--classes", type=int, nargs="+", default=[1, 3, 7])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--pool", type=int, default=128)
    p.add_argument("--store", type=Path, help="memory store that keeps the reference pools between runs (default: a temporary one)")
    p.add_argument("--scales", type=float, nargs="+", default=[NoveltyGuidance.scale])
    p.add_argument("--batch-weights", type=float, nargs="+", default=[NoveltyGuidance.batch_weight])
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="guidance embedder spec, e.g. denoiser-mid:t=20")
    p.add_argument("--memory-config", type=json.loads, default={},
                   help='MemoryConfig fields as JSON, e.g. \'{"fourier": 0, "negative_jitter": 0}\' for the plain-MLP ablation')
    p.add_argument("--term-config", type=json.loads, default={},
                   help='further NoveltyGuidance settings as JSON, e.g. \'{"stop": 0.5, "memory_weight": 1}\'')
    p.add_argument("--grad-mode", choices=["x0", "exact"], default="x0")
    p.add_argument("--no-ablations", dest="ablations", action="store_false",
                   help="protocol: only plain and the novelty grid (no continuation, unrelated-memory, batch-only)")
    p.add_argument("--observe-steps", type=int, nargs="*", default=[],
                   help="trajectory: steps whose x̂0 embeddings the memory also observes (and the reference pool holds)")
    p.add_argument("--trajectories", type=Path, help="trajectory: cache of the sampled x̂0 trajectories (loaded if present, else written)")
    p.add_argument("--quantiles", type=float, nargs="+", default=[0.6], help="renoise: the oracle's thresholds (quantiles of pool NN distances)")
    p.add_argument("--renoise-stop", type=float, default=0.8, help="renoise: re-noise until this fraction of the run")
    p.add_argument("--epochs", type=int, default=20, help="memorization: rehearsal passes over the training images")
    p.add_argument("--repeats", type=int, default=5, help="overhead: interleaved repetitions")
    p.add_argument("--histories", type=int, nargs="+", default=[1000, 10000, 100000], help="auc: history sizes")
    p.add_argument("--n-test", type=int, default=1000, help="auc: seen and fresh samples scored")
    p.add_argument("--observe-chunk", type=int, default=16, help="auc: samples per observe call")
    p.add_argument("--sample-batch", type=int, default=1000, help="auc: sampling batch size")
    p.add_argument("--embeddings", type=Path, help="auc: cache of the sample embeddings (loaded if present, else written)")
    return p


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    args = parser(description).parse_args(argv)
    if args.quick:
        args.classes, args.n, args.steps, args.pool = args.classes[:1], 32, 10, 32
        args.histories, args.n_test, args.sample_batch = [64], 32, 64
    return args
