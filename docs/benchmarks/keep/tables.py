"""Tables and target checks of a keep benchmark (``noveltynets bench --keep``), from its results.json or rows.jsonl.

    python docs/benchmarks/keep/tables.py docs/benchmarks/keep/cpu_6x128/results.json > docs/benchmarks/keep/cpu_6x128/tables.md
    python docs/benchmarks/keep/tables.py --headline docs/benchmarks/keep/cpu_6x128/results.json   # the README's table
    python docs/benchmarks/keep/tables.py A/results.json B/results.json   # several: the first row of a class/setting/run wins
    python docs/benchmarks/keep/tables.py --novelty memory_stop=0.95,clean=0.05 ...   # the continued memory and its
                                  # controls with these settings (novelty:SETTINGS, novelty:memory=fresh,SETTINGS, ...)
    python docs/benchmarks/keep/tables.py --spell A/results.json B/results.json   # the memory against every SPELL radius

Targets (issue 18): from run 3 on, the continued memory's near-dup rate ≤ 0.7× the fresh and the unrelated
controls' at precision within 0.02 of them and adherence ≥ 0.95; in every run ≤ 2× the real-data floor; ≤ 1.1×
SPELL's (repel with its full history) at precision at least as high; first run ≤ 1.3× plain wall time, later ≤ 1.15×.
"""

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

NOVELTY, FRESH, UNREL = "novelty", "novelty:memory=fresh", "novelty:memory=unrelated"


def use_settings(extra: str) -> None:
    """Judge the continued memory and its controls at ``extra`` (method settings after novelty's memory=)."""
    global NOVELTY, FRESH, UNREL
    NOVELTY, FRESH, UNREL = f"novelty:{extra}", f"novelty:memory=fresh,{extra}", f"novelty:memory=unrelated,{extra}"


def load(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())["rows"]


def load_all(paths: list[Path]) -> list[dict]:
    """Rows of several keep benchmarks on the same protocol (e.g. more methods run later on one class): the first row of
    each (class, setting, run) wins, so plain and the real floor, measured again, keep their first values."""
    rows, seen = [], set()
    for path in paths:
        for r in load(path):
            key = (str(r["class"]), r["setting"], r["run"])
            if key not in seen:
                seen.add(key)
                rows.append(r)
    return rows


def beats_spell(a: dict, b: dict) -> bool:
    """The issue's check of run a (the memory) against run b (SPELL): ≤ 1.1× its near-dup rate at precision at least as high."""
    return a["near_dup"] <= 1.1 * b["near_dup"] and a["precision"] >= b["precision"]


def spell_label(settings) -> str | None:
    return next((s for s in settings if s.startswith("repel")), None)


def index(rows: list[dict]):
    """(class, setting) -> run -> row; the classes, the methods' settings and the runs, in order of appearance."""
    by = defaultdict(dict)
    for r in rows:
        by[str(r["class"]), r["setting"]][r["run"]] = r
    classes = list(dict.fromkeys(str(r["class"]) for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows if r["method"] != "real"))
    return by, classes, settings, sorted({r["run"] for r in rows})


def headline(rows: list[dict]) -> None:
    """One table for the README: near-dup rate per run for every class and setting, precision's range beside it."""
    by, classes, settings, runs = index(rows)
    settings = ["real images"] + settings
    print("| class | setting | " + " | ".join(f"run {r}" for r in runs) + " | precision (min – max) |")
    print("|---|---|" + "---|" * (len(runs) + 1))
    for c in classes:
        for s in settings:
            rr = by.get((c, s), {})
            if not rr:
                continue  # not measured on this class
            cells = " | ".join(f"{rr[r]['near_dup']:.3f}" if r in rr else "—" for r in runs)
            prec = [x["precision"] for x in rr.values()]
            name = f"**`{s}`**" if s == NOVELTY else (s if s == "real images" else f"`{s}`")
            print(f"| {c} | {name} | {cells} | {min(prec):.3f} – {max(prec):.3f} |")


def main(paths: list[Path]) -> None:
    by, classes, settings, runs = index(load_all(paths))
    fmt = lambda r: "—" if r is None else (f"{r['near_dup']:.3f} / {r['precision']:.2f}" if "precision" in r else "—")
    checks, all_settings = [], settings
    for c in classes:
        settings = [s for s in all_settings if by.get((c, s))]  # the settings measured on this class
        print(f"\n### class {c}: near-dup rate vs all history / precision, per run\n")
        print("| setting | " + " | ".join(f"run {r}" for r in runs) + " |")
        print("|---|" + "---|" * len(runs))
        real = by.get((c, "real images"), {})
        print("| real images (floor) | " + " | ".join(f"{real[r]['near_dup']:.3f}" if r in real else "—" for r in runs) + " |")
        for s in settings:
            print(f"| `{s}` | " + " | ".join(fmt(by[c, s].get(r)) for r in runs) + " |")
        print(f"\nclass {c}: adherence, history bytes, step ms, update ms (its learning part), cost ratio (run 1 … {runs[-1]})\n")
        print("| setting | adherence (min) | history MB | step ms | update ms | cost vs plain | modes at the end |")
        print("|---|---|---|---|---|---|---|")
        for s in settings:
            rr = [by[c, s][r] for r in runs if r in by[c, s]]
            mb = ", ".join(f"{x['history_bytes'] / 1e6:.1f}" for x in rr)
            step = ", ".join(f"{x['step_ms']:.0f}" for x in rr)
            upd = ", ".join(f"{x['update_ms']:.0f}" + (f" ({x['learn_ms']:.0f})" if x.get("learn_ms") else "") for x in rr)
            cost = ", ".join(f"{x['cost_ratio']:.2f}" for x in rr)
            print(f"| `{s}` | {min(x['adherence'] for x in rr):.3f} | {mb} | {step} | {upd} | {cost} | {rr[-1]['modes']} |")
        if real:
            print(f"| real images | — | — | — | — | — | {real[max(real)]['modes']} (after {max(real)} runs) |")
        nov, fresh, unrel, spell = by[c, NOVELTY], by.get((c, FRESH), {}), by.get((c, UNREL), {}), spell_label(settings)
        for r in runs:
            if r not in nov:
                continue
            a = nov[r]
            if r >= 3:
                for name, ctl in (("fresh", fresh), ("unrelated", unrel)):
                    if r in ctl:
                        b = ctl[r]
                        ok = a["near_dup"] <= 0.7 * b["near_dup"] and a["precision"] >= b["precision"] - 0.02 and a["adherence"] >= 0.95
                        checks.append((c, r, f"≤ 0.7× {name}", ok, f"{a['near_dup']:.3f} vs {b['near_dup']:.3f}, precision "
                                       f"{a['precision']:.3f} vs {b['precision']:.3f}, adherence {a['adherence']:.3f}"))
            if r in real:
                checks.append((c, r, "≤ 2× real", a["near_dup"] <= 2 * real[r]["near_dup"],
                               f"{a['near_dup']:.3f} vs floor {real[r]['near_dup']:.3f}"))
            if spell and r in by[c, spell]:
                b = by[c, spell][r]
                checks.append((c, r, "≤ 1.1× SPELL, precision ≥", beats_spell(a, b),
                               f"{a['near_dup']:.3f} vs {b['near_dup']:.3f}, precision {a['precision']:.3f} vs {b['precision']:.3f}"))
            limit = 1.3 if r == 1 else 1.15
            checks.append((c, r, f"cost ≤ {limit}×", a["cost_ratio"] <= limit, f"{a['cost_ratio']:.2f}× plain"))
    print(f"\n### Targets for `{NOVELTY}` (the continued memory)\n")
    print("| class | run | target | met | numbers |")
    print("|---|---|---|---|---|")
    for c, r, name, ok, text in checks:
        print(f"| {c} | {r} | {name} | {'yes' if ok else '**no**'} | {text} |")
    met = sum(ok for *_, ok, _ in checks)
    print(f"\n{met} of {len(checks)} checks met.")
    pooled(by, classes, all_settings)


def rate_ratio(a: int, n_a: int, b: int, n_b: int) -> tuple[float, float, float]:
    """(a/n_a) / (b/n_b) and its 95% interval (Katz's log method; 0.5 added to empty counts)."""
    a_, b_ = max(a, 0.5), max(b, 0.5)
    ratio = (a_ / n_a) / (b_ / n_b)
    se = math.sqrt(max(1 / a_ - 1 / n_a + 1 / b_ - 1 / n_b, 0.0))
    return ratio, ratio * math.exp(-1.96 * se), ratio * math.exp(1.96 * se)


def pool(by, c, s, first: int = 1) -> tuple[int, int, float] | None:
    """Class c's setting s over runs ``first``..: (near-duplicates, samples, mean precision), or None if not run."""
    rr = [x for r, x in by.get((c, s), {}).items() if r >= first]
    if not rr:
        return None
    return sum(round(x["near_dup"] * x["n"]) for x in rr), sum(x["n"] for x in rr), sum(x["precision"] for x in rr) / len(rr)


def pooled(by, classes, settings, first: int = 3) -> None:
    """Near-duplicates counted over runs ``first``.. together: one run of 128 has ~0.025 of binomial noise at these
    rates, as large as the differences the per-run targets ask about; pooled, the ratio to each control has an interval."""
    print(f"\n### Runs {first} on, pooled: near-duplicates / samples, and the continued memory's ratio to each setting\n")
    print("| class | setting | near-dups / samples | rate | `novelty` ÷ this (95% interval) | precision (mean) |")
    print("|---|---|---|---|---|---|")
    for c in classes:
        counts = {s: p for s in settings if (p := pool(by, c, s, first))}
        if NOVELTY not in counts:
            continue
        a, n_a, _ = counts[NOVELTY]
        for s, (b, n_b, prec) in counts.items():
            vs = "—" if s == NOVELTY else "{:.2f} ({:.2f} – {:.2f})".format(*rate_ratio(a, n_a, b, n_b))
            print(f"| {c} | `{s}` | {b} / {n_b} | {b / n_b:.3f} | {vs} | {prec:.3f} |")


def spell(rows: list[dict]) -> None:
    """The continued memory against SPELL at every radius measured (a frontier: one radius cannot be fair to both):
    every run pooled, and per run whether the memory is ≤ 1.1× as near-duplicated at precision at least as high."""
    by, classes, settings, runs = index(rows)
    radii = sorted((s for s in settings if s.startswith("repel")), key=lambda s: float(s.split("radius=")[1].split(",")[0]))
    pooled(by, classes, [NOVELTY] + radii, first=1)
    print("\n### Per run: the memory ≤ 1.1× SPELL's near-dup rate at precision at least as high (memory vs SPELL)\n")
    print("| class | SPELL | " + " | ".join(f"run {r}" for r in runs) + " | met |")
    print("|---|---|" + "---|" * (len(runs) + 1))
    for c in classes:
        nov = by.get((c, NOVELTY), {})
        for s in (s for s in radii if by.get((c, s))):
            cells, met = [], 0
            for r in runs:
                a, b = nov.get(r), by[c, s].get(r)
                if a is None or b is None:
                    cells.append("—")
                    continue
                ok = beats_spell(a, b)
                met += ok
                cells.append(("**yes** " if ok else "") + f"{a['near_dup']:.3f}/{a['precision']:.2f} vs {b['near_dup']:.3f}/{b['precision']:.2f}")
            print(f"| {c} | `{s}` | " + " | ".join(cells) + f" | {met} |")
    print("\n### SPELL at the memory's precision (every run pooled; its rate interpolated linearly between the two radii "
          "whose precision brackets the memory's)\n")
    print("| class | memory: rate / precision | SPELL's radii between | SPELL's rate there | memory ÷ SPELL |")
    print("|---|---|---|---|---|")
    for c in classes:
        if not (mine := pool(by, c, NOVELTY)):
            continue
        rate, prec = mine[0] / mine[1], mine[2]
        pts = sorted((p, k / n, s) for s in radii if (q := pool(by, c, s)) for k, n, p in [q])
        if not pts:
            continue  # SPELL not run on this class
        pair = next(((a, b) for a, b in zip(pts, pts[1:]) if a[0] <= prec <= b[0]), None)
        if pair is None:
            print(f"| {c} | {rate:.3f} / {prec:.3f} | none: SPELL's precision spans {pts[0][0]:.3f} – {pts[-1][0]:.3f} | — | — |")
            continue
        (p0, r0, s0), (p1, r1, s1) = pair
        at = r0 + (r1 - r0) * (prec - p0) / (p1 - p0)
        print(f"| {c} | {rate:.3f} / {prec:.3f} | `{s0}` ({r0:.3f} / {p0:.3f}), `{s1}` ({r1:.3f} / {p1:.3f}) | {at:.3f} | "
              f"{rate / at:.2f}× |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "--novelty":
        use_settings(args[1])
        args = args[2:]
    if args[0] == "--headline":
        headline(load_all([Path(p) for p in args[1:]]))
    elif args[0] == "--spell":
        spell(load_all([Path(p) for p in args[1:]]))
    else:
        main([Path(p) for p in args])
