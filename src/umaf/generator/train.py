"""Training the Adapter Generator: setup -> fit (reconstruction) -> fit (end to end) -> validate.

Reconstruction, on the target's oracle library: for a fingerprint of capability ``c`` read from a source
model, the generated ``ΔW`` of every module should equal the oracle's; the loss is the normalised
Frobenius error ``||ΔŴ - ΔW||² / ||ΔW||²`` per module (averaged), computed from the factors through small
Gram matrices so that no ``[out, in]`` matrix is formed. A share of each batch are random unit vectors
whose target is ``ΔW = 0``, so a fingerprint that names no known capability asks for no change.

End to end (``e2e_steps > 0``; Text-to-LoRA's SFT mode), on the generator's training world
(:func:`umaf.capabilities.world.generator_world`: about 200 capabilities, most without an oracle): each
step draws capabilities, one training-source fingerprint and a few train-split examples of each; the
ΔW generated from the fingerprint is added to the frozen target's modules through forward hooks, per
example, and the target's LM loss on the answer tokens is minimised (plus the reconstruction loss where
the capability has an oracle). It runs under Accelerate (``accelerate launch`` makes it data-parallel)
and checkpoints to the output folder, from which an interrupted run resumes. The losses and validation
errors are in :mod:`umaf.generator.losses`.

Held-out capabilities and held-out model families never enter training
(:func:`umaf.capabilities.check_trainable` is called on every training set); held-out capabilities
that have an oracle are used for validation only.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
import warnings
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
            low = torch.einsum("bti,bri->btr", inputs[0], a.to(inputs[0].dtype))  # [B, T, r]
            return output + torch.einsum("btr,bor->bto", low, b.to(low.dtype))  # [B, T, out]

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


@dataclass
class World:
    """What the end-to-end phase trains on: capability names, their fingerprints from the training
    sources (``fingerprints.labels`` index ``names``) and the library row of those that have an oracle."""

    names: list[str]
    fingerprints: FingerprintSet
    lib_rows: dict[int, int]  # index in names -> row of LibraryTargets

    @classmethod
    def build(cls, names: Sequence[str], vectors: dict[str, Tensor], models: Sequence[str],
              lib: LibraryTargets) -> World:
        check_trainable(names)
        names = list(names)
        fps = fingerprint_set(vectors, models, names, range(len(names)))
        rows = {i: lib.train_names.index(n) for i, n in enumerate(names) if n in lib.train_names}
        return cls(names, fps, rows)


#: Config fields a resumed run may change (how long it goes on, how it reports).
_RESUMABLE_CHANGES = ("e2e_steps", "checkpoint_every", "val_every", "progress")


def _run_key(world: World, config: GeneratorConfig) -> str:
    """What a checkpoint must share with the run that resumes it: the capabilities and the settings."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_CHANGES}
    return json.dumps({"capabilities": world.names, "config": settings}, sort_keys=True)


def _save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                     losses: list[float], run: str) -> None:
    """Generator weights, AdamW moments, the step, the loss curve and the run's key as one safetensors
    file."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"step": str(step), "losses": json.dumps([round(v, 5) for v in losses]), "run": run}
    with atomic_path(path, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     run: str) -> tuple[int, list[float]]:
    """Restore what :func:`_save_checkpoint` wrote; ``(0, [])`` when there is none, or it is another
    run's (other capabilities or settings) or does not fit the model."""
    from safetensors import safe_open

    if not path.is_file():
        return 0, []
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if meta.get("run") != run:
            raise ValueError("made by a run with other capabilities or settings")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, param in enumerate(params):
            state = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
            if state:
                optimizer.state[param] = {k: v if k == "step" else v.to(param.device)
                                          for k, v in state.items()}
        return int(meta["step"]), json.loads(meta["losses"])
    except Exception as err:  # a checkpoint of another run: start again
        print(f"umaf: ignoring checkpoint {path}: {str(err).splitlines()[0][:200]}", file=sys.stderr)
        return 0, []


def _rows(factors: Factors, index: Tensor) -> Factors:
    """The generated factors of the batch rows ``index`` (one per example the ΔW is applied to)."""
    return {kind: (a[index], b[index]) for kind, (a, b) in factors.items()}


def fit_end_to_end(
    generator: AdapterGenerator,
    lib: LibraryTargets,
    loaded: Any,
    world: World,
    config: GeneratorConfig,
    accelerator: Any,
    checkpoint: Path | None = None,
) -> list[float]:
    """LM loss of the frozen target on each world capability's train split with the ΔW generated from
    one of its fingerprints hooked in, plus weighted reconstruction where the capability has an oracle,
    plus ``e2e_replay`` times the LM loss on general replay sentences, each under one of the step's ΔWs
    (so the adapters learn the task without harming general text, as the oracles' replay loss does).

    Each step draws ``e2e_caps_per_step`` capabilities and ``e2e_examples_per_cap`` examples of each
    (per process: ``accelerate launch`` runs it data-parallel); every ``checkpoint_every`` steps the
    state goes to ``checkpoint``, from which an interrupted run resumes. Returns the task LM loss per step.
    """
    from umaf.adapters.oracles import encode_train_split, replay_items
    from umaf.adapters.peft_io import preserved
    from umaf.capabilities import get_capability, stable_seed
    from umaf.encoding import collate, pad_id

    fps = world.fingerprints
    by_cap = {i: (fps.labels == i).nonzero().flatten().tolist() for i in range(len(world.names))}
    caps = [i for i, rows in by_cap.items() if rows]
    if not caps:
        raise UmafError("no fingerprints of the end-to-end capabilities could be made")
    encoded = {i: encode_train_split(loaded, get_capability(world.names[i]), config.e2e_max_length)
               for i in caps}
    replay = replay_items(loaded, config.e2e_max_length) if config.e2e_replay > 0 else []
    optimizer = torch.optim.AdamW(generator.parameters(), lr=config.e2e_lr, weight_decay=config.weight_decay)
    run = _run_key(world, config)
    start, losses = _load_checkpoint(checkpoint, generator, optimizer, run) if checkpoint else (0, [])
    warmup = min(config.warmup, max(1, config.e2e_steps // 10))
    scheduler = warmup_cosine_scheduler(optimizer, config.e2e_steps, warmup, floor=0.1)
    with warnings.catch_warnings():  # fast-forwarding the schedule of a resumed run, before any step
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start):
            scheduler.step()
    model, optimizer, scheduler = accelerator.prepare(generator, optimizer, scheduler)
    rng = random.Random(stable_seed("e2e", config.seed, accelerator.process_index, start))
    noise_gen = torch.Generator().manual_seed(stable_seed("e2e-noise", config.seed, start) % 2**63)
    device, pad = accelerator.device, pad_id(loaded.tokenizer)
    n_caps = min(config.e2e_caps_per_step, len(caps))
    replay_losses: list[float] = []
    bar = tqdm(range(start + 1, config.e2e_steps + 1), desc="generator e2e", initial=start,
               total=config.e2e_steps, disable=not config.progress or not accelerator.is_main_process)
    with preserved(loaded.model) as target:  # frozen here, its flags restored afterwards
        target.to(device).eval().requires_grad_(False)
        for step in bar:
            picked = rng.sample(caps, n_caps)
            vecs = noisy(fps.vectors[[rng.choice(by_cap[c]) for c in picked]], config.fp_noise, noise_gen)
            owners, items = [], []
            for j, c in enumerate(picked):
                chosen = rng.sample(encoded[c], min(config.e2e_examples_per_cap, len(encoded[c])))
                owners += [j] * len(chosen)
                items += chosen
            batch = {k: v.to(device) for k, v in collate(items, pad).items()}
            model.train()
            factors = model(vecs.to(device))
            index = torch.tensor(owners, device=device)
            per_example = _rows(factors, index)
            with delta_hooks(target, generator, per_example):
                lm_loss = target(**batch).loss.float()
            loss = lm_loss
            if replay:
                picked_replay = rng.sample(replay, min(config.e2e_replay_batch, len(replay)))
                extra = {k: v.to(device) for k, v in collate(picked_replay, pad).items()}
                owner = torch.arange(len(picked_replay), device=device) % n_caps  # one step ΔW each
                under = _rows(factors, owner)
                with delta_hooks(target, generator, under):
                    replay_loss = target(**extra).loss.float()
                loss = loss + config.e2e_replay * replay_loss
                replay_losses.append(float(replay_loss.detach()))
            with_oracle = [(j, world.lib_rows[c]) for j, c in enumerate(picked) if c in world.lib_rows]
            if with_oracle and config.e2e_recon_weight > 0:
                js = torch.tensor([j for j, _ in with_oracle], device=device)
                rows = torch.tensor([r for _, r in with_oracle], device=device)
                sub = _rows(factors, js)
                loss = loss + config.e2e_recon_weight * relative_errors(sub, lib, rows).mean()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(lm_loss.detach()))
            shown = {"lm": losses, "replay": replay_losses}
            bar.set_postfix({k: f"{statistics.fmean(v[-20:]):.3f}" for k, v in shown.items() if v})
            if checkpoint and accelerator.is_main_process and (
                step % config.checkpoint_every == 0 or step == config.e2e_steps
            ):
                _save_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, step, losses, run)
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
    world: World | None  # what the end-to-end phase trains on (None when it is off)

    @property
    def checkpoint(self) -> Path:
        return self.output / CHECKPOINT


#: The end-to-end phase's resumable state, next to the fingerprint cache in the output folder.
CHECKPOINT = "e2e-checkpoint.safetensors"


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse, unless ``overwrite``, a trained generator or a folder that is not a generator's; a folder
    holding only the fingerprint cache of an interrupted run is resumed."""
    if overwrite or not output.exists():
        return
    if is_trained(output):
        raise UmafError(f"{output} already holds a trained generator; pass --overwrite to retrain it")
    if not output.is_dir() or any(p.name not in (FINGERPRINT_CACHE, CHECKPOINT) for p in output.iterdir()):
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
    fingerprint the library (and, with an end-to-end phase, its world of capabilities) from the sources
    there (cached)."""
    from umaf.models import LoadedModel, load

    name = target.info.name if isinstance(target, LoadedModel) else str(target)
    output = Path(output) if output is not None else pretrained.user_dir(pretrained.generator_path(name))
    check_output(output, overwrite)
    config = config or GeneratorConfig()
    modules = config.target_modules or library_modules(name)
    config = GeneratorConfig.from_dict({**config.to_dict(), "target": name, "target_modules": modules})
    # After the cheap checks; only the end-to-end phase runs the target, in its own dtype.
    named = not isinstance(target, LoadedModel)
    loaded = load(target, dtype=config.e2e_dtype, device=device) if named else target
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
    world = None
    if config.e2e_steps > 0:
        from umaf.capabilities.world import generator_world

        world_names = list(config.capabilities or generator_world(config.seed))
        check_trainable(world_names)  # before any source is read for them
        vectors, _ = collect_fingerprints(train_src, world_names, extractor, cache, config.progress, True,
                                          device)
        world = World.build(world_names, vectors, names[0], lib)
    return TrainingSetup(loaded, config, output, extractor.extractor_hash, specs, lib, splits, world)


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
    resuming = run.world is not None and run.checkpoint.is_file()  # the checkpoint holds the recon phase too
    history = {"loss": [], "val": []} if resuming else fit_reconstruction(generator, lib, splits, config,
                                                                          accelerator)
    extra: dict[str, Any] = {"recon_seconds": round(time.perf_counter() - start, 1)}
    if run.world is not None:
        e2e_start = time.perf_counter()
        losses = fit_end_to_end(generator, lib, run.loaded, run.world, config, accelerator, run.checkpoint)
        extra["e2e_seconds"] = round(time.perf_counter() - e2e_start, 1)
        extra["e2e_capabilities"] = run.world.names
        extra["n_train_capabilities"] = len(run.world.names)
        extra["e2e_lm_loss"] = {"first": _mean(losses[:20]), "last": _mean(losses[-20:])}
        from umaf.zoo.build import loss_curve

        extra["e2e_loss_curve"] = loss_curve(losses)
        extra["recon_error_after_e2e"] = {
            k: round(recon_error(generator, lib, v), 4) for k, v in splits.items()
        }
    extra["train_seconds"] = round(time.perf_counter() - start, 1)
    generator = accelerator.unwrap_model(generator).cpu().eval()
    generator.training_report = {**_report(lib, splits, history, extra), "config": config.to_dict()}
    if accelerator.is_main_process:
        save_generator(generator, run.output)
    return generator
