"""Training the Adapter Generator: setup -> fit (reconstruction) -> fit (end to end, optional) -> validate.

Reconstruction: for a fingerprint of capability ``c`` read from a source model, the generated ``ΔW`` of
every module should equal the oracle's; the loss is the normalised Frobenius error
``||ΔŴ - ΔW||² / ||ΔW||²`` per module (averaged), computed from the factors through small Gram
matrices so that no ``[out, in]`` matrix is formed. A share of each batch are random unit vectors whose
target is ``ΔW = 0``, so a fingerprint that names no known capability asks for no change.

End to end (``e2e_steps > 0``): the generated ΔW is added to the frozen target's modules through forward
hooks, per example, and the target's LM loss on the answer tokens of the capability's train split is
minimised (plus the reconstruction loss as an anchor). The losses and validation errors are in
:mod:`umaf.generator.losses`.

Held-out capabilities and held-out model families never enter training
(:func:`umaf.capabilities.check_trainable` is called on every training set); held-out capabilities
that have an oracle are used for validation only.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import umaf
from umaf import pretrained
from umaf.capabilities import check_trainable
from umaf.errors import UmafError
from umaf.generator.config import GeneratorConfig
from umaf.generator.data import (
    FINGERPRINT_CACHE,
    FingerprintSet,
    LibraryTargets,
    collect_fingerprints,
    default_sources,
    fingerprint_set,
    library_modules,
    library_targets,
)
from umaf.generator.losses import Factors, baseline_errors, recon_error, relative_errors
from umaf.generator.model import TASK_TYPES, AdapterGenerator, ModuleSpec, target_module_specs
from umaf.io import atomic_path, is_trained
from umaf.training import warmup_cosine_scheduler

# ----------------------------------------------------------------------------------------------- batches


def noisy(vectors: Tensor, noise: float, generator: torch.Generator | None = None) -> Tensor:
    """Unit vectors after adding Gaussian noise of expected norm ``noise``: ``[B, D]``."""
    if noise <= 0:
        return vectors
    eps = torch.randn(vectors.shape, generator=generator) * (noise / math.sqrt(vectors.shape[-1]))
    return nn.functional.normalize(vectors + eps.to(vectors.device), dim=-1)


def with_nulls(vectors: Tensor, labels: Tensor, fraction: float, null_index: int) -> tuple[Tensor, Tensor]:
    """Append ``round(fraction * B)`` random unit vectors labelled ``null_index``."""
    n = round(fraction * vectors.shape[0])
    if n == 0:
        return vectors, labels
    rand = nn.functional.normalize(torch.randn(n, vectors.shape[1], device=vectors.device), dim=-1)
    nulls = torch.full((n,), null_index, dtype=labels.dtype, device=labels.device)
    return torch.cat([vectors, rand]), torch.cat([labels, nulls])


# ------------------------------------------------------------------------------------------- fitting


def _batches(data: FingerprintSet, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless random batches ``(vectors [B, D], labels [B])`` drawn with replacement."""
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    gen = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(range(len(data)), replacement=True, num_samples=10**9, generator=gen)
    return iter(DataLoader(TensorDataset(data.vectors, data.labels), batch_size=batch_size, sampler=sampler))


def fit_reconstruction(
    generator: AdapterGenerator,
    lib: LibraryTargets,
    splits: dict[str, FingerprintSet],
    config: GeneratorConfig,
    accelerator: Any,
) -> dict[str, list]:
    """The reconstruction loop under Accelerate; returns the loss curve and the validation history."""
    train = splits["train"]
    check_trainable([lib.names[i] for i in set(train.labels.tolist())])
    optimizer = torch.optim.AdamW(generator.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine_scheduler(optimizer, config.steps, config.warmup, floor=0.1)
    model, optimizer, scheduler = accelerator.prepare(generator, optimizer, scheduler)
    batches = _batches(train, config.batch_size, config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 1)
    history: dict[str, list] = {"loss": [], "val": []}
    bar = tqdm(range(1, config.steps + 1), desc="generator", disable=not config.progress)
    for step in bar:
        vecs, labels = next(batches)
        vecs, labels = with_nulls(
            noisy(vecs, config.fp_noise, noise_gen), labels, config.null_fraction, lib.null_index
        )
        model.train()
        loss = relative_errors(model(vecs.to(accelerator.device)), lib, labels.to(accelerator.device)).mean()
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        history["loss"].append(float(loss.detach()))
        if step % config.val_every == 0 or step == config.steps:
            report = {k: round(recon_error(generator, lib, v), 4) for k, v in splits.items()}
            history["val"].append({"step": step, **report})
            bar.set_postfix({k: f"{v:.3f}" for k, v in report.items()})
    return history


@contextmanager
def delta_hooks(model: nn.Module, generator: AdapterGenerator, factors: Factors) -> Iterator[None]:
    """Add ``x @ A^T @ B^T`` (per example) to the output of every adapted module while the block runs.

    ``factors`` are the generator's output for a batch whose examples line up with the model's batch.
    """
    handles = []

    def make_hook(a: Tensor, b: Tensor):  # noqa: ANN202 (a torch forward hook)
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            low = torch.einsum("bti,bri->btr", inputs[0], a)  # [B, T, r]
            return output + torch.einsum("btr,bor->bto", low, b)  # [B, T, out]

        return hook

    try:
        for kind, (a, b) in factors.items():
            specs = [s for s in generator.module_specs if s.kind == kind]
            for j, spec in enumerate(specs):
                module = model.get_submodule(spec.name)
                handles.append(module.register_forward_hook(make_hook(a[:, j], b[:, j])))
        yield
    finally:
        for handle in handles:
            handle.remove()


def e2e_items(loaded: Any, lib: LibraryTargets, max_length: int) -> list[tuple[Any, int]]:
    """(encoded train example, library row) of every training capability (plain prompts, as the oracles)."""
    from umaf.adapters.oracles import encode_train_split
    from umaf.capabilities import get_capability

    check_trainable(lib.train_names)
    items = []
    for row, name in enumerate(lib.train_names):
        items += [(enc, row) for enc in encode_train_split(loaded, get_capability(name), max_length)]
    return items


def fit_end_to_end(
    generator: AdapterGenerator,
    lib: LibraryTargets,
    loaded: Any,
    splits: dict[str, FingerprintSet],
    config: GeneratorConfig,
    accelerator: Any,
) -> list[float]:
    """LM loss of the frozen target with the generated ΔW hooked in (plus weighted reconstruction)."""
    from umaf.adapters.peft_io import preserved
    from umaf.encoding import collate, pad_id

    items, train = e2e_items(loaded, lib, config.e2e_max_length), splits["train"]
    by_row = {r: (train.labels == r).nonzero().flatten().tolist() for r in range(lib.n_train)}
    optimizer = torch.optim.AdamW(generator.parameters(), lr=config.e2e_lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(generator, optimizer)
    rng, losses, device = random.Random(config.seed), [], accelerator.device
    with preserved(loaded.model) as target:  # frozen here, its flags restored afterwards
        target.to(device).eval().requires_grad_(False)
        for _ in tqdm(range(config.e2e_steps), desc="generator e2e", disable=not config.progress):
            picked = rng.sample(items, min(config.e2e_batch_size, len(items)))
            rows = torch.tensor([row for _, row in picked])
            vecs = noisy(train.vectors[[rng.choice(by_row[int(r)]) for r in rows]], config.fp_noise)
            batch = collate([e for e, _ in picked], pad_id(loaded.tokenizer))
            model.train()
            factors = model(vecs.to(device))
            with delta_hooks(target, generator, factors):
                lm_loss = target(**{k: v.to(device) for k, v in batch.items()}).loss
            recon = relative_errors(factors, lib, rows.to(device)).mean()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(lm_loss + config.e2e_recon_weight * recon)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(lm_loss.detach()))
    return losses


# -------------------------------------------------------------------------------------------- setup


def _resolve_sources(
    target_name: str,
    config: GeneratorConfig,
    sources: Sequence[Any] | None,
    val_sources: Sequence[Any] | None,
) -> tuple[list[Any], list[Any]]:
    """Training and validation sources: arguments first, then the config, then :func:`default_sources`."""
    train = sources if sources is not None else config.sources
    val = val_sources if val_sources is not None else config.val_sources
    if train is None or val is None:
        default_train, default_val = default_sources(target_name)
        train = default_train if train is None else train
        val = default_val if val is None else val
    if not train:
        raise UmafError("no source models to fingerprint; build the zoo (`umaf zoo build`) or pass sources")
    return list(train), list(val)


def make_splits(
    lib: LibraryTargets,
    vectors: dict[str, Tensor],
    info: dict[str, dict],
    train_models: list[str],
    val_models: list[str],
) -> dict[str, FingerprintSet]:
    """``train`` (training sources x training capabilities), ``val_sources`` (held-apart sources x training
    capabilities), ``heldout`` (every source x held-out capabilities: never trained on)."""
    families = sorted({v["family"] for k, v in info.items() if k.split("|")[0] in train_models})
    check_trainable(lib.train_names, families)
    n = lib.n_train
    splits = {
        "train": fingerprint_set(vectors, train_models, lib.train_names, range(n)),
        "val_sources": fingerprint_set(vectors, val_models, lib.train_names, range(n)),
        "heldout": fingerprint_set(
            vectors, train_models + val_models, lib.heldout_names, range(n, len(lib.names))
        ),
    }
    if len(splits["train"]) == 0:
        raise UmafError("no training fingerprints could be made; check the source models")
    return splits


def _report(
    lib: LibraryTargets, splits: dict[str, FingerprintSet], history: dict[str, list], extra: dict
) -> dict:
    from umaf.zoo.build import loss_curve

    final = history["val"][-1] if history["val"] else {}
    return {
        "capabilities": lib.train_names,
        "heldout_capabilities": lib.heldout_names,
        "oracles": lib.meta,
        "sources": sorted(set(splits["train"].models)),
        "val_sources": sorted(set(splits["val_sources"].models)),
        "n_fingerprints": {k: len(v) for k, v in splits.items()},
        "recon_error": {k: v for k, v in final.items() if k != "step"},
        "baselines": {k: baseline_errors(lib, splits["train"], v) for k, v in splits.items()},
        "loss_curve": loss_curve(history["loss"]),
        "val_history": history["val"],
        "umaf_version": umaf.__version__,
        **extra,
    }


def save_generator(generator: AdapterGenerator, output: Path) -> Path:
    """Write the generator to ``output`` atomically, keeping the fingerprint cache that lives there."""
    import shutil

    with atomic_path(output, overwrite=True, is_dir=True) as tmp:
        generator.write_files(tmp)
        if (output / FINGERPRINT_CACHE).is_file():
            shutil.copy2(output / FINGERPRINT_CACHE, tmp / FINGERPRINT_CACHE)
    return output


@dataclass
class TrainingSetup:
    """Everything :func:`train_generator` fits on, prepared by :func:`setup`."""

    loaded: Any  # the target, a LoadedModel
    config: GeneratorConfig
    output: Path
    extractor_hash: str
    specs: list[ModuleSpec]
    lib: LibraryTargets
    splits: dict[str, FingerprintSet]


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse, unless ``overwrite``, a trained generator or a folder that is not a generator's; a folder
    holding only the fingerprint cache of an interrupted run is resumed."""
    if overwrite or not output.exists():
        return
    if is_trained(output):
        raise UmafError(f"{output} already holds a trained generator; pass --overwrite to retrain it")
    if not output.is_dir() or any(p.name != FINGERPRINT_CACHE for p in output.iterdir()):
        raise UmafError(f"{output} exists and is not a generator folder; pass --overwrite to replace it")


def setup(
    target: str | Any,
    config: GeneratorConfig | None,
    output: str | Path | None,
    overwrite: bool,
    extractor: Any,
    sources: Sequence[Any] | None,
    val_sources: Sequence[Any] | None,
    device: Any = None,
) -> TrainingSetup:
    """Load the target (on ``device``: default CUDA when available), read its oracle library, and
    fingerprint the library from the sources there (cached)."""
    from umaf.models import LoadedModel, load

    name = target.info.name if isinstance(target, LoadedModel) else str(target)
    output = Path(output) if output is not None else pretrained.user_dir(pretrained.generator_path(name))
    check_output(output, overwrite)
    config = config or GeneratorConfig()
    modules = config.target_modules or library_modules(name)
    config = GeneratorConfig.from_dict({**config.to_dict(), "target": name, "target_modules": modules})
    # After the cheap checks; float32, as the end-to-end phase adds float32 ΔW to its activations.
    loaded = target if isinstance(target, LoadedModel) else load(target, dtype="float32", device=device)
    if extractor is None:
        from umaf.extractor import default_extractor

        extractor = default_extractor()
    specs = target_module_specs(loaded.model, config.target_modules)
    lib = library_targets(name, specs, config.min_gain)
    train_src, val_src = _resolve_sources(name, config, sources, val_sources)
    cache = output / FINGERPRINT_CACHE
    collect_fingerprints(train_src, lib.names, extractor, cache, config.progress, True, device)
    vectors, info = collect_fingerprints(val_src, lib.names, extractor, cache, config.progress, False, device)
    names = [[s if isinstance(s, str) else s.info.name for s in srcs] for srcs in (train_src, val_src)]
    splits = make_splits(lib, vectors, info, *names)
    return TrainingSetup(loaded, config, output, extractor.extractor_hash, specs, lib, splits)


def _mean(values: list[float]) -> float:
    return round(sum(values) / max(1, len(values)), 4)


def train_generator(
    target: str | Any,
    config: GeneratorConfig | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    *,
    extractor: Any = None,
    sources: Sequence[Any] | None = None,
    val_sources: Sequence[Any] | None = None,
) -> AdapterGenerator:
    """Train the Adapter Generator of ``target`` (a model name or a LoadedModel) on its oracle library.

    ``sources`` / ``val_sources`` (model names or LoadedModels) override ``config.sources`` and the
    defaults of :func:`umaf.generator.data.default_sources`; ``extractor`` defaults to the default
    extractor. Saves to ``output`` (default ``cache_dir()/generators/<target-slug>``), where a trained
    generator is replaced only with ``overwrite``; ``generator.training_report`` holds the report.
    Training runs on accelerate's device (CUDA when available; ``ACCELERATE_USE_CPU=1`` forces the CPU),
    where a named target and the sources are loaded too.
    """
    from accelerate import Accelerator

    start = time.perf_counter()
    accelerator = Accelerator()
    run = setup(target, config, output, overwrite, extractor, sources, val_sources, accelerator.device)
    config, lib, splits = run.config, run.lib, run.splits
    torch.manual_seed(config.seed)
    kind = TASK_TYPES.get(run.loaded.info.kind)
    generator = AdapterGenerator(config, run.specs, run.extractor_hash, kind)
    history = fit_reconstruction(generator, lib, splits, config, accelerator)
    extra: dict[str, Any] = {"recon_seconds": round(time.perf_counter() - start, 1)}
    if config.e2e_steps > 0:
        losses = fit_end_to_end(generator, lib, run.loaded, splits, config, accelerator)
        extra["e2e_lm_loss"] = {"first": _mean(losses[:10]), "last": _mean(losses[-10:])}
        extra["recon_error_after_e2e"] = {
            k: round(recon_error(generator, lib, v), 4) for k, v in splits.items()
        }
    extra["train_seconds"] = round(time.perf_counter() - start, 1)
    generator = accelerator.unwrap_model(generator).cpu().eval()
    generator.training_report = {**_report(lib, splits, history, extra), "config": config.to_dict()}
    save_generator(generator, run.output)
    return generator
