"""Fusion modes: how several fingerprint vectors and their weights become one vector.

Each mode is one decorated function ``combine(vectors [N, D], weights [N]) -> [D]`` registered under a
lowercase name, with a reference where the idea comes from and the constraints it puts on weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from umaf.registry import Registry

Combine = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FusionMode:
    """A registered fusion mode and what it requires of its weights and inputs."""

    name: str
    combine: Combine
    reference: str | None = None
    normalise: bool = True  # weights are divided by their sum before ``combine``
    allow_negative: bool = False
    uses_gate: bool = False  # weights come from a learned gate given a query

    @property
    def description(self) -> str:
        """First line of the mode's docstring."""
        return (self.combine.__doc__ or "").strip().splitlines()[0]


FUSION_MODES: Registry[FusionMode] = Registry("fusion mode")


def fusion_mode(
    name: str,
    *,
    reference: str | None = None,
    normalise: bool = True,
    allow_negative: bool = False,
    uses_gate: bool = False,
) -> Callable[[Combine], Combine]:
    """Decorator registering ``combine`` as fusion mode ``name`` in :data:`FUSION_MODES`."""

    def register(fn: Combine) -> Combine:
        FUSION_MODES.register(name, FusionMode(name, fn, reference, normalise, allow_negative, uses_gate))
        return fn

    return register


@fusion_mode("average", reference="https://arxiv.org/abs/2203.05482")
def weighted_average(vectors: Tensor, weights: Tensor) -> Tensor:
    """Weighted arithmetic mean of the vectors (weights sum to one)."""
    return weights @ vectors  # [D]


@fusion_mode("slerp", reference="https://doi.org/10.1145/502122.502124")
def spherical_average(vectors: Tensor, weights: Tensor, iterations: int = 50) -> Tensor:
    """Weighted spherical mean (SLERP for two sources), scaled to the weighted mean norm.

    Fingerprints are unit vectors: a linear mean of different capabilities shrinks towards the origin,
    away from anything the generator saw in training; the spherical (Karcher) mean stays on the sphere.
    Fixed-point iteration of Buss & Fillmore (2001): log-map every point to the tangent space at the
    current mean, average there, exp-map back.
    """
    x, w = vectors.double(), weights.double()  # float64: angles near zero need the precision
    norms = x.norm(dim=-1).clamp_min(1e-12)  # [N]
    units = x / norms[:, None]  # [N, D]
    mean = F.normalize(w @ units, dim=-1)  # [D] start: the projected linear mean
    for _ in range(iterations):
        cos = units @ mean  # [N]
        tangent = units - cos[:, None] * mean  # [N, D]
        sin = tangent.norm(dim=-1)  # [N]
        angle = torch.atan2(sin, cos)  # [N], accurate near 0 unlike arccos
        step = w @ (tangent * (angle / sin.clamp_min(1e-15))[:, None])  # [D] mean of the log maps
        length = step.norm()
        if length < 1e-12:
            break
        mean = F.normalize(torch.cos(length) * mean + torch.sin(length) * step / length, dim=-1)  # exp map
    return (mean * (w @ norms)).to(vectors.dtype)


@fusion_mode("gated", reference="https://arxiv.org/abs/2402.09997", uses_gate=True)
def gated_average(vectors: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean with weights from a learned task-conditioned gate (times any user weights)."""
    return weights @ vectors  # [D]


@fusion_mode(
    "task_arithmetic", reference="https://arxiv.org/abs/2212.04089", normalise=False, allow_negative=True
)
def weighted_sum(vectors: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum, weights as given (negative ones subtract a capability).

    Where the averaging modes ask the generator for a point between capabilities, the sum keeps each
    source at full strength: for a generator that is close to linear in its input, the adapter of a sum
    is close to the sum of the adapters, which is what a multi-capability adapter needs.
    """
    return weights @ vectors  # [D]
