import time, torch
from noveltynets.memory import MemoryConfig, NoveltyMemory
torch.manual_seed(0)
ref = torch.randn(128 * 9, 1024)
for kw in ({}, {"recall": False}, {"steps_per_observe": 20}, {"batch_size": 128}, {"steps_per_observe": 25, "batch_size": 192}):
    mem = NoveltyMemory(MemoryConfig(dim=1024, embedder_id="t", trajectory=True, **kw)); mem.set_reference(ref, n_final=128)
    ts = []
    for i in range(6):
        e = torch.randn(16, 1024); tr = torch.randn(128, 1024)
        t = time.perf_counter(); mem.observe(e, trajectory=tr); ts.append(time.perf_counter() - t)
    print(kw, [round(x, 2) for x in ts])
