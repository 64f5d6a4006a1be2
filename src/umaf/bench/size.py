"""Size suite (M5): does the Size Interpolator move fingerprints to where other sizes put them?

Cosine: for zoo families built at several sizes, a fingerprint read at one size is compared with the
true fingerprint of the same capability, family and zoo subset read at another size, as is (identity)
and after interpolation; only pairs with one end at a size held out of the interpolator's training
count, on seen and on held-out capabilities. A run-to-run yardstick is reported beside it: the cosine
between two models of the *same* size and family trained on different subsets.

Transfer: adapters generated on the target from fingerprints read at another size, with and without
interpolation to the target's scale; recovery = (generated - base) / (oracle - base).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from umaf.bench.fusion import Toolkit, reference_accuracies, resolve_toolkit
from umaf.bench.registry import SUITES
from umaf.capabilities import is_held_out
from umaf.config import HELD_OUT_CAPABILITIES
from umaf.errors import UmafError
from umaf.interpolator import SizeInterpolator, default_interpolator, evaluate_pairs, interpolate, make_pairs
from umaf.interpolator.data import default_capabilities
from umaf.interpolator.scale import Scale
from umaf.interpolator.train import stack_samples
from umaf.zoo.fingerprints import ZooFingerprint, require_zoo, zoo_fingerprints

DEFAULT_TARGET = "zoo:llama-m-a"
TARGETS = {
    "m5_cosine_interpolated": ">= m5_cosine_identity + 0.05",
    "m5_recovery_with": ">= m5_recovery_without",
}


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def size_samples(interpolator: SizeInterpolator, quick: bool) -> list[ZooFingerprint]:
    """Zoo fingerprints of the interpolator's families on training and held-out capabilities."""
    families = interpolator.train_report.get("families")
    entries = require_zoo(families=families, min_sizes=3)
    caps = default_capabilities(0 if quick else 4) + list(HELD_OUT_CAPABILITIES)
    return zoo_fingerprints(entries, caps)


def cosine_figures(interpolator: SizeInterpolator, samples: Sequence[ZooFingerprint]) -> dict[str, Any]:
    """Identity vs interpolated cosine on pairs with one end at a held-out size, overall and split."""
    held = set(interpolator.train_report.get("held_out_sizes") or ("s",))
    fps, scales = stack_samples(samples)
    pairs = make_pairs(samples, one_end=held)
    if not pairs:
        raise UmafError(f"no zoo pairs reach the held-out sizes {sorted(held)}; run `umaf zoo build`")
    splits = {
        "": pairs,
        "_seen_capability": [p for p in pairs if not is_held_out(samples[p[0]].capability)],
        "_heldout_capability": [p for p in pairs if is_held_out(samples[p[0]].capability)],
        "_to_heldout_size": [p for p in pairs if samples[p[1]].size in held],
        "_from_heldout_size": [p for p in pairs if samples[p[0]].size in held],
    }
    out: dict[str, Any] = {"m5_held_out_sizes": sorted(held)}
    for tag, chosen in splits.items():
        figures = evaluate_pairs(interpolator, fps, scales, chosen)
        out[f"m5_cosine_identity{tag}"] = figures["cosine_identity"]
        out[f"m5_cosine_interpolated{tag}"] = figures["cosine_interpolated"]
        out[f"m5_pairs{tag}"] = figures["n_pairs"]
    out["m5_cosine_gain"] = out["m5_cosine_interpolated"] - out["m5_cosine_identity"]
    out["m5_cosine_hindsight_offset"] = hindsight_offset_cosine(samples, pairs)
    out["m5_cosine_same_size_other_subset"] = pair_cosine(samples, same_size=True)
    out["m5_cosine_other_size_other_subset"] = pair_cosine(samples, same_size=False)
    return out


def hindsight_offset_cosine(samples: Sequence[ZooFingerprint], pairs: Sequence[tuple[int, int]]) -> float:
    """Cosine after moving each source fingerprint by the difference of the two *models'* mean
    fingerprints over their other capabilities: a correction that needs the target model's own readings,
    which no interpolator has; how much a per-model shift could recover at best."""
    by_model: dict[str, dict[str, torch.Tensor]] = {}
    for s in samples:
        by_model.setdefault(s.model, {})[s.capability] = s.fingerprint.vector

    def mean_without(model: str, cap: str) -> torch.Tensor:
        return torch.stack([v for c, v in by_model[model].items() if c != cap]).mean(dim=0)

    cosines = []
    for i, j in pairs:
        src, tgt = samples[i], samples[j]
        if len(by_model[src.model]) < 2 or len(by_model[tgt.model]) < 2:
            continue  # no other capability to take a mean over
        shift = mean_without(tgt.model, tgt.capability) - mean_without(src.model, src.capability)
        moved = src.fingerprint.vector + shift
        cosines.append(float(F.cosine_similarity(moved, tgt.fingerprint.vector, dim=0)))
    return _mean(cosines)


def pair_cosine(samples: Sequence[ZooFingerprint], same_size: bool) -> float:
    """Mean cosine between readings of one capability by two models of the same family trained on
    different capability subsets, of the same size or of different sizes: set beside the identity cosine
    (same subset, other size), it says whether size or the training run moves fingerprints more."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.family, s.capability), []).append(i)
    cosines = [
        float(F.cosine_similarity(samples[i].fingerprint.vector, samples[j].fingerprint.vector, dim=0))
        for members in groups.values() for i in members for j in members
        if i < j and samples[i].subset != samples[j].subset
        and (samples[i].size == samples[j].size) == same_size
    ]  # fmt: skip
    return _mean(cosines)


def transfer_sources(kit: Toolkit, cap: str, target_size: str, families: Sequence[str], quick: bool) -> list:
    """Zoo models of another size than the target's, trained on ``cap`` and not read in the generator's
    training: one per (family, size), held-out sizes first; one in all with ``quick``."""
    options = [e for e in kit.zoo if cap in e.trained and e.size != target_size and e.family in families
               and e.model_id not in kit.trained_sources]
    options.sort(key=lambda e: (e.size != "s", e.family, e.size, -e.accuracy.get(cap, 0.0)))
    chosen, seen = [], set()
    for e in options:
        if (e.family, e.size) not in seen:
            seen.add((e.family, e.size))
            chosen.append(e)
    return chosen[:1] if quick else chosen


def transfer_figures(kit: Toolkit, interpolator: SizeInterpolator, quick: bool) -> dict[str, Any]:
    """Recovery of adapters generated from other-size fingerprints, without and with interpolation."""
    caps, base, oracle = reference_accuracies(kit, quick)
    goal = _target_scale(kit)
    target_size = next((e.size for e in kit.zoo if e.model_id == kit.target), "")
    families = interpolator.train_report.get("families") or sorted({e.family for e in kit.zoo})
    rows = []
    with tempfile.TemporaryDirectory(prefix="umaf-bench-size-") as tmp:
        for cap in tqdm(caps, desc="size transfer"):
            for src in transfer_sources(kit, cap, target_size, families, quick):
                fp = kit.fingerprint(src, cap)
                moved = interpolate(fp, goal, interpolator=interpolator)
                gain = oracle[cap] - base[cap]
                row = {"capability": cap, "source": src.model_id, "size": src.size}
                for tag, vector in (("without", fp), ("with", moved)):
                    adapter = kit.generate(vector, Path(tmp) / f"{len(rows)}-{tag}")
                    row[tag] = (kit.evaluate(cap, adapter) - base[cap]) / gain
                rows.append(row)
    if not rows:
        raise UmafError(
            f"no zoo source of another size than {kit.target}, outside its generator's training sources, "
            "is trained on a learnable capability"
        )
    return {
        "m5_recovery_without": _mean([r["without"] for r in rows]),
        "m5_recovery_with": _mean([r["with"] for r in rows]),
        "m5_transfer_rows": rows,
        "m5_transfer_target_scale": goal.to_dict(),
    }


def _target_scale(kit: Toolkit) -> Scale:
    from umaf.interpolator import resolve_scale

    return resolve_scale(kit.target)


@SUITES.register("size")
def bench_size(quick: bool, target: str = DEFAULT_TARGET) -> dict[str, Any]:
    """M5: interpolated vs identity cosine on held-out sizes, and transfer recovery across sizes."""
    interpolator = default_interpolator()
    kit = resolve_toolkit(target, quick=quick)
    torch.manual_seed(0)
    results = cosine_figures(interpolator, size_samples(interpolator, quick))
    results.update(transfer_figures(kit, interpolator, quick))
    results["m5_interpolator_train_report"] = {
        k: v for k, v in interpolator.train_report.items() if k != "capabilities"
    }
    results["target"] = target
    results["targets"] = TARGETS
    return results
