"""``overhead``: wall time of novelty-guided vs plain sampling."""

from __future__ import annotations

import time

import numpy as np
import torch

from noveltynets.sampling import sample

from .common import Memories, emit, load, sampling_config


def run(args) -> dict:
    """Batch ``--batch``, ``--n`` samples, plain and novelty interleaved ``--repeats`` times, median; the novelty
    term's memory is the session's (its observer timed: the store-free path of every front end)."""
    model, emb = load(args)
    config, memories = sampling_config(args, args.classes[0]), Memories(model, emb, args)
    memories.reference(config)  # make the pool before timing (the first memory would make it, cached after)
    times: dict[str, list[float]] = {"plain": [], "novelty": []}
    observe: list[float] = []
    for _ in range(args.repeats):
        for method in times:
            terms = []
            if method == "novelty":
                term = memories.term(config, **args.term_config)
                terms = [term]

                def timed(e, info, learn=term.observer):
                    t = time.perf_counter()
                    learn(e, info)
                    observe.append(time.perf_counter() - t)
                term.observer = timed
            t0 = time.perf_counter()
            sample(model, range(args.n), config, terms)
            times[method].append(time.perf_counter() - t0)
            print(method, round(times[method][-1], 2), flush=True)
    memories.close()
    med = {k: float(np.median(v)) for k, v in times.items()}
    row = {"n": args.n, "batch": args.batch, "steps": args.steps, "repeats": args.repeats, "seconds": times,
           "median_seconds": med, "ratio": med["novelty"] / med["plain"],
           "observe_seconds_median": float(np.median(observe)), "torch_threads": torch.get_num_threads()}
    return {"overhead": emit(args, row)}
