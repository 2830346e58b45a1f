"""Collect plain samples' x̂0 (pixels) at the memory's observed steps: run 1 (seeds 0..255), run 2 (256..511), pool."""
import os, sys, torch
from noveltynets.models import load_model
from noveltynets.sampling import sample
from noveltynets.guidance import NoveltyGuidance
from noveltynets.memory.setup import POOL_SEED_BASE

klass = int(sys.argv[1]); model = load_model()
steps = NoveltyGuidance().observed_steps(50)
out = {"steps": steps}
for name, seeds in (("run1", range(256)), ("run2", range(256, 512)), ("pool", range(POOL_SEED_BASE, POOL_SEED_BASE + 128))):
    traj = {s: [] for s in steps}
    def cb(d):
        if d["i"] in traj:
            traj[d["i"]].append(d["x0_hat"].clamp(-1, 1).detach().clone())
    run = sample(model, list(seeds), klass, 2.0, 50, "ddim", batch_size=64, callback=cb)
    out[name] = run.images
    out[name + "_traj"] = torch.stack([torch.cat(traj[s]) for s in steps])
    print(name, run.images.shape, flush=True)
torch.save(out, os.path.join(os.environ.get("DIAG_DIR", "."), f"diag_{klass}.pt"))
