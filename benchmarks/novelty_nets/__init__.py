"""Novelty-nets benchmark (issue: novelty nets), protocol of shared/BENCHMARK.md: one module per experiment.

    python -m benchmarks.novelty_nets protocol --device cuda --out docs/benchmarks/novelty
    python -m benchmarks.novelty_nets auc --device cuda --out docs/benchmarks/novelty
    python -m benchmarks.novelty_nets protocol --quick          # CPU smoke run
    python benchmarks/novelty_nets.py WHAT ...                  # the same, the command the docs cite

``protocol``: per class, plain CFG-2 sampling vs novelty guidance on the same seeds (256
samples, 16 per batch, one memory per class), the batch-repulsion-only and the
unrelated-memory ablations, and a second run continuing the same memory.
``auc``: how well a memory tells observed from fresh samples at growing history.
``trajectory``: how well it tells them apart from x̂0 at each sampling step (what guidance sees).
``alignment``: how well distances in each guidance embedder find the evaluation's near-dup pairs.
``overhead``: wall time of novelty-guided vs plain sampling.
``memorization``: a memory pretrained on the training images, against echoing them.
``renoise``: re-noising triggered by the memory vs by an exact kNN oracle over the trajectories.
Metrics use the evaluation embedder's features, never the guidance embedder.

Each experiment is a module with ``run(args) -> dict``; :mod:`.common` holds the shared argument
parser, the sampling config, ROC-AUC, how memories are made (through :mod:`noveltynets.session`)
and the writing of results; :mod:`.__main__` dispatches.
"""

EXPERIMENTS = ("protocol", "auc", "trajectory", "alignment", "overhead", "memorization", "renoise")
