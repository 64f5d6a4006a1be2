"""Configuration of the Size Interpolator network and of its training run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from umaf.components import config_from_dict
from umaf.config import FINGERPRINT_DIM
from umaf.errors import UmafError


@dataclass
class InterpolatorConfig:
    """Shape of the Size Interpolator network (see :class:`umaf.interpolator.SizeInterpolator`)."""

    fp_dim: int = field(default=FINGERPRINT_DIM, metadata={"help": "Width of the fingerprints it moves."})
    hidden: int = field(default=128, metadata={"help": "Hidden width of the velocity network."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout inside the network during training."})
    condition_on_scale: bool = field(
        default=True,
        metadata={"help": "Feed the mid-point scale to the network (else only the fingerprint)."},
    )
    extractor_hash: str | None = field(
        default=None,
        metadata={"help": "Extractor whose fingerprints it was trained on (None: untrained, accepts any)."},
    )
    scale_low: tuple[float, ...] | None = field(
        default=None,
        metadata={"help": "Lowest scale features of the training sizes (set by training; None: no limit)."},
    )
    scale_high: tuple[float, ...] | None = field(
        default=None,
        metadata={"help": "Highest scale features of the training sizes (set by training; None: no limit)."},
    )

    def __post_init__(self) -> None:
        for name in ("fp_dim", "hidden"):
            if getattr(self, name) < 1:
                raise UmafError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UmafError(f"dropout must be in [0, 1), got {self.dropout}")
        if (self.scale_low is None) != (self.scale_high is None):
            raise UmafError("scale_low and scale_high are given together or not at all")
        if self.scale_low is not None:
            self.scale_low, self.scale_high = tuple(self.scale_low), tuple(self.scale_high)
            from umaf.interpolator.scale import N_SCALE_FEATURES

            n = N_SCALE_FEATURES
            if len(self.scale_low) != n or len(self.scale_high) != n or any(
                lo > hi for lo, hi in zip(self.scale_low, self.scale_high, strict=True)
            ):
                raise UmafError(f"scale_low and scale_high must be {n} features each, low <= high")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InterpolatorConfig:
        """Build from a dict (e.g. config.json); unknown keys and wrong-typed values are errors."""
        return config_from_dict(cls, data, "interpolator config")


@dataclass
class InterpolatorTrainConfig:
    """Settings of :func:`umaf.interpolator.train_interpolator` (each ``help`` doubles as CLI help)."""

    interpolator: InterpolatorConfig = field(
        default_factory=InterpolatorConfig, metadata={"help": "Network shape."}
    )
    families: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Zoo families to train on (default: every family with 3+ sizes)."}
    )
    held_out_sizes: tuple[str, ...] = field(
        default=("s",), metadata={"help": "Zoo sizes kept out of training (evaluated to and from)."}
    )
    n_family_instances: int = field(
        default=4, metadata={"help": "Instances per parametric family added as extra capabilities."}
    )
    select_fraction: float = field(
        default=0.2,
        metadata={"help": "Share of capabilities held apart to choose the weights kept (best cosine)."},
    )
    steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    val_every: int = field(default=50, metadata={"help": "Steps between checks on the held-apart pairs."})
    batch_size: int = field(default=64, metadata={"help": "Fingerprint pairs per step."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (cosine decay to 10 %)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and pair sampling."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.val_every < 1:
            raise UmafError("steps, batch_size and val_every must be at least 1")
        if not 0.0 <= self.select_fraction < 1.0:
            raise UmafError(f"select_fraction must be in [0, 1), got {self.select_fraction}")
        if self.lr <= 0:
            raise UmafError(f"lr must be positive, got {self.lr}")
        if not self.held_out_sizes:
            raise UmafError("held_out_sizes must name at least one zoo size (e.g. 's')")
        from umaf.models import TINY_SIZES

        unknown = [s for s in self.held_out_sizes if s not in TINY_SIZES]
        if unknown:
            raise UmafError(f"unknown zoo size {unknown[0]!r} in held_out_sizes; choose from: "
                            f"{', '.join(TINY_SIZES)}")  # fmt: skip
