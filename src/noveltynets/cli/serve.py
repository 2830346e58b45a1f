"""``noveltynets serve`` (the HTTP service and its web page) and ``noveltynets users add | list | remove``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NoveltynetsError
from .common import friendly, memory_options

users_app = typer.Typer(no_args_is_help=True, help="The service's users: each gets a token (shown once, kept hashed).")

STORE_HELP = "The memory store (the service keeps its users, jobs and images beside it, in STORE.service.sqlite)."


def _store(store: Optional[Path]) -> Path:
    from ..memory.store import default_store_path

    return Path(store) if store is not None else default_store_path()


@friendly
def serve(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
          port: int = typer.Option(8000, "--port", help="Port to listen on."),
          store: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP),
          workers: int = typer.Option(2, "--workers", help="Jobs that run at once (on different memories)."),
          max_n: int = typer.Option(64, "--max-n", help="The most images one request may ask for."),
          max_queue: int = typer.Option(32, "--max-queue", help="Pending jobs before new requests get 429."),
          service_memory_option: List[str] = typer.Option([], "--service-memory-option", help="A setting KEY=VALUE (any "
                                                          "MemoryConfig field) of the service-wide memories this service "
                                                          "makes, e.g. codes_capacity=1000000 to recall 10^6 samples of "
                                                          "each class; repeatable. Ones already in the store keep theirs.")):
    """Run the HTTP service: POST /v1/generate, jobs, images, memories, and the web page at /."""
    if not 0 < port < 65536:
        raise NoveltynetsError(f"--port must be 1-65535, got {port}")
    if workers < 1 or max_n < 1 or max_queue < 1:
        raise NoveltynetsError("--workers, --max-n and --max-queue must be at least 1")
    service_memory = memory_options(service_memory_option, "--service-memory-option")
    import uvicorn

    from ..service.app import create_app

    app = create_app(_store(store), workers=workers, max_n=max_n, max_pending=max_queue, service_memory=service_memory)
    typer.echo(f"noveltynets service on http://{host}:{port}/ (store {_store(store)}; "
               f"{app.state.service.interrupted} unfinished jobs of an earlier run marked interrupted)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@users_app.command("add")
@friendly
def users_add(name: str, store: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP)):
    """Add a user and print their token (once: only its hash is kept)."""
    from ..service.db import ServiceDB

    db = ServiceDB(_store(store))
    try:
        typer.echo(db.add_user(name))
    finally:
        db.close()


@users_app.command("list")
@friendly
def users_list(store: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP)):
    """The users, one a line."""
    from ..service.db import ServiceDB

    db = ServiceDB(_store(store))
    try:
        for u in db.users():
            typer.echo(u["name"])
    finally:
        db.close()


@users_app.command("remove")
@friendly
def users_remove(name: str, store: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP)):
    """Remove a user: their token stops working (their memories and images stay in the store)."""
    from ..service.db import ServiceDB

    db = ServiceDB(_store(store))
    try:
        db.remove_user(name)
    finally:
        db.close()
