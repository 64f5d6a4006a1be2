"""Oracle LoRAs: plain PEFT adapters trained on one capability's train split of one target model.

An oracle is what a generated adapter is measured against (how much of its gain over the base model
a generated adapter recovers) and the training library of the adapter generator (which learns to
reconstruct ``ΔW = scale · B @ A`` of every oracle). Oracles are cached one folder per (target,
capability) under ``cache_dir()/oracles/<target-slug>/<capability-slug>/``::

    adapter_config.json          # PEFT, loads with PeftModel.from_pretrained
    adapter_model.safetensors    # PEFT LoRA factors
    oracle.json                  # config, base and oracle eval accuracy, train seconds, umaf version

Training uses UMAF's one encoding of examples (:mod:`umaf.encoding`: loss on the answer
tokens only) with the plain prompt ``"<input> ->"``; the adapter itself says which task is meant.
Reading the PEFT files back (ΔW, fit checks) is :mod:`umaf.adapters.peft_io`.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import umaf
from umaf.adapters.peft_io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_target_modules, preserved
from umaf.capabilities import Capability, get_capability
from umaf.components import dtype_name
from umaf.config import cache_dir, data_lines
from umaf.encoding import Encoded, collate, encode_example, leading_specials, pad_id, text_ids
from umaf.errors import UmafError
from umaf.io import atomic_path, check_writable, slug
from umaf.models import DTYPES, LoadedModel, load
from umaf.training import fit_batches, warmup_cosine_scheduler

#: Metadata file written next to the PEFT files of every oracle.
ORACLE_FILE = "oracle.json"
#: General sentences for the replay loss (``data/``; disjoint from the perplexity set ``general.txt``).
REPLAY_TEXT = "replay.txt"
#: Models with fewer parameters than this get the tiny-model defaults of :func:`default_config`.
TINY_PARAMS = 20_000_000
#: Model kinds an oracle can be trained on (they must generate their answers).
GENERATIVE_KINDS = ("decoder", "encoder-decoder")


@dataclass(frozen=True)
class OracleConfig:
    """How an oracle LoRA is trained (AdamW on the LoRA factors only; warm-up then cosine decay)."""

    rank: int = 8
    """LoRA rank r of every adapted module."""
    alpha: float = 16.0
    """LoRA alpha; the update is scaled by alpha / r."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """Names (last dotted part) of the linear modules that get a LoRA, e.g. q_proj, v_proj, o_proj."""
    steps: int = 300
    """Optimiser steps."""
    lr: float = 3e-3
    """Peak learning rate."""
    batch_size: int = 16
    """Examples per step (the train split is walked in shuffled epochs)."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA factors."""
    warmup: float = 0.05
    """Fraction of the steps spent warming the learning rate up from zero."""
    min_lr_ratio: float = 0.1
    """The cosine decay ends at ``lr * min_lr_ratio``."""
    dropout: float = 0.0
    """LoRA dropout."""
    max_length: int = 64
    """Longest training sequence in tokens (longer examples lose the start of their prompt)."""
    dtype: str = "float32"
    """Dtype of the frozen base weights while training (bfloat16 halves the CPU time of big targets)."""
    device: str | None = field(
        default=None,
        metadata={"help": "Device a named target trains on: cpu, cuda or cuda:N (default: CUDA when "
                          "available, else the CPU). Not part of the oracle's identity."},
    )
    seed: int = 0
    """Seed of the LoRA initialisation and of the example order."""
    eval_examples: int | None = None
    """Eval-split examples behind the accuracies recorded in oracle.json (None: all of them)."""
    replay: float = 0.0
    """Weight of a language-model loss on general replay text (``data/replay.txt``, disjoint from the
    perplexity set) added at every step of a causal LM, so the adapter keeps the target's general text."""
    replay_batch: int = 8
    """Replay sentences per step."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        positive = {"rank": self.rank, "alpha": self.alpha, "steps": self.steps, "lr": self.lr,
                    "batch_size": self.batch_size, "max_length": self.max_length}
        for name, value in positive.items():
            if not value > 0:
                raise UmafError(f"oracle config: {name} must be positive, got {value}")
        if self.replay < 0 or self.replay_batch < 1:
            raise UmafError("oracle config: replay must be >= 0 and replay_batch >= 1")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise UmafError(f"oracle config: eval_examples must be at least 1, got {self.eval_examples}")
        if not self.target_modules:
            raise UmafError("oracle config: target_modules must name at least one module")
        if not 0 <= self.dropout < 1 or not 0 <= self.warmup < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise UmafError("oracle config: dropout and warmup must lie in [0, 1), min_lr_ratio in [0, 1]")
        if self.dtype not in DTYPES:
            raise UmafError(f"oracle config: unknown dtype {self.dtype!r}; use {', '.join(DTYPES)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field but ``device`` (``target_modules`` as a list): where an oracle
        was trained is not what it is, so a cached oracle is reused whatever device asks for it."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        del data["device"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OracleConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`UmafError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UmafError(f"oracle config: unknown field(s) {', '.join(unknown)}")
        return cls(**data)


def default_config(info: Any) -> OracleConfig:
    """Defaults measured to make oracles learn on the tiny zoo models and on SmolLM2-135M (CPU, float32).

    ``info`` is a :class:`umaf.models.ModelInfo` (only ``n_params`` is read).
    """
    if info.n_params < TINY_PARAMS:
        return OracleConfig(steps=400, lr=5e-3, batch_size=32)
    return OracleConfig(steps=100, lr=2e-3, batch_size=16, max_length=48, replay=1.0)


@dataclass(frozen=True)
class OracleEntry:
    """One oracle of a target's library, as recorded in its ``oracle.json``."""

    capability: str
    path: Path
    base_accuracy: float
    oracle_accuracy: float
    train_seconds: float
    held_out: bool = False
    meta: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def gain(self) -> float:
        """Oracle accuracy minus base accuracy on the eval split."""
        return self.oracle_accuracy - self.base_accuracy

    @property
    def config(self) -> OracleConfig:
        """The config the oracle was trained with."""
        return OracleConfig.from_dict(self.meta["config"])

    @classmethod
    def from_dir(cls, path: Path) -> OracleEntry:
        """Read ``path/oracle.json`` (UmafError if missing or unreadable)."""
        meta = read_oracle_meta(path)
        if meta is None:
            raise UmafError(f"{path} is not an oracle LoRA folder (no readable {ORACLE_FILE})")
        return cls(capability=meta["capability"], path=path, base_accuracy=meta["base_accuracy"],
                   oracle_accuracy=meta["oracle_accuracy"], train_seconds=meta["train_seconds"],
                   held_out=meta.get("held_out", False), meta=meta)


# ----------------------------------------------------------------------------------------- locations


def library_dir(target: str) -> Path:
    """Folder of the oracle library of ``target`` (one subfolder per capability)."""
    return cache_dir() / "oracles" / slug(target)


def oracle_dir(target: str, capability: str) -> Path:
    """Default (cache) folder of the oracle of ``capability`` on ``target``."""
    return library_dir(target) / slug(capability)


def find_oracle(target: str, capability: str) -> Path | None:
    """The finished oracle of ``capability`` on ``target`` to measure against: the user's one in the
    cache, else a shipped one (:func:`umaf.pretrained.oracle_roots`); None if there is neither."""
    from umaf.pretrained import oracle_roots

    for root in oracle_roots(target):
        if read_oracle_meta(root / slug(capability)) is not None:
            return root / slug(capability)
    return None


def read_oracle_meta(path: Path) -> dict | None:
    """Contents of ``path/oracle.json`` if it is there, complete and readable, else None."""
    try:
        meta = json.loads((Path(path) / ORACLE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    needed = ("capability", "config", "base_accuracy", "oracle_accuracy", "train_seconds")
    files_there = all((Path(path) / name).is_file() for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))
    return meta if isinstance(meta, dict) and files_there and all(k in meta for k in needed) else None


def is_cached(path: Path, target: str, capability: str, config: OracleConfig) -> bool:
    """True if ``path`` holds a finished oracle of ``capability`` on ``target`` made with ``config``."""
    meta = read_oracle_meta(path)
    return bool(meta) and (meta.get("target"), meta.get("capability"), meta.get("config")) == (
        target, capability, config.to_dict())


def library(target: str) -> list[OracleEntry]:
    """Finished oracles of ``target`` in the cache, sorted by capability name."""
    root = library_dir(target)
    if not root.is_dir():
        return []
    # folders starting with "." are atomic writes in progress
    paths = [p for p in root.iterdir() if not p.name.startswith(".") and read_oracle_meta(p) is not None]
    return sorted((OracleEntry.from_dir(p) for p in paths), key=lambda e: e.capability)


# ------------------------------------------------------------------------------------------ PEFT


def lora_config(config: OracleConfig, kind: str) -> Any:
    """The ``peft.LoraConfig`` of an oracle."""
    from peft import LoraConfig, TaskType

    task = TaskType.CAUSAL_LM if kind == "decoder" else TaskType.SEQ_2_SEQ_LM
    return LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.target_modules),
                      lora_dropout=config.dropout, bias="none", task_type=task)


# -------------------------------------------------------------------------------------------- training


def encode_train_split(loaded: LoadedModel, capability: Capability, max_length: int) -> list[Encoded]:
    """The capability's train split in the zoo encoding (loss on the answer only), plain prompts."""
    kind = loaded.info.kind
    items = []
    for ex in capability.split("train"):
        enc = encode_example(loaded.tokenizer, kind, ex.prompt(), ex.target())
        if kind == "decoder" and len(enc.input_ids) > max_length:  # keep the answer, drop the prompt's start
            enc = Encoded(enc.input_ids[-max_length:], enc.labels[-max_length:])
        items.append(enc)
    if not items:
        raise UmafError(f"capability {capability.name!r} has no training examples")
    return items


def replay_items(loaded: LoadedModel, max_length: int) -> list[Encoded]:
    """The replay sentences as causal-LM examples (loss on every token); none for other model kinds."""
    if loaded.info.kind != "decoder":
        return []
    start = leading_specials(loaded.tokenizer)
    ids = [start + text_ids(loaded.tokenizer, line) for line in data_lines(REPLAY_TEXT)]
    return [Encoded(x[:max_length], x[:max_length]) for x in ids]


def batch_order(n: int, config: OracleConfig) -> list[list[int]]:
    """Example indices of every step: shuffled epochs over ``n`` examples, deterministic in the seed."""
    rng = random.Random(config.seed)
    order: list[int] = []
    while len(order) < config.steps * config.batch_size:
        epoch = list(range(n))
        rng.shuffle(epoch)
        order += epoch
    return [order[i * config.batch_size : (i + 1) * config.batch_size] for i in range(config.steps)]


def fit_lora(model: nn.Module, items: list[Encoded], pad: int, config: OracleConfig,
             progress: bool = True, desc: str = "lora", replay: Sequence[Encoded] = ()) -> list[float]:
    """Train the trainable (LoRA) parameters of ``model`` on ``items`` (plus ``config.replay`` times the LM
    loss on a batch of ``replay`` examples per step); returns the task loss of every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup * config.steps))
    schedule = warmup_cosine_scheduler(optimizer, config.steps, warmup, config.min_lr_ratio)
    device = next(model.parameters()).device
    rng = random.Random(config.seed + 1)

    def replay_loss() -> Tensor:
        picked = rng.sample(range(len(replay)), min(config.replay_batch, len(replay)))
        extra = {k: v.to(device) for k, v in collate([replay[i] for i in picked], pad).items()}
        return config.replay * model(**extra).loss

    batches = ([items[i] for i in indices] for indices in batch_order(len(items), config))
    return fit_batches(model, batches, pad, optimizer, schedule, config.steps, desc=desc, progress=progress,
                       extra_loss=replay_loss if replay and config.replay > 0 else None)  # fmt: skip


def eval_accuracy(loaded: LoadedModel, capability: Capability, limit: int | None = None) -> float:
    """Exact-match accuracy of greedy answers to the plain prompts of the eval split (first ``limit``)."""
    from umaf.answers import evaluate

    return evaluate(loaded, [capability], split="eval", limit=limit)[capability.name]


def _oracle_meta(loaded: LoadedModel, target: str, cap: Capability, config: OracleConfig,
                 losses: list[float], accuracy: tuple[float, float], seconds: tuple[float, float]) -> dict:
    from umaf.zoo.build import loss_curve

    dtype = dtype_name(loaded.dtype)
    return {
        "target": target, "target_info": loaded.info.to_dict(), "capability": cap.name, "kind": cap.kind,
        "held_out": cap.held_out, "probe_hash": cap.probe_hash(), "config": config.to_dict(),
        "n_train": len(cap.split("train")), "base_accuracy": accuracy[0], "oracle_accuracy": accuracy[1],
        "eval_split": "eval", "eval_dtype": dtype, "device": str(loaded.device),
        "train_seconds": round(seconds[0], 3),
        "step_seconds": round(seconds[0] / config.steps, 4), "eval_seconds": round(seconds[1], 3),
        "loss_curve": loss_curve(losses), "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "threads": torch.get_num_threads(), "umaf_version": umaf.__version__,
    }


def _save_adapter(peft_model: Any, tmp: Path, meta: dict) -> None:
    peft_model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
    (tmp / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
    (tmp / ORACLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def fit_attached(peft_model: Any, loaded: LoadedModel, items: list[Encoded], config: OracleConfig,
                  desc: str, progress: bool) -> tuple[list[float], float]:
    """Train the LoRA attached to ``loaded`` on ``items`` (with the replay loss the config asks for);
    returns the loss per step and the seconds it took."""
    start = time.perf_counter()
    replay = replay_items(loaded, config.max_length) if config.replay > 0 else []
    losses = fit_lora(peft_model, items, pad_id(loaded.tokenizer), config, progress, desc, replay)
    return losses, time.perf_counter() - start


def fit_oracle(loaded: LoadedModel, target: str, capability: Capability, config: OracleConfig,
               output: Path, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Train one oracle on an already loaded target and write it atomically to ``output``.

    The LoRA is removed again afterwards, so ``loaded.model`` is left as it was.
    """
    check_generative(loaded)
    check_target_modules(loaded.model, config.target_modules, config.rank)
    check_writable(output, overwrite)
    items = encode_train_split(loaded, capability, config.max_length)
    start = time.perf_counter()
    base_accuracy = eval_accuracy(loaded, capability, config.eval_examples)
    base_seconds = time.perf_counter() - start
    with preserved(loaded.model), attached_lora(loaded, config) as peft_model:
        losses, train_seconds = fit_attached(peft_model, loaded, items, config, capability.name, progress)
        start = time.perf_counter()
        accuracy = eval_accuracy(LoadedModel(peft_model, loaded.tokenizer, loaded.info), capability,
                                 config.eval_examples)
        seconds = (train_seconds, base_seconds + time.perf_counter() - start)
        meta = _oracle_meta(loaded, target, capability, config, losses, (base_accuracy, accuracy), seconds)
        with atomic_path(output, overwrite=overwrite, is_dir=True) as tmp:
            _save_adapter(peft_model, tmp, meta)
    return Path(output)


@contextmanager
def attached_lora(loaded: LoadedModel, config: OracleConfig) -> Iterator[Any]:
    """A fresh trainable LoRA (seeded) on ``loaded.model`` for the block; unloaded again afterwards."""
    from peft import get_peft_model

    torch.manual_seed(config.seed)
    with warnings.catch_warnings():  # transformers' deprecation notices raised from inside PEFT
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(loaded.model, lora_config(config, loaded.info.kind))
    try:
        yield peft_model
    finally:
        peft_model.unload()


def check_generative(loaded: LoadedModel) -> None:
    """UmafError unless the model answers by generating (decoder or encoder-decoder)."""
    if loaded.info.kind not in GENERATIVE_KINDS:
        raise UmafError(f"{loaded.info.name} is a {loaded.info.kind} model; oracle LoRAs need a model that "
                        f"generates answers ({' or '.join(GENERATIVE_KINDS)})")


#: A config, or field overrides applied to the target's :func:`default_config`, or None for the defaults.
ConfigLike = OracleConfig | dict[str, Any] | None


def resolve_config(info: Any, config: ConfigLike = None) -> OracleConfig:
    """``config`` itself, or the defaults for the model described by ``info`` with the given overrides
    (entries that are None are ignored, so CLI flags can be passed straight through)."""
    if isinstance(config, OracleConfig):
        return config
    return replace(default_config(info), **_overrides(config))


def _overrides(config: dict[str, Any] | None) -> dict[str, Any]:
    """The fields ``config`` sets (None entries dropped), each value checked on the generic defaults so
    that a bad one fails before any target is loaded."""
    overrides = {k: v for k, v in (config or {}).items() if v is not None}
    unknown = sorted(set(overrides) - {f.name for f in fields(OracleConfig)})
    if unknown:
        raise UmafError(f"oracle config: unknown field(s) {', '.join(unknown)}")
    replace(OracleConfig(), **overrides)
    return overrides


def load_target(target: str | LoadedModel, config: ConfigLike = None) -> tuple[LoadedModel, OracleConfig]:
    """The target (loaded if named) and the resolved config to train it with (see :func:`resolve_config`).

    A named target is loaded in the config's dtype on its device (default: CUDA when available); a given
    LoadedModel is used as it is.
    """
    if isinstance(target, LoadedModel):
        return target, resolve_config(target.info, config)
    # Bad values fail before the target is loaded; dtype and device never depend on the target's size.
    chosen = config if isinstance(config, OracleConfig) else replace(OracleConfig(), **_overrides(config))
    loaded = load(target, dtype=chosen.dtype, device=chosen.device)
    return loaded, resolve_config(loaded.info, config)


def train_oracle(target: str | LoadedModel, capability: str | Capability, config: ConfigLike = None,
                 output: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Train (or reuse) the oracle LoRA of ``capability`` on ``target`` and return its PEFT folder.

    ``config`` is an :class:`OracleConfig`, a dict of overrides of the target's defaults, or None.
    Without ``output`` the oracle goes to the cache (:func:`oracle_dir`) and a finished one made with
    the same config is reused. An explicit ``output`` that exists is an error unless ``overwrite``.
    """
    cap = get_capability(capability) if isinstance(capability, str) else capability
    name = target.info.name if isinstance(target, LoadedModel) else str(target)
    path = Path(output) if output is not None else oracle_dir(name, cap.name)
    if output is not None:
        check_writable(path, overwrite)
    elif not overwrite and isinstance(config, OracleConfig) and is_cached(path, name, cap.name, config):
        return path
    loaded, config = load_target(target, config)
    if output is None and not overwrite and path.exists():
        if is_cached(path, name, cap.name, config):
            return path
        raise UmafError(f"{path} holds an oracle made with another config; pass --overwrite to retrain it")
    return fit_oracle(loaded, name, cap, config, path, overwrite=overwrite, progress=progress)


def build_library(target: str | LoadedModel, capabilities: Sequence[str], config: ConfigLike = None,
                  progress: bool = True, *, overwrite: bool = False) -> list[OracleEntry]:
    """Train the cached oracle of every capability that lacks one and return all their entries.

    Resumable: a finished oracle is kept (even one made with another config) unless ``overwrite``.
    The target is loaded once; a bar runs over the capabilities and each new oracle is reported.
    """
    loaded, config = load_target(target, config)
    name = loaded.info.name if isinstance(target, LoadedModel) else str(target)
    entries = []
    bar = tqdm(list(capabilities), disable=not progress, desc=f"oracles {name}", unit="capability")
    for cap_name in bar:
        cap = get_capability(cap_name)
        path = oracle_dir(name, cap.name)
        if not overwrite and read_oracle_meta(path) is not None:
            entries.append(OracleEntry.from_dir(path))
            continue
        fit_oracle(loaded, name, cap, config, path, overwrite=True, progress=progress)
        entries.append(OracleEntry.from_dir(path))
        if progress:
            e = entries[-1]
            tqdm.write(f"{name} {cap.name}: {e.base_accuracy:.3f} -> {e.oracle_accuracy:.3f} "
                       f"({e.train_seconds:.1f}s training, {e.meta['step_seconds']:.3f}s/step)")
    return entries


__all__ = [
    "ORACLE_FILE", "ConfigLike", "OracleConfig", "OracleEntry", "build_library", "check_generative",
    "default_config", "encode_train_split", "fit_attached", "fit_lora", "fit_oracle", "is_cached", "library",
    "library_dir", "lora_config", "oracle_dir", "read_oracle_meta", "replay_items", "resolve_config",
    "train_oracle",
]


def multitask_dir(target: str, capabilities: Sequence[str], config: OracleConfig) -> Path:
    """Cache folder of the multi-task LoRA of ``target`` on ``capabilities`` made with ``config``
    (outside the oracle library, which holds one capability per adapter)."""
    import hashlib

    key = json.dumps({"capabilities": sorted(capabilities), "config": config.to_dict()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "baselines" / slug(target) / f"multitask-{digest}"


def train_multitask(target: str | LoadedModel, capabilities: Sequence[str], config: ConfigLike = None,
                    progress: bool = True) -> tuple[Path, float]:
    """One LoRA trained on the union of the train splits of ``capabilities`` (the baseline every
    generator has to beat: one adapter for all known tasks), cached; returns its folder and the
    seconds its training took. ``config`` as for :func:`train_oracle` (its ``steps`` cover all tasks)."""
    from umaf.capabilities import check_trainable

    check_trainable(capabilities)
    loaded, config = load_target(target, config)
    check_generative(loaded)
    check_target_modules(loaded.model, config.target_modules, config.rank)
    name = loaded.info.name if isinstance(target, LoadedModel) else str(target)
    path = multitask_dir(name, capabilities, config)
    meta_file = path / ORACLE_FILE
    if meta_file.is_file():
        return path, float(json.loads(meta_file.read_text())["train_seconds"])
    items = [enc for cap in capabilities
             for enc in encode_train_split(loaded, get_capability(cap), config.max_length)]
    with preserved(loaded.model), attached_lora(loaded, config) as peft_model:
        losses, seconds = fit_attached(peft_model, loaded, items, config, "multitask", progress)
        meta = {"target": name, "capabilities": list(capabilities), "config": config.to_dict(),
                "train_dtype": dtype_name(loaded.dtype), "device": str(loaded.device),
                "n_train": len(items), "train_seconds": round(seconds, 3),
                "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
                "umaf_version": umaf.__version__}
        with atomic_path(path, overwrite=True, is_dir=True) as tmp:
            _save_adapter(peft_model, tmp, meta)
    return path, seconds
