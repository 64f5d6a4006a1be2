"""Input Processor: turns any model's activations into features of one fixed shape, with no trained weights.

Relative representations (Moschella et al., ICLR 2023, https://arxiv.org/abs/2209.15430): a probe text
is described not by its activation vector (whose width and basis differ between models) but by its
cosine similarities to the activations of a fixed, shipped set of anchor texts, read from the same model
and the same layer. Depth is made model-independent by resampling the layers to ``depth_bins`` fixed
relative depths (linear interpolation between the two nearest blocks, so only those blocks are captured).

Per layer, before the cosine, each pooled activation is optionally L2- or layer-normalised and then
centred on the anchors' mean; after resampling, each probe's anchor profile is optionally z-scored.
Output: features ``[depth_bins, probes, anchors]``.

The ``layer_profile [depth_bins]`` that comes with the features is the capability's *separation* from
generic text at each depth: the distance between the probe centroid and the anchor centroid, in units of
the anchors' RMS spread around their centroid (after the same normalisation). It is dimensionless and
width-independent; a peak marks the depth where the model represents this capability's texts most
distinctly. It is for plots and inspection; the extractor network does not use it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor

from umaf.errors import UmafError
from umaf.extractor.config import ExtractorConfig

_EPS = 1e-6


@lru_cache(maxsize=1)
def _all_anchor_texts() -> tuple[str, ...]:
    text = resources.files("umaf").joinpath("data/anchors.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def anchor_texts(n: int | None = None) -> list[str]:
    """The first ``n`` (default: all) shipped anchor texts, one per line of ``umaf/data/anchors.txt``."""
    texts = _all_anchor_texts()
    if n is not None and n > len(texts):
        raise UmafError(f"n_anchors={n} but only {len(texts)} anchor texts are shipped")
    return list(texts[:n])


def feature_key(config: ExtractorConfig) -> str:
    """sha256[:16] of every processor setting and the anchor texts: equal keys mean equal features."""
    blob = config.processor_hash() + "\n" + "\n".join(anchor_texts(config.n_anchors))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def layer_plan(n_layers: int, depth_bins: int) -> tuple[list[int], Tensor]:
    """Blocks to capture and how to mix them into depth bins.

    Bin ``k`` sits at fractional block index ``k / (depth_bins - 1) * (n_layers - 1)`` (first block to last
    block) and linearly interpolates its two neighbours. Returns ``(layers, weights)`` with ``weights``
    ``[depth_bins, len(layers)]``, rows summing to 1.
    """
    if n_layers < 1:
        raise UmafError("the model has no capturable layers")
    steps = max(depth_bins - 1, 1)
    positions = [k / steps * (n_layers - 1) for k in range(depth_bins)]
    pairs = [(math.floor(p), min(math.floor(p) + 1, n_layers - 1), p - math.floor(p)) for p in positions]
    layers = sorted({lo for lo, _, _ in pairs} | {hi for _, hi, frac in pairs if frac > 1e-9})
    index = {layer: i for i, layer in enumerate(layers)}
    weights = torch.zeros(depth_bins, len(layers))  # [depth_bins, captured]
    for k, (lo, hi, frac) in enumerate(pairs):
        weights[k, index[lo]] += 1.0 - frac
        if frac > 1e-9:
            weights[k, index[hi]] += frac
    return layers, weights


def _normalise(acts: Tensor, how: str) -> Tensor:
    """Per-text normalisation of ``acts [..., width]``."""
    if how == "l2":
        return F.normalize(acts, dim=-1)
    if how == "layernorm":
        return F.layer_norm(acts, acts.shape[-1:])
    return acts


@dataclass
class ProcessedFeatures:
    """What the processor hands the network: ``features [depth_bins, probes, anchors]`` and, for plots,
    ``layer_profile [depth_bins]`` (separation from generic text; see the module docstring)."""

    features: Tensor
    layer_profile: Tensor


def relative_features(
    probe_acts: Tensor, anchor_acts: Tensor, config: ExtractorConfig
) -> tuple[Tensor, Tensor]:
    """Per captured layer: cosines ``[layers, probes, anchors]`` and separation ``[layers]``.

    ``probe_acts [layers, probes, width]`` and ``anchor_acts [layers, anchors, width]`` come from the same
    model and the same layers.
    """
    if probe_acts.dim() != 3 or anchor_acts.dim() != 3 or probe_acts.shape[::2] != anchor_acts.shape[::2]:
        raise UmafError(
            f"probe activations {tuple(probe_acts.shape)} and anchor activations {tuple(anchor_acts.shape)} "
            "must be [layers, texts, width] with equal layers and width"
        )
    probes = _normalise(probe_acts.double(), config.activation_norm)  # [L, P, W]
    anchors = _normalise(anchor_acts.double(), config.activation_norm)  # [L, A, W]
    centroid = anchors.mean(dim=1, keepdim=True)  # [L, 1, W]
    spread = (anchors - centroid).pow(2).sum(-1).mean(-1).sqrt()  # [L]
    separation = (probes.mean(dim=1) - centroid[:, 0]).norm(dim=-1) / spread.clamp_min(_EPS)  # [L]
    if config.centre:
        probes, anchors = probes - centroid, anchors - centroid
    cos = F.normalize(probes, dim=-1, eps=_EPS) @ F.normalize(anchors, dim=-1, eps=_EPS).transpose(
        1, 2
    )  # [L, P, A]
    return cos.float(), separation.float()


def process(
    probe_acts: Tensor, anchor_acts: Tensor, weights: Tensor, config: ExtractorConfig
) -> ProcessedFeatures:
    """Full processor: relative features, resampled to depth bins (``weights`` from :func:`layer_plan`)."""
    cos, separation = relative_features(probe_acts, anchor_acts, config)  # [L, P, A], [L]
    features = torch.einsum("kl,lpa->kpa", weights, cos)  # [depth_bins, P, A]
    if config.profile_norm == "zscore":
        mean = features.mean(dim=-1, keepdim=True)
        std = features.std(dim=-1, keepdim=True)
        features = (features - mean) / std.clamp_min(_EPS)
    if not torch.isfinite(features).all():
        raise UmafError("processed features contain NaN or infinite values (degenerate activations?)")
    return ProcessedFeatures(features.contiguous(), (weights @ separation).contiguous())
