"""The registry of UMAF-Bench suites: each suite is one function registered by name.

A suite is ``run(quick: bool, [target: str]) -> results dict``; registering it is one decorator::

    @SUITES.register("size")
    def run(quick: bool, target: str = DEFAULT_TARGET) -> dict: ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from umaf.registry import Registry

Suite = Callable[[bool], dict[str, Any]]
SUITES: Registry[Suite] = Registry("benchmark suite")
#: Eval examples per capability in a ``--quick`` run of the suites that evaluate a target (None: all).
QUICK_EVAL_LIMIT = 32


def eval_limit(quick: bool) -> int | None:
    """How many eval examples per capability a run measures: :data:`QUICK_EVAL_LIMIT` quick, else all."""
    return QUICK_EVAL_LIMIT if quick else None
