"""Samples per second of `noveltynets sample --workers N` (Ray, one shared novelty memory) for N = 1, 2, ...

    python benchmarks/distributed_throughput.py --workers 1 2 --n 64 --steps 20     # the README's figures

Each N samples the same seeds of one class with novelty guidance and a named memory (a new one per N) on a local Ray
of N CPUs, one torch thread per worker; the clock runs from the first batch given to the last one learnt (the workers'
start-up and the memory's creation are not counted). Prints one JSON line per N."""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from noveltynets.distributed import open_distributed, start_workers  # noqa: E402
from noveltynets.memory.store import MemoryStore  # noqa: E402
from noveltynets.models import load_model  # noqa: E402
from noveltynets.sampling import SamplingConfig  # noqa: E402


def measure(model, workers: list, config: SamplingConfig, n: int, store: Path, guide=("novelty",)) -> dict:
    """One run of ``n`` seeds on ``workers`` (started :class:`SamplerWorker` actors) with ``guide``, and a new memory
    in ``store`` if a guidance term keeps one."""
    name = f"throughput-{len(workers)}" if "novelty" in " ".join(guide) else None
    with open_distributed(model, config, list(guide), memory=name, store=store, workers=workers) as session:
        t0 = time.perf_counter()
        run = session.sample(range(n))
        wall = time.perf_counter() - t0
    return {"workers": len(workers), "n": n, "steps": config.steps, "batch_size": config.batch_size, "guide": list(guide),
            "wall_s": round(wall, 2), "samples_per_s": round(n / wall, 3), "worker_s": round(run.seconds, 2),
            "rows_in_store": MemoryStore(store).count_samples(name) if name else None}


def main(argv=None) -> None:
    import ray

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--class", dest="klass", type=int, default=7)
    args = ap.parse_args(argv)
    model, config = load_model(), SamplingConfig(klass=args.klass, steps=args.steps, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as d:
        for n_workers in args.workers:
            ray.init(num_cpus=n_workers, include_dashboard=False, log_to_driver=False)
            try:
                print(json.dumps(measure(model, start_workers(model, n_workers), config, args.n, Path(d) / "m.sqlite")), flush=True)
            finally:
                ray.shutdown()


if __name__ == "__main__":
    main()
