"""The extractor's training losses: supervised contrastive (Khosla et al., 2020,
https://arxiv.org/abs/2004.11362) on the fingerprints, MSE of the competence head on zoo accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def supcon_loss(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss of unit embeddings ``z [N, D]`` with class ``labels [N]``."""
    logits = z @ z.T / temperature  # [N, N]
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # [N, N]
    positives = (labels[:, None] == labels[None, :]) & ~self_mask  # [N, N]
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1).clamp_min(1)
    return per_anchor[positives.any(1)].mean()


def competence_loss(scores: Tensor, accuracy: Tensor) -> Tensor:
    """MSE of competence ``scores [N]`` against zoo ``accuracy [N]``, over entries with a known accuracy."""
    known = torch.isfinite(accuracy)
    if not known.any():
        return scores.sum() * 0.0
    return F.mse_loss(scores[known], accuracy[known].to(scores.dtype))
