import sys, time, torch, json, numpy as np
sys.path.insert(0, '/work/main/benchmarks')
from novelty_nets import roc_auc
from noveltynets.memory.novelty import MemoryConfig, NoveltyMemory
torch.set_num_threads(1)
d = torch.load('sys.argv.pop(1) if False else '.carry/emb7.pt''); H, F, P = (d[k].float() for k in ('history','fresh','pool'))
def trial(h, chunk, **cfg):
    npool = cfg.pop('npool', 20000); mem = NoveltyMemory(MemoryConfig(dim=64, embedder_id='x', **cfg)); mem.set_reference(P[:npool])
    t=time.time()
    for c in H[:h].split(chunk): mem.observe(c)
    seen = H[:h][torch.randperm(h, generator=torch.Generator().manual_seed(0))[:2000]]
    with torch.no_grad(): a = roc_auc(mem.logit(seen).numpy(), mem.logit(F).numpy())
    print(json.dumps({"h": h, "chunk": chunk, **cfg, "auc": round(a,4), "steps": mem.train_steps, "s": round(time.time()-t,1)}), flush=True)
for spec in sys.argv[1:]:
    kw = json.loads(spec); trial(kw.pop('h'), kw.pop('chunk'), **kw)
