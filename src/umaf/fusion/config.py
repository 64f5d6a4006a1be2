"""Configuration of the fusion gate and of its training."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from umaf.components import config_from_dict
from umaf.config import FINGERPRINT_DIM
from umaf.errors import UmafError


@dataclass
class GateConfig:
    """Shape of the task-conditioned gate (see :class:`umaf.fusion.FusionGate`)."""

    fp_dim: int = field(default=FINGERPRINT_DIM, metadata={"help": "Width of the fingerprints it weighs."})
    key_dim: int = field(default=128, metadata={"help": "Width of the learned query/key projections."})
    temperature: float = field(
        default=0.1, metadata={"help": "Initial softmax temperature of the query-source cosine."}
    )
    reference_model: str = field(
        default="zoo:llama-m-a",
        metadata={"help": "Model that reads a capability name into a query fingerprint."},
    )
    extractor_hash: str | None = field(
        default=None,
        metadata={"help": "Extractor whose fingerprints it was trained on (None: untrained, accepts any)."},
    )

    def __post_init__(self) -> None:
        if self.fp_dim < 1 or self.key_dim < 1:
            raise UmafError("fp_dim and key_dim must be positive")
        if not self.temperature > 0:
            raise UmafError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateConfig:
        """Build from a dict (e.g. config.json); unknown keys and wrong-typed values are errors."""
        return config_from_dict(cls, data, "gate config")


@dataclass
class FusionTrainConfig:
    """Settings of :func:`umaf.fusion.train_fusion` (each ``help`` doubles as CLI help)."""

    gate: GateConfig = field(default_factory=GateConfig, metadata={"help": "Gate shape."})
    min_sources: int = field(default=2, metadata={"help": "Fewest sources per training episode."})
    max_sources: int = field(default=5, metadata={"help": "Most sources per training episode."})
    n_family_instances: int = field(
        default=4, metadata={"help": "Instances per parametric family added as extra capabilities."}
    )
    val_fraction: float = field(
        default=0.2, metadata={"help": "Share of training capabilities held apart for validation."}
    )
    steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=64, metadata={"help": "Episodes per step."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and episode sampling."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if not 2 <= self.min_sources <= self.max_sources:
            raise UmafError("need 2 <= min_sources <= max_sources")
        if self.steps < 1 or self.batch_size < 1:
            raise UmafError("steps and batch_size must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UmafError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
