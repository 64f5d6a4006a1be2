"""The task-conditioned fusion gate: a query fingerprint and N source fingerprints -> N weights.

``logit_i = cos(q, v_i) / T + <P q, K v_i> + b(v_i)``; the weights are their softmax. At initialisation
``P``/``K`` are near zero and ``b`` is zero, so an untrained gate weighs sources by their cosine to the
query (a retrieval prior); training learns which sources serve a query best (e.g. the more competent
reading of the asked capability) and how sharp to be.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from umaf import pretrained
from umaf.components import TrainedComponent
from umaf.fusion.config import GateConfig


class FusionGate(TrainedComponent):
    """Weights per source given a query; see the module docstring (the training report is saved in
    config.json as ``train_report``)."""

    FORMAT = "umaf-fusion-gate"
    config_class = GateConfig
    NAME = "fusion gate"
    REPORT_FIELD = "train_report"

    def __init__(self, config: GateConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GateConfig()
        self.query_proj = nn.Linear(config.fp_dim, config.key_dim, bias=False)
        self.key_proj = nn.Linear(config.fp_dim, config.key_dim, bias=False)
        nn.init.normal_(self.query_proj.weight, std=0.01)
        nn.init.normal_(self.key_proj.weight, std=0.01)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        self.source_bias = nn.Linear(config.fp_dim, 1)
        nn.init.zeros_(self.source_bias.weight)
        nn.init.zeros_(self.source_bias.bias)

    def forward(self, query: Tensor, sources: Tensor, mask: Tensor | None = None) -> Tensor:
        """``query [B, D]``, ``sources [B, N, D]``, ``mask [B, N]`` (True = real) -> weights ``[B, N]``."""
        cos = F.cosine_similarity(query[:, None, :], sources, dim=-1)  # [B, N]
        bilinear = (self.query_proj(query)[:, None, :] * self.key_proj(sources)).sum(-1)  # [B, N]
        logits = cos * self.log_inv_temperature.exp() + bilinear + self.source_bias(sources).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask.bool(), float("-inf"))
        return logits.softmax(dim=-1)

    @torch.no_grad()
    def weigh(self, query: Tensor, sources: Tensor) -> Tensor:
        """Inference: ``query [D]``, ``sources [N, D]`` -> weights ``[N]`` summing to one."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            return self(query[None].to(device), sources[None].to(device))[0].cpu()
        finally:
            self.train(was_training)

    @property
    def gate_hash(self) -> str:
        """Identifies the exact gate: :attr:`weights_hash` (independent of the storage dtype)."""
        return self.weights_hash


def default_gate_dir() -> Path:
    """Where the default gate is read from: the user's one in the cache, else the shipped one."""
    return pretrained.component_dir(pretrained.GATE)


def default_gate() -> FusionGate:
    """The trained default gate; a UmafError naming the command to train it if it is missing."""
    return pretrained.load_default(FusionGate, pretrained.GATE, "fusion gate")
