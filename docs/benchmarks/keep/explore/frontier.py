"""The keep protocol's settings side by side as points (near-dup vs history, precision), runs FIRST.. pooled, per method:
does the continued memory reach a lower near-dup rate than the controls at the same precision, across settings?

    python docs/benchmarks/keep/explore/frontier.py [FIRST] LOG...   (one class per call)"""
import sys

from pooled import load, pool

first, logs = (int(sys.argv[1]), sys.argv[2:]) if sys.argv[1].isdigit() else (3, sys.argv[1:])
print(f"{'log':28s} {'method':6s} {'runs':>4s} {'near-dup':>9s} {'precision':>9s}")
for log in logs:
    rows = load(log)
    for m in ("cont", "unrel", "fresh"):
        k, n, prec = pool(rows, m, range(first, 1 + max(r["run"] for r in rows)))
        if n:
            print(f"{log.split('/')[-1]:28s} {m:6s} {n // 128:4d} {k / n:9.3f} {prec:9.3f}")
