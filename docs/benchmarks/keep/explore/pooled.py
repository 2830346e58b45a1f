"""Runs FIRST.. pooled, from keep_explore.py's rows: near-dups / samples per method, and cont's rate ratio to each
control with its 95% interval (tables.py's rate_ratio), with mean precision per method, cont's precision minus each control's with its 95% interval (binomial, normal
approximation) and the per-run rows. Several logs (e.g. two draws of one setting on disjoint seeds) are pooled together.
``load`` and ``pool`` are also frontier.py's and halves.py's.

    python docs/benchmarks/keep/explore/pooled.py logs/stop08_c7.jsonl [MORE.jsonl ...] [FIRST]"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tables import rate_ratio  # noqa: E402


def load(log: str) -> list[dict]:
    return [json.loads(line) for line in open(log) if line.strip()]


def pool(rows: list[dict], method: str, runs) -> tuple[int, int, float]:
    """(near-dups, samples, mean precision) of ``method`` over the runs in ``runs``, 128 samples a run."""
    mine = [r for r in rows if r["method"] == method and r["run"] in runs]
    return round(sum(r["near_dup"] * 128 for r in mine)), 128 * len(mine), sum(r["precision"] for r in mine) / max(1, len(mine))


def precision_se(pooled: tuple[int, int, float]) -> float:
    """The binomial standard error of a pooled precision (share of its samples inside the real manifold)."""
    _, n, p = pooled
    return (p * (1 - p) / max(1, n)) ** 0.5


def main():
    args = sys.argv[1:]
    first = int(args.pop()) if args[-1].isdigit() else 3
    rows = [row for log in args for row in load(log)]
    methods = sorted({r["method"] for r in rows if r["method"] != "real"}, key=lambda m: (m != "cont", m))
    for m in methods + ["real"]:
        mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["run"])
        print(f"{m:6s}", " ".join(f"{r['near_dup']:.3f}" + (f"/{r['precision']:.3f}" if "precision" in r else "") for r in mine))
    later = range(first, 1 + max(r["run"] for r in rows))
    pools = {m: pool(rows, m, later) for m in methods}
    for m, (k, n, prec) in pools.items():
        print(f"runs {first}+ {m:6s} near-dups {k}/{n} = {k / max(1, n):.3f}, precision {prec:.3f}")
    if "cont" in pools:
        for m in methods:
            if m != "cont" and pools[m][1] and pools["cont"][1]:
                r, lo, hi = rate_ratio(pools["cont"][0], pools["cont"][1], pools[m][0], pools[m][1])
                d, se = pools["cont"][2] - pools[m][2], (precision_se(pools["cont"]) ** 2 + precision_se(pools[m]) ** 2) ** 0.5
                print(f"cont / {m}: {r:.2f}x (95% {lo:.2f}-{hi:.2f}); precision cont - {m}: {d:+.3f} "
                      f"(95% {d - 1.96 * se:+.3f} to {d + 1.96 * se:+.3f})")


if __name__ == "__main__":
    main()
