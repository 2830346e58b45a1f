"""Distilled novelty: the model learns a rank index, so ranks 1..k give k samples across a quality–diversity frontier
with no memory. :mod:`.rank` orders the training images, :mod:`.model` holds the rank embedding and its storage,
:mod:`.train` fine-tunes (``noveltynets distill train``)."""

from .model import RankedClassEmbedding, add_rank_embedding, read_ranks, save_ranked
from .rank import RankConfig, Ranking, denoising_loss, greedy_order, rank_features, rank_split

__all__ = ["RankConfig", "Ranking", "RankedClassEmbedding", "add_rank_embedding", "denoising_loss", "greedy_order",
           "rank_features", "rank_split", "read_ranks", "save_ranked"]
