"""Similarity metrics for fingerprints (and for raw activations), registered by name.

A metric is one decorated function. Vector metrics compare two fingerprint vectors ``[D]``; the
activation metric ``cka`` compares two activation sets ``[n, d1]`` and ``[n, d2]`` taken on the same
``n`` texts, and serves as an external yardstick that needs no trained extractor.

Adding a metric::

    @register_similarity("dot", higher_is_better=True)
    def dot(a: Tensor, b: Tensor) -> float:
        return float(a @ b)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from umaf.errors import UmafError
from umaf.registry import Registry

#: Temperature of the softmax that turns fingerprints into distributions for ``kl``. Fingerprints are
#: unit vectors (entries in [-1, 1]), so a small temperature is needed for the distributions to differ.
KL_TEMPERATURE = 0.1

_EPS = 1e-12


@dataclass(frozen=True)
class Similarity:
    """A registered metric: the function, which direction is "closer", and what it takes as input."""

    name: str
    fn: Callable[[Tensor, Tensor], float]
    higher_is_better: bool
    inputs: str  # "vectors" ([D] x [D]) or "activations" ([n, d1] x [n, d2])
    reference: str = ""

    def __call__(self, a: Tensor, b: Tensor) -> float:
        a, b = _as_float64(a), _as_float64(b)
        _check_shapes(self, a, b)
        return float(self.fn(a, b))


SIMILARITIES: Registry[Similarity] = Registry("similarity")


def register_similarity(
    name: str, *, higher_is_better: bool, inputs: str = "vectors", reference: str = ""
) -> Callable[[Callable[[Tensor, Tensor], float]], Callable[[Tensor, Tensor], float]]:
    """Decorator: register ``fn(a, b) -> float`` in :data:`SIMILARITIES` under ``name``."""
    if inputs not in ("vectors", "activations"):
        raise ValueError(f"inputs must be 'vectors' or 'activations', not {inputs!r}")

    def wrap(fn: Callable[[Tensor, Tensor], float]) -> Callable[[Tensor, Tensor], float]:
        SIMILARITIES.register(name, Similarity(name, fn, higher_is_better, inputs, reference))
        return fn

    return wrap


def _as_float64(x: Tensor) -> Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise UmafError("cannot compare tensors that contain NaN or infinite values")
    return x


def _check_shapes(metric: Similarity, a: Tensor, b: Tensor) -> None:
    if metric.inputs == "vectors":
        if a.dim() != 1 or a.shape != b.shape:
            raise UmafError(
                f"{metric.name} compares two vectors of one length, "
                f"got shapes {tuple(a.shape)} and {tuple(b.shape)}"
            )
    elif a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise UmafError(
            f"{metric.name} compares two activation sets [n, d1] and [n, d2] on the same n texts, "
            f"got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    elif a.shape[0] < 2:
        raise UmafError(f"{metric.name} needs at least 2 texts, got {a.shape[0]}")


@register_similarity("cosine", higher_is_better=True)
def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine of the angle between two vectors, in [-1, 1]."""
    return float(a @ b / (a.norm() * b.norm()).clamp_min(_EPS))


@register_similarity(
    "kl", higher_is_better=False, reference="https://en.wikipedia.org/wiki/Kullback-Leibler_divergence"
)
def kl(a: Tensor, b: Tensor, temperature: float = KL_TEMPERATURE) -> float:
    """Symmetric KL divergence ``(KL(p||q) + KL(q||p)) / 2`` of ``p = softmax(a/τ)``, ``q = softmax(b/τ)``.

    A distance: 0 for equal vectors, larger is further apart.
    """
    log_p = F.log_softmax(a / temperature, dim=-1)  # [D]
    log_q = F.log_softmax(b / temperature, dim=-1)  # [D]
    p, q = log_p.exp(), log_q.exp()
    return float(0.5 * ((p * (log_p - log_q)).sum() + (q * (log_q - log_p)).sum()))


@register_similarity("pearson", higher_is_better=True)
def pearson(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of the entries of two vectors, in [-1, 1] (0 if either is constant)."""
    return cosine(a - a.mean(), b - b.mean())


@register_similarity(
    "cka", higher_is_better=True, inputs="activations", reference="https://arxiv.org/abs/1905.00414"
)
def cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA (Kornblith et al., 2019) between activations ``x [n, d1]`` and ``y [n, d2]``, in [0, 1].

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``; invariant to
    orthogonal transforms and isotropic scaling of either side, so it compares models of any width.
    """
    x = x - x.mean(dim=0, keepdim=True)  # [n, d1]
    y = y - y.mean(dim=0, keepdim=True)  # [n, d2]
    if x.shape[0] < max(x.shape[1], y.shape[1]):  # Gram form is cheaper when n < d
        kx, ky = x @ x.T, y @ y.T  # [n, n]
        cross, self_x, self_y = (kx * ky).sum(), kx.norm(), ky.norm()
    else:
        cross, self_x, self_y = (y.T @ x).norm() ** 2, (x.T @ x).norm(), (y.T @ y).norm()
    return float(cross / (self_x * self_y).clamp_min(_EPS))


def similarity(name: str, a: Tensor, b: Tensor) -> float:
    """Compare ``a`` and ``b`` with the metric called ``name``; see :data:`SIMILARITIES` for the choices."""
    return SIMILARITIES.get(name)(a, b)


def similarity_matrix(name: str, vectors: Tensor | Sequence[Tensor]) -> Tensor:
    """All pairwise values of metric ``name``: ``[N, N]`` float32 for ``N`` vectors (or activation sets).

    ``vectors`` is a ``[N, D]`` tensor or a sequence of ``N`` tensors (``[n, d_i]`` for ``cka``).
    """
    metric = SIMILARITIES.get(name)
    items = list(vectors.unbind(0) if isinstance(vectors, Tensor) else vectors)
    n = len(items)
    out = torch.zeros(n, n, dtype=torch.float64)  # [N, N]
    for i in range(n):
        for j in range(i, n):
            out[i, j] = out[j, i] = metric(items[i], items[j])
    return out.float()
