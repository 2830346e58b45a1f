"""The ``noveltynets`` command line: sample, bench, memory, train-model, train-embedder, check-model, minority,
distill, serve, users.

One module per command group: :mod:`.sample`, :mod:`.train`, :mod:`.bench`, :mod:`.memory`, :mod:`.minority`, :mod:`.distill` and :mod:`.serve`;
:mod:`.common` holds what they share and :mod:`.output` the whole-or-nothing output folder."""

from __future__ import annotations

import typer

from .bench import bench, bench_merge
from .distill import distill_app
from .memory import memory_app
from .minority import minority_app
from .sample import sample
from .serve import serve, users_app
from .train import check_model_cmd, train_embedder_cmd, train_model_cmd

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Diffusion sampling that keeps producing samples unlike the ones before.")
# the order here is the order of `noveltynets --help`
app.command("sample")(sample)
app.command("train-model")(train_model_cmd)
app.command("train-embedder")(train_embedder_cmd)
app.command("check-model")(check_model_cmd)
app.command("bench")(bench)
app.command("bench-merge")(bench_merge)
app.add_typer(memory_app, name="memory")
app.add_typer(minority_app, name="minority")
app.add_typer(distill_app, name="distill")
app.command("serve")(serve)
app.add_typer(users_app, name="users")


def main() -> None:
    app()
