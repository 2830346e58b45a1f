"""The service's own records, beside the memory store: users (token hashes), memories (owner, class), jobs, images.

One SQLite file (WAL) per service, ``<store>.service.sqlite``. A job's images and its "done" status are written in
one transaction, so a job is either finished with all its images or not finished; a restart marks the jobs that
were queued or running then as ``interrupted`` (their memories hold exactly the batches that committed)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import NoveltynetsError

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memories (user TEXT NOT NULL, name TEXT NOT NULL, klass INTEGER, store_name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL, PRIMARY KEY (user, name));
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, user TEXT NOT NULL, status TEXT NOT NULL, request TEXT NOT NULL,
    memory TEXT, done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL, error TEXT, near_dup REAL, created REAL NOT NULL,
    finished REAL, started REAL);
CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, job TEXT NOT NULL, user TEXT NOT NULL, memory TEXT, idx INTEGER NOT NULL,
    seed INTEGER NOT NULL, png BLOB NOT NULL, features BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS images_by_job ON images (job, idx);
CREATE INDEX IF NOT EXISTS images_by_memory ON images (user, memory);
"""
USER_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
RESERVED_USERS = {"service"}
FINAL = ("done", "failed", "interrupted")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_user(name) -> str:
    if not isinstance(name, str) or not USER_RULE.fullmatch(name) or name in RESERVED_USERS:
        raise NoveltynetsError(f"bad user name {name!r}: use 1-32 letters, digits, _ and -, starting with a letter or digit "
                               f"(not {', '.join(sorted(RESERVED_USERS))})")
    return name


def db_path(store: Path) -> Path:
    return Path(f"{store}.service.sqlite")


class ServiceDB:
    """Thread-safe: one connection, one lock (the writes are small; sampling happens outside it)."""

    def __init__(self, store: str | Path):
        self.path = db_path(Path(store))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise NoveltynetsError(f"service records {self.path} are unreadable ({e})") from None

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextmanager
    def _write(self):
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _rows(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self.lock:
            cur = self.db.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- users ---------------------------------------------------------------------------
    def add_user(self, name: str) -> str:
        """A new user; returns their token (shown once: only its hash is kept)."""
        check_user(name)
        token = secrets.token_urlsafe(32)
        with self._write() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise NoveltynetsError(f"user {name!r} exists (remove them first to issue a new token)")
            db.execute("INSERT INTO users VALUES (?, ?, ?)", (name, token_hash(token), time.time()))
        return token

    def remove_user(self, name: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise NoveltynetsError(f"no user {name!r}")

    def users(self) -> list[dict]:
        return self._rows("SELECT name, created FROM users ORDER BY name")

    def user_of(self, token: str) -> str | None:
        rows = self._rows("SELECT name FROM users WHERE token_hash = ?", (token_hash(token),))
        return rows[0]["name"] if rows else None

    # -- memories ------------------------------------------------------------------------
    def memory(self, user: str, name: str) -> dict | None:
        rows = self._rows("SELECT * FROM memories WHERE user = ? AND name = ?", (user, name))
        return rows[0] if rows else None

    def memories(self, user: str) -> list[dict]:
        return self._rows("SELECT * FROM memories WHERE user = ? ORDER BY name", (user,))

    def add_memory(self, user: str, name: str, klass: int | None, store_name: str) -> dict:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO memories VALUES (?, ?, ?, ?, ?)", (user, name, klass, store_name, time.time()))
        return self.memory(user, name)

    def forget_memory(self, user: str, name: str, delete: bool) -> None:
        """Its images leave the history the near-dup rate is judged against; ``delete`` also drops the record."""
        with self._write() as db:
            db.execute("UPDATE images SET memory = NULL WHERE user = ? AND memory = ?", (user, name))
            if delete:
                db.execute("DELETE FROM memories WHERE user = ? AND name = ?", (user, name))

    # -- jobs and images -----------------------------------------------------------------
    def add_job(self, user: str, request: dict, memory: str | None, total: int) -> str:
        job = secrets.token_hex(12)
        with self._write() as db:
            db.execute("INSERT INTO jobs (id, user, status, request, memory, total, created) VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                       (job, user, json.dumps(request), memory, total, time.time()))
        return job

    def job(self, job: str, user: str) -> dict | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ? AND user = ?", (job, user))
        if not rows:
            return None
        row = rows[0]
        row["request"] = json.loads(row["request"])
        row["images"] = [r["id"] for r in self._rows("SELECT id FROM images WHERE job = ? ORDER BY idx", (job,))]
        return row

    def job_request(self, job: str) -> tuple[str, dict, str | None]:
        """(user, request, memory) of a job, for the worker that runs it."""
        row = self._rows("SELECT user, request, memory FROM jobs WHERE id = ?", (job,))[0]
        return row["user"], json.loads(row["request"]), row["memory"]

    def count_images(self, user: str, memory: str) -> int:
        return self._rows("SELECT COUNT(*) AS n FROM images WHERE user = ? AND memory = ?", (user, memory))[0]["n"]

    def jobs(self, user: str, limit: int = 50) -> list[dict]:
        return self._rows("SELECT id, status, memory, done, total, near_dup, created, started, finished FROM jobs WHERE user = ? "
                          "ORDER BY created DESC LIMIT ?", (user, limit))

    def set_status(self, job: str, status: str, done: int | None = None, error: str | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET status = ?, done = COALESCE(?, done), error = COALESCE(?, error), "
                       "started = COALESCE(started, CASE WHEN ? = 'running' THEN ? END) WHERE id = ?", (status, done, error, status, time.time(), job))

    def finish(self, job: str, user: str, memory: str | None, images: list[tuple[int, bytes, np.ndarray]], near_dup: float | None) -> None:
        """The job's images (seed, PNG, evaluation features) and its status, in one transaction."""
        now = time.time()
        with self._write() as db:
            for i, (seed, png, feat) in enumerate(images):
                db.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (secrets.token_hex(12), job, user, memory, i, seed,
                                                                                     png, np.asarray(feat, np.float32).tobytes(), now))
            db.execute("UPDATE jobs SET status = 'done', done = total, near_dup = ?, finished = ? WHERE id = ?", (near_dup, now, job))

    def image(self, image: str, user: str) -> bytes | None:
        rows = self._rows("SELECT png FROM images WHERE id = ? AND user = ?", (image, user))
        return rows[0]["png"] if rows else None

    def history_features(self, user: str, memory: str) -> np.ndarray:
        rows = self._rows("SELECT features FROM images WHERE user = ? AND memory = ? ORDER BY created, idx", (user, memory))
        return np.stack([np.frombuffer(r["features"], np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)

    def recent_near_dup(self, user: str, memory: str, limit: int = 10) -> list[float]:
        rows = self._rows("SELECT near_dup FROM jobs WHERE user = ? AND memory = ? AND status = 'done' ORDER BY finished DESC LIMIT ?",
                          (user, memory, limit))
        return [r["near_dup"] for r in reversed(rows)]

    def interrupt_unfinished(self) -> int:
        """At start: the jobs a dead process left queued or running."""
        with self._write() as db:
            return db.execute("UPDATE jobs SET status = 'interrupted', error = 'the service stopped before the job finished', "
                              "finished = ? WHERE status IN ('queued', 'running')", (time.time(),)).rowcount
