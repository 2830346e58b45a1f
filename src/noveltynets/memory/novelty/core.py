"""NoveltyMemory: the two heads, the replay they rehearse, the reference they learn against, and its unit of length."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...embed.sketch import L2Sketch, optimal_hashes
from ...errors import NoveltynetsError
from . import heads, serial, targets
from .codes import CodeTable
from .config import MemoryConfig
from .replay import reservoir_add


class NoveltyMemory:
    """An MLP ``embedding -> log-odds(seen)`` with its replay buffer and reference negatives.

    Its initial weights and every draw come from generators seeded by ``config.seed``: creating,
    loading or resetting a memory leaves the process's global RNG as it was."""

    kind = "novelty"  # as the store names it (beside the peers' exact and LSH histories)

    def __init__(self, config: MemoryConfig, device: str | torch.device = "cpu"):
        self.config, self.device = config, torch.device(device)
        k = config.space_dim  # everything below lives in the (projected) space
        self.negatives = torch.zeros(0, k, device=self.device)  # the reference (set_reference)
        self._ref_version = 0  # bumped whenever the reference changes: ℓ is then measured again
        self.n_ref_final = 0  # the first n_ref_final reference rows are finished samples (the rest: x̂0 along trajectories)
        self.mean = torch.zeros(k, device=self.device)
        self.std = torch.ones(k, device=self.device)
        self.centre = torch.zeros(config.dim, device=self.device)  # the projection: (e − centre) @ basis
        self.basis = torch.zeros(config.dim, config.projection, device=self.device) if config.projection else None
        self._full_spacing = 0.0  # the reference's spacing in the full space (set_reference), for full-embedding sketch tables
        self._start_history()

    def _start_history(self) -> None:
        """Fresh heads, optimisers, RNG, replay and counters: the same for the same seed, whenever built."""
        c, k = self.config, self.config.space_dim
        init = torch.Generator().manual_seed(c.seed)  # both heads' initial weights, one after the other
        self.freqs, self.net = heads.head(c, heads.smooth_scales(c), c.hidden, c.fourier_raw, c.seed, init, self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        self.recall_freqs = self.recall_net = self.recall_opt = self.sketch = self.sketch_full = self.codes = None
        self.sketch_unit = 0.0  # ℓ when the sketch took its first sample: its cells are measured in it from then on
        self.sketch_full_unit = 0.0  # the same for the full-embedding tables, in the full space
        if c.sketch_mb:  # the recall head is a sketch of every finished sample, of fixed size
            nbits, full = int(c.sketch_mb * 8 * 2**20), c.sketch_full_tables
            hashes = optimal_hashes(nbits, c.sketch_capacity * c.sketch_tables)
            split = nbits * full // c.sketch_tables // 8 * 8  # the full tables' share of the bits
            if full < c.sketch_tables:
                self.sketch = L2Sketch(k, c.sketch_tables - full, c.sketch_projections, c.sketch_width, nbits - split, hashes,
                                       c.seed + 2, c.sketch_width_min)
            if full:
                self.sketch_full = L2Sketch(c.dim, full, c.sketch_projections, c.sketch_width, split, hashes, c.seed + 3,
                                            c.sketch_width_min)
        elif c.codes_capacity:  # the recall head is a table of every finished sample's code, of fixed size
            self.codes = CodeTable(k, c.codes_capacity, c.codes_bytes, c.codes_train)
        elif c.recall:  # sharp features, no raw input: memorises points (the old single-scale memory)
            self.recall_freqs, self.recall_net = heads.head(c, heads.sharp_scales(c), c.recall_hidden, False, c.seed + 1, init,
                                                            self.device)
            self.recall_opt = torch.optim.Adam(self.recall_net.parameters(), lr=c.lr)
        self.gen = torch.Generator("cpu").manual_seed(c.seed)  # replay, batches, jitter and queries draw from this
        self.replay = torch.zeros(0, k, device=self.device)
        self.replay_final = torch.zeros(0, k, device=self.device)  # finished samples only (the recall head's)
        self.n_seen = 0  # samples observed
        self.n_offered = 0  # embeddings offered to the replay (with trajectories, several per sample)
        self.train_steps = 0

    # -- scoring --------------------------------------------------------------------------
    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, dim) in the memory's space (B, space_dim): unchanged without ``projection``; differentiable."""
        if embeddings.shape[-1] != self.config.dim:
            raise NoveltynetsError(f"embedding dimension {embeddings.shape[-1]} does not match the memory's {self.config.dim}")
        e = embeddings.to(self.device)
        return e if self.basis is None else (e - self.centre) @ self.basis

    def _smooth_features(self, z: torch.Tensor) -> torch.Tensor:
        """The smooth head's input from rows in the memory's space (in units of ℓ for proximity targets)."""
        scale = self.neighbour_distance() if self.config.target == "proximity" else self.std
        return heads.features(z, self.mean, scale, self.freqs, self.config.fourier_raw)

    def _smooth_logit(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self._smooth_features(z)).squeeze(-1)

    def _recall_logit(self, z: torch.Tensor, full: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` in the memory's space; ``full``, the same rows unprojected (read by full-embedding sketch tables)."""
        if self.sketch is not None or self.sketch_full is not None:  # log-odds from the share of tables whose cell
            # holds a sample (not differentiable)
            tables, h = self.config.sketch_tables, torch.zeros(len(z), device=z.device)
            if self._sketch_count():
                if self.sketch is not None:
                    h = h + self.sketch.hits(z.detach() / self.sketch_unit).to(z.device, torch.float32)
                if self.sketch_full is not None:
                    h = h + self.sketch_full.hits(full.detach() / self.sketch_full_unit).to(z.device, torch.float32)
            return torch.log((h + 0.5) / (tables - h + 0.5))
        if self.codes is not None:  # the proximity of the nearest kept code, exp(−d²/2r²) as log-odds (not differentiable)
            a = self.codes.nearest_sq(z).to(z.device) / (2 * (self.config.proximity_radius * self.neighbour_distance()) ** 2)
            a = a.clamp_min(1e-12)
            return -a - torch.log(-torch.expm1(-a))
        if self.recall_net is None:
            return self._smooth_logit(z)
        return self.recall_net(heads.features(z, self.mean, self.std, self.recall_freqs, False)).squeeze(-1)

    def logit(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, dim) → (B,) log-odds of "generated before, or near something that was"; differentiable:
        the smooth head, which guidance follows (in proximity mode, sigmoid(logit) ≈ exp(−d²/2r²))."""
        return self._smooth_logit(self.project(embeddings))

    def recall_logit(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, dim) → (B,) log-odds that this very sample was observed: the sharp recall head, or the sketch
        (``sketch_mb``: log((hits + ½)/(tables − hits + ½))), or the codes (``codes_capacity``: the log-odds of
        exp(−d²/2r²), d to the nearest code, r = proximity_radius·ℓ; neither differentiable), or the smooth head without any."""
        return self._recall_logit(self.project(embeddings), embeddings.to(self.device))

    def _sketch_count(self) -> int:
        """Samples the sketch holds (its tables all took every one)."""
        return (self.sketch or self.sketch_full).n_added

    @torch.no_grad()
    def seen_probability(self, embeddings: torch.Tensor) -> torch.Tensor:
        """P(this sample has been generated in this scope), by the recall head."""
        return torch.sigmoid(self.recall_logit(embeddings))

    def neighbour_distance(self) -> float:
        """The memory's unit of length: the median nearest-neighbour distance among its reference
        samples' finished embeddings (at most the first 1,024), or among observed samples if it has no
        reference (jitter negatives). Guidance pushes are measured in it. Cached."""
        if self.n_ref_final >= 2:
            ref, key = self.negatives[: self.n_ref_final], ("reference", self._ref_version)
        else:  # the replay changes with every observation (a full reservoir in place): keyed by what has been seen
            ref = self.replay_final if len(self.replay_final) >= 2 else self.replay
            key = ("replay", len(ref), self.n_seen)
        if getattr(self, "_nn_key", None) != key:
            if len(ref) < 2:
                raise NoveltynetsError("the memory has no reference and fewer than 2 observed samples: no unit of length yet")
            self._nn, self._nn_key = median_nn_distance(ref[:1024]), key
        return self._nn

    # -- learning -------------------------------------------------------------------------
    def set_reference(self, negatives: torch.Tensor, n_final: int | None = None) -> None:
        """Reference embeddings (never generated in this scope); also fixes the input normalisation.
        ``n_final``: the first n_final rows are finished samples, the rest x̂0 along their
        trajectories (as :func:`~noveltynets.session.pool_run` returns them); default all."""
        negatives = negatives.detach().float().to(self.device)
        if negatives.ndim != 2 or negatives.shape[1] != self.config.dim or len(negatives) < 2:
            raise NoveltynetsError(f"reference negatives must be (N >= 2, {self.config.dim}), got {tuple(negatives.shape)}")
        n_final = len(negatives) if n_final is None else n_final
        if not 2 <= n_final <= len(negatives):
            raise NoveltynetsError(f"n_final must be between 2 and {len(negatives)}, got {n_final}")
        if self.sketch_full is not None:  # the full tables' unit: the reference's spacing in the full space
            self._full_spacing = median_nn_distance(negatives[:min(n_final, 1024)])
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
        self._ref_version += 1

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        """Per-dimension divisor. Per-dim std blows up near-constant dims (an 8×8 pooling's border
        cells): a 0.01 change there became ~10 units and the memory learned border noise (measured)."""
        std = x.std(0)
        if self.config.scaling == "isotropic":
            std = torch.full_like(std, float(std.pow(2).mean().sqrt()))
        return std.clamp_min(1e-3)

    def _remember(self, buf: torch.Tensor, emb: torch.Tensor, offered: int) -> tuple[torch.Tensor, int]:
        """``emb`` added to a replay buffer: a reservoir of replay_size rows, or all of them with ``replay="full"``."""
        cap = self.config.replay_size if self.config.replay == "reservoir" else None
        return reservoir_add(buf, emb, offered, cap, self.gen)

    def _noise(self, x: torch.Tensor, level: float) -> torch.Tensor:
        """Gaussian noise of ``level`` × per-dimension std (see :func:`.targets.noise`)."""
        return targets.noise(self, x, level)

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
        raw, new = new[:n_samples], self.project(new).detach()
        if len(self.negatives) == 0:  # jitter mode: normalise by the first positives
            self.mean, self.std = new.mean(0), self._scale(new) if len(new) > 1 else self.std
        self.replay, self.n_offered = self._remember(self.replay, new, self.n_offered)
        if self.recall_net is not None:
            self.replay_final, _ = self._remember(self.replay_final, new[:n_samples], self.n_seen)
        if self.sketch is not None:
            self.sketch_unit = self.sketch_unit or self.neighbour_distance()
            self.sketch.add(new[:n_samples] / self.sketch_unit)
        if self.sketch_full is not None:
            self.sketch_full_unit = self.sketch_full_unit or self._full_spacing
            self.sketch_full.add(raw / self.sketch_full_unit)
        if self.codes is not None:
            self.codes.add(new[:n_samples], self.gen)
        self.n_seen += n_samples
        return self.rehearse(steps, new, n_samples)

    def rehearse(self, steps: int | None = None, new: torch.Tensor | None = None, n_final: int | None = None) -> float:
        """Train on replay (and ``new``, always in every batch) against the negatives; returns the
        smooth head's last loss. ``new[:n_final]`` are finished samples (the recall head's positives)."""
        new = new if new is not None else self.replay[:0]
        n_final = len(new) if n_final is None else n_final
        if len(self.replay) == 0:
            raise NoveltynetsError("nothing to rehearse: the memory has observed nothing")
        c, loss = self.config, torch.tensor(0.0)
        steps = steps if steps is not None else c.steps_per_observe
        if c.target == "proximity":  # queries with exact targets, made once and cycled through
            batches = targets.proximity_batches(self, new, min(steps, max(1, c.query_rows // (2 * c.batch_size))))
        for step in range(steps):
            if c.target == "proximity":  # 1. the smooth head: queries around history and the reference, their proximity
                loss = self._step(lambda f: self.net(f).squeeze(-1), self.opt, *batches[step % len(batches)])
            else:  # 1. the smooth head: history against reference rows (or jittered history)
                loss = self._step(self._smooth_logit, self.opt, *targets.classify_batch(self, new))
            if self.recall_net is not None and len(self.replay_final):  # 2. the recall head: finished samples only
                self._step(self._recall_logit, self.recall_opt, *targets.recall_batch(self, new, n_final))
            self.train_steps += 1
        return float(loss.detach())

    def _step(self, logit_fn, opt, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One Adam step of binary cross-entropy towards ``target`` (labels, or soft proximities); it learns also when
        called under ``torch.no_grad()`` (as diffusers pipelines run)."""
        with torch.enable_grad():
            loss = F.binary_cross_entropy_with_logits(logit_fn(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        return loss

    def reset(self) -> None:
        """Forget all history (keeps the config, the reference negatives and the projection fitted on them)."""
        self._start_history()

    # -- persistence (see .serial) ----------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return serial.state_tensors(self)

    def to_bytes(self) -> bytes:
        """Weights, optimiser state, replay, reference and config as one safetensors blob (with its format version)."""
        return serial.to_bytes(self)

    @classmethod
    def from_bytes(cls, blob: bytes, device: str | torch.device = "cpu") -> "NoveltyMemory":
        """A memory from :meth:`to_bytes`'s blob, of this format version or any earlier one."""
        return serial.from_bytes(cls, blob, device)


def median_nn_distance(x: torch.Tensor) -> float:
    """The median distance from each row of ``x`` (N >= 2, dim) to its nearest other row."""
    x = x.double()
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return float(d.min(1).values.median())
