"""Project-wide settings: where caches live and what is held out of all UMAF training."""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path

#: Named capabilities that never enter the training of any UMAF component (extractor, generator, ...):
#: at least two per kind, one core and one of the generator's wider world, so every kind is still trained.
HELD_OUT_CAPABILITIES: tuple[str, ...] = (
    "subtract", "sort_letters", "capital", "topic",  # core
    "square", "acronym", "animal_young", "is_animal", "city_country", "profession_place",  # wider world
)
#: Family instances held out while other instances of their family are trained (a family named in
#: :data:`HELD_OUT_CAPABILITIES` would be held out whole).
HELD_OUT_INSTANCES: tuple[str, ...] = (
    "add_k:10", "threshold_k:50", "prefix:3", "suffix:2", "kth_letter:2", "last_k:2",
)

#: Model families whose activations never enter UMAF training (the zero-shot architecture test).
HELD_OUT_FAMILIES: tuple[str, ...] = ("t5",)

#: Width of every fingerprint.
FINGERPRINT_DIM = 512


def cache_dir() -> Path:
    """Root of UMAF's caches: ``$UMAF_CACHE`` or ``~/.cache/umaf``."""
    root = os.environ.get("UMAF_CACHE") or Path.home() / ".cache" / "umaf"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@cache
def data_lines(filename: str) -> tuple[str, ...]:
    """The non-empty lines of a file shipped under ``umaf/data``, stripped; lines starting with ``#`` are
    comments."""
    text = (resources.files("umaf") / "data" / filename).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
