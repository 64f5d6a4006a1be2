"""Input Processor: turns any model's activations into features of one fixed shape, with no trained weights.

Relative representations (Moschella et al., ICLR 2023, https://arxiv.org/abs/2209.15430): a probe text
is described not by its activation vector (whose width and basis differ between models) but by its
cosine similarities to the activations of a fixed, shipped set of anchor texts, read from the same model
and the same layer. Depth is made model-independent by resampling the layers to ``depth_bins`` fixed
relative depths (linear interpolation between the two nearest blocks, so only those blocks are captured).

Per layer, each pooled activation is optionally L2- or layer-normalised and then centred on the anchors'
mean. The default ``ridge`` basis then describes a text by the ridge-regression coefficients that rebuild
it from the anchors (``x @ A.T @ (A @ A.T + lam I)^-1``): cosines are only unchanged when two models'
spaces differ by a rotation, coefficients also when they differ by any invertible linear map (on what
lies in the anchors' span), and whitening by the anchors' Gram matrix removes "hub" anchors that are
close to every text. The ``cosine`` basis (the first extractors') takes the cosine to each anchor, each
anchor's column optionally standardised by how similar the other anchors are to it. After resampling,
each probe's anchor profile is optionally z-scored. A second channel (``delta``) repeats all this on the
difference between the activation of the full text and of its prompt (``"owl -> owls"`` minus
``"owl ->"``): what the answer adds, i.e. the transformation the capability performs, with less of the
input words' content (mean-pooled text activations are dominated by which words they contain, which
says little about the task). Output: features ``[depth_bins, probes, channels * anchors]``.

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

import torch
import torch.nn.functional as F
from torch import Tensor

from umaf.config import data_lines
from umaf.errors import UmafError
from umaf.extractor.config import ExtractorConfig

_EPS = 1e-6


def anchor_texts(n: int | None = None) -> list[str]:
    """The first ``n`` (default: all) shipped anchor texts, one per line of ``umaf/data/anchors.txt``."""
    texts = data_lines("anchors.txt")
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


def prompt_of(text: str) -> str:
    """The prompt part of a full example text (``"owl -> owls"`` -> ``"owl ->"``); a text without an arrow
    loses its last word. The difference of the two activations is what the answer adds."""
    if " -> " in text:
        return text.rsplit(" -> ", 1)[0] + " ->"
    head = text.rsplit(" ", 1)[0]
    return head if head != text else text[: max(1, len(text) // 2)]


def _normalise(acts: Tensor, how: str) -> Tensor:
    """Per-text normalisation of ``acts [..., width]``."""
    if how == "l2":
        return F.normalize(acts, dim=-1)
    if how == "layernorm":
        return F.layer_norm(acts, acts.shape[-1:])
    return acts


@dataclass
class ProcessedFeatures:
    """What the processor hands the network: ``features [depth_bins, probes, channels * anchors]`` and, for
    plots, ``layer_profile [depth_bins]`` (separation from generic text; see the module docstring).
    ``activations [captured, probes, width]``: the pooled probe activations they came from, and
    ``prompt_activations`` the same of their prompts with the delta channel (set by
    :func:`umaf.extractor.model_features`; baselines such as CKA read the last captured layer)."""

    features: Tensor
    layer_profile: Tensor
    activations: Tensor | None = None
    prompt_activations: Tensor | None = None


def _check_pair(probe_acts: Tensor, anchor_acts: Tensor) -> None:
    if probe_acts.dim() != 3 or anchor_acts.dim() != 3 or probe_acts.shape[::2] != anchor_acts.shape[::2]:
        raise UmafError(
            f"probe activations {tuple(probe_acts.shape)} and anchor activations {tuple(anchor_acts.shape)} "
            "must be [layers, texts, width] with equal layers and width"
        )


def _standardise_columns(cos: Tensor, anchors: Tensor) -> Tensor:
    """Express similarity to anchor ``a`` relative to how similar the *other anchors* are to ``a``: removes
    the model-specific "hub" anchors that are close to every text (no trained weights; per model)."""
    between = anchors @ anchors.transpose(1, 2)  # [L, A, A]
    off = ~torch.eye(between.shape[-1], dtype=torch.bool, device=between.device)
    others = between[:, off].view(between.shape[0], between.shape[1], -1)  # [L, A, A-1]; row a = others vs a
    mean, std = others.mean(-1), others.std(-1)  # [L, A] (symmetric, so rows equal columns)
    return (cos - mean[:, None]) / std[:, None].clamp_min(_EPS)


def relative_features(
    probe_acts: Tensor, anchor_acts: Tensor, config: ExtractorConfig
) -> tuple[Tensor, Tensor]:
    """Per captured layer: relative features ``[layers, probes, anchors]`` and separation ``[layers]``.

    ``probe_acts [layers, probes, width]`` and ``anchor_acts [layers, anchors, width]`` come from the same
    model and the same layers.
    """
    _check_pair(probe_acts, anchor_acts)
    probes = _normalise(probe_acts.double(), config.activation_norm)  # [L, P, W]
    anchors = _normalise(anchor_acts.double(), config.activation_norm)  # [L, A, W]
    centroid = anchors.mean(dim=1, keepdim=True)  # [L, 1, W]
    spread = (anchors - centroid).pow(2).sum(-1).mean(-1).sqrt()  # [L]
    separation = (probes.mean(dim=1) - centroid[:, 0]).norm(dim=-1) / spread.clamp_min(_EPS)  # [L]
    if config.centre:
        probes, anchors = probes - centroid, anchors - centroid
    if config.anchor_basis == "ridge":
        return _ridge_coefficients(probes, anchors, config.ridge).float(), separation.float()
    probes, anchors = F.normalize(probes, dim=-1, eps=_EPS), F.normalize(anchors, dim=-1, eps=_EPS)
    cos = probes @ anchors.transpose(1, 2)  # [L, P, A]
    if config.anchor_norm:
        cos = _standardise_columns(cos, anchors)
    return cos.float(), separation.float()


def _ridge_coefficients(probes: Tensor, anchors: Tensor, ridge: float) -> Tensor:
    """``[L, P, A]``: per layer, the coefficients ``c`` minimising ``|x - c @ anchors|^2 + lam |c|^2`` for
    each probe ``x``, i.e. ``x @ anchors.T @ (K + lam I)^-1`` with ``K`` the anchors' Gram matrix and
    ``lam = ridge * mean eigenvalue of K``. If one model's activations are an invertible linear map of
    another's, both give the same coefficients for what of a text lies in the anchors' span (all of it
    when there are more anchors than width), up to the penalty; cosines change with the map."""
    gram = anchors @ anchors.transpose(1, 2)  # [L, A, A]
    lam = ridge * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(_EPS)  # trace / A = mean eigenvalue
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    system = gram + lam[:, None, None] * eye  # symmetric positive definite
    return torch.linalg.solve(system, anchors @ probes.transpose(1, 2)).transpose(1, 2)  # [L, P, A]


def _resample(cos: Tensor, weights: Tensor, config: ExtractorConfig) -> Tensor:
    """``[layers, P, A]`` -> ``[depth_bins, P, A]``, then the per-probe profile normalisation."""
    features = torch.einsum("kl,lpa->kpa", weights, cos)  # [depth_bins, P, A]
    if config.profile_norm == "zscore":
        mean = features.mean(dim=-1, keepdim=True)
        std = features.std(dim=-1, keepdim=True)
        features = (features - mean) / std.clamp_min(_EPS)
    return features


def process(
    probe_acts: Tensor,
    anchor_acts: Tensor,
    weights: Tensor,
    config: ExtractorConfig,
    probe_prompt_acts: Tensor | None = None,
    anchor_prompt_acts: Tensor | None = None,
) -> ProcessedFeatures:
    """Full processor: relative features resampled to depth bins (``weights`` from :func:`layer_plan`).

    With ``config.delta`` the prompt activations (same layers, texts cut by :func:`prompt_of`) add a second
    channel: the same relative features of ``text - prompt`` differences, i.e. of what the answer adds.
    Output ``features [depth_bins, probes, channels * anchors]``, channel by channel.
    """
    cos, separation = relative_features(probe_acts, anchor_acts, config)  # [L, P, A], [L]
    channels = [_resample(cos, weights, config)]
    if config.delta:
        if probe_prompt_acts is None or anchor_prompt_acts is None:
            raise UmafError("this extractor's processor needs the prompt activations (delta channel)")
        if probe_prompt_acts.shape != probe_acts.shape or anchor_prompt_acts.shape != anchor_acts.shape:
            raise UmafError("prompt activations must have the shapes of the text activations")
        norm = config.activation_norm
        delta_p = _normalise(probe_acts.double(), norm) - _normalise(probe_prompt_acts.double(), norm)
        delta_a = _normalise(anchor_acts.double(), norm) - _normalise(anchor_prompt_acts.double(), norm)
        channels.append(_resample(relative_features(delta_p, delta_a, config)[0], weights, config))
    features = torch.cat(channels, dim=-1)  # [depth_bins, P, channels * A]
    if not torch.isfinite(features).all():
        raise UmafError("processed features contain NaN or infinite values (degenerate activations?)")
    return ProcessedFeatures(features.contiguous(), (weights @ separation).contiguous())


def pool_features(features: Tensor, mask: Tensor | None = None) -> Tensor:
    """The untrained baseline of a fingerprint: processed ``features [..., depth_bins, probes, A]`` averaged
    over the probes (``mask [..., probes]``: True for real ones), flattened and z-scored ->
    ``[..., depth_bins * A]`` (cosine then compares profiles, not offsets)."""
    features = features.float()
    if mask is None:
        pooled = features.mean(dim=-2)  # [..., depth_bins, A]
    else:
        weights = mask.to(features.dtype)[..., None, :, None]  # [..., 1, probes, 1]
        pooled = (features * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)
    pooled = pooled.flatten(-2)  # [..., depth_bins * A]
    return (pooled - pooled.mean(-1, keepdim=True)) / pooled.std(-1, keepdim=True).clamp_min(1e-6)

