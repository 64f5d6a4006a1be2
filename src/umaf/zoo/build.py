"""Building the zoo on disk (resumable, one atomic folder per model) and reading it back."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

import torch
from tqdm.auto import tqdm

import umaf
from umaf import pretrained
from umaf.answers import SLOTS_ATTRIBUTE, evaluate
from umaf.competence import QUALIFY
from umaf.config import cache_dir
from umaf.errors import UmafError
from umaf.io import atomic_path
from umaf.zoo.specs import QUICK_PREFIX, ZooSpec, zoo_specs
from umaf.zoo.train import mask_slots, train_model

#: File with each zoo model's metadata, next to its weights and tokenizer.
META_FILE = "zoo.json"

#: How ``accuracy`` in ``zoo.json`` was measured (``accuracy_untagged`` uses the plain prompt).
PROMPT_FORMAT = "<capability name, '_' as space>. <input> ->"


@dataclass(frozen=True)
class ZooEntry:
    """A built zoo model: what it was trained on and how well it does every named capability."""

    name: str
    family: str
    size: str
    trained: tuple[str, ...]
    accuracy: dict[str, float]
    path: Path
    subset: str = ""
    seed: int = 0
    quick: bool = False
    train_seconds: float = 0.0
    meta: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_id(self) -> str:
        """What :func:`umaf.models.load` takes to load this model."""
        return f"zoo:{self.name}"

    @property
    def qualified(self) -> tuple[str, ...]:
        """The trained capabilities whose eval-split accuracy reaches :data:`umaf.competence.QUALIFY`: the
        ones this model really has (a trained capability below it was claimed but not learnt)."""
        return tuple(c for c in self.trained if self.accuracy.get(c, 0.0) >= QUALIFY)

    def mean_accuracy(self, trained: bool = True) -> float:
        """Mean accuracy over the trained (or the untrained) capabilities; NaN if there are none."""
        scores = [a for c, a in self.accuracy.items() if (c in self.trained) == trained]
        return mean(scores) if scores else float("nan")

    @classmethod
    def from_dir(cls, path: Path) -> ZooEntry:
        """Read ``path/zoo.json``; a file that is unreadable or malformed is a UmafError naming it."""
        meta = _read_meta(path / META_FILE)
        return cls(name=meta["name"], family=meta["family"], size=meta["size"],
                   trained=tuple(meta["trained"]), accuracy=dict(meta["accuracy"]), path=path,
                   subset=meta.get("subset", ""), seed=meta.get("seed", 0), quick=meta.get("quick", False),
                   train_seconds=meta.get("train_seconds", 0.0), meta=meta)


def _read_meta(file: Path) -> dict:
    """The checked contents of a ``zoo.json``: names are strings, ``trained`` a list of capability names
    and ``accuracy`` maps capability names to numbers."""
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UmafError(f"{file} is unreadable or not valid JSON; rebuild it with `umaf zoo build`") from None
    ok = isinstance(meta, dict) and all(isinstance(meta.get(k), str) for k in ("name", "family", "size"))
    ok = ok and isinstance(meta.get("trained"), list) and all(isinstance(c, str) for c in meta["trained"])
    ok = ok and isinstance(meta.get("accuracy"), dict) and all(
        isinstance(a, int | float) and not isinstance(a, bool) for a in meta["accuracy"].values()
    )
    if not ok:
        raise UmafError(f"{file} is not a zoo model record (it needs name, family, size, trained and "
                        "accuracy); rebuild it with `umaf zoo build`")  # fmt: skip
    return meta


def zoo_dir() -> Path:
    """Folder that holds one subfolder per zoo model (``zoo:<name>`` loads ``zoo_dir() / name``)."""
    return cache_dir() / "zoo"


def is_built(spec: ZooSpec, shipped: bool = False) -> bool:
    """True if ``spec``'s model was built into the cache from the same spec; with ``shipped``, a model
    of the same spec in the shipped set counts too (:func:`umaf.pretrained.zoo_model_dir`)."""
    folder = pretrained.zoo_model_dir(spec.name) if shipped else zoo_dir() / spec.name
    try:
        return json.loads((folder / META_FILE).read_text()).get("spec") == spec.key()
    except (OSError, json.JSONDecodeError):
        return False


def missing_models(quick: bool = False) -> list[ZooSpec]:
    """The zoo's models that are neither built nor shipped (what a run that needs the zoo must build)."""
    return [spec for spec in zoo_specs(quick=quick) if not is_built(spec, shipped=True)]


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op threads (unchanged if None), then restore."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_model(
    spec: ZooSpec, *, progress: bool = True, device: str | torch.device | None = None
) -> ZooEntry:
    """Build, train (on ``device``; default CUDA when available, else the CPU), evaluate and save one zoo
    model (atomically, as float32 on the CPU) and return its entry."""
    from umaf.capabilities import get_capability, list_capabilities
    from umaf.encoding import model_kind
    from umaf.models import build_tiny

    torch.manual_seed(spec.seed)
    loaded = build_tiny(spec.family, spec.size, seed=spec.seed).to(device, "float32")
    named = [get_capability(n) for n in list_capabilities()]
    slots = mask_slots(named, loaded.tokenizer) if model_kind(loaded) == "encoder" else 0
    if slots:  # recorded in the config, so generation (here and after loading) uses the trained layout
        setattr(loaded.model.config, SLOTS_ATTRIBUTE, slots)
    start, cpu_start = time.perf_counter(), time.process_time()
    losses = train_model(loaded, [get_capability(n) for n in spec.trained], spec.train, slots=slots,
                         progress=progress)
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # unlike wall time, barely depends on other load
    accuracy = evaluate(loaded, named, tagged=True, limit=spec.eval_limit, progress=progress)
    plain = evaluate(loaded, named, tagged=False, limit=spec.eval_limit, progress=progress)
    eval_seconds = time.perf_counter() - start - train_seconds
    meta = _metadata(spec, loaded, accuracy, losses, train_seconds, eval_seconds)
    meta["accuracy_untagged"] = plain
    meta["train_cpu_seconds"] = round(cpu_seconds, 2)
    meta["device"] = str(loaded.device)
    path = zoo_dir() / spec.name
    with atomic_path(path, overwrite=True, is_dir=True) as tmp:
        loaded.model.to("cpu").save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return ZooEntry.from_dir(path)


def loss_curve(losses: list[float], points: int = 20) -> list[float]:
    """Mean loss over ``points`` equal chunks of training (a compact record of the curve)."""
    if not losses:
        return []
    size = max(1, len(losses) // points)
    return [round(mean(losses[i : i + size]), 4) for i in range(0, len(losses), size)][:points]


def _metadata(spec: ZooSpec, loaded: Any, accuracy: dict[str, float], losses: list[float],
              train_seconds: float, eval_seconds: float) -> dict:
    info = getattr(loaded, "info", None)
    return {
        "name": spec.name, "family": spec.family, "size": spec.size, "subset": spec.subset, "seed": spec.seed,
        "quick": spec.quick, "trained": list(spec.trained), "accuracy": accuracy, "spec": spec.key(),
        "prompt_format": PROMPT_FORMAT,
        "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
        "loss_curve": loss_curve(losses), "n_params": sum(p.numel() for p in loaded.model.parameters()),
        "architecture": getattr(info, "architecture", type(loaded.model).__name__),
        "umaf_version": umaf.__version__,
    }


def build_zoo(quick: bool = False, families: list[str] | None = None, progress: bool = True, *,
              specs: list[ZooSpec] | None = None, threads: int | None = 1,
              device: str | torch.device | None = None) -> list[ZooEntry]:
    """Build every zoo model not yet on disk (resumable: finished models are kept and skipped).

    ``quick`` builds a smaller zoo (names prefixed ``q-``) on a shorter schedule; ``specs`` overrides
    the plan entirely (tests use it for two models and a few steps). ``threads`` sets torch's intra-op
    threads while building (None keeps torch's choice): one is as fast for models this small, and leaves
    the other cores free. ``device`` is where the models train (default: CUDA when available).
    """
    from umaf.models import resolve_device

    plan = specs if specs is not None else zoo_specs(quick=quick, families=families)
    device = resolve_device(device)  # a bad name fails before anything is built
    entries = []
    with torch_threads(threads):
        bar = tqdm(plan, disable=not progress, desc="zoo", unit="model")
        for spec in bar:
            bar.set_description(f"zoo {spec.name}")
            if is_built(spec):
                entries.append(ZooEntry.from_dir(zoo_dir() / spec.name))
                continue
            entry = build_model(spec, progress=progress, device=device)
            entries.append(entry)
            if progress:
                tqdm.write(_summary(entry))
    return entries


def _summary(entry: ZooEntry) -> str:
    return (f"{entry.name}: trained {entry.mean_accuracy(True):.3f} / untrained "
            f"{entry.mean_accuracy(False):.3f} accuracy, {entry.train_seconds:.0f}s training")


def qualification_summary(entries: list[ZooEntry], bins: int = 5) -> str:
    """How many trained (model, capability) pairs reach :data:`~umaf.competence.QUALIFY`, as one line, then a
    text histogram of the trained pairs' accuracies in ``bins`` equal bins of [0, 1] (the last one closed)."""
    scores = [e.accuracy[c] for e in entries for c in e.trained if c in e.accuracy]
    qualified = sum(len(e.qualified) for e in entries)
    counts = [0] * bins
    for score in scores:
        counts[min(int(score * bins), bins - 1)] += 1
    lines = [f"{qualified} of {len(scores)} trained (model, capability) pairs reach accuracy {QUALIFY}"]
    for i, count in enumerate(counts):
        bar = "#" * round(40 * count / max(max(counts), 1))
        lines.append(f"  {i / bins:.1f}-{(i + 1) / bins:.1f} {count:4d} {bar}")
    return "\n".join(lines)


def list_zoo(quick: bool = False) -> list[ZooEntry]:
    """Zoo models on disk (the user's builds and the shipped ones, a user's build winning), sorted by
    name: the full zoo, or with ``quick`` the quick one."""
    paths: dict[str, Path] = {}
    for root in reversed(pretrained.zoo_roots()):
        if root.is_dir():
            paths.update({p.name: p for p in root.iterdir() if (p / META_FILE).is_file()})
    return [ZooEntry.from_dir(paths[n]) for n in sorted(paths) if n.startswith(QUICK_PREFIX) == quick]


__all__ = ["META_FILE", "PROMPT_FORMAT", "ZooEntry", "build_model", "build_zoo", "is_built", "list_zoo",
           "loss_curve", "missing_models", "qualification_summary", "zoo_dir"]
