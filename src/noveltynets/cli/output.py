"""Output folders that appear whole or not at all: a run writes into a temporary folder beside ``--out`` and moves it
into place only when everything is written."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import NoveltynetsError
from .common import _clean_stale


def _prepare_out(out: Path, overwrite: bool) -> Path:
    """Check that ``out`` can be written; return a fresh temporary folder beside it."""
    here, target = Path.cwd().resolve(), out.expanduser().resolve()
    if target == here or target in here.parents or target == Path.home().resolve():
        raise NoveltynetsError(f"--out {out} is the current folder, one above it or the home folder, which a run would replace "
                               "as a whole: name a new or empty folder")
    if out.exists() and not out.is_dir():
        raise NoveltynetsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise NoveltynetsError(f"output folder {out} is not empty (pass --overwrite to replace it)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(parent, out.name)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=parent))
    except OSError as e:
        raise NoveltynetsError(f"cannot create the output folder {out} in {parent}: {e.strerror or e}") from None


def _commit_out(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old ``out`` is only removed once the new one is complete."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """Write an output folder whole or not at all::

        with atomic_output(out, overwrite) as tmp:
            ...  # write every file into tmp

    On entry ``out`` is checked (not the current folder, one above it or the home folder; not a file; empty unless
    ``overwrite``), the temporary folders that dead runs left beside it are removed, and a fresh ``.NAME.PID.*.partial``
    folder is made there and yielded. When the block completes, that folder replaces ``out`` (an old ``out`` is removed
    only once the new one is in place); when it raises (an error, Ctrl-C, SIGTERM), the temporary folder is removed and
    ``out`` is left as it was."""
    tmp = _prepare_out(out, overwrite)
    try:
        yield tmp
        _commit_out(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _refuse_inside(out: Path, path: Path, what: str) -> None:
    """``path`` (e.g. the memory store) must not lie inside the output folder, which a run replaces as a whole."""
    p, o = Path(path).expanduser().resolve(), Path(out).expanduser().resolve()
    if p == o or o in p.parents:
        raise NoveltynetsError(f"{what} {path} lies inside --out {out}, which the run replaces as a whole: "
                               f"keep it outside the output folder")
