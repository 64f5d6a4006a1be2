"""Which models the zoo holds: families, sizes, capability subsets and training budgets."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace

from umaf.errors import UmafError

#: Subset letters; subset ``k`` is the ``k``-th rotation of a half of the capability ring.
SUBSETS: tuple[str, ...] = ("a", "b", "c")

#: Prefix of the quick zoo's model names, so a full build never mistakes a quick model for its own.
QUICK_PREFIX = "q-"

#: Sizes built per family in the full zoo (gpt2 and llama span three sizes for the size interpolator).
FULL_SIZES: dict[str, tuple[str, ...]] = {
    "bert": ("xs",),
    "gpt2": ("xs", "s", "m"),
    "llama": ("xs", "s", "m"),
    "mixtral": ("xs",),
    "phi": ("xs",),
    "qwen2": ("xs",),
    "t5": ("xs",),
}

#: The quick zoo: (family, size, subsets); four families, two subsets for gpt2-xs.
QUICK_MODELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("gpt2", "xs", ("a", "b")),
    ("llama", "xs", ("a",)),
    ("bert", "xs", ("a",)),
    ("t5", "xs", ("a",)),
)


@dataclass(frozen=True)
class TrainConfig:
    """How one zoo model is trained (AdamW, linear warm-up then cosine decay)."""

    steps: int = 2500
    """Optimiser steps."""
    lr: float = 5e-3
    """Peak learning rate."""
    batch_size: int = 32
    """Examples per step, each drawn from a uniformly chosen trained capability."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup: float = 0.05
    """Fraction of the steps spent warming the learning rate up from zero."""
    min_lr_ratio: float = 0.1
    """The cosine decay ends at ``lr * min_lr_ratio``."""
    length_groups: int = 8
    """Batches drawn at once and regrouped by length, which halves the padding of mixed-task batches."""
    dropout: float | None = 0.0
    """Dropout during training (None keeps the model's own); tiny models learn faster without it."""
    untagged_fraction: float = 0.25
    """Share of examples shown without the capability tag, so plain probe texts stay in distribution."""
    seed: int = 0
    """Seed of the example sampler and of torch's generator during training."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ZooSpec:
    """One model of the zoo, fully determined before anything is trained."""

    name: str
    """``<family>-<size>-<subset>``, with ``q-`` in front for the quick zoo."""
    family: str
    """One of ``umaf.models.TINY_FAMILIES``."""
    size: str
    """One of ``umaf.models.TINY_SIZES``."""
    subset: str
    """Letter of the capability subset (see :func:`rotated_halves`)."""
    trained: tuple[str, ...]
    """Capabilities in the training mix, sorted."""
    seed: int
    """Seed of the initial weights."""
    quick: bool = False
    """Part of the quick zoo."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training schedule."""
    eval_limit: int | None = None
    """Evaluate on the first ``eval_limit`` examples of each eval split (None: all of them)."""

    def key(self) -> dict:
        """What must match for a stored model to count as this spec (used to resume builds)."""
        return {"family": self.family, "size": self.size, "seed": self.seed, "trained": list(self.trained),
                "train": self.train.to_dict(), "eval_limit": self.eval_limit}


def capability_ring(names: list[str], kinds: dict[str, str]) -> list[str]:
    """Order capabilities round-robin over their kinds, so every contiguous half mixes kinds."""
    by_kind: dict[str, list[str]] = {}
    for name in sorted(names):
        by_kind.setdefault(kinds[name], []).append(name)
    groups = [by_kind[k] for k in sorted(by_kind)]
    ring: list[str] = []
    for i in range(max((len(g) for g in groups), default=0)):
        ring += [g[i] for g in groups if i < len(g)]
    return ring


def rotated_halves(ring: list[str], n_subsets: int = len(SUBSETS)) -> list[tuple[str, ...]]:
    """Subset ``k`` = the half of ``ring`` starting at ``k/n`` of the way round.

    With three subsets every capability lies in one or two of them, never in none or all, so each
    capability is trained in some models of a family-size and untrained in others.
    """
    n = len(ring)
    if n < 2:
        raise UmafError(f"the zoo needs at least 2 capabilities, found {n}")
    half = (n + 1) // 2
    subsets = []
    for k in range(n_subsets):
        start = round(k * n / n_subsets)
        chosen = {ring[(start + i) % n] for i in range(half)}
        subsets.append(tuple(sorted(chosen)))
    return subsets


def model_seed(name: str) -> int:
    """A stable seed per model name (quick and full twins share it)."""
    return zlib.crc32(name.removeprefix(QUICK_PREFIX).encode()) % (2**31)


def size_train_config(size: str, quick: bool = False) -> TrainConfig:
    """Training schedule of a zoo model of ``size``: larger models learn faster per step but cost more."""
    if quick:
        return TrainConfig(steps=1000, lr=5e-3)
    return {"xs": TrainConfig(steps=2500, lr=5e-3), "s": TrainConfig(steps=1500, lr=3e-3),
            "m": TrainConfig(steps=1000, lr=3e-3)}[size]


def zoo_specs(quick: bool = False, families: list[str] | None = None,
              train: TrainConfig | None = None) -> list[ZooSpec]:
    """Every model of the full (or quick) zoo, optionally only some families, in build order: subset
    ``a`` of every family-size first, so a build cut short still spans all families and sizes.

    ``train`` replaces the per-size schedules of :func:`size_train_config` (the seed stays per model).
    """
    from umaf.capabilities import get_capability, list_capabilities

    names = list_capabilities()
    ring = capability_ring(names, {n: get_capability(n).kind for n in names})
    subsets = dict(zip(SUBSETS, rotated_halves(ring), strict=True))
    plan = QUICK_MODELS if quick else tuple((f, s, SUBSETS) for f, sizes in FULL_SIZES.items() for s in sizes)
    plan = _filter_families(plan, families)
    specs = []
    for family, size, letters in plan:
        config = train or size_train_config(size, quick)
        for letter in letters:
            name = f"{QUICK_PREFIX if quick else ''}{family}-{size}-{letter}"
            specs.append(ZooSpec(name=name, family=family, size=size, subset=letter, trained=subsets[letter],
                                 seed=model_seed(name), quick=quick,
                                 train=replace(config, seed=model_seed(name))))
    return sorted(specs, key=lambda s: s.subset)  # stable: family-size order within a subset


def _filter_families(plan: tuple, families: list[str] | None) -> tuple:
    if families is None:
        return plan
    known = sorted(FULL_SIZES)
    unknown = [f for f in families if f not in known]
    if unknown:
        raise UmafError(f"unknown zoo family {unknown[0]!r}; choose from: {', '.join(known)}")
    return tuple(p for p in plan if p[0] in families)
