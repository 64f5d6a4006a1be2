"""UMAF-Bench: each suite measures one part of the pipeline and writes one JSON plus a markdown table."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from umaf import __version__
from umaf.bench.registry import QUICK_EVAL_LIMIT, SUITES, Suite, eval_limit
from umaf.components import dtype_name
from umaf.errors import UmafError
from umaf.io import atomic_path, check_writable

__all__ = ["QUICK_EVAL_LIMIT", "SUITES", "Suite", "eval_limit", "markdown_table", "run_benchmark"]


def run_benchmark(
    suite: str,
    json_path: str | Path,
    quick: bool = False,
    overwrite: bool = False,
    target: str | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    tasks: list[str] | None = None,
) -> dict:
    """Run one suite, write its results to ``json_path`` and print its markdown table.

    ``target`` names the target model of the suites that generate adapters (the others take none);
    ``tasks`` are a user's capability files for the suites that measure them (transfer).
    The models the suite loads go on ``device`` in ``dtype`` (defaults: CUDA when available, else the
    CPU; float32); cached fingerprints are made in float32 whatever ``dtype`` says.
    """
    from umaf.bench import fingerprints, fusion, size, transfer  # noqa: F401  (registers the suites)
    from umaf.models import load_defaults, resolve_device, resolve_dtype

    run = SUITES.get(suite)
    params = inspect.signature(run).parameters
    if target is not None and "target" not in params:
        raise UmafError(f"the {suite} suite takes no --target (it reads every model it measures)")
    if tasks and "tasks" not in params:
        raise UmafError(f"the {suite} suite takes no --tasks")
    check_writable(json_path, overwrite)
    kwargs = {k: v for k, v in (("target", target), ("tasks", tasks)) if v}
    with load_defaults(device, dtype):
        results = run(quick, **kwargs)
        placed = {"device": str(resolve_device(None)), "dtype": dtype_name(resolve_dtype(None))}
    results = {"suite": suite, "umaf_version": __version__, "quick": quick, **placed, **results}
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
