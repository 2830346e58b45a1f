"""``python benchmarks/novelty_nets.py WHAT [options]``: the command the docs cite, now a thin wrapper of
``python -m benchmarks.novelty_nets WHAT [options]`` (the package benchmarks/novelty_nets/, one module per
experiment; imports of ``benchmarks.novelty_nets`` find the package, never this file)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, so `benchmarks` is a package
    from benchmarks.novelty_nets.__main__ import main

    main()
