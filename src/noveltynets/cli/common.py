"""What the command modules share: error reporting, SIGTERM handling, the cleaning of dead runs' temporary folders,
option checks and options used by several commands."""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import typer

from ..errors import NoveltynetsError


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that it unwinds like Ctrl-C: partial outputs are removed."""


def _on_sigterm(signum, frame):
    raise Terminated()


def friendly(fn):
    """Turn NoveltynetsError (bad input, unusable files) into one line on stderr and exit code 2; SIGINT and SIGTERM
    unwind the command (its temporary output is removed) and exit 130 and 143."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
        try:
            return fn(*args, **kwargs)
        except NoveltynetsError as e:
            _fail(str(e))
        except KeyboardInterrupt as e:
            typer.echo("terminated" if isinstance(e, Terminated) else "interrupted", err=True)
            raise typer.Exit(143 if isinstance(e, Terminated) else 130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return wrapper


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _clean_stale(parent: Path, name: str) -> None:
    """Remove the temporary folders of earlier runs on output ``name`` whose process is gone (killed with SIGKILL, or a
    machine that went down): ``.NAME.PID.*.partial`` and ``.NAME.old-PID``."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:(\d+)\.[A-Za-z0-9_]+\.partial|old-(\d+))")
    for p in parent.glob(f".{glob.escape(name)}.*"):
        m = pattern.fullmatch(p.name)
        pid = int(m.group(1) or m.group(2)) if m else None
        if pid is not None and p.is_dir() and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _device(name: str) -> str:
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise NoveltynetsError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise NoveltynetsError(f"unknown device {name!r}; use cpu or cuda")
    return name


def option_error(e: NoveltynetsError, renames: dict | None = None) -> NoveltynetsError:
    """A config's "batch_size must be ..." as the CLI's "--batch-size must be ..." (``renames``: field -> option name)."""
    field, _, rest = str(e).partition(" ")
    field = (renames or {}).get(field, field)
    return NoveltynetsError(f"--{field.replace('_', '-')} {rest}")


def _check_class(model, klass: int | None) -> None:
    if klass is not None and not 0 <= klass < model.num_classes:
        raise NoveltynetsError(f"unknown class {klass}: this model has classes 0-{model.num_classes - 1}")


def _store(path, read_only: bool = False, must_exist: bool = False):
    """The store at ``path`` (default: the user's). Commands that only read open it read-only, and they and the commands
    that change an existing memory refuse a missing store rather than create an empty one."""
    from ..memory.store import MemoryStore
    return MemoryStore(path, read_only=read_only, create=not must_exist)


# options that several commands declare the same way (same flags, default and help text)
StoreOpt = typer.Option(None, "--store", help="Memory store file (default ~/.cache/noveltynets/memories.sqlite).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu or cuda.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace a non-empty output folder.")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")


def memory_options(options: list[str], flag: str = "--memory-option") -> dict | None:
    """``KEY=VALUE`` items as MemoryConfig fields of their types, checked together (as for a memory of any embedding)
    so that a bad one fails before anything runs."""
    from dataclasses import fields

    from ..memory import MemoryConfig
    from ..spec import convert

    types = {f.name: f.type for f in fields(MemoryConfig) if f.name not in ("dim", "embedder_id", "model_id")}
    out = {}
    for item in options:
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in types:
            raise NoveltynetsError(f"{flag} {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(types))}")
        out[key.strip()] = convert(value.strip(), types[key.strip()], key.strip(), flag)
    if out:
        try:
            MemoryConfig(dim=1024, embedder_id="check", **out)
        except NoveltynetsError as e:
            raise NoveltynetsError(f"{flag}: {e}") from None
    return out or None


def refuse_options_for_existing(store: Path, name: str, flag: str = "--memory-option") -> None:
    """A memory's settings are fixed when it is made: options for one that exists are an error, not silently dropped."""
    from ..memory.store import MemoryStore

    if not Path(store).is_file():
        return
    st = MemoryStore(store, read_only=True)
    try:
        exists = st.exists(name)
    finally:
        st.close()
    if exists:
        raise NoveltynetsError(f"memory {name!r} exists: its settings were fixed when it was made ({flag} is for a new one)")
