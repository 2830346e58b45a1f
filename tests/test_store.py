"""The SQLite memory store: persistence, versions, faults and concurrent writers."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from noveltynets.errors import NoveltynetsError
from noveltynets.memory import MemoryConfig, NoveltyMemory
from noveltynets.memory.store import MemoryStore


def make_memory(emb_id="emb-a", model_id="model@1", dim=8):
    mem = NoveltyMemory(MemoryConfig(dim=dim, embedder_id=emb_id, model_id=model_id, hidden=16, steps_per_observe=2, fourier=8))
    mem.set_reference(torch.randn(32, dim, generator=torch.Generator().manual_seed(1)))
    return mem


@pytest.fixture
def store(tmp_path):
    return MemoryStore(tmp_path / "s.sqlite")


def test_create_observe_load_round_trip(store):
    store.create("a", make_memory(), scope="session")
    mem, v = store.load("a", embedder_id="emb-a", model_id="model@1")
    emb = torch.randn(5, 8)
    mem, v2 = store.observe("a", mem, v, emb, [{"seed": i, "class": 3} for i in range(5)])
    assert v2 == v + 1
    again, v3 = store.load("a")
    assert v3 == v2 and again.n_seen == 5 and torch.equal(again.logit(emb), mem.logit(emb))
    assert store.count_samples("a") == 5 and store.sample_embeddings("a").shape == (5, 8)
    info = store.info("a")
    assert info.scope == "session" and info.n_seen == 5 and info.embedder_id == "emb-a"


def test_mismatched_embedder_or_model_is_refused(store):
    store.create("a", make_memory())
    with pytest.raises(NoveltynetsError, match="embedder 'emb-a', not 'emb-b'"):
        store.load("a", embedder_id="emb-b")
    with pytest.raises(NoveltynetsError, match="model"):
        store.load("a", model_id="other@2")
    with pytest.raises(NoveltynetsError, match="already exists"):
        store.create("a", make_memory())
    with pytest.raises(NoveltynetsError, match="no memory named"):
        store.load("zzz")


def test_reset_delete_export_import(store, tmp_path):
    store.create("a", make_memory())
    mem, v = store.load("a")
    store.observe("a", mem, v, torch.randn(4, 8))
    store.export("a", tmp_path / "a.nnmem")
    store.reset("a")
    assert store.info("a").n_seen == 0 and store.count_samples("a") == 0 and len(store.load("a")[0].negatives) == 32
    assert store.import_(tmp_path / "a.nnmem", name="b") == "b"
    assert store.info("b").n_seen == 4 and store.count_samples("b") == 4
    with pytest.raises(NoveltynetsError, match="already exists"):
        store.import_(tmp_path / "a.nnmem", name="b")
    store.delete("a")
    assert store.names() == ["b"]


def test_corrupt_store_and_corrupt_memory(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(NoveltynetsError, match="unreadable"):
        MemoryStore(bad)
    store = MemoryStore(tmp_path / "s.sqlite")
    store.create("good", make_memory())
    store.create("broken", make_memory())
    store.db.execute("UPDATE memories SET state = ? WHERE name = 'broken'", (b"\x00" * 40,))
    with pytest.raises(NoveltynetsError, match="broken.*corrupt"):
        store.load("broken")
    assert store.load("good")[0].n_seen == 0  # the other memories stay usable


WRITER = textwrap.dedent("""
    import sys, torch
    from noveltynets.memory.store import MemoryStore
    store = MemoryStore(sys.argv[1])
    mem, v = store.load("m")
    for i in range(int(sys.argv[2])):
        mem, v = store.observe("m", mem, v, torch.randn(4, 8), [{"seed": int(sys.argv[3]) * 1000 + i}] * 4)
        print(i, flush=True)
""")


def test_two_processes_writing_one_memory_lose_no_update(tmp_path):
    path = tmp_path / "s.sqlite"
    MemoryStore(path).create("m", make_memory())
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), "6", str(k)], stdout=subprocess.PIPE) for k in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    store = MemoryStore(path)
    assert store.info("m").n_seen == 48 == store.load("m")[0].n_seen == store.count_samples("m")


def test_killed_writer_leaves_the_last_committed_state(tmp_path):
    path = tmp_path / "s.sqlite"
    MemoryStore(path).create("m", make_memory())
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "100000", "0"], stdout=subprocess.PIPE)
    for _ in range(5):  # let it commit a few times, then kill it mid-work
        p.stdout.readline()
    time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = MemoryStore(path)
    mem, _ = store.load("m")
    assert mem.n_seen == store.info("m").n_seen == store.count_samples("m") >= 20
    assert mem.n_seen % 4 == 0  # whole batches only


def test_exact_and_lsh_histories_round_trip_beside_memories(store):
    from noveltynets.embed.history import ExactHistory, HistoryConfig, LSHConfig, LSHHistory

    e = torch.randn(10, 8, generator=torch.Generator().manual_seed(3))
    store.create("exact", ExactHistory(HistoryConfig(8, "emb-a", "model@1")))
    store.create("lsh", LSHHistory(LSHConfig(8, "emb-a", "model@1", bits=6, bands=3)))
    store.create("mem", make_memory())
    for name in ("exact", "lsh"):
        h, v = store.load(name, embedder_id="emb-a", model_id="model@1")
        store.observe(name, h, v, e[:6], [{"seed": i} for i in range(6)])
    exact, _ = store.load("exact", kind="exact")
    assert exact.n_seen == 6 and torch.allclose(exact.embeddings(), e[:6]) and float(exact.nearest(e[:1])[0]) < 1e-3
    lsh, _ = store.load("lsh", kind="lsh")
    assert lsh.n_seen == 6 and bool(lsh.seen(e[:6]).all()) and lsh.config.bits == 6
    assert store.info("lsh").kind == "lsh" and store.info("exact").state_bytes > 6 * 8 * 4
    with pytest.raises(NoveltynetsError, match="'mem' is a novelty memory, not an exact history"):
        store.load("mem", kind="exact")
    with pytest.raises(NoveltynetsError, match="'exact' is an exact history"):
        store.load("exact", kind="novelty")


def test_checkpoint_and_restore_put_a_history_back(store):
    store.create("a", make_memory())
    mem, v = store.load("a")
    mem, v = store.observe("a", mem, v, torch.randn(4, 8))
    store.checkpoint("a", "run1")
    probe = torch.randn(3, 8)
    before = store.load("a")[0].logit(probe)
    assert not store.restore("a", "run1")  # nothing happened since: nothing to do
    mem, v = store.observe("a", mem, v, torch.randn(4, 8))
    assert store.info("a").n_seen == 8 and store.count_samples("a") == 8
    assert store.restore("a", "run1")
    again, v2 = store.load("a")
    assert again.n_seen == 4 == store.count_samples("a") and torch.equal(again.logit(probe), before) and v2 > v
    with pytest.raises(NoveltynetsError, match="no checkpoint"):
        store.restore("a", "run9")


def test_a_store_made_before_history_kinds_opens_as_novelty_memories(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE memories (name TEXT PRIMARY KEY, scope TEXT NOT NULL, config TEXT NOT NULL,
        embedder_id TEXT NOT NULL, model_id TEXT NOT NULL, n_seen INTEGER NOT NULL, version INTEGER NOT NULL,
        state BLOB NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);""")
    mem = make_memory()
    db.execute("INSERT INTO memories VALUES (?,?,?,?,?,?,?,?,?,?)", ("old", "user", "{}", "emb-a", "model@1", 0, 1, mem.to_bytes(), 0, 0))
    db.commit()
    db.close()
    store = MemoryStore(path)
    assert store.info("old").kind == "novelty" and store.load("old", kind="novelty")[0].n_seen == 0


@pytest.mark.parametrize("name", ["../z", "a/b", "a\nb", "tab\there", "", ".hidden", "x" * 129, "é", "a b", "nul\0"])
def test_one_name_rule_wherever_a_name_enters(store, tmp_path, name):
    with pytest.raises(NoveltynetsError, match="bad memory name"):
        store.create(name, make_memory())
    store.create("ok-name_1.v=2", make_memory())
    store.export("ok-name_1.v=2", tmp_path / "e.db")
    with pytest.raises(NoveltynetsError, match="bad memory name"):
        store.import_(tmp_path / "e.db", name)
    assert store.names() == ["ok-name_1.v=2"]


def test_import_reads_the_export_read_only_and_refuses_what_is_not_one(store, tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(NoveltynetsError, match="is empty"):
        store.import_(empty)
    assert empty.read_bytes() == b""  # was rewritten into an SQLite database
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 300)
    with pytest.raises(NoveltynetsError, match="unreadable"):
        store.import_(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(NoveltynetsError, match="not a noveltynets store"):
        store.import_(other)
    with pytest.raises(NoveltynetsError, match="no export file"):
        store.import_(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists() and store.names() == []


def test_a_read_only_store_writes_nothing_and_a_missing_one_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    with pytest.raises(NoveltynetsError, match="no memory store at"):
        MemoryStore(tmp_path / "no" / "s.sqlite", read_only=True)
    assert not (tmp_path / "no").exists()
    rw = MemoryStore(path)
    rw.create("a", make_memory())
    rw.close()
    before = path.read_bytes()
    ro = MemoryStore(path, read_only=True)
    assert ro.names() == ["a"] and ro.load("a")[0].n_seen == 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.db.execute("DELETE FROM memories")
    ro.close()
    assert path.read_bytes() == before


def test_a_corrupt_config_is_a_clear_error(store):
    store.create("a", make_memory())
    store.db.execute("UPDATE memories SET config = '{not json' WHERE name = 'a'")
    with pytest.raises(NoveltynetsError, match="corrupt config"):
        store.info("a")


def _flip(blob: bytes, offset: int) -> bytes:
    b = bytearray(blob)
    b[offset] ^= 0xFF
    return bytes(b)


def test_a_corrupt_state_or_config_is_refused_on_load_export_and_import_and_spares_the_others(store, tmp_path):
    store.create("good", make_memory())
    store.create("bad", make_memory())
    store.export("bad", tmp_path / "clean.db")
    state, config = store.db.execute("SELECT state, config FROM memories WHERE name = 'bad'").fetchone()
    gen = torch.Generator().manual_seed(0)
    for offset in torch.randint(len(state), (8,), generator=gen).tolist() + [0, len(state) - 1]:  # header, tensors, the end
        store.db.execute("UPDATE memories SET state = ? WHERE name = 'bad'", (_flip(state, offset),))
        with pytest.raises(NoveltynetsError, match="'bad'.*corrupt"):
            store.load("bad")
        with pytest.raises(NoveltynetsError, match="corrupt"):
            store.export("bad", tmp_path / "x.db")
        assert not (tmp_path / "x.db").exists()
        assert store.load("good")[0].n_seen == 0  # the other memory still loads
    store.db.execute("UPDATE memories SET state = ?, config = ? WHERE name = 'bad'", (state, config.replace('"hidden": 16', '"hidden": 17')))
    with pytest.raises(NoveltynetsError, match="corrupt"):
        store.load("bad")
    # an export corrupted in transit: refused on import, the store unchanged
    export = tmp_path / "clean.db"
    db = sqlite3.connect(export)
    blob = db.execute("SELECT state FROM memories").fetchone()[0]
    db.execute("UPDATE memories SET state = ?", (_flip(blob, len(blob) // 2),))
    db.commit()
    db.close()
    with pytest.raises(NoveltynetsError, match="corrupt"):
        store.import_(export, "copy")
    assert store.names() == ["bad", "good"]


def test_a_checkpoint_is_sealed_too(store):
    store.create("a", make_memory())
    store.checkpoint("a", "run1")
    mem, v = store.load("a")
    store.observe("a", mem, v, torch.randn(4, 8))
    state = store.db.execute("SELECT state FROM checkpoints WHERE name = 'a'").fetchone()[0]
    store.db.execute("UPDATE checkpoints SET state = ? WHERE name = 'a'", (_flip(state, 100),))
    with pytest.raises(NoveltynetsError, match="checkpoint 'run1'.*corrupt"):
        store.restore("a", "run1")
    assert store.load("a")[0].n_seen == 4  # left as it was


def test_a_store_made_before_checksums_still_loads_and_is_sealed_at_its_next_write(tmp_path):
    path = tmp_path / "old.sqlite"
    store = MemoryStore(path)
    store.create("a", make_memory())
    store.db.execute("ALTER TABLE memories DROP COLUMN checksum")  # the schema before checksums
    store.db.execute("ALTER TABLE checkpoints DROP COLUMN checksum")
    store.close()
    again = MemoryStore(path)
    assert again.db.execute("SELECT checksum FROM memories").fetchone()[0] is None
    mem, v = again.load("a")
    again.observe("a", mem, v, torch.randn(2, 8))
    assert again.db.execute("SELECT checksum FROM memories").fetchone()[0] is not None


def test_damaged_sample_rows_and_pools_are_clear_errors(store):
    store.create("a", make_memory())
    mem, v = store.load("a")
    store.observe("a", mem, v, torch.randn(3, 8))
    store.put_pool("k", torch.randn(4, 8))
    row = store.db.execute("SELECT id, embedding FROM samples LIMIT 1").fetchone()
    for bad in (row[1][: len(row[1]) // 2], b"", _flip(row[1], 5)):
        store.db.execute("UPDATE samples SET embedding = ? WHERE id = ?", (bad, row[0]))
        with pytest.raises(NoveltynetsError, match="sample row of memory 'a' in the store is corrupt"):
            store.sample_embeddings("a")
    assert store.load("a")[0].n_seen == 3  # the memory itself is untouched
    blob = store.db.execute("SELECT embeddings FROM pools").fetchone()[0]
    store.db.execute("UPDATE pools SET embeddings = ?", (blob[:40],))
    with pytest.raises(NoveltynetsError, match="reference pool 'k' in the store is corrupt"):
        store.pool("k")
