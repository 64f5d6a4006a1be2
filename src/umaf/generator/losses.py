"""The generator's reconstruction loss and the errors validation reports with it.

The loss is the normalised Frobenius error ``||ΔŴ - ΔW||² / ||ΔW||²`` of every module, computed from the
factors through small Gram matrices so that no ``[out, in]`` matrix is formed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from umaf.generator.data import FingerprintSet, LibraryTargets
from umaf.generator.model import AdapterGenerator

Factors = dict[str, tuple[Tensor, Tensor]]  # kind -> (A [B, L_k, r, in], B [B, L_k, out, r])


def relative_errors(pred: Factors, lib: LibraryTargets, labels: Tensor) -> Tensor:
    """Normalised Frobenius error ``||ΔŴ - ΔW||² / ||ΔW||²`` of every module: ``[B, modules]``.

    ``labels [B]`` are library rows; for the null row (ΔW = 0) the error is divided by the module's mean
    ``||ΔW||²`` over the training capabilities instead.
    """
    errors = []
    for kind, (a, b) in pred.items():  # a [B, L, g, in], b [B, L, out, g]
        ta, tb = (t.to(a.device)[labels] for t in lib.factors[kind])  # [B, L, k, in], [B, L, out, k]
        tt = lib.sq_norms[kind].to(a.device)  # [C + 1, L]
        pp = (torch.einsum("blog,bloh->blgh", b, b) * torch.einsum("blgi,blhi->blgh", a, a)).sum((-1, -2))
        cross = (torch.einsum("blog,blok->blgk", b, tb) * torch.einsum("blgi,blki->blgk", a, ta)).sum(
            (-1, -2)
        )
        mean_tt = tt[: lib.n_train].mean(0)  # [L]
        denom = torch.where(labels[:, None] == lib.null_index, mean_tt, tt[labels]).clamp_min(1e-3 * mean_tt)
        errors.append((pp - 2 * cross + tt[labels]) / denom)  # [B, L]
    return torch.cat(errors, dim=1)


@torch.no_grad()
def recon_error(
    generator: AdapterGenerator, lib: LibraryTargets, data: FingerprintSet, batch: int = 64
) -> float:
    """Mean normalised Frobenius error of the generated ΔW over ``data`` (NaN if empty)."""
    if len(data) == 0:
        return float("nan")
    was_training = generator.training
    generator.eval()
    total = 0.0
    device = generator.log_gain.device
    for start in range(0, len(data), batch):
        vecs, labels = data.vectors[start : start + batch].to(device), data.labels[start : start + batch]
        total += float(relative_errors(generator(vecs), lib, labels.to(device)).mean(1).sum())
    generator.train(was_training)
    return total / len(data)


def baseline_errors(lib: LibraryTargets, train: FingerprintSet, data: FingerprintSet) -> dict[str, float]:
    """Errors of two references on ``data``: the mean training ΔW, and the oracle of the nearest training
    fingerprint (cosine) — what a capability-agnostic adapter and a pure lookup would score."""
    if len(data) == 0 or len(train) == 0:
        return {"mean_delta": float("nan"), "nearest_oracle": float("nan")}
    rows = sorted(set(train.labels.tolist()))
    mean: Factors = {}
    for kind, (a, b) in lib.factors.items():  # concatenated factors / C = mean of the B @ A
        a_cat = torch.cat([a[r] for r in rows], dim=-2)  # [L, C * k, in]
        b_cat = torch.cat([b[r] for r in rows], dim=-1) / len(rows)  # [L, out, C * k]
        mean[kind] = (a_cat.expand(len(data), *a_cat.shape), b_cat.expand(len(data), *b_cat.shape))
    nearest = train.labels[(data.vectors @ train.vectors.T).argmax(1)]  # [N]
    looked_up = {kind: (a[nearest], b[nearest]) for kind, (a, b) in lib.factors.items()}
    return {
        "mean_delta": float(relative_errors(mean, lib, data.labels).mean()),
        "nearest_oracle": float(relative_errors(looked_up, lib, data.labels).mean()),
        "nearest_correct": float((nearest == data.labels).float().mean()),
    }
