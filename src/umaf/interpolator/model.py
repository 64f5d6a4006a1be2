"""The Size Interpolator network: a fingerprint and two scales -> the fingerprint moved to the target scale.

The move is a learned *velocity* times the change of log-scale: ``out = fp + V(fp, mid) @ (t - s)``,
renormalised to the input's norm, where ``s``/``t`` are the source/target scale features (log10
parameters, log2 layers, log2 width), ``mid = (s + t) / 2`` and ``V`` is an MLP of the fingerprint and
the mid-point scale. So asking for the source's own scale returns the fingerprint unchanged, moving back
and forth nearly cancels, and a size between two trained sizes gets a proportional step. The velocity
starts at zero: an untrained interpolator is the identity, the baseline it has to beat.

Moves are made only within the sizes it was trained on (``scale_low``/``scale_high`` of its config):
both scales are clamped to that range first, so the part of a move beyond the trained sizes is not made
(a move entirely beyond them, e.g. between two models larger than any it saw, returns the fingerprint
unchanged) instead of being extrapolated.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from umaf.components import TrainedComponent
from umaf.errors import UmafError
from umaf.interpolator.config import InterpolatorConfig
from umaf.interpolator.scale import N_SCALE_FEATURES


class SizeInterpolator(TrainedComponent):
    """Moves fingerprints between model scales; see the module docstring (the training report is saved
    in config.json as ``train_report``)."""

    FORMAT = "umaf-interpolator"
    config_class = InterpolatorConfig
    NAME = "interpolator"
    REPORT_FIELD = "train_report"

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

    def velocities(self, fp: Tensor, mid: Tensor) -> Tensor:
        """Direction per scale axis: ``fp [B, fp_dim]``, ``mid [B, 3]`` -> ``[B, fp_dim, 3]``."""
        return self.velocity(self.body(torch.cat([fp, mid], dim=-1))).view(*fp.shape, N_SCALE_FEATURES)

    def within_trained(self, scales: Tensor) -> Tensor:
        """Scale features ``[..., 3]`` clamped to the trained sizes' range (unchanged without one)."""
        if self.config.scale_low is None:
            return scales
        low = torch.tensor(self.config.scale_low, dtype=scales.dtype, device=scales.device)
        high = torch.tensor(self.config.scale_high, dtype=scales.dtype, device=scales.device)
        return torch.clamp(scales, low, high)

    def forward(self, fp: Tensor, source: Tensor, target: Tensor) -> Tensor:
        """``fp [B, fp_dim]``, scale features ``source``/``target [B, 3]`` -> moved ``[B, fp_dim]``."""
        source, target = self.within_trained(source), self.within_trained(target)
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

    def share_within_trained(self, source: Tensor, target: Tensor) -> float:
        """Share of the log-scale move ``source -> target`` (features ``[3]``) that lies within the trained
        sizes, the only part :meth:`forward` makes (1.0 for no move at all)."""
        full = float((target - source).norm())
        made = float((self.within_trained(target) - self.within_trained(source)).norm())
        return made / full if full > 0 else 1.0

    @property
    def interpolator_hash(self) -> str:
        """Identifies the exact interpolator: :attr:`weights_hash` (independent of the storage dtype), with
        the trained scale range when there is one (it changes what the weights are asked)."""
        if self.config.scale_low is None:
            return self.weights_hash
        key = f"{self.weights_hash}:{self.config.scale_low}:{self.config.scale_high}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]
