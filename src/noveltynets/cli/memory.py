"""``noveltynets memory ...``: list, show, reset, delete, export, import and pretrain the memories in a store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import NoveltynetsError
from .common import StoreOpt, _check_class, _device, _store, friendly, memory_options, refuse_options_for_existing

memory_app = typer.Typer(no_args_is_help=True, help="Manage novelty memories in a store.")


@memory_app.command("list")
@friendly
def memory_list(store: Optional[Path] = StoreOpt) -> None:
    """One line per history: name, kind, scope, samples seen, embedder, model."""
    st = _store(store, read_only=True)
    for name in st.names():
        try:
            i = st.info(name)
            typer.echo(f"{i.name}\t{i.kind}\t{i.scope}\t{i.n_seen} seen\t{i.embedder_id}\t{i.model_id}")
        except Exception as e:  # one damaged row must not hide the others
            typer.echo(f"{name}\t(unreadable: {e})")


@memory_app.command("show")
@friendly
def memory_show(name: str, store: Optional[Path] = StoreOpt) -> None:
    """Everything about one memory or history, as JSON."""
    from dataclasses import asdict
    st = _store(store, read_only=True)
    info = asdict(st.info(name))
    mem, _ = st.load(name)
    info["samples_recorded"] = st.count_samples(name)
    if mem.kind == "novelty":
        info.update(replay_size=len(mem.replay), reference_negatives=len(mem.negatives), train_steps=mem.train_steps,
                    recall_head="sketch" if mem.sketch or mem.sketch_full else "codes" if mem.codes else
                    "net" if mem.recall_net else "smooth")
        if mem.codes is not None:  # rows kept as they are until the codebooks train, codes after
            info.update(codes_stored=mem.codes.n_stored, codes_trained=mem.codes.trained)
    typer.echo(json.dumps(info, indent=2))


@memory_app.command("reset")
@friendly
def memory_reset(name: str, store: Optional[Path] = StoreOpt) -> None:
    """Forget a memory's history (keeps its settings and reference negatives)."""
    _store(store, must_exist=True).reset(name)
    typer.echo(f"memory {name!r} reset")


@memory_app.command("delete")
@friendly
def memory_delete(name: str, store: Optional[Path] = StoreOpt) -> None:
    _store(store, must_exist=True).delete(name)
    typer.echo(f"memory {name!r} deleted")


@memory_app.command("export")
@friendly
def memory_export(name: str, path: Path, store: Optional[Path] = StoreOpt) -> None:
    """Write one memory (state and sample records) to a standalone file."""
    _store(store, read_only=True).export(name, path)
    typer.echo(f"memory {name!r} exported to {path}")


@memory_app.command("import")
@friendly
def memory_import(path: Path, name: Optional[str] = typer.Option(None, "--name", help="Import under another name."),
                  store: Optional[Path] = StoreOpt) -> None:
    """Add the memory in an exported file to the store."""
    if not path.is_file():
        raise NoveltynetsError(f"no such file {path}")
    typer.echo(f"memory {_store(store).import_(path, name)!r} imported")


@memory_app.command("pretrain")
@friendly
def memory_pretrain(
    name: str,
    from_dataset: bool = typer.Option(False, "--from-dataset", help="Teach the memory the training images."),
    klass: Optional[int] = typer.Option(None, "--class", "-c", help="Only this digit's training images."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Default: an existing memory's own, else pooled-pixels:32."),
    epochs: int = typer.Option(20, "--epochs", help="Passes over the training images."),
    model: Optional[Path] = typer.Option(None, "--model"),
    steps: int = typer.Option(50, "--steps", help="Steps of the reference pool's samples."),
    pool_size: int = typer.Option(512, "--pool-size"),
    memory_option: List[str] = typer.Option([], "--memory-option", help="A new memory's setting KEY=VALUE (any MemoryConfig "
                                            "field, e.g. codes_capacity=1000000 for a service-wide memory that will recall "
                                            "10^6 samples); repeatable."),
    store: Optional[Path] = StoreOpt,
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Create a service-wide memory that has "seen" the training set, so guidance with it avoids echoing training data."""
    import torch

    from ..data import load_split
    from ..memory.pretrain import pretrain
    from ..models import load_model
    from ..progress import progress_bar
    from ..sampling import SamplingConfig
    from ..session import open_session

    if not from_dataset:
        raise NoveltynetsError("nothing to pretrain from: pass --from-dataset")
    memory_config = memory_options(memory_option)
    if memory_config:
        from ..memory.store import default_store_path

        refuse_options_for_existing(store or default_store_path(), name)
    dev = _device(device)
    m = load_model(model, dev)
    _check_class(m, klass)
    config = SamplingConfig(klass=klass, cfg=2.0, steps=steps, device=dev)  # the reference pool's samples
    session = open_session(m, config, ["novelty:trajectory=false"], memory=name, store=_store(store), embedder=embedder,
                           negatives="pool", pool_size=pool_size, scope="service", memory_config=memory_config,
                           show_progress=progress)
    train = load_split("train")
    images = train.of_class(klass) if klass is not None else train.images
    with torch.no_grad():
        e = session.embedder(images.to(dev))

    def record(memory, emb_chunk, idx):  # each training image is observed (and recorded) once
        session.history, session.version = session.store.observe(
            name, memory, session.version, emb_chunk, [{"settings": {"source": "train", "index": int(i)}} for i in idx])
        return session.history

    chunk = 256
    with progress_bar(-(-len(e) // chunk) + epochs, "pretrain", enabled=progress) as advance:
        session.history = mem = pretrain(session.history, e, epochs, observe=record, advance=advance, chunk=chunk)
    session.save()
    typer.echo(f"memory {name!r} has seen {mem.n_seen} training images")

