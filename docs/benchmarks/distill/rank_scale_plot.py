"""Within-batch Vendi and near-dup against precision, per method, means over classes 1, 3, 7: the rank-guidance
run (rank_scale/frontier.json) beside the particle row of the first run (frontier/frontier.json: the same script,
seeds and plain rows). Run from the repository root: python docs/benchmarks/distill/rank_scale_plot.py"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

D = Path("docs/benchmarks/distill")
means = json.loads((D / "rank_scale/frontier.json").read_text())["means"]
first = json.loads((D / "frontier/frontier.json").read_text())["means"]
assert abs(first["plain"]["within_batch_vendi"] - means["plain"]["within_batch_vendi"]) < 1e-6  # same seeds, same plain
means["particle:scale=3 (first run)"] = first["particle:scale=3"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for name, m in means.items():
    for ax, key in zip(axes, ("within_batch_vendi", "within_batch_near_dup")):
        ax.plot(m["precision"], m[key], "o")
        ax.annotate(name.replace("distilled ranks 1-16", "ranks 1-16"), (m["precision"], m[key]), fontsize=7)
for ax, title in zip(axes, ("Vendi within a batch of 16", "near-dup within a batch of 16")):
    ax.set_xlabel("precision")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(D / "rank_scale/scale_frontier.png", dpi=110)
print(D / "rank_scale/scale_frontier.png")
