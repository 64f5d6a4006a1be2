"""Finding capabilities: by name, family instance or JSONL path, and listing what is registered."""

from __future__ import annotations

import os
import random
from pathlib import Path

from umaf.capabilities.core import (
    CAPABILITIES,
    EXTENDED,
    FAMILIES,
    KINDS,
    Capability,
    is_held_out,
    registered_capability,
    stable_seed,
)
from umaf.capabilities.jsonl import load_jsonl
from umaf.errors import UmafError


def get_capability(name_or_path: str | os.PathLike) -> Capability:
    """A built-in by name (``"reverse"``), a family instance (``"add_k:7"``), or a ``.jsonl`` file."""
    name = str(name_or_path).strip()
    if name.lower() not in CAPABILITIES and (name.endswith(".jsonl") or Path(name).expanduser().is_file()):
        return load_jsonl(Path(name).expanduser())
    return registered_capability(name)


def list_capabilities(kind: str | None = None, extended: bool = False) -> list[str]:
    """Names of the core built-in capabilities (not family instances; with ``extended``, the wider
    world's named ones too), optionally of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise UmafError(f"unknown capability kind {kind!r}; choose from: {', '.join(KINDS)}")
    return [n for n in CAPABILITIES.names()
            if (extended or n not in EXTENDED) and (kind is None or CAPABILITIES.get(n).kind == kind)]


def list_families() -> list[str]:
    """Names of the parametric capability families."""
    return FAMILIES.names()


def family_instances(family: str, n: int, seed: int = 0) -> list[Capability]:
    """``n`` distinct instances of ``family``, drawn from its parameter range reproducibly by ``seed``."""
    fam = FAMILIES.get(family)
    held = sum(is_held_out(f"{fam.name}:{k}") for k in fam.params)
    if not 0 <= n <= len(fam.params) - held:
        raise UmafError(f"{family} has {len(fam.params) - held} trainable instances; cannot draw {n}")
    rng = random.Random(stable_seed("family_instances", fam.name, seed))
    params = [k for k in rng.sample(list(fam.params), n + held) if not is_held_out(f"{fam.name}:{k}")]
    return [fam.instance(k) for k in params[:n]]
