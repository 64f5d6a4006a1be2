"""The Size Interpolator network: a fingerprint and two scales -> the fingerprint moved to the target scale.

The move is a learned *velocity* times the change of log-scale: ``out = fp + V(fp, mid) @ (t - s)``,
renormalised to the input's norm, where ``s``/``t`` are the source/target scale features (log10
parameters, log2 layers, log2 width), ``mid = (s + t) / 2`` and ``V`` is an MLP of the fingerprint and
the mid-point scale. So asking for the source's own scale returns the fingerprint unchanged, moving back
and forth nearly cancels, and a size between two trained sizes gets a proportional step. The velocity
starts at zero: an untrained interpolator is the identity, the baseline it has to beat.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import umaf
from umaf.errors import UmafError
from umaf.interpolator.config import InterpolatorConfig
from umaf.interpolator.scale import N_SCALE_FEATURES
from umaf.io import WEIGHTS_NAME, atomic_path

CONFIG_NAME = "config.json"
FORMAT = "umaf-interpolator"


class SizeInterpolator(nn.Module):
    """Moves fingerprints between model scales; see the module docstring."""

    def __init__(self, config: InterpolatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or InterpolatorConfig()
        d, h = config.fp_dim, config.hidden
        self.body = nn.Sequential(
            nn.Linear(d + N_SCALE_FEATURES, h),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(h, h),
            nn.GELU(),
        )
        self.velocity = nn.Linear(h, d * N_SCALE_FEATURES)
        nn.init.zeros_(self.velocity.weight)  # identity at initialisation
        nn.init.zeros_(self.velocity.bias)
        self.train_report: dict = {}

    def velocities(self, fp: Tensor, mid: Tensor) -> Tensor:
        """Direction per scale axis: ``fp [B, fp_dim]``, ``mid [B, 3]`` -> ``[B, fp_dim, 3]``."""
        return self.velocity(self.body(torch.cat([fp, mid], dim=-1))).view(*fp.shape, N_SCALE_FEATURES)

    def forward(self, fp: Tensor, source: Tensor, target: Tensor) -> Tensor:
        """``fp [B, fp_dim]``, scale features ``source``/``target [B, 3]`` -> moved ``[B, fp_dim]``."""
        mid = (source + target) / 2 if self.config.condition_on_scale else torch.zeros_like(source)
        step = self.velocities(fp, mid) @ (target - source).unsqueeze(-1)  # [B, fp_dim, 1]
        moved = fp + step.squeeze(-1)  # [B, fp_dim]
        scale = fp.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return moved * scale

    @torch.no_grad()
    def move(self, fp: Tensor, source: Tensor, target: Tensor) -> Tensor:
        """Inference on one ``fp [fp_dim]`` with scale features ``[3]`` -> ``[fp_dim]`` (eval mode, CPU)."""
        if fp.shape != (self.config.fp_dim,):
            raise UmafError(
                f"fingerprint has shape {tuple(fp.shape)}; this interpolator expects ({self.config.fp_dim},)"
            )
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            out = self(fp[None].to(device), source[None].to(device), target[None].to(device))
        finally:
            self.train(was_training)
        return out[0].cpu()

    @property
    def interpolator_hash(self) -> str:
        """sha256[:16] over the weights' names, shapes and bytes: identifies the exact interpolator."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``config.json`` (sorted, versioned, with the training report) and ``model.safetensors``."""
        doc = {
            "format": FORMAT,
            "umaf_version": umaf.__version__,
            "config": self.config.to_dict(),
            "train_report": self.train_report,
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory, overwrite=overwrite, is_dir=True) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
            save_file(
                state, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT, "umaf_version": umaf.__version__}
            )
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SizeInterpolator:
        """Load a folder written by :meth:`save_pretrained`; anything missing or corrupt is a UmafError."""
        directory = Path(directory)
        doc = _read_doc(directory)
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except (OSError, SafetensorError, ValueError):
            raise UmafError(f"{directory / WEIGHTS_NAME} is missing or not a safetensors file") from None
        model = cls(InterpolatorConfig.from_dict(doc["config"]))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise UmafError(f"{directory / WEIGHTS_NAME} does not match its config.json") from None
        model.train_report = doc.get("train_report") or {}
        return model.eval()


def _read_doc(directory: Path) -> dict:
    if not directory.is_dir():
        raise UmafError(f"{directory} is not an interpolator folder")
    try:
        doc = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        raise UmafError(f"{directory / CONFIG_NAME} is missing or not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("config"), dict):
        raise UmafError(f"{directory} is not a UMAF interpolator folder")
    return doc
