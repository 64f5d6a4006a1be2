"""Evaluating the extractor: cross-family retrieval top-1 of probe-half fingerprints, on held-apart
models and on held-apart capability classes, beside the untrained raw-feature baseline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from umaf.extractor.bank import FeatureBank
from umaf.extractor.model import CapabilityExtractor
from umaf.extractor.processor import pool_features


@torch.no_grad()
def half_fingerprints(extractor: CapabilityExtractor, bank: FeatureBank, raw: bool = False) -> Tensor:
    """Unit fingerprints of both probe halves of every (model, class): ``[models, classes, 2, D]``.

    ``raw=True`` gives the untrained baseline instead (:func:`umaf.extractor.processor.pool_features`,
    ``D = depth_bins * channels * anchors``), the same one the fingerprint bench reports.
    """
    out = []
    for c, half in enumerate(bank.halves):
        halves = []
        for lo, hi in ((0, half), (half, None)):
            feats = torch.stack(
                [bank.features[m][c][:, lo:hi] for m in range(len(bank.models))]
            )  # [M, depth_bins, P, channels * anchors]
            vec = pool_features(feats) if raw else extractor.encode(feats)  # [M, D]
            halves.append(F.normalize(vec, dim=-1))
        out.append(torch.stack(halves, dim=1))  # [M, 2, D]
    return torch.stack(out, dim=1)  # [M, C, 2, D]


def cross_family_top1(
    fps: Tensor, families: list[str], queries: list[int], gallery: list[int], classes: list[int]
) -> float:
    """Top-1 retrieval: query = half 0 of (model m in ``queries``, class c in ``classes``), gallery = half 1
    of every class from one model m' in ``gallery`` of another family; averaged over all (m, m', c).
    ``fps [models, classes, 2, D]``. NaN when there is no such pair."""
    sims = torch.einsum("mcd,nkd->mnck", fps[:, :, 0], fps[:, :, 1])  # [M, M, C, C]
    correct = sims.argmax(-1) == torch.arange(fps.shape[1])  # [M, M, C]
    ids = {f: i for i, f in enumerate(sorted(set(families)))}
    fam = torch.tensor([ids[f] for f in families])
    index = torch.arange(len(families))
    pair = fam[:, None] != fam[None, :]
    pair &= torch.isin(index, torch.tensor(queries))[:, None] & torch.isin(index, torch.tensor(gallery))[None]
    picked = correct[pair][:, classes]  # [pairs, query classes]
    return float(picked.float().mean()) if picked.numel() else math.nan


def validate(
    extractor: CapabilityExtractor, bank: FeatureBank, val_models: list[int], n_train_classes: int
) -> dict:
    """Cross-family retrieval top-1 on held-apart models (training classes) and on held-apart classes
    (all models), for the extractor and for the untrained raw-feature baseline (probe-mean features).
    Gallery: every class, from zoo and real models (random tiny models are left out of evaluation)."""
    known = [m for m, model in enumerate(bank.models) if not model.name.startswith("tiny:")]
    sub = FeatureBank(
        [bank.models[m] for m in known], bank.classes, [bank.features[m] for m in known], bank.halves
    )
    queries = [known.index(m) for m in val_models]
    everyone = list(range(len(known)))
    train_classes = list(range(n_train_classes))
    val_classes = list(range(n_train_classes, len(bank.classes)))
    report = {}
    for name, raw in (("extractor", False), ("raw", True)):
        fps = half_fingerprints(extractor, sub, raw)  # [models, classes, 2, D]
        report[f"{name}_val_models"] = cross_family_top1(fps, sub.families, queries, everyone, train_classes)
        report[f"{name}_val_classes"] = cross_family_top1(fps, sub.families, everyone, everyone, val_classes)
    return report
