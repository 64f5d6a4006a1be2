"""Fingerprints cached on disk: a second run on the same model, probes and extractor only reads files.

A fingerprint of (model, capability) made with one extractor at one dtype is stored under
``cache_dir()/fingerprints/<extractor_hash>/<model>/<capability>-<dtype>.safetensors``, stamped with
the model's :func:`umaf.models.weights_stamp` and the probe hash; a rebuilt or edited model, another
probe set or another extractor is read again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from umaf.capabilities import get_capability
from umaf.components import dtype_name
from umaf.config import cache_dir
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.io import slug

#: Bumped whenever what a fingerprint holds changes (e.g. how competence is measured): older entries are
#: then read again instead of being mixed with new ones.
CACHE_VERSION = "3"


def fingerprint_cache(extractor_hash: str) -> Path:
    """Folder of the fingerprints made by the extractor with this hash."""
    return cache_dir() / "fingerprints" / slug(extractor_hash)


def _read_cached(path: Path, probe_hash: str, stamp: str) -> Fingerprint | None:
    """The cached fingerprint if it is there, for these probes and the model's present weights."""
    try:
        fp = Fingerprint.load(path)
    except (OSError, UmafError):
        return None
    meta = fp.meta
    fresh = meta.get("cache_version") == CACHE_VERSION and meta.get("weights_stamp") == stamp
    return fp if fresh and meta.get("probe_hash") == probe_hash else None


def cached_fingerprints(
    model: str,
    capabilities: Sequence[Any],
    extractor: Any,
    *,
    loaded: Any = None,
    dtype: str = "float32",
    device: str | None = None,
    progress: bool = False,
) -> tuple[list[Fingerprint], Any]:
    """Fingerprints of ``model`` (a load name) on ``capabilities``, computing only what the cache lacks.

    The model is loaded (in ``dtype`` on ``device``) only if something is missing, unless ``loaded``
    already holds it. Returns the fingerprints in order and the loaded model (None if none was needed).
    """
    from umaf.extractor.fingerprinting import fingerprint
    from umaf.models import load, resolve_dtype, weights_stamp

    caps = [get_capability(c) for c in capabilities]
    tag = dtype_name(resolve_dtype(dtype))
    folder = fingerprint_cache(extractor.extractor_hash) / slug(model)
    stamp = weights_stamp(model)  # a rebuilt model changes it: its fingerprints are read again
    paths = [folder / f"{slug(c.name)}-{tag}.safetensors" for c in caps]
    found = [_read_cached(p, c.probe_hash(), stamp) for p, c in zip(paths, caps, strict=True)]
    missing = [i for i, fp in enumerate(found) if fp is None]
    if missing and loaded is None:
        loaded = load(model, dtype=dtype, device=device)
    for i in tqdm(missing, desc=f"fingerprints {model}", disable=not progress, leave=False):
        fp = fingerprint(loaded, caps[i], extractor, progress=False)
        fp.meta.update(weights_stamp=stamp, cache_version=CACHE_VERSION)
        fp.save(paths[i], overwrite=True)
        found[i] = fp
    return [fp for fp in found if fp is not None], loaded
