"""``fuse``: several fingerprints (any sources, any capabilities) -> one fingerprint, with its provenance."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

import umaf
from umaf.competence import fingerprint_competence
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint, check_compatible
from umaf.fusion.gate import FusionGate, default_gate
from umaf.fusion.modes import FUSION_MODES, FusionMode


def check_weights(weights: Sequence[float] | None, n: int, mode: FusionMode) -> Tensor:
    """User weights as ``[n]`` (ones when None), after every check ``mode`` asks for."""
    if weights is None:
        return torch.ones(n)
    values = list(weights)
    if len(values) != n:
        raise UmafError(f"got {len(values)} weights for {n} fingerprints; give one weight per fingerprint")
    try:
        w = torch.tensor([float(v) for v in values], dtype=torch.float64)
    except (TypeError, ValueError):
        raise UmafError(f"weights must be numbers, got {values!r}") from None
    if not torch.isfinite(w).all():
        raise UmafError("weights must be finite numbers")
    if not mode.allow_negative and (w < 0).any():
        raise UmafError(f"fusion mode {mode.name!r} does not accept negative weights")
    if mode.normalise and abs(float(w.sum())) < 1e-12:
        raise UmafError("weights sum to zero; they cannot be normalised")
    if not (w != 0).any():
        raise UmafError("all weights are zero")
    return w.float()


def query_fingerprint(capability: str, gate: FusionGate, extractor: Any = None) -> Fingerprint:
    """The gate's query for a capability name: its fingerprint read from the gate's reference model."""
    from umaf.capabilities import get_capability

    cap = get_capability(capability)  # unknown names fail here, before any model is loaded
    from umaf.extractor import default_extractor, fingerprint
    from umaf.models import load

    extractor = extractor if extractor is not None else default_extractor()
    return fingerprint(load(gate.config.reference_model), cap, extractor, progress=False)


def _gate_weights(
    vectors: Tensor, query: Fingerprint | str | None, gate: FusionGate | None, extractor: Any
) -> tuple[Tensor, Fingerprint, FusionGate]:
    if query is None:
        raise UmafError("fusion mode 'gated' needs a query: a query fingerprint or a capability name")
    if isinstance(query, str):
        from umaf.capabilities import get_capability

        get_capability(query)  # unknown capability: fail before loading the gate or any model
    gate = gate if gate is not None else default_gate()
    query_fp = query if isinstance(query, Fingerprint) else query_fingerprint(query, gate, extractor)
    return gate.weigh(query_fp.vector, vectors), query_fp, gate


def fuse(
    fps: Sequence[Fingerprint],
    weights: Sequence[float] | None = None,
    mode: str = "average",
    query: Fingerprint | str | None = None,
    *,
    gate: FusionGate | None = None,
    extractor: Any = None,
) -> Fingerprint:
    """Fuse compatible fingerprints with a registered ``mode`` (see :data:`FUSION_MODES`).

    ``weights`` (one per fingerprint, default equal) are normalised to sum to one where the mode says
    so. Mode ``gated`` weighs sources by a learned gate given ``query`` (a fingerprint, or a capability
    name read from the gate's reference model); user weights then act as a prior. The result's metadata
    lists every source with its final weight (``sources``) and the mode (``fusion_mode``).
    """
    spec = FUSION_MODES.get(mode)
    fps = list(fps)
    if not fps:
        raise UmafError("nothing to fuse: give at least one fingerprint")
    for i, fp in enumerate(fps):
        fp.validate(f"fingerprint {i + 1}")
    check_compatible(fps)
    if query is not None and not spec.uses_gate:
        raise UmafError(f"fusion mode {spec.name!r} takes no query; use --mode gated")
    w = check_weights(weights, len(fps), spec)
    vectors = torch.stack([fp.vector for fp in fps])  # [N, D]
    extra: dict[str, Any] = {}
    if spec.uses_gate:
        gate_w, query_fp, gate = _gate_weights(vectors, query, gate, extractor)
        check_compatible([*fps, query_fp])
        _check_gate(gate, fps[0])
        w = w * gate_w
        extra = {"gate": gate.gate_hash, "query": {k: query_fp.meta.get(k) for k in ("model", "capability")}}
    if spec.normalise:
        w = w / w.sum()
    vector = spec.combine(vectors, w)  # [D]
    meta = fused_meta(fps, w.tolist(), spec.name)
    meta.update(extra)
    return Fingerprint(vector, _fused_profile(fps, w), meta)


def _check_gate(gate: FusionGate, fp: Fingerprint) -> None:
    trained_on = gate.config.extractor_hash
    if trained_on is not None and trained_on != fp.meta.get("extractor_hash"):
        raise UmafError(
            f"the fusion gate was trained on fingerprints of extractor {trained_on}, these come from "
            f"{fp.meta.get('extractor_hash')}; recompute them or retrain the gate"
        )


def _fused_profile(fps: Sequence[Fingerprint], weights: Tensor) -> Tensor | None:
    """Weighted mean of the layer profiles when every source has one of the same shape."""
    profiles = [fp.layer_profile for fp in fps]
    if any(p is None for p in profiles) or len({tuple(p.shape) for p in profiles}) != 1:  # type: ignore[union-attr]
        return None
    w = weights / weights.abs().sum()
    return w @ torch.stack(profiles)  # type: ignore[arg-type]


def _common(values: Sequence[Any], mixed: str = "mixed") -> Any:
    return values[0] if len(set(map(str, values))) == 1 else mixed


def fused_meta(fps: Sequence[Fingerprint], weights: Sequence[float], mode: str) -> dict[str, Any]:
    """Metadata of a fused fingerprint: every required key, plus ``sources`` (each with its measured
    competence, None when unknown) and ``fusion_mode``.

    Model scale is the weight-averaged scale of the sources (geometric mean for parameter counts), so
    the fused fingerprint can still be interpolated to a target size.
    """
    metas = [fp.meta for fp in fps]
    w = [abs(float(x)) for x in weights]
    total = sum(w) or 1.0
    mean = lambda key: sum(wi * float(m[key]) for wi, m in zip(w, metas, strict=True)) / total  # noqa: E731
    log_params = sum(wi * math.log(float(m["n_params"])) for wi, m in zip(w, metas, strict=True)) / total
    capabilities = list(dict.fromkeys(str(m["capability"]) for m in metas))
    probes = "+".join(sorted(str(m["probe_hash"]) for m in metas))
    return {
        "model": "+".join(dict.fromkeys(str(m["model"]) for m in metas)),
        "family": _common([m["family"] for m in metas]),
        "architecture": _common([m["architecture"] for m in metas]),
        "n_params": int(round(math.exp(log_params))),
        "n_layers": max(1, int(round(mean("n_layers")))),
        "width": max(1, int(round(mean("width")))),
        "capability": "+".join(capabilities),
        "probe_hash": _common(
            [m["probe_hash"] for m in metas], hashlib.sha256(probes.encode()).hexdigest()[:16]
        ),
        "extractor_hash": metas[0]["extractor_hash"],
        "umaf_version": umaf.__version__,
        "fusion_mode": mode,
        "sources": [
            {"model": m["model"], "family": m["family"], "capability": m["capability"], "weight": float(x),
             "competence": fingerprint_competence(m)}
            for m, x in zip(metas, weights, strict=True)
        ],
    }
