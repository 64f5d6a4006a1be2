"""Model scale (parameter count, depth, width): validation, estimation and the features the network sees."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from umaf.errors import UmafError

#: Largest scale UMAF accepts; anything beyond is treated as a typo rather than a model.
MAX_PARAMS = 1e13
MAX_LAYERS = 10_000
MAX_WIDTH = 1_000_000

#: Number of scale features: log10 parameters, log2 layers, log2 width.
N_SCALE_FEATURES = 3
# Centre and spread of the features, so tiny zoo models and 100M-parameter models both land near [-2, 2].
_CENTRE = (6.0, 3.0, 7.0)
_SPREAD = 2.0


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UmafError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise UmafError(f"{name} must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class Scale:
    """How big a model is. ``estimated`` names fields that were derived rather than given."""

    n_params: float
    n_layers: int
    width: int
    estimated: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        params = _number("parameter count", self.n_params)
        layers = _number("number of layers", self.n_layers)
        width = _number("width", self.width)
        if params <= 0 or params > MAX_PARAMS:
            raise UmafError(f"parameter count must be in (0, {MAX_PARAMS:.0e}], got {self.n_params!r}")
        if layers < 1 or layers > MAX_LAYERS or layers != int(layers):
            raise UmafError(
                f"number of layers must be a whole number in [1, {MAX_LAYERS}], got {self.n_layers!r}"
            )
        if width < 1 or width > MAX_WIDTH or width != int(width):
            raise UmafError(f"width must be a whole number in [1, {MAX_WIDTH}], got {self.width!r}")
        object.__setattr__(self, "n_params", params)
        object.__setattr__(self, "n_layers", int(layers))
        object.__setattr__(self, "width", int(width))

    def features(self) -> Tensor:
        """``[3]``: centred log10 parameters, log2 layers and log2 width, each divided by 2."""
        raw = (math.log10(self.n_params), math.log2(self.n_layers), math.log2(self.width))
        return torch.tensor([(r - c) / _SPREAD for r, c in zip(raw, _CENTRE, strict=True)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: parameter count rounded to an integer, ``estimated`` as a list."""
        data = asdict(self)
        data["n_params"] = int(round(self.n_params))
        data["estimated"] = list(self.estimated)
        return data

    @classmethod
    def from_info(cls, info: Any) -> Scale:
        """From a :class:`umaf.models.ModelInfo` (or anything with ``n_params``, ``n_layers``, ``width``)."""
        return cls(info.n_params, info.n_layers, info.width)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Scale:
        """The scale a fingerprint stands for: its ``target_scale`` if interpolated, else its model's."""
        data = meta.get("target_scale") or meta
        try:
            return cls(data["n_params"], data["n_layers"], data["width"])
        except KeyError as err:
            raise UmafError(
                f"fingerprint metadata lacks {err.args[0]}; cannot tell its model's scale"
            ) from None


def estimate_scale(
    source: Scale, params: float | None = None, layers: int | None = None, width: int | None = None
) -> Scale:
    """A target scale from whatever is given, completing the rest from ``source``'s shape.

    Uses ``params ∝ layers · width²`` (the transformer block count): with only ``params`` the source's
    depth-to-width ratio is kept; with ``params`` and one of ``layers``/``width`` the other follows;
    with ``layers`` and/or ``width`` only, ``params`` follows.
    """
    if params is None and layers is None and width is None:
        raise UmafError("give a target: a model, or a parameter count (optionally with layers and width)")
    given = {"n_params": params, "n_layers": layers, "width": width}
    labels = {"n_params": "parameter count", "n_layers": "number of layers", "width": "width"}
    for name, value in given.items():
        if value is not None and _number(labels[name], value) < 1:
            raise UmafError(f"{labels[name]} must be at least 1, got {value!r}")
    ratio = None if params is None else float(params) / source.n_params
    if ratio is not None and layers is None and width is None:
        k = ratio ** (1 / 3)
        layers, width = max(1, round(source.n_layers * k)), max(1, round(source.width * k))
    elif ratio is not None and layers is None:
        layers = max(1, round(source.n_layers * ratio / (float(width) / source.width) ** 2))
    elif ratio is not None and width is None:
        width = max(1, round(source.width * math.sqrt(ratio / (float(layers) / source.n_layers))))
    elif ratio is None:
        layers = source.n_layers if layers is None else layers
        width = source.width if width is None else width
        params = source.n_params * (float(layers) / source.n_layers) * (float(width) / source.width) ** 2
    estimated = tuple(name for name, value in given.items() if value is None)
    return Scale(float(params), layers, width, estimated)  # type: ignore[arg-type]
