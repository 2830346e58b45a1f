"""``python -m benchmarks.novelty_nets WHAT [options]``: run one experiment (see the package docstring)."""

from __future__ import annotations

import importlib
import time

from . import __doc__ as DOC
from .common import parse_args, write_result


def main(argv=None) -> dict:
    args = parse_args(argv, DOC)
    t0 = time.time()
    result = {"args": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)}}
    result.update(importlib.import_module(f"{__package__}.{args.what}").run(args))
    result["wall_seconds"] = time.time() - t0
    write_result(args, result)
    return result


if __name__ == "__main__":
    main()
