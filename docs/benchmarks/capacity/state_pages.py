"""Probe (run from the repository root with the venv): what writing a memory's whole state at every batch costs, and
how much of it a store that wrote only changed parts would save. The default memory and the sketch memory, after
40 batches of 16: the share of the state blob's 64 KiB pages that one more batch changes, and the time of
``MemoryStore.observe`` (train, write the state and 16 rows, commit) beside the training alone on a copy. Log:
state_pages.log."""
import copy
import hashlib
import tempfile
import time

import torch

from noveltynets.embed import PooledPixels
from noveltynets.memory.store import MemoryStore, new_memory

torch.manual_seed(0)
PAGE = 65536
pages = lambda blob: [hashlib.blake2b(blob[i:i + PAGE]).digest() for i in range(0, len(blob), PAGE)]
for opts in ({}, {"sketch_mb": 7, "replay_size": 10000}):
    mem = new_memory(PooledPixels(32), "m", **opts)
    mem.set_reference(torch.randn(512, 1024))
    for b in range(40):
        mem.observe(torch.randn(16, 1024))
    store = MemoryStore(tempfile.mkdtemp() + "/m.sqlite")
    store.create("x", mem)
    version, train_s, store_s = 1, [], []
    for b in range(5):
        batch = torch.randn(16, 1024)
        twin = copy.deepcopy(mem)
        t = time.perf_counter(); twin.observe(batch); train_s.append(time.perf_counter() - t)
        before = mem.to_bytes()
        t = time.perf_counter()
        mem, version = store.observe("x", mem, version, batch, [{"seed": 16 * b + k} for k in range(16)])
        store_s.append(time.perf_counter() - t)
    after = mem.to_bytes()
    changed = sum(x != y for x, y in zip(pages(before), pages(after)))
    med = lambda v: sorted(v)[len(v) // 2]
    print(opts, f"state {len(after) / 2**20:.1f} MiB: {changed}/{len(pages(after))} pages of 64 KiB changed by one batch;",
          f"median of 5 batches: train {med(train_s):.3f} s, store.observe {med(store_s):.3f} s", flush=True)
