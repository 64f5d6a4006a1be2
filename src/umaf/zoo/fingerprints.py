"""Fingerprints of zoo models, cached on disk: what the size interpolator, the fusion gate and the
benchmarks learn from and measure with.

Each (zoo model, capability) fingerprint comes from the fingerprint cache of
:mod:`umaf.extractor.cache`, reused while the zoo model is unchanged, so a second run only loads files
and a rebuilt model is read again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint


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


def model_fingerprints(
    entry, capabilities: Sequence[str], extractor, progress: bool = False
) -> list[Fingerprint]:
    """Fingerprints of one zoo model (a ``ZooEntry``) on ``capabilities``, from the fingerprint cache
    (:mod:`umaf.extractor.cache`; the model in float32, whatever the :func:`umaf.models.load_defaults`)."""
    from umaf.extractor.cache import cached_fingerprints

    return cached_fingerprints(entry.model_id, capabilities, extractor, progress=progress)[0]


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
    """The default extractor (a UmafError naming the command that builds it if there is none)."""
    from umaf.extractor import default_extractor

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
