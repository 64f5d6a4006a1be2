"""The feature bank the extractor is trained and evaluated on: processed features of every
(model, capability class), with what the zoo knows about each model.

:func:`umaf.extractor.train.collect_features` fills it (cached on disk); :mod:`umaf.extractor.losses`
and :mod:`umaf.extractor.evaluate` read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from umaf.capabilities import Capability


@dataclass(frozen=True)
class TrainModel:
    """A model to read features from: its name (for :func:`umaf.extractor.train.load_model`), family,
    and zoo accuracy (None for real and random models). ``group``: views are drawn uniformly over groups
    (default: the name)."""

    name: str
    family: str
    accuracy: dict[str, float] | None = None
    group: str = ""


@dataclass
class FeatureBank:
    """Processed features of every (model, class): ``features[m][c]`` is
    ``[depth_bins, probes, channels * anchors]``; ``halves[c]`` is the size of probe half 0 (the rest is
    half 1, as in ``probe_texts(part=...)``)."""

    models: list[TrainModel]
    classes: list[Capability]
    features: list[list[Tensor]]
    halves: list[int]

    @property
    def families(self) -> list[str]:
        return [m.family for m in self.models]

    def accuracy(self, m: int, c: int) -> float:
        """The zoo's measured accuracy of model ``m`` on class ``c``; NaN when unknown."""
        acc = self.models[m].accuracy or {}
        return float(acc.get(self.classes[c].name, math.nan))
