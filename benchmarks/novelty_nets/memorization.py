"""``memorization``: does guidance with a memory pretrained on the training images echo them less?"""

from __future__ import annotations

import torch

from noveltynets import metrics
from noveltynets.bench.runner import Judge
from noveltynets.data import load_split
from noveltynets.memory.pretrain import pretrain
from noveltynets.models.embedder import load_eval_embedder
from noveltynets.sampling import sample

from .common import UNRELATED_SEEDS, Memories, emit, load, sampling_config


def run(args) -> dict:
    """Per class: plain CFG 2; a memory pretrained on that class's training images (as
    ``noveltynets memory pretrain --from-dataset --class C``), frozen; the same, still observing
    new samples; and the control, a memory pretrained on as many of the model's own samples, frozen."""
    model, emb = load(args)
    dev, memories = args.device, Memories(model, emb, args)
    train = load_split("train")
    train_px = train.images.flatten(1).numpy()
    train_feats = load_eval_embedder(device=dev).features(train.images).numpy()
    rows = []
    for klass in args.classes:
        judge, seeds, config = Judge(klass, dev), list(range(args.n)), sampling_config(args, klass)
        own = train.of_class(klass)
        other = sample(model, range(UNRELATED_SEEDS, UNRELATED_SEEDS + len(own)), config.replace(batch_size=256)).images

        def term(images, learn=True):
            """A term whose memory (the session's, reference: the class's pool) has been pretrained on ``images``."""
            t = memories.term(config, learn=learn, **{"batch_weight": 0.0, **args.term_config})
            with torch.no_grad():
                e = emb(images.to(dev))
            pretrain(t.memory, e, args.epochs)
            return t

        runs = {"plain": [], "train-prior frozen": [term(own, learn=False)], "train-prior observing": [term(own)],
                "own-samples prior frozen": [term(other, learn=False)]}
        for method, terms in runs.items():
            run = sample(model, seeds, config, terms)
            px = run.images.flatten(1).numpy()
            rows.append(emit(args, {
                "class": klass, "method": method, "seconds": run.seconds, **judge(run.images),
                "memorization": metrics.memorization_rate(px, train_px),
                "nearest_train_l2": metrics.nearest_train_distance(px, train_px),
                "nearest_train_cosine": metrics.nearest_train_similarity(judge.ev.features(run.images).numpy(), train_feats)}))
    memories.close()
    return {"rows": rows}
