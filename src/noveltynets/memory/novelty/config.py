"""MemoryConfig: every setting of a novelty memory, in one flat dataclass grouped by concern.

The fields are flat on purpose: users set them by name (``novelty:proximity_radius=0.5``) and
stores keep them as one JSON object, so a name or default never changes. The groups below are
ordered sections of the definition (identity, net, recall head, sketch, codes, replay, reference and negatives,
targets, projection); :attr:`MemoryConfig.sections` is a derived, read-only view by section.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ...errors import NoveltynetsError


@dataclass
class MemoryConfig:
    """A novelty memory's settings (see :mod:`noveltynets.memory.novelty`), section by section:

    - **identity**: what the memory belongs to (``dim``, ``embedder_id``, ``model_id``) and ``seed``,
      which fixes its initial weights and its draws (it does not touch the process's RNG).
    - **net**: the smooth head, the one guidance follows: an MLP on random Fourier features of the
      normalised input, and its training (Adam, steps and batch size per observe).
    - **recall**: a second, sharp head that answers "was this very sample generated?".
    - **sketch**: or, for long histories, a fixed-size LSH sketch of every finished sample in its place.
    - **codes**: or a table of residual-quantizer codes of every finished sample (13 bytes each), in its place.
    - **replay**: the remembered embeddings (a reservoir of fixed size, or all of them).
    - **reference / negatives**: what counts as "not generated here" and the jitter on drawn rows.
    - **targets**: what the smooth head learns, proximity to history (regressed) or classification.
    - **projection**: the space it all lives in (top principal directions of the reference).
    """

    # -- identity ------------------------------------------------------------------------------
    dim: int
    embedder_id: str
    model_id: str = ""
    seed: int = 0  # initial weights and every random draw (replay, batches, jitter, queries)

    # -- net: the smooth head ------------------------------------------------------------------
    hidden: int = 512
    layers: int = 2
    lr: float = 1e-3
    steps_per_observe: int = 20
    batch_size: int = 256
    fourier: int = 256  # > 0: random Fourier features of the normalised input (count), for local memorisation
    fourier_sigma: float = 1.0  # their frequency scale
    fourier_sigma_min: float = 0.1  # > 0: frequency scales spread geometrically from this to fourier_sigma (smooth and local
    # features: σ = 1 alone memorised points and missed near-duplicates of them, measured); 0: all at fourier_sigma
    fourier_raw: bool = False  # True: the net sees the normalised input beside its Fourier features (smooth + local)
    scaling: str = "isotropic"  # input scaling: "isotropic" (one scale for all dims) or "per-dim" (each dim's std)

    # -- recall: the sharp head ----------------------------------------------------------------
    recall: bool = True  # a second, sharp head (Fourier σ = fourier_sigma, finished samples only) answers seen_probability
    recall_hidden: int = 256  # its width; the smooth head above steers guidance (it generalises to near-duplicates but
    # recalls exact samples worse: seen AUC 0.88 at 1k, 0.64 at 10k observed samples, measured)

    # -- sketch: a fixed-size recall head for long histories --------------------------------------
    sketch_mb: float = 0.0  # > 0: the recall head is a sketch of every finished sample of this many MiB (Euclidean LSH
    # tables in one Bloom filter, noveltynets.embed.sketch) instead of the sharp net, so "was this very sample generated?"
    # stays answered as history grows past what a fixed net remembers (net seen AUC 0.578 at 100k samples, measured);
    # its size is fixed when the memory is made, whatever the history
    sketch_tables: int = 16  # LSH tables, cells of widths spread geometrically from sketch_width_min to sketch_width (in ℓ)
    sketch_projections: int = 6  # directions per table (a cell's sides)
    sketch_width: float = 1.2
    sketch_width_min: float = 0.3
    sketch_capacity: int = 1_000_000  # the samples the Bloom filter's bits per key are chosen for (false positives rise beyond)
    sketch_full_tables: int = 0  # of sketch_tables, how many hash the full embedding instead of its projection (their share
    # of the bits too; cells in units of the full reference's spacing). In the projection, fresh rows of a long history lie
    # close to observed ones; the full rows tell them apart (1,024-d at 10^6: seen AUC 0.935 all projected, 0.968 with 8 of
    # 16 full, docs/benchmarks/capacity/sketch_space.log), at some near-dup recall

    # -- codes: a recall head of a few bytes per sample ---------------------------------------------
    codes_capacity: int = 0  # > 0: the recall head keeps every finished sample (up to this many; a reservoir beyond) as a
    # residual-quantizer code of codes_bytes + 1 bytes (noveltynets.memory.novelty.codes), in the memory's space, and
    # answers by the distance to the nearest one; its table (capacity × (codes_bytes + 1) bytes) is allocated when the
    # codebooks are trained. At 10^6 samples it keeps near-duplicates apart where the sketch's cells merge them
    # (docs/benchmarks/capacity)
    codes_bytes: int = 12  # codebooks of 8 bits each, one byte of the code each (plus one for the row's norm)
    codes_train: int = 10_000  # the codebooks are trained once on the first this many finished samples (kept as rows until
    # then; at least 256: each codebook is 256 k-means centroids of them)

    # -- replay --------------------------------------------------------------------------------
    replay: str = "reservoir"  # "reservoir" (fixed size) or "full" (keeps every positive)
    replay_size: int = 20_000
    trajectory: bool = False  # the memory may observe x̂0 along trajectories: a classify memory only when its reference
    # holds unguided x̂0 at the same steps (else it learns "blurry = seen"); a proximity memory with any reference, as its
    # targets are exact distances to what it remembers, whatever the query looks like

    # -- reference / negatives -----------------------------------------------------------------
    negatives: str = "pool"  # "pool" (unguided samples), "real" (real images) or "jitter"
    jitter_sigma: float = 0.5  # × per-dimension std, for jitter negatives
    negative_jitter: float = 0.3  # × per-dimension std: fresh Gaussian noise on every drawn reference negative
    positive_jitter: float = 0.0  # the same for positives; = negative_jitter removes the "off the manifold = unseen" cue
    jitter_spread: bool = False  # True: each drawn sample's jitter level is uniform in [0, the value above] (multi-scale bumps)

    # -- targets: what the smooth head learns --------------------------------------------------
    target: str = "proximity"  # "proximity" (soft proximity to history, regressed) or "classify" (history against reference)
    proximity_radius: float = 0.7  # r of P = exp(−d²/2r²), in units of ℓ (the reference's nearest-neighbour distance)
    query_jitter: float = 1.5  # proximity queries: rows plus Gaussian noise of norm uniform in [0, this] × ℓ
    proximity_sigma_min: float = 0.3  # the smooth head's Fourier frequency scales in proximity mode, per ℓ
    proximity_sigma: float = 3.0
    target_rows: int = 4096  # remembered rows the targets' distances are taken against (a random draw beyond)
    query_rows: int = 2048  # proximity queries (with exact targets) made per update, cycled through its steps in batches

    # -- projection ----------------------------------------------------------------------------
    projection: int = 32  # > 0: the memory lives in the top-k principal directions of its reference's finished samples
    # (fixed when the reference is set): distances, replay and both heads in k dimensions, so the smooth head's gradient
    # points along the ways the model's samples vary (measured offline, class 7: cosine with "away from the nearest
    # history sample" 0.38 at k = 32 against 0.10 on full pixels, near-dup AUC 0.76 both) and the replay is k-d

    @property
    def space_dim(self) -> int:
        """The dimension the heads, replay and distances work in."""
        return self.projection or self.dim

    @property
    def sections(self) -> dict[str, dict]:
        """The settings by section (a derived view: set fields by their flat names)."""
        return {section: {name: getattr(self, name) for name in names} for section, names in SECTIONS.items()}

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
        if self.sketch_mb < 0 or (self.sketch_mb and min(self.sketch_tables, self.sketch_projections, self.sketch_capacity) < 1):
            raise NoveltynetsError("sketch_mb must be >= 0 (0: off), sketch_tables, sketch_projections and sketch_capacity >= 1")
        if self.sketch_mb and not 0 <= self.sketch_full_tables <= self.sketch_tables:
            raise NoveltynetsError(f"sketch_full_tables must be in 0..sketch_tables ({self.sketch_tables}), got {self.sketch_full_tables}")
        if self.sketch_mb and not 0 < self.sketch_width_min <= self.sketch_width:
            raise NoveltynetsError("the sketch's widths need 0 < sketch_width_min <= sketch_width")
        if self.sketch_mb and self.negatives == "jitter":
            raise NoveltynetsError("a sketch measures cells in units of the reference's spacing: it needs reference negatives "
                                   "('pool' or 'real'), not 'jitter'")
        if not 64 <= self.sketch_mb * 8 * 2**20 < 2**31 and self.sketch_mb:
            raise NoveltynetsError(f"sketch_mb must be between 1e-5 and 255 MiB, got {self.sketch_mb}")
        if self.codes_capacity < 0 or (self.codes_capacity and not 256 <= self.codes_train <= self.codes_capacity):
            raise NoveltynetsError(f"codes_capacity must be >= 0 (0: off) and codes_train in 256..codes_capacity (each codebook "
                                   f"is 256 k-means centroids of those rows), got "
                                   f"codes_capacity={self.codes_capacity}, codes_train={self.codes_train}")
        if self.codes_capacity and not 1 <= self.codes_bytes <= 64:
            raise NoveltynetsError(f"codes_bytes must be in 1..64, got {self.codes_bytes}")
        if self.codes_capacity and self.sketch_mb:
            raise NoveltynetsError("one recall head: set sketch_mb or codes_capacity, not both")
        if self.codes_capacity and self.negatives == "jitter":
            raise NoveltynetsError("codes measure distances in units of the reference's spacing: they need reference "
                                   "negatives ('pool' or 'real'), not 'jitter'")
        if self.projection < 0:
            raise NoveltynetsError(f"projection must be >= 0 (0: off), got {self.projection}")
        if self.projection >= self.dim or self.negatives == "jitter":
            self.projection = 0  # nothing to reduce, or no reference samples to find principal directions in

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryConfig":
        """A config from its flat dict (stored JSON), ignoring names it does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


SECTIONS: dict[str, tuple[str, ...]] = {  # the sections above, in order: every field in exactly one
    "identity": ("dim", "embedder_id", "model_id", "seed"),
    "net": ("hidden", "layers", "lr", "steps_per_observe", "batch_size", "fourier", "fourier_sigma", "fourier_sigma_min",
            "fourier_raw", "scaling"),
    "recall": ("recall", "recall_hidden"),
    "sketch": ("sketch_mb", "sketch_tables", "sketch_projections", "sketch_width", "sketch_width_min", "sketch_capacity",
               "sketch_full_tables"),
    "codes": ("codes_capacity", "codes_bytes", "codes_train"),
    "replay": ("replay", "replay_size", "trajectory"),
    "negatives": ("negatives", "jitter_sigma", "negative_jitter", "positive_jitter", "jitter_spread"),
    "targets": ("target", "proximity_radius", "query_jitter", "proximity_sigma_min", "proximity_sigma", "target_rows",
                "query_rows"),
    "projection": ("projection",),
}
