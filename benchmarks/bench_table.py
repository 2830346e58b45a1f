"""Markdown tables from a ``noveltynets bench`` results.json (or bench rows printed as ``row {json}`` lines).

    python benchmarks/bench_table.py bench/results.json
    grep '^row' bench.log | python benchmarks/bench_table.py -
"""

from __future__ import annotations

import argparse
import json
import sys

from noveltynets.bench.runner import mean_rows

MEAN_KEYS = [("near_dup", "near-dup"), ("precision", "precision"), ("recall", "recall"), ("adherence", "adherence"),
             ("vendi", "Vendi"), ("cost_ratio", "cost ×"), ("generated_per_kept", "made/kept")]


def load_rows(path: str) -> list[dict]:
    if path == "-":
        return [json.loads(line[4:]) for line in sys.stdin if line.startswith("row ")]
    return json.load(open(path))["rows"]


def tables(rows: list[dict]) -> str:
    classes = list(dict.fromkeys(r["class"] for r in rows))
    means = mean_rows(rows)
    plain = next((m for m in means if m["setting"] == "plain"), None)
    out = [f"Mean over classes {', '.join(map(str, classes))} (near-dup ÷ plain in brackets):", "",
           "| setting | " + " | ".join(h for _, h in MEAN_KEYS) + " |", "|---" * (len(MEAN_KEYS) + 1) + "|"]
    for m in means:
        cells = []
        for k, _ in MEAN_KEYS:
            v = f"{m[k]:.3f}" if k not in ("cost_ratio", "generated_per_kept") else f"{m[k]:.2f}"
            if k == "near_dup" and plain and plain[k] > 0:
                v += f" ({m[k] / plain[k]:.2f})"
            cells.append(v)
        out.append(f"| `{m['setting']}` | " + " | ".join(cells) + " |")
    out += ["", "Per class, near-dup / precision:", "",
            "| setting | " + " | ".join(f"class {c}" for c in classes) + " |", "|---" * (len(classes) + 1) + "|"]
    for m in means:
        cells = []
        for c in classes:
            r = next((r for r in rows if r["class"] == c and r["setting"] == m["setting"]), None)
            cells.append(f"{r['near_dup']:.3f} / {r['precision']:.3f}" if r else "—")
        out.append(f"| `{m['setting']}` | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="results.json, or - for 'row {json}' lines on stdin")
    print(tables(load_rows(ap.parse_args().results)))
