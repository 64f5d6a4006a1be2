"""``interpolate``: move a fingerprint to where it would lie for a model of another size."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from umaf import pretrained
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.interpolator.model import SizeInterpolator
from umaf.interpolator.scale import Scale, estimate_scale


def default_interpolator_dir() -> Path:
    """Where the default interpolator is read from: the user's one in the cache, else the shipped one."""
    return pretrained.component_dir(pretrained.INTERPOLATOR)


def default_interpolator() -> SizeInterpolator:
    """The trained default interpolator; a UmafError naming the command to train it if it is missing."""
    return pretrained.load_default(SizeInterpolator, pretrained.INTERPOLATOR, "size interpolator")


def resolve_scale(target: Any) -> Scale:
    """A :class:`Scale` from a Scale, a ModelInfo, a LoadedModel, or a model name (loaded to measure it)."""
    if isinstance(target, Scale):
        return target
    if hasattr(target, "info"):  # LoadedModel
        return Scale.from_info(target.info)
    if all(hasattr(target, k) for k in ("n_params", "n_layers", "width")):  # ModelInfo
        return Scale.from_info(target)
    if isinstance(target, str | Path):
        from umaf.models import load

        return Scale.from_info(load(str(target), device="cpu").info)  # only its shape is read
    raise UmafError(f"cannot tell the scale of {target!r}; give a model, ModelInfo or parameter count")


def interpolate(
    fp: Fingerprint,
    target: Any = None,
    *,
    params: float | None = None,
    layers: int | None = None,
    width: int | None = None,
    interpolator: SizeInterpolator | None = None,
) -> Fingerprint:
    """``fp`` moved to the scale of ``target`` (model name, ModelInfo, LoadedModel or Scale), or of
    ``params`` [``layers``, ``width``] (missing ones estimated from the source's shape).

    ``interpolator=None`` uses :func:`default_interpolator`. The result's metadata keeps the source
    model's identity and adds ``source_scale``, ``target_scale``, ``interpolator`` (its hash) and
    ``move_within_trained``: the share of the log-scale move that lies within the sizes the interpolator
    was trained on, the only part it makes (1 inside them; 0 for a move entirely beyond them: unchanged).
    """
    if target is not None and any(v is not None for v in (params, layers, width)):
        raise UmafError("give either a target model or a parameter count / layers / width, not both")
    fp.validate()
    source = Scale.from_meta(fp.meta)
    goal = estimate_scale(source, params, layers, width) if target is None else None
    interpolator = interpolator if interpolator is not None else default_interpolator()
    trained_on = interpolator.config.extractor_hash
    if trained_on is not None and trained_on != fp.meta.get("extractor_hash"):
        raise UmafError(
            f"the interpolator was trained on fingerprints of extractor {trained_on}, this one comes from "
            f"{fp.meta.get('extractor_hash')}; recompute the fingerprint or retrain the interpolator"
        )
    if goal is None:  # last: a named target may have to be loaded to be measured
        goal = resolve_scale(target)
    start, end = source.features(), goal.features()  # [3] each
    vector = interpolator.move(fp.vector, start, end)  # [fp_dim]
    meta = copy.deepcopy(fp.meta)
    meta.update(
        source_scale=source.to_dict(),
        target_scale=goal.to_dict(),
        interpolator=interpolator.interpolator_hash,
        move_within_trained=round(interpolator.share_within_trained(start, end), 4),
    )
    return Fingerprint(vector, fp.layer_profile, meta)
