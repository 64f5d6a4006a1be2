"""The Capability Extractor network: processed features of a probe set -> one 512-D unit fingerprint.

Each probe is one token (its ``[depth_bins * channels * anchors]`` relative features, linearly
embedded); a learned CLS token joins them; a pre-norm transformer encoder mixes them (no positional
encoding: a probe set is a set, so the fingerprint does not depend on probe order); a 2-layer MLP on the
CLS output is added to an untrained path (the probes' mean features, z-scored, under a fixed random
projection: the relative-representation baseline, near-isometric for cosine) and the sum is
L2-normalised. The head's last layer starts at zero, so an untrained extractor is exactly that baseline
and training learns a correction to it; when fingerprinting only ``correction`` of it is kept, so what
the processor's features carry about a model or a capability the training never saw is not overwritten.
A linear competence head maps a fingerprint to a score in [0, 1]; it is only a training auxiliary
(fingerprints record the competence that :mod:`umaf.competence` reads from the model itself)."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from umaf.components import TrainedComponent
from umaf.errors import UmafError
from umaf.extractor.config import ExtractorConfig
from umaf.extractor.processor import pool_features


class CapabilityExtractor(TrainedComponent):
    """Probe-set encoder producing capability fingerprints; see the module docstring."""

    FORMAT = "umaf-extractor"
    config_class = ExtractorConfig
    NAME = "extractor"
    REPORT_FIELD = "train_report"

    def __init__(self, config: ExtractorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ExtractorConfig()
        self.embed = nn.Linear(config.token_dim, config.d_model)
        self.cls = nn.Parameter(torch.randn(1, 1, config.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.d_model, config.n_heads, config.ffn, config.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(
            layer, config.n_layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False
        )
        self.head = nn.Sequential(
            nn.Linear(config.d_model, config.head_hidden),
            nn.GELU(),
            nn.Linear(config.head_hidden, config.fp_dim),
        )
        self.competence_head = nn.Linear(config.fp_dim, 1)
        if config.raw_skip > 0:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
            # Gaussian projection: cosines of the pooled features survive it up to ~1/sqrt(fp_dim). It is
            # made from a fixed seed, not stored; half-precision values, so storage dtypes never change it
            # (its scale does not matter: the path is normalised).
            gen = torch.Generator().manual_seed(0)
            projection = torch.randn(config.fp_dim, config.token_dim, generator=gen).half().float()
            self.register_buffer("raw_projection", projection, persistent=False)  # [fp_dim, token_dim]

    def untrained_path(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """The relative-representation baseline, ``features [B, depth_bins, probes, channels * anchors]`` ->
        unit vectors ``[B, fp_dim]``: :func:`umaf.extractor.processor.pool_features` (``mask [B, probes]``
        marks real probes), projected."""
        pooled = pool_features(features, mask)  # [B, token_dim]
        return nn.functional.normalize(pooled @ self.raw_projection.T, dim=-1)  # [B, fp_dim]

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """``features [B, depth_bins, probes, channels * anchors]`` -> unit fingerprints ``[B, fp_dim]``.

        ``mask [B, probes]`` (True = real probe) lets probe sets of different sizes share a batch.
        """
        b, bins, p, a = features.shape  # a = channels * anchors
        if bins * a != self.config.token_dim:
            raise UmafError(
                f"features have {bins} depth bins x {a} anchor features; this extractor expects "
                f"{self.config.depth_bins} x {self.config.n_channels * self.config.n_anchors}"
            )
        share = 1.0 if self.training or self.config.raw_skip == 0 else self.config.correction
        if share == 0:  # the fingerprint is the untrained path alone: the network is not run
            return self.untrained_path(features, mask)
        tokens = self.embed(features.permute(0, 2, 1, 3).reshape(b, p, bins * a))  # [B, P, d_model]
        x = torch.cat([self.cls.expand(b, 1, -1), tokens], dim=1)  # [B, 1 + P, d_model]
        pad = None
        if mask is not None:
            pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=mask.device), ~mask.bool()], dim=1)
        x = self.encoder(x, src_key_padding_mask=pad)  # [B, 1 + P, d_model]
        out = share * self.head(x[:, 0])  # [B, fp_dim]
        if self.config.raw_skip > 0:
            out = out + self.config.raw_skip * self.untrained_path(features, mask)
        return nn.functional.normalize(out, dim=-1)  # [B, fp_dim]

    def competence(self, fingerprints: Tensor) -> Tensor:
        """Head score in [0, 1] for ``fingerprints [B, fp_dim]`` -> ``[B]``.

        Only a training auxiliary: probe texts contain the answers, so the fingerprint cannot tell whether
        the model can do the task. A fingerprint's ``competence`` comes from :mod:`umaf.competence`.
        """
        return torch.sigmoid(self.competence_head(fingerprints)).squeeze(-1)

    @torch.no_grad()
    def encode(self, features: Tensor) -> Tensor:
        """Inference: ``features [depth_bins, probes, channels * anchors]`` (or a batch) -> unit vectors."""
        single = features.dim() == 3
        batch = (features[None] if single else features).to(next(self.parameters()).device)
        was_training = self.training
        self.eval()
        try:
            out = self(batch).cpu()  # [B, fp_dim]
        finally:
            self.train(was_training)
        return out[0] if single else out

    @property
    def extractor_hash(self) -> str:
        """Identifies the exact extractor: :attr:`weights_hash` (independent of the storage dtype), with the
        untrained path's weight and the correction's share when there is that path (they change what
        the weights give)."""
        if self.config.raw_skip == 0:
            return self.weights_hash
        key = f"{self.weights_hash}:{self.config.raw_skip}:{self.config.correction}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]
