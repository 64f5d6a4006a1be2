"""The learning-rate schedule of every UMAF training loop: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, steps: int, warmup: int, floor: float) -> float:
    """LR multiplier at ``step``: ``(step + 1) / warmup`` for the first ``warmup`` steps, then a cosine from
    1 down to ``floor`` at ``steps`` (held there after)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, steps: int, warmup: int, floor: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping ``optimizer`` along :func:`warmup_cosine`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup, floor))
