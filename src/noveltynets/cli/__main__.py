"""``python -m noveltynets.cli``, the same as the ``noveltynets`` console script."""

from . import main

main()
