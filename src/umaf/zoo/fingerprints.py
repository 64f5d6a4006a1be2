"""Fingerprints of zoo models, cached on disk: what the size interpolator, the fusion gate and the
benchmarks learn from and measure with.

Each (zoo model, capability) fingerprint made with one extractor is stored as a fingerprint file under
``cache_dir()/interpolator/fingerprints/<extractor_hash>/<model>/<capability>.safetensors`` (the
folder name is historical: the interpolator was its first user), stamped with the model's
:func:`umaf.models.weights_stamp`, and reused while the zoo model is unchanged, so a second run only
loads files and a rebuilt model is read again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from umaf.capabilities import get_capability
from umaf.config import cache_dir
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.io import is_trained, slug


@dataclass(frozen=True)
class ZooFingerprint:
    """A zoo model's fingerprint of one capability, with what the zoo knows about that model."""

    fingerprint: Fingerprint
    model: str  # load name, e.g. "zoo:llama-m-a"
    family: str
    size: str
    subset: str
    trained: bool  # the capability is in the model's training subset
    accuracy: float  # the zoo's measured accuracy on the capability (NaN if unknown)

    @property
    def capability(self) -> str:
        """Name of the capability read."""
        return self.fingerprint.capability


def fingerprint_cache(extractor_hash: str) -> Path:
    """Folder of cached zoo fingerprints made by the extractor with this hash."""
    return cache_dir() / "interpolator" / "fingerprints" / slug(extractor_hash)


def _read_cached(path: Path, probe_hash: str, stamp: str) -> Fingerprint | None:
    """The cached fingerprint if it is there, for these probes, and read from the model's present weights
    (``weights_stamp`` in its metadata, :func:`umaf.models.weights_stamp`)."""
    try:
        fp = Fingerprint.load(path)
    except (OSError, UmafError):
        return None
    return fp if fp.meta.get("probe_hash") == probe_hash and fp.meta.get("weights_stamp") == stamp else None


def model_fingerprints(
    entry, capabilities: Sequence[str], extractor, progress: bool = False
) -> list[Fingerprint]:
    """Fingerprints of one zoo model (a ``ZooEntry``) on ``capabilities``; computes only what is missing
    (with the model in float32, whatever the :func:`umaf.models.load_defaults`, as they are cached)."""
    from umaf.extractor import fingerprint
    from umaf.models import load, weights_stamp

    caps = [get_capability(c) for c in capabilities]
    folder = fingerprint_cache(extractor.extractor_hash) / slug(entry.name)
    stamp = weights_stamp(entry.model_id)  # a rebuilt model changes it: its fingerprints are read again
    found = [_read_cached(folder / f"{slug(c.name)}.safetensors", c.probe_hash(), stamp) for c in caps]
    missing = [i for i, fp in enumerate(found) if fp is None]
    if missing:
        loaded = load(entry.model_id, dtype="float32")
        for i in tqdm(missing, desc=f"fingerprints {entry.name}", disable=not progress, leave=False):
            fp = fingerprint(loaded, caps[i], extractor, progress=False)
            fp.meta["weights_stamp"] = stamp
            fp.save(folder / f"{slug(caps[i].name)}.safetensors", overwrite=True)
            found[i] = fp
    return [fp for fp in found if fp is not None]


def zoo_fingerprints(
    entries: Sequence, capabilities: Sequence[str], extractor=None, progress: bool = True
) -> list[ZooFingerprint]:
    """Fingerprints of every zoo entry on every capability (cached), with each model's zoo record."""
    if extractor is None:
        extractor = require_default_extractor()
    out = []
    for entry in tqdm(entries, desc="zoo fingerprints", unit="model", disable=not progress):
        for fp in model_fingerprints(entry, capabilities, extractor, progress=progress):
            cap = fp.capability
            out.append(
                ZooFingerprint(
                    fp,
                    entry.model_id,
                    entry.family,
                    entry.size,
                    entry.subset,
                    cap in entry.trained,
                    float(entry.accuracy.get(cap, math.nan)),
                )  # fmt: skip
            )
    return out


def require_default_extractor():
    """The trained default extractor; a UmafError naming the command to train it if it is missing."""
    from umaf.extractor import default_extractor, default_extractor_dir

    if not is_trained(default_extractor_dir()):
        raise UmafError(
            f"no trained extractor in {default_extractor_dir()}; run `umaf train extractor` first"
        )
    return default_extractor()


def require_zoo(families: Sequence[str] | None = None, min_sizes: int = 1) -> list:
    """Zoo entries (the full zoo, else the quick one; optionally only ``families``) with at least
    ``min_sizes`` sizes in some family; a UmafError naming the build command otherwise."""
    from umaf.zoo import list_zoo

    entries = [e for e in (list_zoo() or list_zoo(quick=True)) if families is None or e.family in families]
    sizes: dict[str, set[str]] = {}
    for e in entries:
        sizes.setdefault(e.family, set()).add(e.size)
    if not entries or max((len(s) for s in sizes.values()), default=0) < min_sizes:
        raise UmafError("the model zoo is missing or incomplete; run `umaf zoo build` first")
    return entries
