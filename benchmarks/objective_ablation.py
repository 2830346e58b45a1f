import time, torch, numpy as np, sys, json
torch.set_num_threads(1)
sys.path.insert(0,'/work/main/benchmarks')
from novelty_nets import Judge
from noveltynets.models import load_model
from noveltynets.memory import PooledPixels
from noveltynets.memory.store import new_memory
from noveltynets.guidance import NoveltyGuidance
from noveltynets.sampling import sample
cls, n, steps = 7, 128, 15
m = load_model(); emb = PooledPixels(); judge = Judge(cls, 'cpu')
ref = emb(sample(m, range(10**12, 10**12+256), cls, steps=steps, batch_size=64).images)
other = emb(sample(m, range(2*10**12, 2*10**12+n), cls, steps=steps, batch_size=64).images)
plain = sample(m, range(n), cls, steps=steps); print('plain', json.dumps(judge(plain.images)), flush=True)
for spec in sys.argv[1:]:
    d = json.loads(spec); unrelated = d.pop('unrelated', False)
    mem = new_memory(emb, m.model_id); mem.set_reference(ref)
    term = NoveltyGuidance(memory=mem, embedder=emb, **d)
    if unrelated:
        for c in other.split(16): mem.observe(c)
        term.on_samples_end = lambda x0, info: None
    run = sample(m, range(n), cls, steps=steps, guidance=[term]); print(spec, json.dumps(judge(run.images)), round(run.seconds,1), flush=True)
