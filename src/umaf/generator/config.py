"""Configuration of the Adapter Generator: the hypernetwork's shape and how it is trained."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umaf import pretrained
from umaf.components import config_from_dict
from umaf.config import FINGERPRINT_DIM
from umaf.errors import UmafError


def generator_dir(target: str) -> Path:
    """Where the default generator for ``target`` is read from: the user's one in the cache
    (``generators/<target-slug>``), else the shipped one."""
    return pretrained.component_dir(pretrained.generator_path(target))


#: Fields that define the network (saved with it); the others only steer training.
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "target",
    "target_modules",
    "rank",
    "gen_rank",
    "fp_dim",
    "task_dim",
    "emb_dim",
    "hidden",
    "n_blocks",
    "dropout",
)


@dataclass
class GeneratorConfig:
    """Everything that defines an Adapter Generator and its training (each ``help`` doubles as CLI help)."""

    # --- what it adapts ---
    target: str = field(
        default="smollm2", metadata={"help": "Target model the generator writes adapters for."}
    )
    target_modules: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Names (suffixes) of the target's linear modules that get a LoRA "
            "(default: the modules of the target's oracle library)."
        },
    )
    rank: int = field(default=8, metadata={"help": "Default rank of the adapters it writes (SVD step)."})
    # --- network ---
    gen_rank: int = field(
        default=8,
        metadata={"help": "Rank of the raw factors the hypernetwork emits (largest writable rank)."},
    )
    fp_dim: int = field(default=FINGERPRINT_DIM, metadata={"help": "Fingerprint width."})
    task_dim: int = field(default=128, metadata={"help": "Width of the fingerprint's task embedding."})
    emb_dim: int = field(default=32, metadata={"help": "Width of the layer and module-type embeddings."})
    hidden: int = field(default=256, metadata={"help": "Width of the shared MLP trunk."})
    n_blocks: int = field(default=2, metadata={"help": "Residual MLP blocks in the trunk."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout in the trunk during training."})
    # --- reconstruction training on the oracle library ---
    steps: int = field(default=500, metadata={"help": "Reconstruction optimiser steps."})
    batch_size: int = field(default=8, metadata={"help": "Fingerprints per reconstruction step."})
    lr: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate (warm-up, then cosine)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup: int = field(default=100, metadata={"help": "Warm-up steps."})
    fp_noise: float = field(
        default=0.05,
        metadata={"help": "Std of Gaussian noise added to training fingerprints (then renormalised)."},
    )
    null_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of each batch that is a random unit vector taught to give a zero ΔW."},
    )
    sources: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Source models whose fingerprints train it (default: zoo of non-held-out families "
            "except the target, plus minilm)."
        },
    )
    val_sources: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Source models held apart for validation (default: the built zoo models of the "
            "held-out family and of the validation families, Mixtral)."
        },
    )
    min_gain: float = field(
        default=0.0,
        metadata={"help": "Leave out oracles whose eval gain over the base model is below this."},
    )
    # --- end-to-end phase through the frozen target (Text-to-LoRA's SFT mode) ---
    e2e_steps: int = field(
        default=0, metadata={"help": "End-to-end LM-loss steps after reconstruction (0 = off; the world-"
                             "trained generator of the README used 2000 after 500 reconstruction steps)."}
    )
    capabilities: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Capabilities trained end to end (default: the generator world, "
            "umaf.capabilities.world.generator_world; never a held-out one)."
        },
    )
    e2e_caps_per_step: int = field(default=8, metadata={"help": "Capabilities per end-to-end step."})
    e2e_examples_per_cap: int = field(
        default=3, metadata={"help": "Train-split examples of each capability per end-to-end step."}
    )
    e2e_lr: float = field(default=5e-4, metadata={"help": "Peak learning rate of the end-to-end phase."})
    e2e_recon_weight: float = field(
        default=0.3,
        metadata={"help": "Weight of the reconstruction loss on capabilities with an oracle (end to end)."},
    )
    e2e_max_length: int = field(default=32, metadata={"help": "Token limit per end-to-end example."})
    e2e_replay: float = field(
        default=1.0,
        metadata={"help": "Weight of the target's LM loss on general replay text with a generated ΔW hooked "
                  "in (end to end; keeps adapters from harming general text; decoder targets only)."},
    )
    e2e_replay_batch: int = field(
        default=4, metadata={"help": "Replay sentences per end-to-end step, each under one step's ΔW."}
    )
    e2e_dtype: str = field(
        default="bfloat16",
        metadata={"help": "Dtype the frozen target runs in during the end-to-end phase (the generator "
                  "stays float32)."},
    )
    checkpoint_every: int = field(
        default=50, metadata={"help": "End-to-end steps between resumable checkpoints."}
    )
    val_every: int = field(default=250, metadata={"help": "Steps between validation runs."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and sampling."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if self.target_modules is not None:
            self.target_modules = tuple(self.target_modules)
        for name in ("rank", "gen_rank", "fp_dim", "task_dim", "emb_dim", "hidden", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UmafError(f"{name} must be positive, got {getattr(self, name)}")
        if self.rank > self.gen_rank:
            raise UmafError(f"rank ({self.rank}) cannot exceed gen_rank ({self.gen_rank})")
        if self.target_modules is not None and not self.target_modules:
            raise UmafError("target_modules must name at least one module")
        if not 0 <= self.null_fraction < 1 or not 0 <= self.dropout < 1:
            raise UmafError("null_fraction and dropout must lie in [0, 1)")
        if self.e2e_steps < 0 or self.n_blocks < 0:
            raise UmafError("e2e_steps and n_blocks must not be negative")
        if self.e2e_replay < 0:
            raise UmafError(f"e2e_replay must not be negative, got {self.e2e_replay}")
        for name in ("e2e_caps_per_step", "e2e_examples_per_cap", "e2e_max_length", "e2e_replay_batch",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UmafError(f"{name} must be positive, got {getattr(self, name)}")
        from umaf.components import DTYPES

        if self.e2e_dtype not in DTYPES:
            raise UmafError(f"e2e_dtype must be one of {', '.join(DTYPES)}, got {self.e2e_dtype!r}")
        if self.capabilities is not None:
            self.capabilities = tuple(self.capabilities)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def architecture(self) -> dict[str, Any]:
        """Only the fields that define the network (what ``save_pretrained`` records as its config)."""
        data = self.to_dict()
        return {key: data[key] for key in ARCHITECTURE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Build from a dict (e.g. config.json); unknown keys and wrong-typed values are errors naming them
        (JSON lists become tuples)."""
        return config_from_dict(cls, data, "generator config")
