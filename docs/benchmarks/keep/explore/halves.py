"""Does the continued memory's edge over the unrelated control hold as history grows? Per log: near-dup vs history /
precision of cont and unrel pooled over runs 3-4 and over runs 5-6, and cont's rate over unrel's in each half.

    python docs/benchmarks/keep/explore/halves.py LOG..."""
import json
import sys

for log in sys.argv[1:]:
    rows = [json.loads(line) for line in open(log) if line.strip()]
    out = []
    for runs in ((3, 4), (5, 6)):
        v = {}
        for m in ("cont", "unrel"):
            mine = [r for r in rows if r["method"] == m and r["run"] in runs]
            if len(mine) == len(runs):
                v[m] = (sum(r["near_dup"] for r in mine) / len(mine), sum(r["precision"] for r in mine) / len(mine))
        if len(v) == 2:
            out.append(f"runs {runs[0]}-{runs[1]}: cont {v['cont'][0]:.3f} / {v['cont'][1]:.3f}, unrel {v['unrel'][0]:.3f} / "
                       f"{v['unrel'][1]:.3f}, ratio {v['cont'][0] / max(v['unrel'][0], 1e-9):.2f}")
    print(f"{log.split('/')[-1]:22s}", " | ".join(out))
