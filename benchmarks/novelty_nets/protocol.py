"""``protocol``: plain vs novelty guidance per class, with the memory ablations (shared/BENCHMARK.md)."""

from __future__ import annotations

from noveltynets.bench.runner import Judge  # every metric of the benchmark, in the evaluation embedder's space
from noveltynets.guidance import NoveltyGuidance
from noveltynets.sampling import sample

from .common import UNRELATED_SEEDS, Memories, embedded_run, emit, load, observe, recorded_steps, sampling_config


def run(args) -> dict:
    """Per class: plain, novelty (every --scales × --batch-weights), and for the first setting the
    ablations, each with a memory of the same size at every batch, only its content differs:
    - novelty-continued: a second run (the next seeds) continuing the memory of the first;
    - unrelated-memory: a memory that learns, after each guided batch, as many unrelated plain
      samples of the same class (other seeds) instead of the batch (other-class-memory: of class
      (k + 5) mod 10);
    - unrelated-continued: the second run with a memory that learnt as many unrelated samples
      instead of the first run (then learns the second run's batches as novelty-continued does);
    - batch-only(-continued): the batch part alone, no memory; plain-continued: plain's second run.
    Every memory has the same reference (the class's pool). Second runs are judged against the first run's samples too."""
    model, emb = load(args)
    memories = Memories(model, emb, args)
    rows = []
    for klass in args.classes:
        judge, config = Judge(klass, args.device), sampling_config(args, klass)
        seeds, later = list(range(args.n)), list(range(args.n, 2 * args.n))

        def record(method, setting, run, history=None):
            row = {"class": klass, "method": method, "setting": setting, "seconds": run.seconds, **judge(run.images, history)}
            rows.append(emit(args, row, "protocol_rows.jsonl"))
            return run

        def unrelated(tc, of_class):
            """The term with a memory that learns, after each batch it guides, the next ``--batch``
            of ``args.n`` plain samples of ``of_class`` (other seeds) instead of that batch."""
            term = memories.term(config, **tc)
            other = embedded_run(model, emb, range(UNRELATED_SEEDS, UNRELATED_SEEDS + args.n), config.replace(klass=of_class),
                                 recorded_steps(term, args.steps))
            chunks = iter(other.split(args.batch, dim=1))
            term.observer = lambda _emb, _info: observe(term.memory, next(chunks))
            return term, other

        def taught(tc, embedded):
            """The term with a fresh memory that has observed ``embedded`` (1 + K, N, dim) batch by batch, and learns on."""
            term = memories.term(config, **tc)
            for chunk in embedded.split(args.batch, dim=1):
                observe(term.memory, chunk)
            return term

        plain = record("plain", "cfg2", sample(model, seeds, config))
        if args.ablations:  # the baseline for the continuation: plain sampling's next seeds against its first run
            record("plain-continued", "cfg2", sample(model, later, config), history=plain.images)
        for scale in args.scales:
            for bw in args.batch_weights:
                tc = dict(scale=scale, batch_weight=bw, **args.term_config)
                setting = ",".join(f"{k}={v}" for k, v in tc.items())
                term = memories.term(config, **tc)
                first = record("novelty", setting, sample(model, seeds, config, [term]))
                if not (args.ablations and scale == args.scales[0] and bw == args.batch_weights[0]):
                    continue
                record("novelty-continued", setting, sample(model, later, config, [term]), history=first.images)
                term_u, other = unrelated(tc, klass)
                record("unrelated-memory", setting, sample(model, seeds, config, [term_u]))
                record("unrelated-continued", setting, sample(model, later, config, [taught(tc, other)]), history=first.images)
                record("other-class-memory", setting, sample(model, seeds, config, [unrelated(tc, (klass + 5) % 10)[0]]))
                if bw:  # the batch part alone: the same term without a memory
                    batch = NoveltyGuidance(**tc, embedder=emb)
                    alone = record("batch-only", setting, sample(model, seeds, config, [batch]))
                    record("batch-only-continued", setting, sample(model, later, config, [batch]), history=alone.images)
    memories.close()
    return {"rows": rows}
