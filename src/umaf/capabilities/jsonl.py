"""User capabilities: JSONL files of ``{"input": ..., "output": ...}`` lines (kind ``custom``)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from umaf.capabilities.core import MIN_INPUTS, Capability, Example, Pairs
from umaf.errors import UmafError
from umaf.io import atomic_path


def _parse_jsonl_line(line: str, where: str) -> tuple[str, str]:
    """``(input, output)`` from one JSONL line; ``where`` (``file:line``) prefixes every error."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UmafError(f"{where}: malformed JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise UmafError(f'{where}: expected an object like {{"input": "...", "output": "..."}}')
    values = []
    for key in ("input", "output"):
        if key not in obj:
            raise UmafError(f"{where}: missing key {key!r}")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise UmafError(f"{where}: {key!r} must be a non-empty string, got {obj[key]!r}")
        values.append(obj[key].strip())
    return values[0], values[1]


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    """Distinct ``(input, output)`` pairs of a user file; conflicting duplicates are an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UmafError(f"{path}: no such capability file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UmafError(f"{path}: cannot read capability file ({err})") from None
    seen: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        inp, out = _parse_jsonl_line(line, f"{path}:{lineno}")
        if inp in seen and seen[inp][0] != out:
            raise UmafError(f"{path}:{lineno}: input {inp!r} already has output {seen[inp][0]!r} "
                            f"(line {seen[inp][1]})")
        seen.setdefault(inp, (out, lineno))
    if not seen:
        raise UmafError(f'{path}: empty file; expected one {{"input": ..., "output": ...}} object per line')
    if len(seen) < MIN_INPUTS:
        raise UmafError(
            f"{path}: only {len(seen)} distinct inputs; need at least {MIN_INPUTS} to make a probe set"
        )
    return sorted((inp, out) for inp, (out, _) in seen.items())


@dataclass(frozen=True)
class _FixedPairs:
    """Source of a file-backed capability: the same pairs whatever the seed (picklable, unlike a lambda)."""

    pairs: tuple[tuple[str, str], ...]

    def __call__(self, rng: random.Random) -> Pairs:
        return self.pairs


def load_jsonl(path: str | os.PathLike) -> Capability:
    """A ``custom`` capability from a JSONL file of ``{"input": ..., "output": ...}`` lines.

    The split is a shuffle seeded by the file's content (its distinct pairs), so the same examples
    always split the same way, whatever their order in the file. A user's file is fingerprinted on all
    its examples unless a split is asked for (:meth:`Capability.probe_examples`): the splits serve
    training and evaluation.
    """
    path = Path(path)
    pairs = _read_jsonl(path)
    digest = hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()
    return Capability(
        name=path.stem,
        kind="custom",
        description=f"user examples from {path.name} ({len(pairs)} distinct inputs)",
        source=_FixedPairs(tuple(pairs)),
        seed=f"jsonl:{digest}",
    )


def write_jsonl(examples: Iterable[Example], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``examples`` as JSONL that :func:`load_jsonl` reads back; atomic, refuses to clobber."""
    lines = [json.dumps({"input": ex.input, "output": ex.output}) for ex in examples]
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return Path(path)
