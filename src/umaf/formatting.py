"""Plain-text tables that the CLI and the pipeline print (aligned columns, no dependencies)."""

from __future__ import annotations

from typing import Any


def format_matrix(labels: list[str], rows: list[list[float]],
                  extra: dict[str, list[float | None]] | None = None) -> str:
    """Render a square similarity matrix as an aligned plain-text table: each row is named by its label
    (with the ``[i]`` that heads its column); each ``extra`` entry is one more row (a value per column,
    e.g. each fingerprint's competence; None prints as ``-``)."""
    short = [f"[{i}]" for i in range(len(labels))]
    names = [f"{tag} {label}" for tag, label in zip(short, labels, strict=True)]
    first = max(len(n) for n in [*names, *(extra or {})])
    width = max(7, *(len(s) for s in short))
    lines = [" " * first + " " + " ".join(s.rjust(width) for s in short)]
    for name, row in zip(names, rows, strict=True):
        lines.append(name.ljust(first) + " " + " ".join(f"{v:{width}.3f}" for v in row))
    for name, values in (extra or {}).items():
        cells = ("-".rjust(width) if v is None else f"{v:{width}.3f}" for v in values)
        lines.append(name.ljust(first) + " " + " ".join(cells))
    return "\n".join(lines)


def format_results(evaluation: dict[str, Any]) -> str:
    """The evaluation rows as an aligned plain-text table (missing cells as '-')."""
    rows = evaluation["capabilities"]
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "capability"))
    columns.sort(key=lambda c: c == "oracle")  # the reference last; the others keep their order
    width = max(12, *(len(c) for c in columns))
    lines = ["capability".ljust(16) + "".join(c.rjust(width + 1) for c in columns)]
    for row in rows:
        cells = "".join((f"{row[c]:.3f}" if c in row else "-").rjust(width + 1) for c in columns)
        lines.append(row["capability"].ljust(16) + cells)
    if "perplexity" in evaluation:
        p = evaluation["perplexity"]
        lines.append(
            f"perplexity on general text: base {p['base']:.2f}, with adapter {p['adapter']:.2f} "
            f"({p['rise']:+.1%})"
        )
    return "\n".join(lines)
