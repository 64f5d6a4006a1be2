"""Configuration of the Capability Extractor (processor + network) and of its contrastive training."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from umaf.components import config_from_dict
from umaf.config import FINGERPRINT_DIM
from umaf.errors import UmafError

ACTIVATION_NORMS = ("none", "l2", "layernorm")
PROFILE_NORMS = ("none", "zscore")
ANCHOR_BASES = ("cosine", "ridge")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UmafError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


@dataclass
class ExtractorConfig:
    """Everything that defines an extractor: the input processor's settings and the network's shape."""

    # --- input processor (no trained weights) ---
    depth_bins: int = field(
        default=8, metadata={"help": "Fixed relative depths every model's layers are resampled to."}
    )
    n_anchors: int = field(
        default=292,
        metadata={"help": "Number of shipped anchor texts (the first of data/anchors.txt) to use."},
    )
    pooling: str = field(
        default="mean",
        metadata={"help": "How token activations are pooled per text (umaf.capture.POOLINGS)."},
    )
    max_length: int = field(default=64, metadata={"help": "Token limit per probe / anchor text."})
    activation_norm: str = field(
        default="l2", metadata={"help": "Per-text normalisation before centring: none, l2 or layernorm."}
    )
    centre: bool = field(
        default=True,
        metadata={"help": "Subtract the anchors' mean activation (per layer) before the cosine."},
    )
    anchor_basis: str = field(
        default="ridge",
        metadata={
            "help": "How a text is described by the anchors: cosine (its similarity to each) or ridge "
            "(the ridge-regression coefficients that rebuild it from the centred anchors; unchanged by "
            "any invertible linear map between two models' spaces, not only by rotations)."
        },
    )
    ridge: float = field(
        default=0.1,
        metadata={"help": "Ridge penalty of the ridge basis, as a share of the anchors' mean eigenvalue."},
    )
    anchor_norm: bool = field(
        default=True,
        metadata={
            "help": "Cosine basis: standardise each anchor's similarities by the other anchors' "
            "similarities to it (the ridge basis whitens instead)."
        },
    )
    delta: bool = field(
        default=True,
        metadata={"help": "Add a channel for (text - prompt) activation differences: what the answer adds."},
    )
    profile_norm: str = field(
        default="zscore",
        metadata={"help": "Normalisation of each probe's anchor-similarity profile: none or zscore."},
    )
    # --- network ---
    d_model: int = field(default=256, metadata={"help": "Width of the transformer encoder."})
    n_layers: int = field(default=4, metadata={"help": "Transformer encoder layers."})
    n_heads: int = field(default=8, metadata={"help": "Attention heads per encoder layer."})
    ffn: int = field(default=512, metadata={"help": "Feed-forward width of each encoder layer."})
    head_hidden: int = field(default=512, metadata={"help": "Hidden width of the 2-layer projection head."})
    fp_dim: int = field(
        default=FINGERPRINT_DIM, metadata={"help": "Fingerprint width (output of the projection head)."}
    )
    dropout: float = field(default=0.1, metadata={"help": "Dropout inside the encoder during training."})
    raw_skip: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the untrained path added to the network's output: the processor's features "
            "averaged over the probes under a fixed random projection (0 turns it off). The network then "
            "learns a correction to relative representations instead of replacing them."
        },
    )
    correction: float = field(
        default=0.0,
        metadata={
            "help": "Share of the network's correction kept when fingerprinting (training always uses 1). "
            "Below 1 the fingerprint leans towards the untrained path, which keeps what it carries about "
            "models and tasks unlike the training ones, as interpolating a fine-tuned model towards its "
            "zero-shot start does (WiSE-FT, https://arxiv.org/abs/2109.01903). 0 (the untrained path "
            "alone) was chosen on hand-written tasks read by MiniLM, SmolLM2 and two quick-zoo models: "
            "on the ridge basis every share above it retrieved them less well. No effect when raw_skip is 0."
        },
    )

    def __post_init__(self) -> None:
        _check_choice("activation_norm", self.activation_norm, ACTIVATION_NORMS)
        _check_choice("profile_norm", self.profile_norm, PROFILE_NORMS)
        _check_choice("anchor_basis", self.anchor_basis, ANCHOR_BASES)
        if self.ridge <= 0:
            raise UmafError(f"ridge must be positive, got {self.ridge}")
        for name in (
            "depth_bins",
            "n_anchors",
            "d_model",
            "n_layers",
            "n_heads",
            "ffn",
            "head_hidden",
            "fp_dim",
        ):
            if getattr(self, name) < 1:
                raise UmafError(f"{name} must be positive, got {getattr(self, name)}")
        if self.raw_skip < 0:
            raise UmafError(f"raw_skip must be >= 0, got {self.raw_skip}")
        if not 0 <= self.correction <= 1:
            raise UmafError(f"correction must be in [0, 1], got {self.correction}")
        if self.d_model % self.n_heads:
            raise UmafError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def n_channels(self) -> int:
        """Feature channels per anchor: the text itself, plus the answer's delta when ``delta`` is on."""
        return 2 if self.delta else 1

    @property
    def token_dim(self) -> int:
        """Width of one probe token: ``depth_bins * n_channels * n_anchors``."""
        return self.depth_bins * self.n_channels * self.n_anchors

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractorConfig:
        """Build from a dict (e.g. config.json); unknown keys and wrong-typed values are errors. A folder
        written before ``raw_skip`` existed holds a network without the untrained path, one written before
        ``anchor_basis`` existed describes texts by their cosine to the anchors."""
        if isinstance(data, dict):
            data = {"raw_skip": 0.0, "anchor_basis": "cosine", **data}
        return config_from_dict(cls, data, "extractor config")

    def processor_hash(self) -> str:
        """Hash of the settings that change processed features (for on-disk feature caches)."""
        keys = (
            "depth_bins",
            "n_anchors",
            "pooling",
            "max_length",
            "activation_norm",
            "centre",
            "anchor_norm",
            "anchor_basis",
            "ridge",
            "delta",
            "profile_norm",
        )
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
