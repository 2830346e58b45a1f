"""The novelty net: an MLP memory of everything generated in a scope, trained online.

``logit(e)`` is the log-odds that embedding ``e`` "has been generated before, or lies near
something that was". Each ``observe(embeddings)`` adds the new embeddings to a replay buffer
(reservoir of fixed size by default, so the memory does not grow with history) and takes a few
Adam steps. Two ways to train this smooth head (``target``):

- ``"proximity"`` (default): regress a soft proximity to history, P = exp(−d²/2r²), with d the
  distance from a query to the nearest remembered embedding in units of ℓ (the median
  nearest-neighbour distance of the **reference** embeddings: samples that were not generated in
  this scope). Queries are history and reference rows plus noise of up to ``query_jitter``·ℓ, so
  the net learns the proximity field around history, and its gradient points away from it. The
  exact distances come from the replay at training time only; sampling queries the net alone.
- ``"classify"``: balanced binary cross-entropy, history (new batch plus replay) against the
  reference embeddings, so the gradient estimates ∇ log p_history/p_reference. Measured on
  full-resolution pixels it learnt nothing usable: ROC-AUC 0.51 for "this second-run sample is a
  near-duplicate of the first run" (the exact nearest-neighbour distance: 0.77; proximity: 0.76).

Jittered positives are available as negatives too, but alone they teach no memory: the net then
only learns "on the data manifold or off it" (DESIGN.md, planning facts). A second, sharp head
(``recall``) answers "was this very sample generated?" (``seen_probability``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import NoveltynetsError


@dataclass
class MemoryConfig:
    dim: int
    embedder_id: str
    model_id: str = ""
    hidden: int = 512
    layers: int = 2
    lr: float = 1e-3
    steps_per_observe: int = 20
    batch_size: int = 256
    replay: str = "reservoir"  # "reservoir" (fixed size) or "full" (keeps every positive)
    replay_size: int = 20_000
    negatives: str = "pool"  # "pool" (unguided samples), "real" (real images) or "jitter"
    jitter_sigma: float = 0.5  # × per-dimension std, for jitter negatives
    negative_jitter: float = 0.3  # × per-dimension std: fresh Gaussian noise on every drawn reference negative
    positive_jitter: float = 0.0  # the same for positives; = negative_jitter removes the "off the manifold = unseen" cue
    jitter_spread: bool = False  # True: each drawn sample's jitter level is uniform in [0, the value above] (multi-scale bumps)
    fourier: int = 256  # > 0: random Fourier features of the normalised input (count), for local memorisation
    fourier_sigma: float = 1.0  # their frequency scale
    fourier_sigma_min: float = 0.1  # > 0: frequency scales spread geometrically from this to fourier_sigma (smooth and local
    # features: σ = 1 alone memorised points and missed near-duplicates of them, measured); 0: all at fourier_sigma
    fourier_raw: bool = False  # True: the net sees the normalised input beside its Fourier features (smooth + local)
    trajectory: bool = False  # the memory may observe x̂0 along trajectories: a classify memory only when its reference
    # holds unguided x̂0 at the same steps (else it learns "blurry = seen"); a proximity memory with any reference, as its
    # targets are exact distances to what it remembers, whatever the query looks like
    recall: bool = True  # a second, sharp head (Fourier σ = fourier_sigma, finished samples only) answers seen_probability
    recall_hidden: int = 256  # its width; the smooth head above steers guidance (it generalises to near-duplicates but
    # recalls exact samples worse: seen AUC 0.88 at 1k, 0.64 at 10k observed samples, measured)
    scaling: str = "isotropic"  # input scaling: "isotropic" (one scale for all dims) or "per-dim" (each dim's std)
    target: str = "proximity"  # smooth head: "proximity" (soft proximity to history, regressed) or "classify" (see above)
    proximity_radius: float = 0.7  # r of P = exp(−d²/2r²), in units of ℓ (the reference's nearest-neighbour distance)
    query_jitter: float = 1.5  # proximity queries: rows plus Gaussian noise of norm uniform in [0, this] × ℓ
    proximity_sigma_min: float = 0.3  # the smooth head's Fourier frequency scales in proximity mode, per ℓ
    proximity_sigma: float = 3.0
    target_rows: int = 4096  # remembered rows the targets' distances are taken against (a random draw beyond)
    query_rows: int = 2048  # proximity queries (with exact targets) made per update, cycled through its steps in batches
    projection: int = 32  # > 0: the memory lives in the top-k principal directions of its reference's finished samples
    # (fixed when the reference is set): distances, replay and both heads in k dimensions, so the smooth head's gradient
    # points along the ways the model's samples vary (measured offline, class 7: cosine with "away from the nearest
    # history sample" 0.38 at k = 32 against 0.10 on full pixels, near-dup AUC 0.76 both) and the replay is k-d
    seed: int = 0

    @property
    def space_dim(self) -> int:
        """The dimension the heads, replay and distances work in."""
        return self.projection or self.dim

    def __post_init__(self):
        if self.replay not in ("reservoir", "full"):
            raise NoveltynetsError(f"replay must be 'reservoir' or 'full', got {self.replay!r}")
        if self.scaling not in ("isotropic", "per-dim"):
            raise NoveltynetsError(f"scaling must be 'isotropic' or 'per-dim', got {self.scaling!r}")
        if self.negatives not in ("pool", "real", "jitter"):
            raise NoveltynetsError(f"negatives must be 'pool', 'real' or 'jitter', got {self.negatives!r}")
        if self.target not in ("proximity", "classify"):
            raise NoveltynetsError(f"target must be 'proximity' or 'classify', got {self.target!r}")
        if self.target == "proximity" and self.negatives == "jitter":
            raise NoveltynetsError("target='proximity' measures distances in units of the reference's spacing: "
                                   "it needs reference negatives ('pool' or 'real'), not 'jitter'")
        if min(self.proximity_radius, self.query_jitter, self.proximity_sigma_min, self.proximity_sigma, self.target_rows,
               self.query_rows) <= 0:
            raise NoveltynetsError("proximity_radius, query_jitter, proximity sigmas, target_rows and query_rows must be positive")
        if min(self.dim, self.hidden, self.layers, self.steps_per_observe, self.batch_size, self.replay_size, self.recall_hidden) <= 0:
            raise NoveltynetsError("memory sizes and step counts must be positive")
        if self.projection < 0:
            raise NoveltynetsError(f"projection must be >= 0 (0: off), got {self.projection}")
        if self.projection >= self.dim or self.negatives == "jitter":
            self.projection = 0  # nothing to reduce, or no reference samples to find principal directions in

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class NoveltyMemory:
    """An MLP ``embedding -> log-odds(seen)`` with its replay buffer and reference negatives."""

    kind = "novelty"  # as the store names it (beside the peers' exact and LSH histories)

    def __init__(self, config: MemoryConfig, device: str | torch.device = "cpu"):
        self.config, self.device = config, torch.device(device)
        torch.manual_seed(config.seed)  # deterministic initialisation
        sigmas = torch.full((config.fourier,), config.fourier_sigma)
        if config.target == "proximity":  # in units of 1/ℓ: the input is measured in ℓ
            sigmas = torch.logspace(math.log10(config.proximity_sigma_min), math.log10(config.proximity_sigma), config.fourier)
        elif config.fourier_sigma_min > 0:
            sigmas = torch.logspace(math.log10(config.fourier_sigma_min), math.log10(config.fourier_sigma), config.fourier)
        self.freqs, self.net = self._head(sigmas, config.hidden, config.fourier_raw, config.seed)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.recall_freqs = self.recall_net = self.recall_opt = None
        if config.recall:  # sharp features, no raw input: memorises points (the old single-scale memory)
            sharp = torch.full((max(config.fourier, 1),), config.fourier_sigma)
            self.recall_freqs, self.recall_net = self._head(sharp, config.recall_hidden, False, config.seed + 1)
            self.recall_opt = torch.optim.Adam(self.recall_net.parameters(), lr=config.lr)
        self.gen = torch.Generator("cpu").manual_seed(config.seed)
        k = config.space_dim  # everything below lives in the (projected) space
        self.replay = torch.zeros(0, k, device=self.device)
        self.replay_final = torch.zeros(0, k, device=self.device)  # finished samples only (the recall head's)
        self.negatives = torch.zeros(0, k, device=self.device)
        self.n_ref_final = 0  # the first n_ref_final reference rows are finished samples (the rest: x̂0 along trajectories)
        self.mean = torch.zeros(k, device=self.device)
        self.std = torch.ones(k, device=self.device)
        self.centre = torch.zeros(config.dim, device=self.device)  # the projection: (e − centre) @ basis
        self.basis = torch.zeros(config.dim, config.projection, device=self.device) if config.projection else None
        self.n_seen = 0  # samples observed
        self.n_offered = 0  # embeddings offered to the replay (with trajectories, several per sample)
        self.train_steps = 0

    def _head(self, sigmas: torch.Tensor, hidden: int, raw: bool, seed: int) -> tuple[torch.Tensor | None, nn.Module]:
        """Random Fourier frequencies (dim, F) with these scales (None without Fourier features) and the MLP on them."""
        c = self.config
        freqs = None
        if c.fourier:
            freqs = (torch.randn(c.space_dim, len(sigmas), generator=torch.Generator().manual_seed(seed)) * sigmas).to(self.device)
        dims = [(2 * len(sigmas) + c.space_dim * raw) if c.fourier else c.space_dim] + [hidden] * c.layers
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        return freqs, nn.Sequential(*layers, nn.Linear(dims[-1], 1)).to(self.device)

    # -- scoring --------------------------------------------------------------------------
    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, dim) in the memory's space (B, space_dim): unchanged without ``projection``; differentiable."""
        if embeddings.shape[-1] != self.config.dim:
            raise NoveltynetsError(f"embedding dimension {embeddings.shape[-1]} does not match the memory's {self.config.dim}")
        e = embeddings.to(self.device)
        return e if self.basis is None else (e - self.centre) @ self.basis

    def _space_features(self, z: torch.Tensor, freqs, raw: bool, unit: float | None = None) -> torch.Tensor:
        """A head's input from rows already in the memory's space."""
        z = (z - self.mean) / (self.std if unit is None else unit)
        if freqs is not None:
            f = z @ freqs
            z = torch.cat([f.sin(), f.cos()] + [z] * raw, dim=-1)
        return z

    def _smooth_features(self, z: torch.Tensor) -> torch.Tensor:
        unit = self.neighbour_distance() if self.config.target == "proximity" else None
        return self._space_features(z, self.freqs, self.config.fourier_raw, unit)

    def _smooth_logit(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self._smooth_features(z)).squeeze(-1)

    def _recall_logit(self, z: torch.Tensor) -> torch.Tensor:
        if self.recall_net is None:
            return self._smooth_logit(z)
        return self.recall_net(self._space_features(z, self.recall_freqs, False)).squeeze(-1)

    def logit(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, dim) → (B,) log-odds of "generated before, or near something that was"; differentiable:
        the smooth head, which guidance follows (in proximity mode, sigmoid(logit) ≈ exp(−d²/2r²))."""
        return self._smooth_logit(self.project(embeddings))

    def recall_logit(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, dim) → (B,) log-odds that this very sample was observed: the sharp recall head (the smooth one without it)."""
        return self._recall_logit(self.project(embeddings))

    @torch.no_grad()
    def seen_probability(self, embeddings: torch.Tensor) -> torch.Tensor:
        """P(this sample has been generated in this scope), by the recall head."""
        return torch.sigmoid(self.recall_logit(embeddings))

    def neighbour_distance(self) -> float:
        """The memory's unit of length: the median nearest-neighbour distance among its reference
        samples' finished embeddings (at most the first 1,024), or among observed samples if it has no
        reference (jitter negatives). Guidance pushes are measured in it. Cached."""
        ref = self.negatives[: self.n_ref_final] if self.n_ref_final >= 2 else self.replay_final if len(self.replay_final) >= 2 else self.replay
        key = (id(ref), len(ref))
        if getattr(self, "_nn_key", None) != key:
            if len(ref) < 2:
                raise NoveltynetsError("the memory has no reference and fewer than 2 observed samples: no unit of length yet")
            x = ref[:1024].double()
            d = torch.cdist(x, x)
            d.fill_diagonal_(float("inf"))
            self._nn, self._nn_key = float(d.min(1).values.median()), key
        return self._nn

    # -- learning -------------------------------------------------------------------------
    def set_reference(self, negatives: torch.Tensor, n_final: int | None = None) -> None:
        """Reference embeddings (never generated in this scope); also fixes the input normalisation.
        ``n_final``: the first n_final rows are finished samples, the rest x̂0 along their
        trajectories (as :func:`~noveltynets.memory.setup.pool_run` returns them); default all."""
        negatives = negatives.detach().float().to(self.device)
        if negatives.ndim != 2 or negatives.shape[1] != self.config.dim or len(negatives) < 2:
            raise NoveltynetsError(f"reference negatives must be (N >= 2, {self.config.dim}), got {tuple(negatives.shape)}")
        n_final = len(negatives) if n_final is None else n_final
        if not 2 <= n_final <= len(negatives):
            raise NoveltynetsError(f"n_final must be between 2 and {len(negatives)}, got {n_final}")
        k = self.config.projection
        if k:  # the principal directions of the reference's finished samples (a reference of n ≤ k samples has n − 1;
            # the rest of the k columns stay zero, so those coordinates are constant)
            final = negatives[:n_final].double()
            self.centre = final.mean(0).float()
            vh = torch.linalg.svd(final - final.mean(0), full_matrices=False).Vh[:min(k, n_final - 1)]
            self.basis = torch.zeros(self.config.dim, k, device=self.device)
            self.basis[:, :len(vh)] = vh.T.float()
            negatives = self.project(negatives)
        self.negatives, self.n_ref_final = negatives, n_final
        self.mean, self.std = negatives.mean(0), self._scale(negatives)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """Per-dimension divisor. Per-dim std blows up near-constant dims (an 8×8 pooling's border
        cells): a 0.01 change there became ~10 units and the memory learned border noise (measured)."""
        std = x.std(0)
        if self.config.scaling == "isotropic":
            std = torch.full_like(std, float(std.pow(2).mean().sqrt()))
        return std.clamp_min(1e-3)

    def _reservoir(self, buf: torch.Tensor, emb: torch.Tensor, offered: int) -> tuple[torch.Tensor, int]:
        """Add ``emb`` to ``buf`` (``offered`` so far): reservoir sampling (Vitter's algorithm R) keeps
        every embedding ever offered with equal probability; ``replay="full"`` keeps all."""
        cap = self.config.replay_size if self.config.replay == "reservoir" else len(buf) + len(emb)
        free = max(0, cap - len(buf))
        buf = torch.cat([buf, emb[:free]])
        offered += len(emb[:free])
        for e in emb[free:]:
            offered += 1
            j = int(torch.randint(offered, (1,), generator=self.gen))
            if j < cap:
                buf[j] = e
        return buf, offered

    def _draw(self, pool: torch.Tensor, n: int) -> torch.Tensor:
        return pool[torch.randint(len(pool), (n,), generator=self.gen).to(self.device)]

    def _noise(self, x: torch.Tensor, level: float) -> torch.Tensor:
        """Gaussian noise of ``level`` × per-dimension std; with ``jitter_spread`` each row's level is uniform in [0, level]."""
        noise = torch.randn(x.shape, generator=self.gen)
        if self.config.jitter_spread:
            noise = noise * torch.rand(len(x), 1, generator=self.gen)
        return level * self.std * noise.to(self.device)

    def observe(self, embeddings: torch.Tensor, steps: int | None = None, trajectory: torch.Tensor | None = None) -> float:
        """Learn that ``embeddings`` (B, dim) have now been generated; returns the last loss.

        ``trajectory`` (K·B, dim): embeddings of the same samples' x̂0 during sampling, learnt as
        "seen" too, so that guidance recognises a trajectory heading for history while its layout
        is still open (the reference negatives should then hold the pool's x̂0 at the same steps)."""
        new = embeddings.detach().float().to(self.device)
        if new.ndim != 2 or new.shape[1] != self.config.dim:
            raise NoveltynetsError(f"embeddings must be (B, {self.config.dim}), got {tuple(new.shape)}")
        n_samples = len(new)
        if trajectory is not None and len(trajectory):
            if not self.config.trajectory:
                raise NoveltynetsError("this memory's reference negatives hold no trajectories (made with trajectory=False): "
                                       "observing x̂0 along trajectories would teach it 'blurry = seen'")
            trajectory = trajectory.detach().float().to(self.device)
            if trajectory.ndim != 2 or trajectory.shape[1] != self.config.dim:
                raise NoveltynetsError(f"trajectory embeddings must be (K, {self.config.dim}), got {tuple(trajectory.shape)}")
            new = torch.cat([new, trajectory])
        if not torch.isfinite(new).all():
            raise NoveltynetsError("refusing to observe non-finite embeddings")
        if self.config.negatives != "jitter" and len(self.negatives) == 0:
            raise NoveltynetsError("this memory has no reference negatives yet (set_reference)")
        new = self.project(new).detach()
        if len(self.negatives) == 0:  # jitter mode: normalise by the first positives
            self.mean, self.std = new.mean(0), self._scale(new) if len(new) > 1 else self.std
        self.replay, self.n_offered = self._reservoir(self.replay, new, self.n_offered)
        if self.recall_net is not None:
            self.replay_final, _ = self._reservoir(self.replay_final, new[:n_samples], self.n_seen)
        self.n_seen += n_samples
        return self.rehearse(steps, new, n_samples)

    def rehearse(self, steps: int | None = None, new: torch.Tensor | None = None, n_final: int | None = None) -> float:
        """Train on replay (and ``new``, always in every batch) against the negatives; returns the
        smooth head's last loss. ``new[:n_final]`` are finished samples (the recall head's positives)."""
        new = new if new is not None else self.replay[:0]
        n_final = len(new) if n_final is None else n_final
        if len(self.replay) == 0:
            raise NoveltynetsError("nothing to rehearse: the memory has observed nothing")
        half, loss = self.config.batch_size, torch.tensor(0.0)
        steps = steps if steps is not None else self.config.steps_per_observe
        proximity = self.config.target == "proximity"
        if proximity:
            queries = self._query_batches(new, min(steps, max(1, self.config.query_rows // (2 * half))))
        for step in range(steps):
            if proximity:  # 1. queries around history and the reference, with their exact proximity
                loss = self._step(lambda f: self.net(f).squeeze(-1), self.opt, *queries[step % len(queries)])
            else:  # 1. positives (the new batch always, topped up from replay) against reference rows or jittered positives
                pos = torch.cat([new[:half], self._draw(self.replay, max(0, half - len(new)))])
                if self.config.positive_jitter:
                    pos = pos + self._noise(pos, self.config.positive_jitter)
                if self.config.negatives == "jitter":
                    neg = pos + self._noise(pos, self.config.jitter_sigma)
                else:
                    neg = self._jittered(self._draw(self.negatives, half))
                loss = self._step(self._smooth_logit, self.opt, *self._labelled(pos, neg))
            # 2. the recall head: finished samples only, against the reference's finished samples
            if self.recall_net is not None and len(self.replay_final):
                rpos = torch.cat([new[:min(n_final, half)], self._draw(self.replay_final, max(0, half - n_final))])
                rneg = (rpos + self._noise(rpos, self.config.jitter_sigma) if self.config.negatives == "jitter"
                        else self._jittered(self._draw(self.negatives[: self.n_ref_final], half)))
                self._step(self._recall_logit, self.recall_opt, *self._labelled(rpos, rneg))
            self.train_steps += 1
        return float(loss.detach())

    def _query_batches(self, new: torch.Tensor, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` training batches for the proximity head, (query features, exact targets): each has positives
        (the new batch, topped up from replay) and as many reference rows, jittered by ``_queries``.
        Targets are distances to the new batch, (a draw of) replay and the batch's own positives,
        all ``n`` batches in one distance computation (the update's main cost: rehearse cycles
        through these batches rather than drawing fresh queries at every step)."""
        half = self.config.batch_size
        rows = self.replay if len(self.replay) <= self.config.target_rows else self._draw(self.replay, self.config.target_rows)
        pos = [torch.cat([new[:half], self._draw(self.replay, max(0, half - len(new)))]) for _ in range(n)]
        q = torch.cat([self._queries(torch.cat([p, self._draw(self.negatives, half)])) for p in pos])
        extra = torch.cat([p[len(new[:half]):] for p in pos])  # the drawn positives, which a target must see too
        targets = self._proximity(q, torch.cat([new, rows, extra]))
        return list(zip(self._smooth_features(q).chunk(n), targets.chunk(n)))  # features once, not at every step

    def _jittered(self, neg: torch.Tensor) -> torch.Tensor:
        return neg + self._noise(neg, self.config.negative_jitter) if self.config.negative_jitter else neg

    def _labelled(self, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([pos, neg]), torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(self.device)

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus Gaussian noise whose norm is about uniform in [0, query_jitter] × ℓ, row by row."""
        level = torch.rand(len(x), 1, generator=self.gen) * self.config.query_jitter / math.sqrt(x.shape[1])
        return x + (self.neighbour_distance() * level * torch.randn(x.shape, generator=self.gen)).to(self.device)

    def _proximity(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """exp(−d²/2r²): d = distance from each query to its nearest row, in units of ℓ."""
        d = torch.cdist(q, rows).min(1).values / self.neighbour_distance()
        return torch.exp(-d.pow(2) / (2 * self.config.proximity_radius ** 2))

    def _step(self, logit_fn, opt, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One Adam step of binary cross-entropy towards ``target`` (labels, or soft proximities)."""
        loss = F.binary_cross_entropy_with_logits(logit_fn(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    # -- persistence ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {}
        for prefix, net, opt in (("net", self.net, self.opt), ("recall", self.recall_net, self.recall_opt)):
            if net is None:
                continue
            t.update({f"{prefix}.{k}": v for k, v in net.state_dict().items()})
            for i, st in opt.state_dict()["state"].items():
                for k, v in st.items():
                    t[f"{prefix}_opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        if self.basis is not None:
            t.update(centre=self.centre, basis=self.basis)
        t.update(replay=self.replay, replay_final=self.replay_final, negatives=self.negatives, mean=self.mean, std=self.std,
                 counters=torch.tensor([self.n_seen, self.train_steps, self.n_offered, self.n_ref_final]), gen=self.gen.get_state())
        return {k: v.detach().cpu().contiguous() for k, v in t.items()}

    def to_bytes(self) -> bytes:
        """Weights, optimiser state, replay, reference and config as one safetensors blob."""
        return st_save(self.state_tensors(), metadata={"config": json.dumps(asdict(self.config))})

    @classmethod
    def from_bytes(cls, blob: bytes, device: str | torch.device = "cpu") -> "NoveltyMemory":
        try:
            header_len = int.from_bytes(blob[:8], "little")
            meta = json.loads(blob[8:8 + header_len]).get("__metadata__", {})
            # a memory saved before the recall head has none, and one saved before proximity targets classifies
            config = MemoryConfig.from_dict({"recall": False, "target": "classify", **json.loads(meta["config"])})
            t = st_load(blob)
        except NoveltynetsError:
            raise
        except Exception as e:
            raise NoveltynetsError(f"memory data is corrupt ({type(e).__name__})") from None
        mem = cls(config, device)
        for prefix, net, opt in (("net", mem.net, mem.opt), ("recall", mem.recall_net, mem.recall_opt)):
            if net is None:
                continue
            net.load_state_dict({k[len(prefix) + 1:]: v for k, v in t.items() if k.startswith(prefix + ".")})
            opt_state = opt.state_dict()
            old_opt = "opt." if prefix == "net" else None  # steer optimiser state saved before the recall head
            for key, v in t.items():
                if key.startswith(prefix + "_opt.") or (old_opt and key.startswith(old_opt)):
                    _, i, name = key.split(".", 2)
                    opt_state["state"].setdefault(int(i), {})[name] = v
            opt.load_state_dict(opt_state)
        dev = mem.device
        mem.replay, mem.negatives, mem.mean, mem.std = t["replay"].to(dev), t["negatives"].to(dev), t["mean"].to(dev), t["std"].to(dev)
        if "basis" in t:
            mem.centre, mem.basis = t["centre"].to(dev), t["basis"].to(dev)
        mem.replay_final = t["replay_final"].to(dev) if "replay_final" in t else mem.replay[:0]
        counters = [int(x) for x in t["counters"]]
        mem.n_seen, mem.train_steps = counters[:2]
        mem.n_offered = counters[2] if len(counters) > 2 else mem.n_seen  # saved before trajectories: one per sample
        mem.n_ref_final = counters[3] if len(counters) > 3 else len(mem.negatives)
        mem.gen.set_state(t["gen"])
        return mem

    def reset(self) -> None:
        """Forget all history (keeps the config, the reference negatives and the projection fitted on them)."""
        kept = {k: getattr(self, k) for k in ("negatives", "n_ref_final", "mean", "std", "centre", "basis")}
        self.__init__(self.config, self.device)
        for k, v in kept.items():
            setattr(self, k, v)
