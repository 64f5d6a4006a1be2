"""Activation capture: read the residual stream after each transformer block through forward hooks."""

from umaf.capture.hooks import (
    POOLINGS,
    attached_hooks,
    capture_activations,
    find_blocks,
    last_pool,
    mean_pool,
)

__all__ = ["POOLINGS", "attached_hooks", "capture_activations", "find_blocks", "last_pool", "mean_pool"]
