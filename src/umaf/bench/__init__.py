"""UMAF-Bench: each suite measures one part of the pipeline and writes one JSON plus a markdown table."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from umaf import __version__
from umaf.io import atomic_path, check_writable
from umaf.registry import Registry

Suite = Callable[[bool], dict[str, Any]]
SUITES: Registry[Suite] = Registry("benchmark suite")
#: Eval examples per capability in a ``--quick`` run of the suites that evaluate a target (None: all).
QUICK_EVAL_LIMIT = 32


def eval_limit(quick: bool) -> int | None:
    """How many eval examples per capability a run measures: :data:`QUICK_EVAL_LIMIT` quick, else all."""
    return QUICK_EVAL_LIMIT if quick else None


def run_benchmark(
    suite: str, json_path: str | Path, quick: bool = False, overwrite: bool = False, target: str | None = None
) -> dict:
    """Run one suite, write its results to ``json_path`` and print its markdown table.

    ``target`` names the target model of the suites that generate adapters (the others take none).
    """
    from umaf.bench import fingerprints, fusion, size, transfer  # noqa: F401  (registers the suites)

    run = SUITES.get(suite)
    check_writable(json_path, overwrite)
    results = run(quick) if target is None else run(quick, target=target)
    results = {"suite": suite, "umaf_version": __version__, "quick": quick, **results}
    with atomic_path(json_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(markdown_table(results))
    print(f"wrote {json_path}", file=sys.stderr)
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """The scalar results of a run as a two-column markdown table (targets beside where known)."""
    targets = results.get("targets", {})
    lines = ["| metric | measured | target |", "|---|---|---|"]
    for key, value in results.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        lines.append(f"| {key} | {value:.3f} | {targets.get(key, '')} |")
    return "\n".join(lines)
