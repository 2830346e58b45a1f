"""How hard does each memory push? Mean P(seen) over the memory's window (every step it acts, every sample), per run,
for a continued memory at today's default and a fresh one on the same seeds (class 7, 4 runs of 64), with each run's
precision. The thirteenth exploration part's probe for a push budget.

    OMP_NUM_THREADS=2 python pseen_probe.py > logs/pseen_probe_c7.jsonl
"""
import copy
import json

import numpy as np

from noveltynets.guidance import NoveltyGuidance
from noveltynets.sampling import sample

from keep_explore import one_memory


class Probe(NoveltyGuidance):
    """The default term, recording the batch's mean P(seen) at every step its memory part acts."""
    log: list = []

    def memory_step(self, emb):
        out = super().memory_step(emb)
        Probe.log.append((out.norm(dim=1) / self.memory.neighbour_distance()).mean().item())  # ‖Δe‖ = ℓ·P(seen)
        return out


def main(klass=7, N=64, R=4):
    model, emb, judge, config, mem = one_memory(klass, 50)
    empty = copy.deepcopy(mem)
    for r in range(R):
        seeds, out = range(r * N, (r + 1) * N), {"run": r + 1}
        for name, memory in (("cont", mem), ("fresh", copy.deepcopy(empty))):
            Probe.log = []
            run = sample(model, seeds, config, [Probe(memory=memory, embedder=emb)])
            out |= {f"{name}_p": round(float(np.mean(Probe.log)), 3), f"{name}_prec": judge(run.images)["precision"]}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
