"""Rebuild every shipped component from a clean cache (``umaf train all``), and ship the result.

The build runs in a fixed order, each part into the cache and skipped when it is already there, so an
interrupted build resumes where it stopped: the quick zoo, the extractor (stored in half precision
*before* anything downstream reads it, so the generator, gate and interpolator record the hash of the
weights that ship), SmolLM2's demo oracles, the full zoo (every family: the generator's sources, the
interpolator's sizes), SmolLM2's generator, the size interpolator and the fusion gate. :func:`ship`
then copies them into the package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import umaf
from umaf import pretrained
from umaf.components import dtype_name
from umaf.errors import UmafError
from umaf.io import atomic_path, is_trained, slug

#: Target whose generator ships, and the oracle library that trains it.
TARGET = "smollm2"
LIBRARY: tuple[str, ...] = (
    "plural", "past_tense", "antonym", "uppercase", "sentiment",  # lexical: no zoo model learns them
    "first_letter", "vowel_start", "compare", "successor", "length",  # zoo models of each family learn them
)
#: Oracles whose LoRAs ship (the capabilities the demo evaluates).
SHIPPED_ORACLES: tuple[str, ...] = ("plural", "first_letter")
#: The reference fingerprint that guards the shipped extractor against drift in capture or dependencies.
REFERENCE_MODEL, REFERENCE_CAPABILITY = "zoo:q-gpt2-xs-b", "plural"
#: Storage precision of the shipped networks.
SHIP_DTYPE = torch.float16
#: Where the build records how long each part took (in the cache, next to what it built).
TIMES_FILE = "pretrained-build.json"


@dataclass(frozen=True)
class Part:
    """One step of the build: its name, whether it is already done, and how to do it."""

    name: str
    done: Callable[[], bool]
    run: Callable[[], None]


def _extractor_done() -> bool:
    return is_trained(pretrained.user_dir(pretrained.EXTRACTOR))


def _train_extractor() -> None:
    from umaf.extractor import TrainConfig, train_extractor

    # The quick zoo, whatever else is built, so that the shipped extractor does not depend on build order.
    config = TrainConfig(quick_zoo=True)
    train_extractor(config, output=pretrained.user_dir(pretrained.EXTRACTOR), dtype=SHIP_DTYPE)


def _oracles_done() -> bool:
    from umaf.adapters import library

    return set(LIBRARY) <= {e.capability for e in library(TARGET)}


def _train_oracles() -> None:
    from umaf.adapters import build_library

    build_library(TARGET, LIBRARY)


def _train_generator() -> None:
    from umaf.generator import train_generator

    train_generator(TARGET)  # read by every built zoo model (the full zoo is the part before) and MiniLM


def _full_zoo_done() -> bool:
    from umaf.zoo import is_built, zoo_specs

    return all(is_built(s) for s in zoo_specs())


def _build_full_zoo() -> None:
    from umaf.zoo import build_zoo

    build_zoo()


def _quick_zoo_done() -> bool:
    from umaf.zoo import is_built, zoo_specs

    return all(is_built(s) for s in zoo_specs(quick=True))


def _build_quick_zoo() -> None:
    from umaf.zoo import build_zoo

    build_zoo(quick=True)


def _train_interpolator() -> None:
    from umaf.interpolator import train_interpolator

    train_interpolator(output=pretrained.user_dir(pretrained.INTERPOLATOR))


def _train_gate() -> None:
    from umaf.fusion import train_fusion

    train_fusion(output=pretrained.user_dir(pretrained.GATE))


def parts() -> list[Part]:
    """The build, in order; each part only reads what earlier parts made."""
    trained = lambda rel: lambda: is_trained(pretrained.user_dir(rel))  # noqa: E731
    return [
        Part("quick zoo", _quick_zoo_done, _build_quick_zoo),
        Part("extractor", _extractor_done, _train_extractor),
        Part(f"oracles {TARGET}", _oracles_done, _train_oracles),
        Part("full zoo", _full_zoo_done, _build_full_zoo),
        Part(f"generator {TARGET}", trained(pretrained.generator_path(TARGET)), _train_generator),
        Part("interpolator", trained(pretrained.INTERPOLATOR), _train_interpolator),
        Part("fusion gate", trained(pretrained.GATE), _train_gate),
    ]


def train_all(ship_to: Path | None = None) -> dict[str, float]:
    """Build every part that is missing from the cache, print how long each took, and optionally
    :func:`ship` the result to ``ship_to``. Returns seconds per part (earlier runs' times for parts
    that were already built)."""
    if ship_to is not None:
        _check_writable_folder(ship_to)
    times_path = pretrained.user_dir(TIMES_FILE)
    try:
        times: dict[str, float] = json.loads(times_path.read_text()) if times_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        times = {}  # only a record of earlier runs: rebuilt as parts are built
    for part in parts():
        if part.done():
            print(f"umaf: {part.name}: built ({times.get(part.name, float('nan')):.0f} s)", file=sys.stderr)
            continue
        print(f"umaf: {part.name}: building", file=sys.stderr)
        start = time.perf_counter()
        part.run()
        times[part.name] = round(time.perf_counter() - start, 1)
        with atomic_path(times_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(times, indent=2) + "\n")
        print(f"umaf: {part.name}: built in {times[part.name]:.0f} s", file=sys.stderr)
    print(f"umaf: every part built; {sum(times.values()) / 60:.1f} min in all", file=sys.stderr)
    if ship_to is not None:
        ship(ship_to, times)
    return times


# ------------------------------------------------------------------------------------------------ ship


def _check_writable_folder(dest: Path) -> None:
    """A UmafError before any training if ``dest`` (the package's components folder) cannot be written,
    as in a non-editable install."""
    import os

    parent = Path(dest).parent
    if not os.access(parent, os.W_OK):
        raise UmafError(f"cannot write the shipped components into {dest}: --ship needs an editable "
                        "install (`pip install -e .`) of a source checkout")  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _safetensors_content(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's header (as a dict) and data: equal for equal files, whatever order the
    writer put the metadata keys in."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def _keep_unchanged(new: Path, old: Path) -> None:
    """Put back, in the folder ``new``, the bytes of every safetensors file whose content equals the one in
    ``old``, so that re-shipping an unchanged component leaves its files (and their hashes) as they were."""
    for path in new.rglob("*.safetensors"):
        previous = old / path.relative_to(new)
        if previous.is_file() and _safetensors_content(path) == _safetensors_content(previous):
            shutil.copy2(previous, path)


def _ship_network(cls: type, source: Path, dest: Path) -> None:
    """Copy a trained network folder (config with its training report, weights) in :data:`SHIP_DTYPE`;
    caches it holds, such as the generator's source fingerprints, stay behind."""
    cls.from_pretrained(source).save_pretrained(dest, overwrite=True, dtype=SHIP_DTYPE)  # report included


def _ship_adapter(source: Path, dest: Path) -> None:
    """Copy a PEFT oracle folder with its LoRA factors in :data:`SHIP_DTYPE` (PEFT upcasts on load)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    dest.mkdir(parents=True)
    for item in source.iterdir():
        if item.name == "adapter_model.safetensors":
            with safe_open(str(item), "pt") as f:
                tensors = {k: f.get_tensor(k).to(SHIP_DTYPE) for k in f.keys()}  # noqa: SIM118
                meta = f.metadata()
            save_file(tensors, str(dest / item.name), metadata=meta)
        elif item.is_file():
            shutil.copy2(item, dest / item.name)


def _networks() -> list[tuple[str, type]]:
    from umaf.extractor import CapabilityExtractor
    from umaf.fusion import FusionGate
    from umaf.generator import AdapterGenerator
    from umaf.interpolator import SizeInterpolator

    return [
        (pretrained.EXTRACTOR, CapabilityExtractor),
        (pretrained.generator_path(TARGET), AdapterGenerator),
        (pretrained.INTERPOLATOR, SizeInterpolator),
        (pretrained.GATE, FusionGate),
    ]


def _delta_weights(generator: torch.nn.Module, vector: torch.Tensor) -> list[torch.Tensor]:
    """Every module's ΔW = B·A of the adapter ``generator`` writes for ``vector``."""
    from umaf.generator.generate import adapter_tensors

    tensors = adapter_tensors(generator, vector, generator.config.rank)
    return [tensors[s.lora_b_key] @ tensors[s.lora_a_key] for s in generator.module_specs]


def _relative_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b, strict=True))
    return (num / sum(float(x.pow(2).sum()) for x in a)) ** 0.5


def _reference_and_precision(folder: Path) -> dict[str, float]:
    """Write the reference fingerprint (:data:`REFERENCE_MODEL` on :data:`REFERENCE_CAPABILITY`, shipped
    extractor) and measure what half precision changes against what probe sampling changes: the
    generator's ΔW in float32 (cache) vs float16 (shipped), next to the ΔW from the two probe halves."""
    from umaf.extractor import CapabilityExtractor, fingerprint
    from umaf.generator import AdapterGenerator
    from umaf.models import load

    extractor = CapabilityExtractor.from_pretrained(folder / pretrained.EXTRACTOR)
    loaded = load(REFERENCE_MODEL)
    fp = fingerprint(loaded, REFERENCE_CAPABILITY, extractor)
    out = folder / pretrained.REFERENCE / f"{slug(REFERENCE_MODEL)}-{REFERENCE_CAPABILITY}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    fp.save(out, overwrite=True)
    halves = [fingerprint(loaded, REFERENCE_CAPABILITY, extractor, part=p).vector for p in (0, 1)]
    rel = pretrained.generator_path(TARGET)
    full = AdapterGenerator.from_pretrained(pretrained.user_dir(rel))
    half = AdapterGenerator.from_pretrained(folder / rel)
    return {
        "fingerprint_cosine_probe_halves": round(float(torch.cosine_similarity(*halves, dim=0)), 6),
        "delta_w_rel_diff_float16": round(_relative_difference(
            _delta_weights(full, fp.vector), _delta_weights(half, fp.vector)), 6),
        "delta_w_rel_diff_probe_halves": round(_relative_difference(
            _delta_weights(full, halves[0]), _delta_weights(full, halves[1])), 6),
    }  # fmt: skip


def ship(dest: Path, times: dict[str, float] | None = None) -> Path:
    """Write the cache's trained components into ``dest`` (normally :data:`umaf.pretrained.SHIPPED_DIR`)
    in half precision, with the quick zoo, the demo's oracles, a reference fingerprint and a manifest
    (sha256 of every file, sizes, build times); ``dest`` is replaced as a whole."""
    from umaf.zoo import zoo_specs

    cache = pretrained.user_dir
    missing = [rel for rel, _ in _networks() if not is_trained(cache(rel))]
    if missing:
        raise UmafError(f"nothing to ship: {', '.join(missing)} not built; run `umaf train all` first")
    with atomic_path(dest, overwrite=True, is_dir=True) as tmp:
        for rel, cls in _networks():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            _ship_network(cls, cache(rel), tmp / rel)
        for spec in zoo_specs(quick=True):
            shutil.copytree(pretrained.zoo_model_dir(spec.name), tmp / pretrained.ZOO / spec.name)
        for cap in SHIPPED_ORACLES:
            rel = f"{pretrained.ORACLES}/{slug(TARGET)}/{slug(cap)}"
            _ship_adapter(cache(rel), tmp / rel)
        precision = _reference_and_precision(tmp)
        _keep_unchanged(tmp, dest)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        doc = {
            "umaf_version": umaf.__version__,
            "torch_version": torch.__version__,
            "dtype": dtype_name(SHIP_DTYPE),
            "build_seconds": times or {},
            "precision": precision,
            "total_bytes": sum(p.stat().st_size for p in files),
            "files": {str(p.relative_to(tmp)): _sha256(p) for p in files},
        }
        (tmp / pretrained.MANIFEST_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"umaf: shipped {len(doc['files'])} files ({doc['total_bytes'] / 2**20:.1f} MB) to {dest}",
          file=sys.stderr)  # fmt: skip
    return dest


__all__ = ["LIBRARY", "Part", "REFERENCE_CAPABILITY", "REFERENCE_MODEL", "SHIPPED_ORACLES", "TARGET",
           "parts", "ship", "train_all"]
