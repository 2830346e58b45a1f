"""Does the continued memory's edge over the unrelated control hold as history grows? Per log: near-dup vs history /
precision of cont and unrel pooled over runs 3-4, over runs 5-6 (and on, two runs at a time, as far as the log goes), and
cont's rate over unrel's in each pair.

    python docs/benchmarks/keep/explore/halves.py LOG..."""
import sys

from pooled import load, pool

for log in sys.argv[1:]:
    rows = load(log)
    out = []
    last = max(r["run"] for r in rows)
    for runs in ((a, a + 1) for a in range(3, last, 2)):
        v = {m: pool(rows, m, runs) for m in ("cont", "unrel")}
        if all(n == 128 * len(runs) for _, n, _ in v.values()):
            (kc, nc, pc), (ku, nu, pu) = v["cont"], v["unrel"]
            out.append(f"runs {runs[0]}-{runs[1]}: cont {kc / nc:.3f} / {pc:.3f}, unrel {ku / nu:.3f} / {pu:.3f}, "
                       f"ratio {kc / max(ku, 1e-9):.2f}")
    print(f"{log.split('/')[-1]:22s}", " | ".join(out))
