"""One sampling config: what a run's images depend on besides seeds, model and guidance.

Used alike by :func:`~noveltynets.sampling.sample`, the CLI, the bench, the reference pool's
cache key and the manifest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import NoveltynetsError
from ..spec import in_range


@dataclass(frozen=True)
class SamplingConfig:
    """``klass=None`` samples unconditionally (CFG is then off, see :attr:`cfg_used`); ``temperature`` scales
    the initial noise; ``batch_size`` and ``device`` never change an image (per-sample seeds). A bad value is
    refused with an error that starts with the field's name (the CLI turns it into its option's)."""

    klass: int | None = None
    cfg: float = 2.0
    steps: int = 50
    scheduler: str = "ddim"
    eta: float = 0.0
    temperature: float = 1.0
    batch_size: int = 16
    device: str = "cpu"
    grad_mode: str = "x0"  # guidance gradients: "x0" (cheap) or "exact" (a backward pass through the denoiser)
    ranks: tuple[int, ...] | None = None  # a distilled model's rank index: sample i gets ranks[i % len(ranks)]
    rank_scale: float = 1.0  # rank guidance: the rank's effect on eps taken this many times (1: as trained; needs ranks)
    clean: float = 0.0  # > 0: re-noise each finished sample to clean·T and denoise it again unguided (sampling.clean_up)

    def __post_init__(self):
        if self.steps <= 0:
            raise NoveltynetsError(f"steps must be positive, got {self.steps}")
        if self.batch_size <= 0:
            raise NoveltynetsError(f"batch_size must be positive, got {self.batch_size}")
        if self.grad_mode not in ("x0", "exact"):
            raise NoveltynetsError(f"grad_mode must be x0 or exact, got {self.grad_mode!r}")
        in_range("cfg", self.cfg, 0, 100)
        in_range("eta", self.eta, 0, 1)  # DDIM's eta: 0 deterministic, 1 as stochastic as DDPM; above 1 the variance is invalid
        in_range("temperature", self.temperature, 0, 10, lo_open=True)
        if self.ranks is not None:
            if not self.ranks or any(not isinstance(r, int) or r < 1 for r in self.ranks):
                raise NoveltynetsError(f"ranks must be positive integers (1 = the first rank bin), got {self.ranks}")
            object.__setattr__(self, "ranks", tuple(self.ranks))
        in_range("rank_scale", self.rank_scale, 0, 100)
        in_range("clean", self.clean, 0, 1)
        if self.rank_scale != 1 and self.ranks is None:
            raise NoveltynetsError(f"rank_scale scales a distilled model's ranks: give ranks too (got rank_scale={self.rank_scale} without ranks)")

    @property
    def cfg_used(self) -> float:
        """The CFG scale that acts: 1 (off) for unconditional sampling."""
        return self.cfg if self.klass is not None else 1.0

    def replace(self, **changes) -> "SamplingConfig":
        return dataclasses.replace(self, **changes)

    def key(self) -> str:
        """What unguided images with this config depend on (batch size and device do not), e.g. for a cache key."""
        key = f"class={self.klass}|cfg={self.cfg_used}|steps={self.steps}|{self.scheduler}"
        extra = [f"eta={self.eta}"] * (self.eta != 0) + [f"temperature={self.temperature}"] * (self.temperature != 1)
        if self.ranks is not None:
            extra.append(f"ranks={','.join(map(str, self.ranks))}")
        if self.rank_scale != 1:
            extra.append(f"rank_scale={self.rank_scale}")
        if self.clean:
            extra.append(f"clean={self.clean}")
        return "|".join([key, *extra])

    def to_dict(self) -> dict:
        """For the manifest: every field, with the CFG scale that acts."""
        d = dataclasses.asdict(self)
        d["ranks"] = list(self.ranks) if self.ranks is not None else None
        return {"class": d.pop("klass"), **d, "cfg": self.cfg_used}

    def ranks_of(self, n: int) -> list[int] | None:
        """The rank of each of ``n`` samples in order (``ranks`` repeated), or None without ranks."""
        return None if self.ranks is None else [self.ranks[i % len(self.ranks)] for i in range(n)]
