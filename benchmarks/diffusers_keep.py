"""The keep-sampling protocol through the diffusers-native pipeline against the CLI's (issue 21).

    python benchmarks/diffusers_keep.py --runs 3 --n 64 --steps 20 > docs/benchmarks/diffusers/keep.log

Runs ``noveltynets bench --keep R`` (plain and novelty, class 7) as a user would, then the same protocol
through ``NoveltyDDIMPipeline``: run r on seeds (r−1)·n … r·n−1, one named memory kept in a store across
the runs (``pipe.open_session`` + ``pipe(..., novelty=session)``), each run judged by the bench's judge
against all earlier runs of its method. Prints both tables and the largest difference of any number."""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from noveltynets.bench.methods import parse_method
from noveltynets.bench.runner import Judge
from noveltynets.data import from_uint8, to_uint8
from noveltynets.integrations.diffusers import NoveltyDDIMPipeline

KEYS = ["near_dup", "novelty", "precision", "recall"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--klass", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cli = [str(Path(sys.executable).parent / "noveltynets"), "bench", "--keep", str(args.runs), "--n", str(args.n), "--steps", str(args.steps),
               "--classes", str(args.klass), "-m", "plain", "-m", "novelty", "--out", f"{d}/cli"]
        print("$ noveltynets", " ".join(cli[1:]), flush=True)
        subprocess.run(cli, check=True, stdout=subprocess.DEVNULL)
        rows = [json.loads(x) for x in Path(f"{d}/cli/rows.jsonl").read_text().splitlines()]
        cli_rows = {(r["method"], r["run"]): r for r in rows if r["method"] != "real"}

        pipe = NoveltyDDIMPipeline.from_noveltynets()
        judge = Judge(args.klass)
        pipe_rows = {}
        for method in ("plain", "novelty"):
            cfg = parse_method(method).cfg
            session = (pipe.open_session(klass=args.klass, guidance_scale=cfg, num_inference_steps=args.steps, guide=["novelty"],
                                         memory="keep", store=f"{d}/pipe.sqlite") if method == "novelty" else None)
            history = None
            for r in range(1, args.runs + 1):
                images = pipe(class_labels=args.klass, seeds=range((r - 1) * args.n, r * args.n), num_inference_steps=args.steps,
                              guidance_scale=cfg, novelty=session, batch_size=16, output_type="pt").images
                images = from_uint8(to_uint8(images))  # judged as the user gets them, as the bench does
                pipe_rows[(method, r)] = judge(images, history)
                history = images if history is None else torch.cat([history, images])
            if session is not None:
                session.close()
    worst = 0.0
    print(f"\nclass {args.klass}, {args.runs} runs of {args.n}, {args.steps} steps; near-dup vs history / novelty / precision / recall")
    print("| method | run | CLI (`noveltynets bench --keep`) | pipeline (`NoveltyDDIMPipeline`) |")
    print("|---|---|---|---|")
    for (method, r), c in sorted(cli_rows.items(), key=lambda kv: (kv[0][0] != "plain", kv[0][1])):
        p = pipe_rows[(method, r)]
        worst = max(worst, *(abs(float(c[k]) - float(p[k])) for k in KEYS))
        fmt = lambda m: " / ".join(f"{float(m[k]):.3f}" for k in KEYS)
        print(f"| {method} | {r} | {fmt(c)} | {fmt(p)} |")
    print(f"\nlargest difference of any number: {worst:.2e}")


if __name__ == "__main__":
    main()
