"""How UMAF trains: the one learning-rate schedule (linear warm-up, then cosine decay to a floor) of every
training loop, and the step loop that the zoo models and the oracle LoRAs share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from umaf.encoding import Encoded, collate
from umaf.errors import UmafError


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


def fit_batches(
    model: nn.Module,
    batches: Iterable[list[Encoded]],
    pad: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    steps: int,
    *,
    desc: str = "train",
    progress: bool = True,
    extra_loss: Callable[[], Tensor] | None = None,
    on_loss: Callable[[int, float], None] | None = None,
    report_every: int = 10,
) -> list[float]:
    """``steps`` optimiser steps of ``model``'s LM loss on ``batches`` (plus ``extra_loss()`` if given), with
    gradients clipped to norm 1; returns the LM loss of every step. A non-finite loss is a UmafError."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = next(model.parameters()).device
    model.train()
    losses: list[float] = []
    numbered = zip(range(steps), batches, strict=False)  # ``batches`` may be endless
    bar = tqdm(numbered, total=steps, disable=not progress, desc=desc, leave=False)
    for step, items in bar:
        loss = model(**{k: v.to(device) for k, v in collate(items, pad).items()}).loss
        if not torch.isfinite(loss):
            raise UmafError(f"training diverged at step {step} (loss {float(loss)}); lower the lr")
        (loss + extra_loss() if extra_loss is not None else loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if on_loss is not None:
            on_loss(step, losses[-1])
        if step % report_every == 0:
            bar.set_postfix(loss=f"{sum(losses[-report_every:]) / len(losses[-report_every:]):.3f}")
    model.eval()
    return losses
