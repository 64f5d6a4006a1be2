"""Latent Fusion Module: several capability fingerprints -> one, for an adapter that does all of them.

``modes`` (registry: ``average``, ``slerp``, ``task_arithmetic``, ``gated``) -> ``gate`` (learned,
task-conditioned source weights) -> ``fuse`` (the user-facing function, with provenance metadata);
``train`` fits the gate on zoo fingerprints of training capabilities only.
"""

from umaf.fusion.config import FusionTrainConfig, GateConfig
from umaf.fusion.fusing import check_weights, fuse, fused_meta, query_fingerprint
from umaf.fusion.gate import FusionGate, default_gate, default_gate_dir
from umaf.fusion.modes import FUSION_MODES, FusionMode, fusion_mode
from umaf.fusion.train import evaluate_gate, train_fusion

__all__ = [
    "FUSION_MODES",
    "FusionGate",
    "FusionMode",
    "FusionTrainConfig",
    "GateConfig",
    "check_weights",
    "default_gate",
    "default_gate_dir",
    "evaluate_gate",
    "fuse",
    "fused_meta",
    "fusion_mode",
    "query_fingerprint",
    "train_fusion",
]
