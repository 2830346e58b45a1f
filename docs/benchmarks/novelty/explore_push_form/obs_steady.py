"""One memory update (16 samples + 128 trajectory rows, 1,024-d) early and once the replay holds ~6k rows: python obs_steady.py '{config}'."""
import time, torch, sys, json
from noveltynets.memory import MemoryConfig, NoveltyMemory
torch.manual_seed(0)
ref = torch.randn(128 * 9, 1024)
kw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
mem = NoveltyMemory(MemoryConfig(dim=1024, embedder_id="t", trajectory=True, **kw)); mem.set_reference(ref, n_final=128)
def obs():
    e = torch.randn(16, 1024); tr = torch.randn(128, 1024)
    t = time.perf_counter(); mem.observe(e, trajectory=tr); return time.perf_counter() - t
print("early", [round(obs(), 2) for _ in range(3)])
for _ in range(40):  # fill replay to ~6k rows cheaply
    mem.observe(torch.randn(16, 1024), trajectory=torch.randn(128, 1024), steps=1)
print("replay", len(mem.replay), "steady", [round(obs(), 2) for _ in range(3)])
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as p:
    obs()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
