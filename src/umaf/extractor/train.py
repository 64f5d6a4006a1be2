"""Contrastive training of the Capability Extractor: one capability, read from any model, lands in one place.

setup (which models and capabilities; held-out ones are refused) -> collect (processed features per
model x capability, cached on disk) -> fit (supervised contrastive loss over random probe subsets, plus a
competence head regressed on zoo accuracy) -> evaluate (cross-family retrieval on held-apart models and
on held-apart capability classes).

The losses are in :mod:`umaf.extractor.losses`, the evaluation in :mod:`umaf.extractor.evaluate`, the
feature bank both read in :mod:`umaf.extractor.bank`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from umaf.capabilities import (
    Capability,
    check_trainable,
    family_instances,
    get_capability,
    is_held_out_model_family,
    training_capabilities,
    training_families,
)
from umaf.config import cache_dir
from umaf.errors import UmafError
from umaf.extractor.bank import FeatureBank, TrainModel
from umaf.extractor.config import ExtractorConfig
from umaf.extractor.evaluate import validate
from umaf.extractor.fingerprinting import model_features
from umaf.extractor.losses import competence_loss, supcon_loss
from umaf.extractor.model import CapabilityExtractor
from umaf.extractor.processor import feature_key
from umaf.io import atomic_path, check_writable, slug
from umaf.models import LoadedModel
from umaf.training import warmup_cosine_scheduler

#: Pretrained models whose activations train the extractor. SmolLM2 is left out by default: reading its
#: features for every training capability takes about half an hour on two CPU cores, and leaving it out
#: makes it a real architecture the extractor meets zero-shot.
REAL_MODELS: tuple[str, ...] = ("minilm",)


@dataclass
class TrainConfig:
    """Settings of :func:`train_extractor` (each field's ``help`` doubles as CLI help)."""

    extractor: ExtractorConfig = field(
        default_factory=ExtractorConfig, metadata={"help": "Processor settings and network shape."}
    )
    quick_zoo: bool = field(
        default=False,
        metadata={"help": "Train on the quick zoo even when the full zoo is built (as the shipped one is)."},
    )
    real_models: tuple[str, ...] = field(
        default=REAL_MODELS, metadata={"help": "Pretrained models trained on besides the zoo."}
    )
    capabilities: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Only these training capabilities (default: all of them)."}
    )
    families: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Parametric families to draw instances from (default: all of them)."}
    )
    random_tiny: int = field(
        default=2,
        metadata={"help": "Randomly initialised tiny models per non-held-out family (augmentation)."},
    )
    n_family_instances: int = field(
        default=4, metadata={"help": "Instances per parametric family used as extra contrastive classes."}
    )
    n_val_instances: int = field(
        default=1, metadata={"help": "Further instances per family held apart as unseen validation classes."}
    )
    steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    classes_per_batch: int = field(default=16, metadata={"help": "Capabilities per batch."})
    views_per_class: int = field(default=4, metadata={"help": "Views (model x probe subset) per capability."})
    min_probes: int = field(default=8, metadata={"help": "Smallest random probe subset of a view."})
    max_probes: int = field(default=32, metadata={"help": "Largest random probe subset of a view."})
    lr: float = field(default=3e-4, metadata={"help": "Peak AdamW learning rate (warm-up, then cosine)."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    warmup: int = field(default=100, metadata={"help": "Warm-up steps."})
    temperature: float = field(default=0.1, metadata={"help": "Temperature of the contrastive loss."})
    competence_weight: float = field(default=1.0, metadata={"help": "Weight of the competence MSE loss."})
    val_every: int = field(default=250, metadata={"help": "Steps between validation retrieval runs."})
    capture_batch_size: int = field(default=16, metadata={"help": "Texts per forward pass when capturing."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling, probe subsets and initialisation."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if not 1 <= self.min_probes <= self.max_probes:
            raise UmafError("need 1 <= min_probes <= max_probes")
        if self.classes_per_batch < 2 or self.views_per_class < 2:
            raise UmafError("classes_per_batch and views_per_class must be at least 2")
        if self.steps < 1:
            raise UmafError(f"steps must be at least 1, got {self.steps}")


# ----------------------------------------------------------------------------------------------- setup


def training_classes(config: TrainConfig) -> tuple[list[Capability], list[Capability]]:
    """(train classes, validation-only classes): training built-ins + family instances; never held out."""
    names = training_capabilities() if config.capabilities is None else list(config.capabilities)
    train = [get_capability(name) for name in names]
    val: list[Capability] = []
    n, n_val = config.n_family_instances, config.n_val_instances
    for family in training_families(config.families):
        instances = family_instances(family, n + n_val, seed=config.seed)
        train += instances[:n]
        val += instances[n:]
    check_trainable(train + val, [])
    return train, val


def load_model(name: str, device: str | torch.device | None = None) -> LoadedModel:
    """:func:`umaf.models.load`, plus ``tiny:<family>-<size>-<seed>`` for a randomly initialised tiny model
    (cheap extra architectures: the extractor sees more ways one text can be represented). Either goes
    on ``device`` (default: CUDA when available, else the CPU), always in float32: its features are cached.
    """
    from umaf.models import build_tiny, load

    if name.startswith("tiny:"):
        family, size, seed = tiny_spec(name)
        return build_tiny(family, size, seed=seed).to(device, "float32")
    return load(name, dtype="float32", device=device)


def tiny_spec(name: str) -> tuple[str, str, int]:
    """``tiny:<family>-<size>-<seed>`` as ``(family, size, seed)``; any other spelling is a UmafError."""
    from umaf.models import TINY_FAMILIES, TINY_SIZES

    parts = name.removeprefix("tiny:").rsplit("-", 2)
    family, size, seed = parts if len(parts) == 3 else ("", "", "")
    if family not in TINY_FAMILIES or size not in TINY_SIZES or not seed.isdigit():
        raise UmafError(
            f"bad tiny model {name!r}: write tiny:<family>-<size>-<seed> with a family of "
            f"{', '.join(TINY_FAMILIES)} and a size of {', '.join(TINY_SIZES)}, e.g. tiny:llama-xs-0"
        )
    return family, size, int(seed)


def random_tiny_models(n_per_family: int) -> list[TrainModel]:
    """``n_per_family`` random tiny models of every non-held-out tiny family, cycling through the sizes."""
    from umaf.models import TINY_FAMILIES, TINY_SIZES

    sizes = list(TINY_SIZES)
    return [
        TrainModel(f"tiny:{family}-{sizes[i % len(sizes)]}-{1000 + i}", family, None, f"tiny-{family}")
        for family in TINY_FAMILIES
        if not is_held_out_model_family(family)
        for i in range(n_per_family)
    ]


def training_models(config: TrainConfig) -> list[TrainModel]:
    """Zoo models of non-held-out families (the full zoo unless ``config.quick_zoo`` or it is not built,
    else the quick one) plus ``config.real_models``."""
    from umaf.zoo import list_zoo

    entries = (not config.quick_zoo and list_zoo()) or list_zoo(quick=True)
    models = [
        TrainModel(e.model_id, e.family, dict(e.accuracy), e.family)
        for e in entries
        if not is_held_out_model_family(e.family)
    ]
    real = [TrainModel(name, "?", None, name) for name in config.real_models]
    return models + real + random_tiny_models(config.random_tiny)


def _resolve(models: list[str] | None, config: TrainConfig) -> list[TrainModel]:
    if models is None:
        return training_models(config)
    from umaf.zoo import list_zoo

    zoo = {e.model_id: e for e in list_zoo() + list_zoo(quick=True)}
    for name in models:  # every name is checked before any model is read
        _check_model_name(name, zoo)
    return [
        TrainModel(m, zoo[m].family, dict(zoo[m].accuracy), zoo[m].family)
        if m in zoo
        else TrainModel(m, "?", None, m)
        for m in models
    ]


def _check_model_name(name: str, zoo: dict) -> None:
    """What can be told without loading: a tiny name's spelling, a zoo model being built, a path existing."""
    if name.startswith("tiny:"):
        tiny_spec(name)
    elif name.startswith("zoo:") and name not in zoo:
        raise UmafError(f"zoo model {name!r} is not built; run `umaf zoo build` (`umaf zoo list` shows them)")
    elif name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise UmafError(f"model path {name} does not exist")


# --------------------------------------------------------------------------------------------- collect


def _feature_file(model: str, capability: str) -> Path:
    return cache_dir() / "features" / slug(model) / f"{slug(capability)}.safetensors"


def model_stamp(name: str) -> str:
    """:func:`umaf.models.weights_stamp` of a :func:`load_model` name; a random tiny model's weights are
    fixed by its name and by the torch and transformers versions that initialise it."""
    import transformers

    from umaf.models import weights_stamp

    if name.startswith("tiny:"):
        return f"random-init torch {torch.__version__} transformers {transformers.__version__}"
    return weights_stamp(name)


def _cached(path: Path, stamp: dict[str, str]) -> tuple[Tensor, str] | None:
    """Cached ``(features, model family)`` if ``path`` holds features whose metadata matches ``stamp``
    (feature settings, probes and the model's weights)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if all(meta.get(k) == v for k, v in stamp.items()):
                return f.get_tensor("features"), meta.get("family", "?")
    except Exception:  # missing or corrupt cache entries are recomputed
        return None
    return None


def _store(path: Path, features: Tensor, stamp: dict[str, str], family: str) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        save_file({"features": features.contiguous()}, str(tmp), metadata={**stamp, "family": family})


def probe_texts_in_bank_order(cap: Capability) -> list[str]:
    """Probe texts in the order the bank stores them: half 0, then half 1 (as ``probe_texts(part=...)``)."""
    return cap.probe_texts(part=0) + cap.probe_texts(part=1)


def model_class_features(
    model: TrainModel, classes: list[Capability], config: TrainConfig
) -> tuple[str, list[Tensor]]:
    """``(family, features)`` of ``model`` on every class, each ``[depth_bins, probes, channels * anchors]``.

    Cached under ``cache_dir()/features/<model>/<capability>.safetensors``, stamped with the feature
    settings, the probes and the model's weights (:func:`model_stamp`: a rebuilt or edited model is read
    again); only missing entries are captured (the model is loaded only then), so an interrupted run
    resumes.
    """
    base = {"feature_key": feature_key(config.extractor), "weights_stamp": model_stamp(model.name)}
    stamps = [{**base, "probe_hash": c.probe_hash()} for c in classes]
    found = [_cached(_feature_file(model.name, c.name), s) for c, s in zip(classes, stamps, strict=True)]
    missing = [i for i, f in enumerate(found) if f is None]
    families = {f[1] for f in found if f is not None}
    if missing:
        loaded = load_model(model.name)
        families = {loaded.info.family}
        check_trainable([], list(families))
        texts = [probe_texts_in_bank_order(classes[i]) for i in missing]
        flat = [t for group in texts for t in group]
        feats = model_features(
            loaded, flat, config.extractor, batch_size=config.capture_batch_size, progress=config.progress
        ).features  # [depth_bins, sum(probes), channels * anchors]
        start = 0
        for i, group in zip(missing, texts, strict=True):
            part = feats[:, start : start + len(group)]  # [depth_bins, probes, channels * anchors]
            start += len(group)
            _store(_feature_file(model.name, classes[i].name), part, stamps[i], loaded.info.family)
            found[i] = (part, loaded.info.family)
    return families.pop(), [f[0] for f in found if f is not None]


def collect_features(models: list[TrainModel], classes: list[Capability], config: TrainConfig) -> FeatureBank:
    """Read (or compute and cache) features of every model on every class; refuses held-out families."""
    resolved, features = [], []
    bar = tqdm(models, desc="features", unit="model", disable=not config.progress)
    for model in bar:
        bar.set_postfix_str(model.name)
        family, feats = model_class_features(model, classes, config)
        check_trainable([], [family])
        resolved.append(TrainModel(model.name, family, model.accuracy, model.group or model.name))
        features.append(feats)
    halves = [len(c.probe_texts(part=0)) for c in classes]
    return FeatureBank(resolved, classes, features, halves)


# ------------------------------------------------------------------------------------------------- fit


def hold_apart_models(bank: FeatureBank) -> list[int]:
    """Validation models: the last zoo model (by name) of every family that has several zoo models."""
    by_family: dict[str, list[int]] = {}
    for m, model in enumerate(bank.models):
        if model.accuracy is not None:
            by_family.setdefault(model.family, []).append(m)
    return sorted(max(ms, key=lambda m: bank.models[m].name) for ms in by_family.values() if len(ms) > 1)


class ViewDataset(Dataset):
    """Views of the bank: item ``(m, c, k, seed)`` is a random ``k``-probe subset of model ``m`` on class
    ``c`` -> (``features [depth_bins, k, channels * anchors]``, class, zoo accuracy or NaN)."""

    def __init__(self, bank: FeatureBank) -> None:
        self.bank = bank

    def __len__(self) -> int:
        return len(self.bank.models) * len(self.bank.classes)

    def __getitem__(self, item: tuple[int, int, int, int]) -> tuple[Tensor, int, float]:
        m, c, k, seed = item
        feats = self.bank.features[m][c]  # [depth_bins, probes, channels * anchors]
        pick = torch.randperm(feats.shape[1], generator=torch.Generator().manual_seed(seed))[:k]
        return feats[:, pick], c, self.bank.accuracy(m, c)


class ViewBatchSampler:
    """``steps`` batches of ``classes_per_batch`` classes x ``views_per_class`` views each (the positives of
    the contrastive loss). A view's model is drawn uniformly over groups (a zoo family, one real model, or
    the random tiny models of one family), so that every architecture weighs the same, and one class's
    views come from distinct groups where possible; all views of a batch share one probe count."""

    def __init__(self, bank: FeatureBank, models: list[int], classes: list[int], config: TrainConfig) -> None:
        self.classes, self.config, self.max_k = classes, config, min(bank.halves)
        groups: dict[str, list[int]] = {}
        for m in models:
            model = bank.models[m]
            groups.setdefault(model.group or model.name, []).append(m)
        self.groups = [groups[g] for g in sorted(groups)]

    def __len__(self) -> int:
        return self.config.steps

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        cfg = self.config
        rng = random.Random(cfg.seed)
        for _ in range(cfg.steps):
            k = rng.randint(min(cfg.min_probes, self.max_k), min(cfg.max_probes, self.max_k))
            classes = rng.sample(self.classes, min(cfg.classes_per_batch, len(self.classes)))
            yield [
                (rng.choice(group), c, k, rng.getrandbits(62)) for c in classes for group in self._groups(rng)
            ]

    def _groups(self, rng: random.Random) -> list[list[int]]:
        """The groups of one class's views: distinct while there are enough, so that positives mostly
        come from different architectures (the alignment the extractor must learn)."""
        n = self.config.views_per_class
        if n <= len(self.groups):
            return rng.sample(self.groups, n)
        return [rng.choice(self.groups) for _ in range(n)]


# ---------------------------------------------------------------------------------------------- driver


def fit(
    extractor: CapabilityExtractor,
    bank: FeatureBank,
    train_models: list[int],
    n_train_classes: int,
    val_models: list[int],
    config: TrainConfig,
) -> list[float]:
    """The training loop (under Accelerate); returns the loss of every step."""
    from accelerate import Accelerator

    accelerator = Accelerator()
    sampler = ViewBatchSampler(bank, train_models, list(range(n_train_classes)), config)
    loader = DataLoader(ViewDataset(bank), batch_sampler=sampler)
    optimizer = torch.optim.AdamW(extractor.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine_scheduler(optimizer, config.steps, config.warmup, floor=0.05)
    model, optimizer, loader, scheduler = accelerator.prepare(extractor, optimizer, loader, scheduler)
    losses: list[float] = []
    postfix: dict[str, str] = {}
    bar = tqdm(loader, total=config.steps, desc="extractor", disable=not config.progress)
    for step, (feats, labels, accuracy) in enumerate(bar, start=1):
        model.train()
        z = model(feats)  # [B, fp_dim]
        comp = competence_loss(accelerator.unwrap_model(model).competence(z), accuracy)
        loss = supcon_loss(z, labels, config.temperature) + config.competence_weight * comp
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        postfix["loss"] = f"{sum(losses[-20:]) / len(losses[-20:]):.3f}"
        if step % config.val_every == 0 or step == config.steps:
            report = validate(accelerator.unwrap_model(model), bank, val_models, n_train_classes)
            postfix["val_top1"] = f"{report['extractor_val_models']:.2f}"
            postfix["unseen_top1"] = f"{report['extractor_val_classes']:.2f}"
        bar.set_postfix(postfix)
    return losses


def train_extractor(
    config: TrainConfig | None = None,
    models: list[str] | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> CapabilityExtractor:
    """Train a Capability Extractor; ``models`` defaults to the zoo (non-held-out families) + real models.

    Samples are (model, capability, random probe subset); the label is the capability. Never uses
    held-out capabilities or model families. With ``output`` the result is saved there
    (``save_pretrained``, the report in its config.json as ``train_report``; an existing ``output`` is
    refused before any work unless ``overwrite``); ``dtype`` (e.g. ``torch.float16``) is the storage
    precision, and the returned extractor is rounded to it, so what is saved and what is returned hash
    alike.
    ``extractor.train_report`` holds the report.
    """
    config = config or TrainConfig()
    if output is not None:
        check_writable(output, overwrite)
    torch.manual_seed(config.seed)
    train_classes, val_classes = training_classes(config)
    bank = collect_features(_resolve(models, config), train_classes + val_classes, config)
    val_models = hold_apart_models(bank)
    train_models = [m for m in range(len(bank.models)) if m not in val_models]
    extractor = CapabilityExtractor(config.extractor)
    losses = fit(extractor, bank, train_models, len(train_classes), val_models, config)
    extractor.eval()
    if dtype is not None:
        extractor.round_to_dtype(dtype)
    report = {
        "losses": [round(loss, 5) for loss in losses],
        "models": [m.name for m in bank.models],
        "val_models": [bank.models[m].name for m in val_models],
        "train_classes": [c.name for c in train_classes],
        "val_classes": [c.name for c in val_classes],
        **validate(extractor, bank, val_models, len(train_classes)),
    }
    extractor.train_report = report
    if output is not None:
        extractor.save_pretrained(output, overwrite=True, dtype=dtype)  # the report goes into config.json
    return extractor
