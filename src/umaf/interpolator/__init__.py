"""Size Interpolator: moves a capability fingerprint to where it would lie for a model of another size.

``scale`` (log parameters, depth, width; validation and estimation) -> ``model`` (velocity network,
identity at initialisation) -> ``interpolate`` (the user-facing function) ; ``train`` fits it on zoo
families built at several sizes, with at least one size per family held out.
"""

from umaf.interpolator.config import InterpolatorConfig, InterpolatorTrainConfig
from umaf.interpolator.interpolation import (
    default_interpolator,
    default_interpolator_dir,
    interpolate,
    resolve_scale,
)
from umaf.interpolator.model import SizeInterpolator
from umaf.interpolator.scale import Scale, estimate_scale
from umaf.interpolator.train import evaluate_pairs, make_pairs, train_interpolator
from umaf.zoo.fingerprints import ZooFingerprint, zoo_fingerprints

__all__ = [
    "InterpolatorConfig",
    "InterpolatorTrainConfig",
    "Scale",
    "SizeInterpolator",
    "ZooFingerprint",
    "default_interpolator",
    "default_interpolator_dir",
    "estimate_scale",
    "evaluate_pairs",
    "interpolate",
    "make_pairs",
    "resolve_scale",
    "train_interpolator",
    "zoo_fingerprints",
]
