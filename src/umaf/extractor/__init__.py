"""Capability Extractor: activations of any model -> 512-D capability fingerprint.

``processor`` (relative representations, no trained weights) -> ``model`` (probe-set transformer encoder
+ projection head) -> :class:`~umaf.fingerprint.Fingerprint`; ``train`` fits the network contrastively.
"""

from umaf.extractor.config import ExtractorConfig
from umaf.extractor.fingerprinting import (
    anchor_activations,
    default_extractor,
    default_extractor_dir,
    fingerprint,
    model_features,
)
from umaf.extractor.model import CapabilityExtractor
from umaf.extractor.processor import (
    ProcessedFeatures,
    anchor_texts,
    feature_key,
    layer_plan,
    process,
    prompt_of,
)
from umaf.extractor.train import TrainConfig, train_extractor

__all__ = [
    "CapabilityExtractor",
    "ExtractorConfig",
    "ProcessedFeatures",
    "anchor_activations",
    "anchor_texts",
    "default_extractor",
    "default_extractor_dir",
    "feature_key",
    "fingerprint",
    "layer_plan",
    "model_features",
    "process",
    "prompt_of",
    "train_extractor",
    "TrainConfig",
]
