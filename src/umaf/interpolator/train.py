"""Training the Size Interpolator on zoo families that exist at several sizes.

setup (families, sizes held out, capabilities: never held-out ones) -> collect (zoo fingerprints,
cached) -> pair (same family, same zoo subset, same capability, different training sizes) -> fit (cosine
loss under Accelerate; the weights kept are those with the best cosine on pairs of capabilities held
apart, the identity included) -> evaluate (pairs with one end at a held-out size, against the identity).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from umaf.capabilities import is_held_out
from umaf.errors import UmafError
from umaf.interpolator.config import InterpolatorTrainConfig
from umaf.interpolator.data import default_capabilities
from umaf.interpolator.model import SizeInterpolator
from umaf.interpolator.scale import Scale
from umaf.io import check_writable
from umaf.training import warmup_cosine_scheduler
from umaf.zoo.fingerprints import ZooFingerprint, require_zoo, zoo_fingerprints

Pairs = list[tuple[int, int]]


def training_families(entries: Sequence, config: InterpolatorTrainConfig) -> list[str]:
    """``config.families``, or every zoo family with at least one size held out and two to train on."""
    sizes: dict[str, set[str]] = {}
    for e in entries:
        sizes.setdefault(e.family, set()).add(e.size)
    wanted = config.families or sorted(sizes)
    held = set(config.held_out_sizes)
    usable = [f for f in wanted if len(sizes.get(f, set()) - held) >= 2 and sizes.get(f, set()) & held]
    if config.families:
        bad = sorted(set(config.families) - set(usable))
        if bad:
            raise UmafError(
                f"families {', '.join(bad)} need two training sizes and a held-out size in the zoo"
            )
    if not usable:
        raise UmafError("no zoo family has two training sizes plus a held-out one; run `umaf zoo build`")
    return usable


def collect(
    config: InterpolatorTrainConfig, capabilities: Sequence[str] | None = None
) -> list[ZooFingerprint]:
    """Cached zoo fingerprints of the training families on ``capabilities`` (never held-out ones)."""
    entries = require_zoo(min_sizes=2)
    families = training_families(entries, config)
    caps = list(capabilities) if capabilities is not None else default_capabilities(config.n_family_instances)
    caps = [c for c in caps if not is_held_out(c)]
    chosen = [e for e in entries if e.family in families]
    return zoo_fingerprints(chosen, caps, progress=config.progress)


def make_pairs(
    samples: Sequence[ZooFingerprint], sizes: set[str] | None = None, one_end: set[str] | None = None
) -> Pairs:
    """Ordered index pairs with the same family, subset and capability but different sizes.

    ``sizes``: both ends must be among them; ``one_end``: exactly one end must be among them.
    """
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.family, s.subset, s.capability), []).append(i)
    pairs = []
    for members in groups.values():
        for i in members:
            for j in members:
                a, b = samples[i].size, samples[j].size
                if a == b or (sizes is not None and not {a, b} <= sizes):
                    continue
                if one_end is not None and (a in one_end) == (b in one_end):
                    continue
                pairs.append((i, j))
    return pairs


def stack_samples(samples: Sequence[ZooFingerprint]) -> tuple[Tensor, Tensor]:
    """``(fingerprints [N, fp_dim], scale features [N, 3])`` of the samples."""
    fps = torch.stack([s.fingerprint.vector for s in samples])
    scales = torch.stack([Scale.from_meta(s.fingerprint.meta).features() for s in samples])
    return fps, scales


def fit(
    model: SizeInterpolator,
    fps: Tensor,
    scales: Tensor,
    pairs: Pairs,
    config: InterpolatorTrainConfig,
    val_pairs: Pairs | None = None,
) -> tuple[list[float], int]:
    """Minimise ``1 - cos(move(source), target)`` over random batches of ``pairs`` (under Accelerate).

    Every ``config.val_every`` steps the cosine on ``val_pairs`` is measured and the best weights seen
    (the identity at step 0 included) are kept. Returns the loss of every step and the step kept.
    """
    from accelerate import Accelerator

    accelerator = Accelerator()
    data = TensorDataset(torch.tensor(pairs, dtype=torch.long))  # [P, 2]
    gen = torch.Generator().manual_seed(config.seed)
    sampler = RandomSampler(
        data, replacement=True, num_samples=config.steps * config.batch_size, generator=gen
    )
    loader = DataLoader(data, batch_size=config.batch_size, sampler=sampler)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine_scheduler(optimizer, config.steps, warmup=0, floor=0.1)
    wrapped, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    fps, scales = fps.to(accelerator.device), scales.to(accelerator.device)
    keeper = _BestKeeper(model, fps, scales, val_pairs)
    losses: list[float] = []
    for step, (batch,) in enumerate(tqdm(loader, desc="interpolator", disable=not config.progress), start=1):
        wrapped.train()
        src, tgt = batch[:, 0], batch[:, 1]
        pred = wrapped(fps[src], scales[src], scales[tgt])  # [B, fp_dim]
        loss = (1 - F.cosine_similarity(pred, fps[tgt], dim=-1)).mean()
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % config.val_every == 0 or step == config.steps:
            keeper.check(step)
    model.eval()
    return losses, keeper.restore()


class _BestKeeper:
    """Keeps the weights with the best validation cosine (without validation pairs: the last ones)."""

    def __init__(self, model: SizeInterpolator, fps: Tensor, scales: Tensor, pairs: Pairs | None) -> None:
        self.model, self.fps, self.scales, self.pairs = model, fps, scales, pairs
        self.best_step, self.best_score, self.state = 0, -math.inf, None
        self.check(0)

    def check(self, step: int) -> None:
        """Measure the weights of ``step`` and keep them if they are the best so far."""
        if not self.pairs:
            self.best_step = step
            return
        score = evaluate_pairs(self.model, self.fps, self.scales, self.pairs)["cosine_interpolated"]
        if score > self.best_score:
            self.best_step, self.best_score = step, score
            self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self) -> int:
        """Load the kept weights into the model; return the step they come from."""
        if self.state is not None:
            self.model.load_state_dict(self.state)
        return self.best_step


@torch.no_grad()
def evaluate_pairs(model: SizeInterpolator, fps: Tensor, scales: Tensor, pairs: Pairs) -> dict[str, float]:
    """Mean cosine to the true target-size fingerprint: the source as is vs moved by ``model``."""
    if not pairs:
        return {"cosine_identity": math.nan, "cosine_interpolated": math.nan, "n_pairs": 0}
    model.eval()
    idx = torch.tensor(pairs, dtype=torch.long)
    src, tgt = idx[:, 0], idx[:, 1]
    device = next(model.parameters()).device
    moved = model(fps[src].to(device), scales[src].to(device), scales[tgt].to(device)).cpu()
    fps = fps.cpu()
    return {
        "cosine_identity": float(F.cosine_similarity(fps[src], fps[tgt], dim=-1).mean()),
        "cosine_interpolated": float(F.cosine_similarity(moved, fps[tgt], dim=-1).mean()),
        "n_pairs": len(pairs),
    }


def train_interpolator(
    config: InterpolatorTrainConfig | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    samples: Sequence[ZooFingerprint] | None = None,
) -> SizeInterpolator:
    """Train a Size Interpolator; ``samples`` defaults to cached fingerprints of the zoo (:func:`collect`).

    Held-out capabilities are dropped; sizes in ``config.held_out_sizes`` never enter training and make
    the validation pairs. With ``output`` the result is saved there (``save_pretrained``).
    """
    config = config or InterpolatorTrainConfig()
    if output is not None:
        check_writable(output, overwrite)
    torch.manual_seed(config.seed)
    samples = [s for s in (collect(config) if samples is None else samples) if not is_held_out(s.capability)]
    hashes = {s.fingerprint.meta.get("extractor_hash") for s in samples}
    if len(hashes) > 1:
        raise UmafError("training fingerprints come from different extractors; recompute them with one")
    train_pairs, select_pairs = split_pairs(samples, config)
    config.interpolator.extractor_hash = hashes.pop()
    fps, scales = stack_samples(samples)
    trained = scales[[i for i, s in enumerate(samples) if s.size not in config.held_out_sizes]]
    config.interpolator.scale_low = tuple(trained.min(dim=0).values.tolist())
    config.interpolator.scale_high = tuple(trained.max(dim=0).values.tolist())
    model = SizeInterpolator(config.interpolator)
    losses, best_step = fit(model, fps, scales, train_pairs, config, select_pairs)
    model.train_report = _report(model, fps, scales, samples, train_pairs, select_pairs, config, losses)
    model.train_report["kept_step"] = best_step
    if output is not None:
        model.save_pretrained(output, overwrite=overwrite)  # the report goes into its config.json
    return model


def split_pairs(samples: Sequence[ZooFingerprint], config: InterpolatorTrainConfig) -> tuple[Pairs, Pairs]:
    """``(train, select)`` pairs between training sizes; ``select`` pairs read the capabilities held
    apart (``config.select_fraction``) to choose the weights kept. Held-out sizes are in neither."""
    train_sizes = {s.size for s in samples} - set(config.held_out_sizes)
    caps = sorted({s.capability for s in samples})
    random.Random(config.seed).shuffle(caps)
    apart = set(caps[: int(round(len(caps) * config.select_fraction))])
    pairs = make_pairs(samples, sizes=train_sizes)
    train = [p for p in pairs if samples[p[0]].capability not in apart]
    if not train:
        raise UmafError(
            "no training pairs: need one family at two non-held-out sizes with the same capabilities"
        )
    return train, [p for p in pairs if samples[p[0]].capability in apart]


def _report(
    model: SizeInterpolator,
    fps: Tensor,
    scales: Tensor,
    samples: Sequence[ZooFingerprint],
    train_pairs: Pairs,
    select_pairs: Pairs,
    config: InterpolatorTrainConfig,
    losses: list[float],
) -> dict:
    held = set(config.held_out_sizes)
    figures = {
        "train": train_pairs,
        "select": select_pairs,
        "val": make_pairs(samples, one_end=held),  # the honest figure: a size never trained on
    }
    report = {
        "families": sorted({s.family for s in samples}),
        "train_sizes": sorted({s.size for s in samples} - held),
        "held_out_sizes": sorted(held),
        "capabilities": sorted({s.capability for s in samples}),
        "n_train_pairs": len(train_pairs),
        "first_loss": sum(losses[:10]) / len(losses[:10]),
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
    }
    for tag, pairs in figures.items():
        report.update({f"{tag}_{k}": v for k, v in evaluate_pairs(model, fps, scales, pairs).items()})
    return report
