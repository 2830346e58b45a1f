"""The store: SQLite (WAL) holding named histories (novelty memories, exact and LSH histories) and one row per observed sample.

A history's row holds its kind (``novelty``: a :class:`NoveltyMemory`; ``exact`` / ``lsh``: the
peers' histories of :mod:`~noveltynets.embed.history`), config, embedder id, model id, scope, count
of samples seen, a version number and its state (weights, optimiser, replay, reference negatives;
or the embeddings / sketch) as one safetensors blob. ``observe`` runs inside one ``BEGIN
IMMEDIATE`` transaction: it reloads the history if another process committed a newer version,
trains or extends it with the new batch, writes the new state and the per-sample rows, and
commits. So a killed process leaves the last committed state, and two processes writing one
history lose no update. Reference pools (unguided samples' embeddings) are cached in the
``pools`` table; ``checkpoint``/``restore`` keep a tagged copy of a history's state (the keep-sampling
benchmark's "last completed run").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import NoveltynetsError
from ..embed.history import ExactHistory, LSHHistory
from .novelty import MemoryConfig, NoveltyMemory

KINDS = {"novelty": NoveltyMemory, "exact": ExactHistory, "lsh": LSHHistory}  # what a named history can be
SCOPES = ("batch", "session", "user", "service")
SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    name TEXT PRIMARY KEY, scope TEXT NOT NULL, config TEXT NOT NULL, embedder_id TEXT NOT NULL,
    model_id TEXT NOT NULL, n_seen INTEGER NOT NULL, version INTEGER NOT NULL, state BLOB NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, kind TEXT NOT NULL DEFAULT 'novelty', checksum TEXT);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, memory TEXT NOT NULL, seed INTEGER, class INTEGER,
    settings TEXT, embedding BLOB NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS samples_memory ON samples(memory);
CREATE TABLE IF NOT EXISTS pools (key TEXT PRIMARY KEY, embeddings BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT NOT NULL, tag TEXT NOT NULL, state BLOB NOT NULL, n_seen INTEGER NOT NULL, version INTEGER NOT NULL,
    last_sample INTEGER NOT NULL, checksum TEXT, PRIMARY KEY (name, tag));
"""
COLUMNS = "name, scope, config, embedder_id, model_id, n_seen, version, state, created, updated, kind, checksum"
VALUES = "(" + ",".join("?" * len(COLUMNS.split(","))) + ")"
SAMPLE_COLUMNS = "memory, seed, class, settings, embedding, time"


NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+,@-]{0,127}")


def check_name(name) -> str:
    """The one rule for a memory's name, wherever a name enters (sampling, import, the bench, later the HTTP API):
    1-128 characters of letters, digits and ``_ . = + , @ -``, starting with a letter or digit."""
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        shown = repr(name) if len(str(name)) <= 40 else repr(str(name)[:40]) + f"... ({len(name)} characters)"
        raise NoveltynetsError(f"bad memory name {shown}: use 1-128 letters, digits and _ . = + , @ -, starting with a letter "
                               "or digit")
    return name


def checksum(state: bytes, config: str) -> str:
    """BLAKE2b over a history's state and its config: stored with every state, verified on load, export and import."""
    return hashlib.blake2b(bytes(state) + b"\0" + config.encode(), digest_size=16).hexdigest()


def default_store_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "noveltynets" / "memories.sqlite"


@dataclass
class MemoryInfo:
    name: str
    scope: str
    embedder_id: str
    model_id: str
    n_seen: int
    version: int
    config: dict
    created: float
    updated: float
    kind: str = "novelty"
    state_bytes: int = 0  # the size of its state: what it costs to keep and to write after every batch


def _array_bytes(t: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    np.save(buf, t.detach().cpu().numpy().astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def _bytes_array(b: bytes, what: str = "an array") -> torch.Tensor:
    """An array stored as .npy bytes (a sample's embedding, a reference pool); a damaged one is a clear error."""
    try:
        a = np.load(io.BytesIO(b), allow_pickle=False)
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise ValueError("not finite floats")
    except (OSError, ValueError, TypeError, EOFError) as e:
        raise NoveltynetsError(f"{what} in the store is corrupt ({type(e).__name__})") from None
    return torch.from_numpy(a)


class MemoryStore:
    """A SQLite file of named novelty memories. Safe for several processes at once."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False, what: str = "memory store", create: bool = True):
        """Open (or create) the store at ``path``. ``read_only``: the file must exist and is never written (no folders,
        no schema, no journal change): for commands that only read, and for export files being imported.
        ``create=False``: the file must exist (commands that change an existing memory)."""
        self.path = Path(path) if path is not None else default_store_path()
        try:
            if (read_only or not create) and (not self.path.is_file() or self.path.stat().st_size == 0):
                raise NoveltynetsError(f"no {what} at {self.path}" if not self.path.exists() else
                                       f"{what} {self.path} is {'empty' if self.path.is_file() else 'not a file'}")
            if read_only:
                self.db = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro", uri=True,
                                          timeout=60, isolation_level=None)
                tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"memories", "samples"} <= tables:
                    raise NoveltynetsError(f"{what} {self.path} is not a noveltynets store (no memories table)")
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            for attempt in range(600):  # a new file that another process is making WAL at this moment: "database is locked"
                try:             # at once (the busy timeout does not cover a journal mode change), so wait for it
                    self.db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 599:
                        raise
                    time.sleep(0.1)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA journal_size_limit=0")  # the write-ahead log is cut back after each checkpoint: a state is
            # rewritten at every batch, and the log kept the largest it had grown to (71 MB beside a 78 MB store, measured)
            self.db.executescript(SCHEMA)
            for table, column, decl in (("memories", "kind", "TEXT NOT NULL DEFAULT 'novelty'"),  # stores made before kinds
                                        ("memories", "checksum", "TEXT"), ("checkpoints", "checksum", "TEXT")):  # ... checksums
                if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        except sqlite3.DatabaseError as e:
            raise NoveltynetsError(f"{what} {self.path} is unreadable or not a noveltynets store ({e})") from None
        except OSError as e:
            raise NoveltynetsError(f"cannot open memory store {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _write(self):
        """One write transaction; the lock is taken at the start, so read-modify-write is safe."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- memories -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM memories ORDER BY name")]

    def info(self, name: str) -> MemoryInfo:
        row = self.db.execute("SELECT name, scope, embedder_id, model_id, n_seen, version, config, created, updated, kind, "
                              "length(state) FROM memories WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NoveltynetsError(f"no memory named {name!r} in {self.path}")
        try:
            config = json.loads(row[6])
        except (TypeError, ValueError):
            raise NoveltynetsError(f"memory {name!r} in {self.path} has a corrupt config") from None
        return MemoryInfo(*row[:6], config, *row[7:])

    def exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM memories WHERE name = ?", (name,)).fetchone() is not None

    def create(self, name: str, memory, scope: str = "user") -> None:
        """Add history ``memory`` (any of ``KINDS``) under ``name``."""
        check_name(name)
        if scope not in SCOPES:
            raise NoveltynetsError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        now = time.time()
        with self._write():
            if self.exists(name):
                raise NoveltynetsError(f"a memory named {name!r} already exists in {self.path}")
            c = memory.config
            config, state = json.dumps(c.__dict__), memory.to_bytes()
            self.db.execute(f"INSERT INTO memories ({COLUMNS}) VALUES {VALUES}",
                            (name, scope, config, c.embedder_id, c.model_id, memory.n_seen, 1, state, now, now, memory.kind,
                             checksum(state, config)))

    def load(self, name: str, device: str | torch.device = "cpu", embedder_id: str | None = None,
             model_id: str | None = None, kind: str | None = None) -> tuple[NoveltyMemory, int]:
        """The history and its version; refuses one of another ``kind`` or made with another embedder or model."""
        row = self.db.execute("SELECT state, version, embedder_id, model_id, kind, config, checksum FROM memories WHERE name = ?",
                              (name,)).fetchone()
        if row is None:
            raise NoveltynetsError(f"no memory named {name!r} in {self.path}")
        state, version, emb_id, mod_id, found, config, digest = row
        self._verify(name, state, config, digest)
        if kind is not None and found != kind:
            raise NoveltynetsError(f"memory {name!r} is {_KIND_NAMES.get(found, found)}, not {_KIND_NAMES.get(kind, kind)}")
        if found not in KINDS:
            raise NoveltynetsError(f"memory {name!r} in {self.path} has an unknown kind {found!r}")
        if embedder_id is not None and emb_id != embedder_id:
            raise NoveltynetsError(f"memory {name!r} was made with embedder {emb_id!r}, not {embedder_id!r}")
        if model_id is not None and mod_id and mod_id != model_id:
            raise NoveltynetsError(f"memory {name!r} was made with model {mod_id!r}, not {model_id!r}")
        try:
            return KINDS[found].from_bytes(state, device), version
        except NoveltynetsError as e:
            raise NoveltynetsError(f"memory {name!r} in {self.path}: {e}") from None

    def _verify(self, name: str, state, config, digest, where: str = "") -> None:
        """Refuse a state or config that does not match its checksum (rows written before checksums have none)."""
        if digest is not None and (not isinstance(state, bytes) or not isinstance(config, str) or checksum(state, config) != digest):
            raise NoveltynetsError(f"memory {name!r}{where} in {self.path} is corrupt (its checksum does not match)")

    def _set_state(self, name: str, state: bytes, n_seen: int, version: int, now: float) -> None:
        """Write a new state (inside ``_write``), sealed with the checksum of it and the memory's config."""
        config = self.db.execute("SELECT config FROM memories WHERE name = ?", (name,)).fetchone()[0]
        self.db.execute("UPDATE memories SET state=?, n_seen=?, version=?, updated=?, checksum=? WHERE name=?",
                        (state, n_seen, version, now, checksum(state, config), name))

    def save(self, name: str, memory: NoveltyMemory) -> int:
        """Overwrite a memory's state (e.g. after ``reset``); returns the new version."""
        with self._write():
            version = self.info(name).version + 1
            self._set_state(name, memory.to_bytes(), memory.n_seen, version, time.time())
        return version

    def observe(self, name: str, memory: NoveltyMemory, version: int, embeddings: torch.Tensor,
                records: list[dict] | None = None, trajectory: torch.Tensor | None = None) -> tuple[NoveltyMemory, int]:
        """Train ``memory`` on ``embeddings`` (and their samples' ``trajectory`` embeddings, see
        :meth:`NoveltyMemory.observe`) and persist it with one row per sample, atomically.

        If another writer committed since ``version``, its state is loaded first, so both
        updates survive. Returns the (possibly reloaded) memory and its new version.
        """
        records = records or [{} for _ in range(len(embeddings))]
        with self._write():
            current = self.info(name).version
            if current != version:
                memory, version = self.load(name, memory.device)
            memory.observe(embeddings, trajectory=trajectory)
            now = time.time()
            self.db.executemany(f"INSERT INTO samples ({SAMPLE_COLUMNS}) VALUES (?,?,?,?,?,?)",
                                [(name, r.get("seed"), r.get("class"), json.dumps(r.get("settings", {})), _array_bytes(e), now)
                                 for e, r in zip(embeddings, records)])
            self._set_state(name, memory.to_bytes(), memory.n_seen, version + 1, now)
        return memory, version + 1

    def delete(self, name: str) -> None:
        with self._write():
            self.info(name)
            self.db.execute("DELETE FROM samples WHERE memory = ?", (name,))
            self.db.execute("DELETE FROM checkpoints WHERE name = ?", (name,))
            self.db.execute("DELETE FROM memories WHERE name = ?", (name,))

    def reset(self, name: str) -> None:
        """Forget a memory's history (its reference negatives and config stay)."""
        memory, _ = self.load(name)
        memory.reset()
        with self._write():
            self.db.execute("DELETE FROM samples WHERE memory = ?", (name,))
            version = self.info(name).version + 1
            self._set_state(name, memory.to_bytes(), 0, version, time.time())

    def sample_embeddings(self, name: str) -> torch.Tensor:
        rows = self.db.execute("SELECT embedding FROM samples WHERE memory = ? ORDER BY id", (name,)).fetchall()
        return torch.stack([_bytes_array(r[0], f"a sample row of memory {name!r}") for r in rows]) if rows else torch.zeros(0)

    def count_samples(self, name: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM samples WHERE memory = ?", (name,)).fetchone()[0]

    # -- export / import ------------------------------------------------------------------
    def export(self, name: str, path: str | Path) -> None:
        """Write one memory (state and sample rows) to a standalone SQLite file."""
        path = Path(path)
        if path.exists():
            raise NoveltynetsError(f"{path} already exists")
        self.load(name)  # refuses a corrupt state (checksum, then its own format) before anything is written
        tmp = path.with_name(path.name + ".partial")
        tmp.unlink(missing_ok=True)
        out = MemoryStore(tmp)
        out.db.execute("BEGIN")
        row = list(self.db.execute(f"SELECT {COLUMNS} FROM memories WHERE name = ?", (name,)).fetchone())
        row[11] = row[11] or checksum(row[7], row[2])  # a row from before checksums is sealed as it leaves
        out.db.execute(f"INSERT INTO memories ({COLUMNS}) VALUES {VALUES}", row)
        out.db.executemany(f"INSERT INTO samples ({SAMPLE_COLUMNS}) VALUES (?,?,?,?,?,?)",
                           self.db.execute(f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE memory = ? ORDER BY id", (name,)))
        out.db.execute("COMMIT")
        out.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out.db.execute("PRAGMA journal_mode=DELETE")
        out.close()
        os.replace(tmp, path)

    def import_(self, path: str | Path, name: str | None = None) -> str:
        """Copy the memory in an exported file into this store (optionally renamed); returns its name."""
        if name is not None:
            check_name(name)
        src = MemoryStore(path, read_only=True, what="export file")
        try:
            names = src.names()
            if len(names) != 1:
                raise NoveltynetsError(f"{path} holds {len(names)} memories; an export holds exactly one")
            row = list(src.db.execute(f"SELECT {COLUMNS} FROM memories WHERE name = ?", (names[0],)).fetchone())
            samples = src.db.execute("SELECT seed, class, settings, embedding, time FROM samples WHERE memory = ? ORDER BY id",
                                     (names[0],)).fetchall()
        except sqlite3.DatabaseError as e:
            raise NoveltynetsError(f"export file {path} is unreadable ({e})") from None
        finally:
            src.close()
        if row[10] not in KINDS:
            raise NoveltynetsError(f"{path} holds a history of unknown kind {row[10]!r}")
        self._verify(row[0], row[7], row[2], row[11], where=f" (exported to {path})")  # refuse corrupt data before writing
        KINDS[row[10]].from_bytes(row[7])
        row[11] = row[11] or checksum(row[7], row[2])
        row[0] = check_name(name if name is not None else row[0])
        with self._write():
            if self.exists(row[0]):
                raise NoveltynetsError(f"a memory named {row[0]!r} already exists in {self.path}")
            self.db.execute(f"INSERT INTO memories ({COLUMNS}) VALUES {VALUES}", row)
            self.db.executemany(f"INSERT INTO samples ({SAMPLE_COLUMNS}) VALUES (?,?,?,?,?,?)",
                                [(row[0], *s) for s in samples])
        return row[0]

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, name: str, tag: str) -> None:
        """Keep a copy of history ``name`` as it is now under ``tag`` (replacing an older one of that tag)."""
        with self._write():
            self.info(name)  # it exists
            last = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM samples WHERE memory = ?", (name,)).fetchone()[0]
            self.db.execute("INSERT OR REPLACE INTO checkpoints (name, tag, state, n_seen, version, last_sample, checksum) "
                            "SELECT name, ?, state, n_seen, version, ?, checksum FROM memories WHERE name = ?", (tag, last, name))

    def restore(self, name: str, tag: str) -> bool:
        """Put history ``name`` back to its checkpoint ``tag`` (its state and sample rows); returns whether it changed."""
        with self._write():
            row = self.db.execute("SELECT state, n_seen, version, last_sample, checksum FROM checkpoints WHERE name = ? AND tag = ?",
                                  (name, tag)).fetchone()
            if row is None:
                raise NoveltynetsError(f"memory {name!r} has no checkpoint {tag!r}")
            state, n_seen, version, last, digest = row
            config = self.db.execute("SELECT config FROM memories WHERE name = ?", (name,)).fetchone()[0]
            self._verify(name, state, config, digest, where=f" (checkpoint {tag!r})")
            if self.info(name).version == version:
                return False
            self.db.execute("DELETE FROM samples WHERE memory = ? AND id > ?", (name, last))
            self._set_state(name, state, n_seen, self.info(name).version + 1, time.time())
            self.db.execute("UPDATE checkpoints SET version=? WHERE name = ? AND tag = ?", (self.info(name).version, name, tag))
        return True

    def has_checkpoint(self, name: str, tag: str) -> bool:
        return self.db.execute("SELECT 1 FROM checkpoints WHERE name = ? AND tag = ?", (name, tag)).fetchone() is not None

    # -- reference pools ------------------------------------------------------------------
    def pool(self, key: str) -> torch.Tensor | None:
        row = self.db.execute("SELECT embeddings FROM pools WHERE key = ?", (key,)).fetchone()
        return _bytes_array(row[0], f"reference pool {key!r}") if row else None

    def put_pool(self, key: str, embeddings: torch.Tensor) -> None:
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO pools VALUES (?,?,?)", (key, _array_bytes(embeddings), time.time()))


_KIND_NAMES = {"novelty": "a novelty memory", "exact": "an exact history (repel, knn-filter, oversample)",
               "lsh": "an LSH history (lsh-filter)"}


def new_memory(embedder, model_id: str = "", device: str | torch.device = "cpu", **config) -> NoveltyMemory:
    if config.get("negatives") == "jitter":  # proximity targets are measured in a reference's spacing: a jitter memory classifies
        config.setdefault("target", "classify")
    return NoveltyMemory(MemoryConfig(dim=embedder.dim, embedder_id=embedder.id, model_id=model_id, **config), device)
