"""Fingerprint files: a 512-D capability vector plus the metadata that says where it came from.

On disk a fingerprint is a safetensors file (never pickle) with tensors ``vector [512]`` and optionally
``layer_profile [depth_bins]``; its string metadata holds ``format = "umaf-fingerprint"`` and the meta
dictionary as JSON under ``"umaf"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from umaf.config import FINGERPRINT_DIM
from umaf.errors import UmafError
from umaf.io import atomic_path

FORMAT = "umaf-fingerprint"

#: Metadata every fingerprint carries (extra keys are allowed; ``competence``, when present, is a number in
#: [0, 1] or None for unknown: see :mod:`umaf.competence`).
REQUIRED_META: tuple[str, ...] = (
    "model",
    "family",
    "architecture",
    "n_params",
    "n_layers",
    "width",
    "capability",
    "probe_hash",
    "extractor_hash",
    "umaf_version",
)


@dataclass
class Fingerprint:
    """One capability read from one model: ``vector [512]``, an optional per-depth ``layer_profile``
    ``[depth_bins]`` (see :mod:`umaf.extractor.processor`), and ``meta`` (see :data:`REQUIRED_META`)."""

    vector: Tensor
    layer_profile: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vector = torch.as_tensor(self.vector).detach().to("cpu", torch.float32).reshape(-1)
        if self.layer_profile is not None:
            self.layer_profile = torch.as_tensor(self.layer_profile).detach().to("cpu", torch.float32)

    @property
    def capability(self) -> str:
        return str(self.meta.get("capability", "?"))

    @property
    def model(self) -> str:
        return str(self.meta.get("model", "?"))

    def validate(self, source: str = "fingerprint") -> None:
        """Raise :class:`UmafError` unless shapes, values and metadata are usable."""
        if tuple(self.vector.shape) != (FINGERPRINT_DIM,):
            raise UmafError(
                f"{source}: vector has shape {tuple(self.vector.shape)}, expected ({FINGERPRINT_DIM},)"
            )
        if not torch.isfinite(self.vector).all():
            raise UmafError(f"{source}: vector contains NaN or infinite values")
        profile = self.layer_profile
        if profile is not None and (profile.dim() != 1 or not torch.isfinite(profile).all()):
            raise UmafError(f"{source}: layer_profile must be a finite 1-D tensor")
        missing = [key for key in REQUIRED_META if key not in self.meta]
        if missing:
            raise UmafError(f"{source}: metadata lacks {', '.join(missing)}")
        competence = self.meta.get("competence")
        number = isinstance(competence, int | float) and not isinstance(competence, bool)
        if competence is not None and not (number and 0.0 <= competence <= 1.0):
            raise UmafError(f"{source}: competence must be a number in [0, 1] or null, got {competence!r}")

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the fingerprint to ``path`` atomically (no file is left behind on failure)."""
        self.validate()
        tensors = {"vector": self.vector.contiguous()}
        if self.layer_profile is not None:
            tensors["layer_profile"] = self.layer_profile.contiguous()
        try:
            metadata = {"format": FORMAT, "umaf": json.dumps(self.meta, sort_keys=True)}
        except TypeError as err:
            raise UmafError(f"fingerprint metadata is not JSON-serialisable: {err}") from None
        with atomic_path(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Fingerprint:
        """Read and validate a fingerprint file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise UmafError(f"{path} does not exist")
        tensors, metadata = _read_safetensors(path)
        if metadata.get("format") != FORMAT or "vector" not in tensors:
            raise UmafError(f"{path} is not a UMAF fingerprint file")
        try:
            meta = json.loads(metadata.get("umaf", ""))
        except json.JSONDecodeError:
            raise UmafError(f"{path}: fingerprint metadata is not valid JSON") from None
        if not isinstance(meta, dict):
            raise UmafError(f"{path}: fingerprint metadata is not a JSON object")
        fp = cls(tensors["vector"], tensors.get("layer_profile"), meta)
        fp.validate(str(path))
        return fp


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the string metadata of a safetensors file; anything unreadable is a UmafError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # safetensors raises several types for foreign or truncated files
        raise UmafError(f"{path} is not a UMAF fingerprint file") from None
    return tensors, metadata


def check_compatible(fps: Sequence[Fingerprint]) -> None:
    """Raise :class:`UmafError` if the fingerprints were made by different extractors."""
    hashes = sorted({str(fp.meta.get("extractor_hash")) for fp in fps})
    if len(hashes) > 1:
        raise UmafError(
            f"fingerprints come from different extractors ({' vs '.join(hashes)}); "
            "recompute them with one extractor"
        )


def stack(fps: Sequence[Fingerprint]) -> Tensor:
    """The vectors of compatible fingerprints as one ``[N, 512]`` tensor."""
    check_compatible(fps)
    return torch.stack([fp.vector for fp in fps])  # [N, 512]
