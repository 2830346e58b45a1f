"""Runs FIRST.. pooled, from keep_explore.py's rows: near-dups / samples per method, and cont's rate ratio to each
control with its 95% interval (tables.py's rate_ratio), with mean precision per method and the per-run rows.

    python docs/benchmarks/keep/explore/pooled.py logs/stop08_c7.jsonl [FIRST]"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tables import rate_ratio  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
first = int(sys.argv[2]) if len(sys.argv) > 2 else 3
methods = sorted({r["method"] for r in rows if r["method"] != "real"}, key=lambda m: (m != "cont", m))
for m in methods + ["real"]:
    mine = sorted((r for r in rows if r["method"] == m), key=lambda r: r["run"])
    print(f"{m:6s}", " ".join(f"{r['near_dup']:.3f}" + (f"/{r['precision']:.3f}" if "precision" in r else "") for r in mine))
pool = {}
for m in methods:
    mine = [r for r in rows if r["method"] == m and r["run"] >= first]
    n = 128 * len(mine)
    pool[m] = (round(sum(r["near_dup"] * 128 for r in mine)), n, sum(r["precision"] for r in mine) / max(1, len(mine)))
    print(f"runs {first}+ {m:6s} near-dups {pool[m][0]}/{n} = {pool[m][0] / max(1, n):.3f}, precision {pool[m][2]:.3f}")
if "cont" in pool:
    for m in methods:
        if m != "cont" and pool[m][1] and pool["cont"][1]:
            r, lo, hi = rate_ratio(pool["cont"][0], pool["cont"][1], pool[m][0], pool[m][1])
            print(f"cont / {m}: {r:.2f}x (95% {lo:.2f}-{hi:.2f})")
