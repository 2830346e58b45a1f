"""The keep protocol's settings side by side as points (near-dup vs history, precision), runs FIRST.. pooled, per method:
does the continued memory reach a lower near-dup rate than the controls at the same precision, across settings?

    python docs/benchmarks/keep/explore/frontier.py [FIRST] LOG...   (one class per call)"""
import json
import sys

first, logs = (int(sys.argv[1]), sys.argv[2:]) if sys.argv[1].isdigit() else (3, sys.argv[1:])
print(f"{'log':28s} {'method':6s} {'runs':>4s} {'near-dup':>9s} {'precision':>9s}")
for log in logs:
    rows = [json.loads(line) for line in open(log) if line.strip()]
    for m in ("cont", "unrel", "fresh"):
        mine = [r for r in rows if r["method"] == m and r["run"] >= first]
        if mine:
            nd = sum(r["near_dup"] * 128 for r in mine) / (128 * len(mine))
            pr = sum(r["precision"] for r in mine) / len(mine)
            print(f"{log.split('/')[-1]:28s} {m:6s} {len(mine):4d} {nd:9.3f} {pr:9.3f}")
