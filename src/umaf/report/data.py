"""What the report shows, prepared without any plotting library: labels, colours, the 2-D map and the
benchmark numbers pulled out of the suites' JSON.

Everything here is plain Python and torch so it can be tested (and reused) without matplotlib.
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint

#: Tableau 10 then its light companions: distinct, colour-blind friendlier than most, print well.
_BASE_COLOURS = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    "#a0cbe8", "#ffbe7d", "#ff9d9a", "#86bcb6", "#8cd17d",
    "#f1ce63", "#d4a6c8", "#fabfd2", "#d7b5a6", "#79706e",
)  # fmt: skip

#: Marker shapes for model families in the 2-D map (matplotlib codes), reused cyclically.
FAMILY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")

#: A target string from a benchmark's ``targets`` table, e.g. ``">= 0.95"``.
_TARGET = re.compile(r"^\s*(>=|<=|>|<|==|=|≥|≤)?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPS = {"≥": ">=", "≤": "<=", "=": "=="}


def palette(n: int) -> list[str]:
    """``n`` distinct hex colours: Tableau's 20, then evenly spread hues (golden-ratio steps)."""
    colours = list(_BASE_COLOURS[:n])
    for i in range(n - len(colours)):
        hue = (0.11 + i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hls_to_rgb(hue, 0.45, 0.65)
        colours.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return colours


def fp_label(fp: Fingerprint) -> str:
    """``model:capability``, the label a fingerprint has in every chart."""
    return f"{fp.model}:{fp.capability}"


def fp_family(fp: Fingerprint) -> str:
    return str(fp.meta.get("family", "?"))


def sort_fingerprints(fps: Sequence[Fingerprint]) -> list[Fingerprint]:
    """Grouped by capability, then family and model, so that blocks show up in the heatmap."""
    return sorted(fps, key=lambda fp: (fp.capability, fp_family(fp), fp.model))


@dataclass(frozen=True)
class Styles:
    """One colour per capability and one marker per family, shared by every chart of a report."""

    capability_colour: dict[str, str]
    family_marker: dict[str, str]

    @classmethod
    def for_fingerprints(cls, fps: Sequence[Fingerprint]) -> Styles:
        caps = {fp.capability for fp in fps}
        for fp in fps:  # capabilities that only appear as fusion sources get colours too
            caps.update(str(s.get("capability", "?")) for s in fusion_sources(fp) or [])
        caps_sorted = sorted(caps)
        families = sorted({fp_family(fp) for fp in fps})
        markers = {f: FAMILY_MARKERS[i % len(FAMILY_MARKERS)] for i, f in enumerate(families)}
        return cls(dict(zip(caps_sorted, palette(len(caps_sorted)), strict=True)), markers)


def pca_2d(vectors: Tensor) -> tuple[Tensor, list[float]]:
    """First two principal components of ``vectors [N, D]``: coordinates ``[N, 2]`` and the fraction of
    variance each explains. Missing components (``N < 3`` or identical vectors) come out as zeros."""
    x = vectors.to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)  # [N, D]
    u, s, _ = torch.linalg.svd(x, full_matrices=False)  # u [N, K], s [K]
    k = min(2, s.shape[0])
    coords = torch.zeros(x.shape[0], 2, dtype=torch.float64)
    coords[:, :k] = u[:, :k] * s[:k]
    total = float((s**2).sum())
    explained = [float(s[i] ** 2) / total if i < k and total > 0 else 0.0 for i in range(2)]
    return coords.float(), explained


def fusion_sources(fp: Fingerprint) -> list[dict[str, Any]] | None:
    """The ``meta["sources"]`` of a fused fingerprint (``{"model", "capability", "weight"}`` each), or
    ``None`` for a plain one; malformed entries raise :class:`UmafError`."""
    sources = fp.meta.get("sources")
    if sources is None:
        return None
    if not isinstance(sources, list) or not sources:
        raise UmafError(f"{fp_label(fp)}: meta 'sources' must be a non-empty list of fusion sources")
    for src in sources:
        if not isinstance(src, dict) or not _is_number(src.get("weight")):
            raise UmafError(f"{fp_label(fp)}: each fusion source needs a numeric 'weight', got {src!r}")
    return sources


@dataclass(frozen=True)
class CompetenceGrid:
    """Measured competence of each model (rows) on each capability (columns); NaN where unknown or unread."""

    models: list[str]
    capabilities: list[str]
    values: Tensor  # [models, capabilities]
    read: Tensor  # [models, capabilities] bool: some fingerprint of this pair is in the report


def competence_grid(fps: Sequence[Fingerprint]) -> CompetenceGrid | None:
    """The model x capability competence of the plain (not fused) fingerprints, averaged over several
    readings of one pair; None unless at least one competence is known."""
    from umaf.competence import fingerprint_competence

    plain = [fp for fp in fps if fp.meta.get("sources") is None]
    scores = {(fp.model, fp.capability): fingerprint_competence(fp) for fp in plain}
    if all(v is None for v in scores.values()):
        return None
    models = sorted({fp.model for fp in plain})
    caps = sorted({fp.capability for fp in plain})
    values = torch.full((len(models), len(caps)), math.nan)
    read = torch.zeros(len(models), len(caps), dtype=torch.bool)
    for i, model in enumerate(models):
        for j, cap in enumerate(caps):
            known = [s for fp in plain if (fp.model, fp.capability) == (model, cap)
                     if (s := fingerprint_competence(fp)) is not None]  # fmt: skip
            read[i, j] = (model, cap) in scores
            if known:
                values[i, j] = sum(known) / len(known)
    return CompetenceGrid(models, caps, values, read)


def human_count(n: Any) -> str:
    """``134515008 -> "134.5 M"``; anything that is not a number is shown as it is."""
    if not _is_number(n):
        return str(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return str(n)


# --- benchmark JSON ----------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@dataclass(frozen=True)
class Target:
    """A parsed target such as ``>= 0.95``: ``op`` in ``>=, <=, >, <, ==``."""

    op: str
    value: float
    text: str

    def met(self, x: float) -> bool | None:
        """Whether ``x`` meets the target (``None`` for NaN)."""
        if math.isnan(x):
            return None
        return {
            ">=": x >= self.value, "<=": x <= self.value, ">": x > self.value,
            "<": x < self.value, "==": math.isclose(x, self.value),
        }[self.op]  # fmt: skip


def parse_target(text: Any) -> Target | None:
    """``">= 0.95"`` -> ``Target(">=", 0.95)``; a bare number means ``>=``; unparseable -> ``None``. A note
    after ``;`` (``">= 0.9; above raw by >= 0.2"``) is kept in the text but not checked."""
    if _is_number(text):
        return Target(">=", float(text), f">= {text}")
    match = _TARGET.match(str(text).split(";", 1)[0])
    if not match:
        return None
    op = _OPS.get(match.group(1) or ">=", match.group(1) or ">=")
    return Target(op, float(match.group(2)), str(text))


@dataclass(frozen=True)
class Metric:
    """One top-level number of a benchmark run, with its target when the run states one."""

    name: str
    value: float
    target_text: str = ""
    target: Target | None = None
    is_count: bool = False  # integers without a target (e.g. n_sources): tabled, not charted

    @property
    def met(self) -> bool | None:
        return self.target.met(self.value) if self.target else None


@dataclass
class Table:
    """A nested part of a benchmark run flattened to rows x columns of numbers (NaN where missing)."""

    name: str
    rows: list[str]
    columns: list[str]
    values: list[list[float]] = field(default_factory=list)  # [rows][columns]


@dataclass
class Bench:
    """One benchmark JSON, split into what the report shows."""

    title: str
    info: dict[str, str]  # string / boolean fields (suite, version, quick ...)
    metrics: list[Metric]
    tables: list[Table]

    @property
    def charted(self) -> list[Metric]:
        return [m for m in self.metrics if not m.is_count]


def parse_bench(data: dict[str, Any], index: int = 0) -> Bench:
    """Split a benchmark result dict into scalar metrics (with targets), nested tables and info."""
    if not isinstance(data, dict):
        raise UmafError(f"benchmark #{index + 1} is not a JSON object")
    targets = data.get("targets") if isinstance(data.get("targets"), dict) else {}
    info, metrics, tables = {}, [], []
    for key, value in data.items():
        if key == "targets":
            continue
        if _is_number(value):
            text = str(targets.get(key, "")) if key in targets else ""
            target = parse_target(text) if text else None
            is_count = isinstance(value, int) and target is None
            metrics.append(Metric(key, float(value), text, target, is_count))
        elif isinstance(value, str | bool):
            info[key] = str(value)
        elif isinstance(value, dict) and (table := _table(key, value)) is not None:
            tables.append(table)
    title = str(data.get("title") or data.get("suite") or f"benchmark {index + 1}")
    return Bench(title, info, metrics, tables)


def _leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict, keyed by their ``a/b/c`` path below ``value``."""
    if _is_number(value):
        return {prefix or "value": float(value)}
    if not isinstance(value, dict):
        return {}
    out: dict[str, float] = {}
    for key, sub in value.items():
        out.update(_leaves(sub, f"{prefix}/{key}" if prefix else str(key)))
    return out


def _table(name: str, value: dict[str, Any]) -> Table | None:
    """Rows are the dict's keys, columns the numeric leaves under each; ``None`` if nothing is numeric."""
    cells = {str(row): _leaves(sub) for row, sub in value.items()}
    cells = {row: leaves for row, leaves in cells.items() if leaves}
    if not cells:
        return None
    columns = list(dict.fromkeys(col for leaves in cells.values() for col in leaves))
    values = [[leaves.get(col, math.nan) for col in columns] for leaves in cells.values()]
    return Table(name, list(cells), columns, values)
