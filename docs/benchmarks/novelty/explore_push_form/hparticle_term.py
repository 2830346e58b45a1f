"""Diagnostic: particle guidance whose particles include every earlier sample (exact, grows with history)."""
import json, math, sys, time, torch
from dataclasses import dataclass
from noveltynets.models import load_model
from noveltynets.bench.runner import Judge
from noveltynets.sampling import sample
from noveltynets.guidance.base import GuidanceTerm, embedding_step
from noveltynets.embed.embedders import embedder_from_spec

@dataclass
class HParticle(GuidanceTerm):
    name = "hparticle"
    scale: float = 1.0
    hist_weight: float = 1.0
    stop: float = 0.95
    size: float = 8
    def __post_init__(self):
        super().__post_init__(); self._embed = embedder_from_spec(f"pooled-pixels:{int(self.size)}"); self.hist = torch.zeros(0, self._embed.dim)
    def grad(self, x0, info):
        with torch.no_grad():
            e = self._embed(x0).double(); b = len(e)
            d2 = torch.cdist(e, e).pow(2); off = ~torch.eye(b, dtype=torch.bool)
            h = d2[off].median() / math.log(b)
            k = torch.exp(-d2 / h) * off
            delta = (k[..., None] * (e[:, None] - e[None])).sum(1)
            if len(self.hist) and self.hist_weight:
                H = self.hist.double(); kh = torch.exp(-torch.cdist(e, H).pow(2) / h)
                delta = delta + self.hist_weight * (kh[..., None] * (e[:, None] - H[None])).sum(1)
            delta = (delta / (b - 1)).float()
        return embedding_step(self._embed, x0, delta, info.get("alpha_bar"))
    def on_samples_end(self, x0, info):
        with torch.no_grad(): self.hist = torch.cat([self.hist, self._embed(x0)])

