"""What the generator learns from: the target's oracle library (ΔW targets) and source fingerprints.

- :func:`library_targets` reads every oracle of the target (:func:`umaf.adapters.oracles.library`) and
  keeps its ΔW as exact low-rank factors per module type; held-out capabilities are kept apart for
  validation only.
- :func:`collect_fingerprints` fingerprints each library capability from each source model, on both probe
  halves, cached in ``fingerprints.safetensors`` next to the generator so training resumes.
- :func:`~umaf.capabilities.check_trainable` refuses held-out capabilities and model families wherever
  training data is made.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from umaf.capabilities import check_trainable, get_capability, is_held_out, is_held_out_model_family
from umaf.errors import UmafError
from umaf.generator.generate import refactor
from umaf.generator.model import ModuleSpec
from umaf.io import atomic_path

FINGERPRINT_CACHE = "fingerprints.safetensors"
#: Non-held-out families whose zoo models are held apart as validation sources by default.
VAL_FAMILIES: tuple[str, ...] = ("mixtral",)
#: Pretrained source models used besides the zoo by default.
REAL_SOURCES: tuple[str, ...] = ("minilm",)


def low_rank_factors(delta: Tensor, rank: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Exact canonical factors of a ``delta [.., out, in]`` whose rank is at most ``rank``.

    A random range finder (``Q = orth(ΔW Ω)``) captures the whole column space of a rank-``rank`` matrix,
    so ``ΔW = Q (Q^T ΔW)`` exactly; :func:`refactor` then gives ``(A [.., rank, in], B [.., out, rank])``.
    """
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(delta.shape[-1], rank, generator=gen, dtype=torch.float64)  # [in, rank]
    q, _ = torch.linalg.qr(delta.double() @ omega)  # [.., out, rank]
    a = q.transpose(-1, -2) @ delta.double()  # [.., rank, in]
    a_r, b_r = refactor(a, q, rank)
    return a_r.float(), b_r.float()


@dataclass
class LibraryTargets:
    """ΔW of every oracle as factors: row ``i`` of each tensor is capability ``names[i]``.

    The first ``n_train`` rows are training capabilities, the rest held-out ones (validation only);
    one last all-zero row (index ``null_index``) is the target of the random "null" fingerprints.
    """

    names: list[str]
    n_train: int
    factors: dict[str, tuple[Tensor, Tensor]]  # kind -> (A [C + 1, L_k, k, in], B [C + 1, L_k, out, k])
    sq_norms: dict[str, Tensor]  # kind -> ||ΔW||_F^2 [C + 1, L_k]
    meta: dict[str, dict]  # capability -> oracle base / oracle accuracy

    @property
    def null_index(self) -> int:
        return len(self.names)

    @property
    def train_names(self) -> list[str]:
        return self.names[: self.n_train]

    @property
    def heldout_names(self) -> list[str]:
        return self.names[self.n_train :]


def _oracle_deltas(entry: object, specs: Sequence[ModuleSpec]) -> dict[str, Tensor]:
    from umaf.adapters.peft_io import delta_weights

    deltas = delta_weights(entry.path)
    missing = [s.name for s in specs if s.name not in deltas]
    if missing:
        raise UmafError(
            f"oracle {entry.path} does not adapt {missing[0]} (and {len(missing) - 1} more); "
            "train the generator with the oracles' target_modules"
        )
    for spec in specs:
        if tuple(deltas[spec.name].shape) != (spec.out_features, spec.in_features):
            raise UmafError(f"oracle {entry.path}: {spec.name} has ΔW {tuple(deltas[spec.name].shape)}")
    return deltas


def library_modules(target: str) -> tuple[str, ...]:
    """The ``target_modules`` the oracles of ``target`` adapt (UmafError if none or if they differ)."""
    from umaf.adapters.oracles import library

    found = {tuple(e.config.target_modules) for e in library(target)}
    if not found:
        raise UmafError(f"no oracle library for {target}; run `umaf train lora --target {target} ...` first")
    if len(found) > 1:
        raise UmafError(f"the oracles of {target} adapt different modules ({found}); pass target_modules")
    return found.pop()


def library_targets(target: str, specs: Sequence[ModuleSpec], min_gain: float = 0.0) -> LibraryTargets:
    """The oracle library of ``target`` as :class:`LibraryTargets` (UmafError if it is empty).

    Oracles whose eval gain over the base model is below ``min_gain`` are left out (they teach nothing).
    """
    from umaf.adapters.oracles import library

    entries = [e for e in library(target) if e.gain >= min_gain]
    train = [e for e in entries if not is_held_out(e.capability)]
    heldout = [e for e in entries if is_held_out(e.capability)]
    if not train:
        raise UmafError(f"no oracle library for {target}; run `umaf train lora --target {target} ...` first")
    check_trainable([e.capability for e in train])
    rank = max(e.config.rank for e in entries)
    kinds = list(dict.fromkeys(s.kind for s in specs))
    per_kind: dict[str, list[tuple[Tensor, Tensor]]] = {k: [] for k in kinds}
    for entry in tqdm(train + heldout, desc="oracle ΔW", leave=False, disable=len(entries) < 8):
        deltas = _oracle_deltas(entry, specs)
        for kind in kinds:
            stack = torch.stack([deltas[s.name] for s in specs if s.kind == kind])  # [L_k, out, in]
            per_kind[kind].append(low_rank_factors(stack, rank))
    factors, sq_norms = {}, {}
    for kind, pairs in per_kind.items():
        a = torch.stack([p[0] for p in pairs])  # [C, L_k, k, in]
        b = torch.stack([p[1] for p in pairs])  # [C, L_k, out, k]
        a, b = torch.cat([a, torch.zeros_like(a[:1])]), torch.cat([b, torch.zeros_like(b[:1])])  # + null row
        factors[kind] = (a, b)
        sq_norms[kind] = (a.square().sum(-1) * b.square().sum(-2)).sum(-1)  # canonical: ||B A||² = Σ s_i²
    meta = {
        e.capability: {"base_accuracy": e.base_accuracy, "oracle_accuracy": e.oracle_accuracy}
        for e in train + heldout
    }
    return LibraryTargets([e.capability for e in train + heldout], len(train), factors, sq_norms, meta)


# ------------------------------------------------------------------------------------------ fingerprints


@dataclass
class FingerprintSet:
    """Fingerprints with the library row they stand for: ``vectors [N, fp_dim]``, ``labels [N]``."""

    vectors: Tensor
    labels: Tensor
    models: list[str]

    def __len__(self) -> int:
        return len(self.models)


def _fp_key(model: str, capability: str, part: int) -> str:
    return f"{model}|{capability}|{part}"


def _read_cache(path: Path, extractor_hash: str) -> tuple[dict[str, Tensor], dict[str, dict]]:
    """Cached fingerprints and their info; empty if missing, corrupt or from another extractor."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("extractor_hash") != extractor_hash:
                return {}, {}
            info = json.loads(meta.get("info", "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, info  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # missing or corrupt cache: recompute
        return {}, {}


def _write_cache(path: Path, vectors: dict[str, Tensor], info: dict[str, dict], extractor_hash: str) -> None:
    meta = {"extractor_hash": extractor_hash, "info": json.dumps(info, sort_keys=True)}
    with atomic_path(path, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in vectors.items()}, str(tmp), metadata=meta)


def _source_name(source: object) -> str:
    return source if isinstance(source, str) else source.info.name


def _load_source(source: object, training: bool, device: str | None = None) -> object | None:
    """The LoadedModel of a source (loaded on ``device`` in float32 if named, as its fingerprints are
    cached; None, with a warning, if it cannot be loaded); refuses a held-out family for a ``training``
    source."""
    from umaf.models import load

    try:
        loaded = load(source, dtype="float32", device=device) if isinstance(source, str) else source
    except UmafError as err:
        print(f"umaf: skipping source {source}: {err}", file=sys.stderr)
        return None
    if training:
        check_trainable([], [loaded.info.family])
    return loaded


def collect_fingerprints(
    sources: Sequence[object],
    capabilities: Sequence[str],
    extractor: object,
    cache: Path,
    progress: bool = True,
    training: bool = True,
    device: str | None = None,
) -> tuple[dict[str, Tensor], dict[str, dict]]:
    """Fingerprint every capability from every source (model name or LoadedModel) on both probe halves.

    Returns all cached ``{"model|capability|part": vector [fp_dim]}`` and ``{key: {"family", "probe_hash",
    "weights_stamp"}}``; results are saved to ``cache`` after each source model, so an interrupted run
    resumes where it stopped, and a named source whose weights changed (:func:`umaf.models.weights_stamp`)
    is read again.
    ``training`` sources of a held-out model family are refused before anything is computed. Named
    sources are loaded on ``device`` (default: CUDA when available, else the CPU).
    """
    from umaf.extractor import fingerprint
    from umaf.models import weights_stamp

    ehash = extractor.extractor_hash
    vectors, info = _read_cache(cache, ehash)
    for source in tqdm(sources, desc="source fingerprints", disable=not progress, unit="model"):
        name = _source_name(source)
        if training and not isinstance(source, str):
            check_trainable([], [source.info.family])
        stamp = weights_stamp(source) if isinstance(source, str) else None  # a changed model is read again
        wanted = {c: {"probe_hash": get_capability(c).probe_hash(), "weights_stamp": stamp}
                  for c in capabilities}
        keys = {(c, p): _fp_key(name, c, p) for c in capabilities for p in (0, 1)}
        todo = [cp for cp, key in keys.items()
                if any(info.get(key, {}).get(k) != v for k, v in wanted[cp[0]].items())]
        if training:
            check_trainable([], [info[k]["family"] for k in keys.values() if k in info])
        loaded = _load_source(source, training, device) if todo else None
        if loaded is None:
            continue
        for cap, part in todo:
            fp = fingerprint(loaded, cap, extractor, part=part, progress=False)
            vectors[keys[cap, part]] = fp.vector
            info[keys[cap, part]] = {"family": loaded.info.family, "probe_hash": fp.meta["probe_hash"],
                                     "weights_stamp": stamp}
        _write_cache(cache, vectors, info, ehash)
    return vectors, info


def fingerprint_set(
    vectors: dict[str, Tensor], models: Sequence[str], names: Sequence[str], rows: Sequence[int]
) -> FingerprintSet:
    """Cached fingerprints of ``models`` x capabilities ``names[i]`` (labelled ``rows[i]``), both halves."""
    picked, labels, owners = [], [], []
    for model in models:
        for name, row in zip(names, rows, strict=True):
            for part in (0, 1):
                key = _fp_key(model, name, part)
                if key in vectors:
                    picked.append(vectors[key])
                    labels.append(row)
                    owners.append(model)
    if not picked:
        return FingerprintSet(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), [])
    return FingerprintSet(torch.stack(picked), torch.tensor(labels), owners)


def default_sources(target: str) -> tuple[list[str], list[str]]:
    """(training sources, validation sources) for ``target`` when the config names none.

    Training: the zoo models built (full and quick zoo) of non-held-out families other than
    :data:`VAL_FAMILIES`, except the target itself, plus :data:`REAL_SOURCES`.
    Validation: zoo models of held-out families and of :data:`VAL_FAMILIES` (unseen architectures for
    the generator).
    """
    from umaf.zoo import list_zoo

    zoo = list_zoo() + list_zoo(quick=True)
    entries = [e for e in zoo if e.model_id != target]
    apart = [is_held_out_model_family(e.family) or e.family in VAL_FAMILIES for e in entries]
    train = [e.model_id for e, held in zip(entries, apart, strict=True) if not held]
    val = [e.model_id for e, held in zip(entries, apart, strict=True) if held]
    return train + [m for m in REAL_SOURCES if m != target], val
