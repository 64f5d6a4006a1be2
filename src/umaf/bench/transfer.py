"""Transfer suite (M3 transfer, M6 cost, M7 harm): does a generated adapter give the target the capability?

For every capability the target is measured four ways on the eval split: as it is (base), with the
adapter generated from each source's fingerprint (sources are of *other* families than the target),
with its oracle LoRA, and with an adapter generated from a random unit vector carrying the same
metadata (the control: what the generator installs when the fingerprint says nothing).
``recovery = (generated - base) / (oracle - base)`` is reported per capability and source, and
aggregated over seen and held-out capabilities and per source family. Capabilities whose oracle gains
less than :data:`MIN_ORACLE_GAIN` over base are reported but left out of the aggregates, since the
ratio means nothing there. Generation time (fingerprint in, PEFT folder out) is set against oracle
training time, and perplexity on general text against the base model's.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from umaf.bench.registry import SUITES, eval_limit
from umaf.capabilities import get_capability, is_held_out, is_held_out_model_family, list_capabilities
from umaf.config import FINGERPRINT_DIM
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint

#: Oracles that gain less than this over base are left out of every aggregate.
MIN_ORACLE_GAIN = 0.1
#: Real source models (besides the zoo).
REAL_SOURCES: tuple[str, ...] = ("minilm",)
#: Capabilities measured on a target outside the zoo (>= 6, >= 2 held out), e.g. ``smollm2``.
REAL_TARGET_CAPABILITIES: tuple[str, ...] = (
    "plural", "antonym", "past_tense", "sentiment", "uppercase", "number_word",  # seen
    "topic", "subtract", "capital",  # held out
)
#: Zoo families used as sources, in preference order (``quick`` keeps the first two).
SOURCE_FAMILIES: tuple[str, ...] = ("gpt2", "bert", "mixtral", "t5", "llama")
_SIZE_ORDER = {"m": 0, "s": 1, "xs": 2}
TARGETS = {
    "recovery_seen": ">= 0.8",
    "recovery_heldout": ">= 0.4",
    "recovery_random_control": "<= 0.15",
    "gen_seconds": "<= 1.0",
    "perplexity_rise": "<= 0.05",
}


@dataclass
class TransferPlan:
    """What one run measures: capabilities and, per capability, the source models to read it from."""

    target: str
    capabilities: list[str]
    sources: dict[str, list[str]]  # capability -> source model ids
    families: dict[str, str] = field(default_factory=dict)  # source model id -> family label
    eval_limit: int | None = None


# ------------------------------------------------------------------------------------------ planning


def _target_family(target: str, zoo: Sequence[Any]) -> tuple[str, tuple[str, ...]]:
    """(family, trained capabilities) of a zoo target; a target outside the zoo has no trained list."""
    for entry in zoo:
        if entry.model_id == target:
            return entry.family, tuple(entry.trained)
    from umaf.models import load

    return load(target).info.family, ()


def pick_source(entries: Sequence[Any], capability: str) -> Any:
    """The zoo model that best shows ``capability``: trained on it first, then the largest, then by name."""
    return min(entries, key=lambda e: (capability not in e.trained, _SIZE_ORDER.get(e.size, 9), e.name))


def transfer_capabilities(trained: Sequence[str], quick: bool) -> list[str]:
    """Named capabilities a zoo target was not trained on (what an adapter can add), plus the held-out
    ones; a target with no zoo record gets :data:`REAL_TARGET_CAPABILITIES`."""
    if not trained:
        caps = list(REAL_TARGET_CAPABILITIES)
    else:
        caps = [c for c in list_capabilities() if c not in trained or is_held_out(c)]
    if quick:
        seen = [c for c in caps if not is_held_out(c)][:3]
        caps = seen + [c for c in caps if is_held_out(c)][:2]
    return caps


def plan_transfer(target: str, quick: bool) -> TransferPlan:
    """Capabilities and cross-family sources for ``target`` from the zoo on disk (the full one if built)."""
    from umaf.zoo import list_zoo

    zoo = list_zoo() or list_zoo(quick=True)
    family, trained = _target_family(target, zoo)
    caps = transfer_capabilities(trained, quick)
    families = [f for f in SOURCE_FAMILIES if f != family and any(e.family == f for e in zoo)]
    families = families[:2] if quick else families
    sources: dict[str, list[str]] = {}
    labels = {name: name for name in REAL_SOURCES}
    for cap in caps:
        picked = [pick_source([e for e in zoo if e.family == f], cap) for f in families]
        labels.update({e.model_id: e.family for e in picked})
        sources[cap] = [e.model_id for e in picked] + list(REAL_SOURCES)
    return TransferPlan(target, caps, sources, labels, eval_limit=eval_limit(quick))


# ---------------------------------------------------------------------------------------- measuring


def read_fingerprints(plan: TransferPlan, extractor: Any) -> dict[tuple[str, str], Fingerprint]:
    """Fingerprint of every (source, capability) pair of the plan; each source is loaded once."""
    from umaf.extractor import fingerprint
    from umaf.models import load

    by_source: dict[str, list[str]] = {}
    for cap, sources in plan.sources.items():
        for source in sources:
            by_source.setdefault(source, []).append(cap)
    fps = {}
    for source, caps in tqdm(by_source.items(), desc="source fingerprints", unit="model"):
        loaded = load(source)
        for cap in caps:
            fps[source, cap] = fingerprint(loaded, cap, extractor, progress=False)
        del loaded
    return fps


def random_fingerprint(fp: Fingerprint, seed: int) -> Fingerprint:
    """A random unit vector in place of ``fp``'s, with the same layer profile and metadata."""
    gen = torch.Generator().manual_seed(seed)
    vector = torch.randn(FINGERPRINT_DIM, generator=gen)
    return Fingerprint(vector / vector.norm(), fp.layer_profile, dict(fp.meta))


def recovery(generated: float, base: float, oracle: float) -> float | None:
    """Share of the oracle's gain a generated adapter recovers; None when the oracle gains nothing."""
    gain = oracle - base
    return None if gain <= 0 else (generated - base) / gain


@dataclass
class Measurer:
    """Everything one capability's measurement needs: the loaded target and the generator API."""

    loaded: Any
    generator: Any
    generate: Callable[..., Path]  # (fp, generator, output) -> PEFT folder
    workdir: Path
    eval_limit: int | None = None
    base_perplexity: float = float("nan")

    def accuracy(self, cap: str, adapter: Path | None = None) -> float:
        from umaf.evaluation import evaluate

        return evaluate(self.loaded, cap, adapter, limit=self.eval_limit)

    def timed_adapter(self, fp: Fingerprint, name: str) -> tuple[Path, float]:
        out = self.workdir / name
        start = time.perf_counter()
        self.generate(fp, self.generator, out)
        return out, time.perf_counter() - start

    def perplexity(self, adapter: Path | None) -> float:
        from umaf.evaluation import perplexity

        return perplexity(self.loaded, adapter)


def measure_capability(m: Measurer, cap: str, fps: dict[str, Fingerprint], oracle: Path,
                       oracle_seconds: float, seed: int) -> dict[str, Any]:
    """One row of the results: base, generated per source, oracle and random-control accuracy."""
    row: dict[str, Any] = {"capability": cap, "held_out": get_capability(cap).held_out,
                           "kind": get_capability(cap).kind, "oracle_train_seconds": oracle_seconds,
                           "base": m.accuracy(cap), "oracle": m.accuracy(cap, oracle)}
    row["oracle_gain"] = row["oracle"] - row["base"]
    row["included"] = row["oracle_gain"] >= MIN_ORACLE_GAIN
    row["generated"], row["gen_seconds"], first = {}, [], None
    for i, (source, fp) in enumerate(fps.items()):
        adapter, seconds = m.timed_adapter(fp, f"{cap}-{i}")
        row["generated"][source] = m.accuracy(cap, adapter)
        row["gen_seconds"].append(seconds)
        first = first or adapter
    control, seconds = m.timed_adapter(random_fingerprint(next(iter(fps.values())), seed), f"{cap}-random")
    row["gen_seconds"].append(seconds)
    row["random"] = m.accuracy(cap, control)
    row["recovery"] = {s: recovery(a, row["base"], row["oracle"]) for s, a in row["generated"].items()}
    row["recovery_random"] = recovery(row["random"], row["base"], row["oracle"])
    row["generated_mean"] = statistics.mean(row["generated"].values())
    row["recovery_mean"] = recovery(row["generated_mean"], row["base"], row["oracle"])
    if m.base_perplexity == m.base_perplexity:  # not NaN: perplexity is measured in this run
        row["perplexity_generated"] = m.perplexity(first)
        row["perplexity_oracle"] = m.perplexity(oracle)
    return row


# --------------------------------------------------------------------------------------- aggregating


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.mean(kept) if kept else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def by_family(rows: Sequence[dict], families: dict[str, str]) -> dict[str, dict[str, float | None]]:
    """Mean recovery per source family label, over included seen and held-out capabilities."""
    out: dict[str, dict[str, list]] = {}
    for row in rows:
        if not row["included"]:
            continue
        part = "heldout" if row["held_out"] else "seen"
        for source, value in row["recovery"].items():
            label = families.get(source, source)
            out.setdefault(label, {"seen": [], "heldout": []})[part].append(value)
    return {label: {k: _mean(v) for k, v in parts.items()} for label, parts in sorted(out.items())}


def _perplexity_summary(rows: Sequence[dict], base: float) -> dict[str, float | None]:
    gen = [r["perplexity_generated"] for r in rows if r["included"] and "perplexity_generated" in r]
    ora = [r["perplexity_oracle"] for r in rows if r["included"] and "perplexity_oracle" in r]
    rise = lambda ppl: None if not ppl or base != base else statistics.median(ppl) / base - 1  # noqa: E731
    return {"perplexity_base": None if base != base else base, "perplexity_generated": _median(gen),
            "perplexity_oracle": _median(ora), "perplexity_rise": rise(gen),
            "perplexity_rise_oracle": rise(ora)}


def aggregate(rows: Sequence[dict], families: dict[str, str], base_perplexity: float = float("nan")) -> dict:
    """Top-level figures over the included rows (oracle gain >= :data:`MIN_ORACLE_GAIN`)."""
    used = [r for r in rows if r["included"]]
    seen = [r for r in used if not r["held_out"]]
    held = [r for r in used if r["held_out"]]
    held_family = [v for r in used for s, v in r["recovery"].items()
                   if is_held_out_model_family(families.get(s, s))]
    gen_seconds = [s for r in rows for s in r["gen_seconds"]]
    out = {
        "recovery_seen": _mean([r["recovery_mean"] for r in seen]),
        "recovery_heldout": _mean([r["recovery_mean"] for r in held]),
        "recovery_random_control": _mean([r["recovery_random"] for r in used]),
        "recovery_heldout_family": _mean(held_family),
        "recovery_by_source_family": by_family(rows, families),
        "gen_seconds": _median(gen_seconds),
        "oracle_train_seconds": _median([r["oracle_train_seconds"] for r in rows]),
        "n_capabilities": len(rows), "n_included_seen": len(seen), "n_included_heldout": len(held),
        "excluded": [r["capability"] for r in rows if not r["included"]],
        "min_oracle_gain": MIN_ORACLE_GAIN,
    }
    for key in ("base", "oracle", "random", "generated_mean"):
        out[f"accuracy_{key}"] = _mean([r[key] for r in used])
    if out["gen_seconds"] and out["oracle_train_seconds"]:
        out["speedup_vs_oracle"] = out["oracle_train_seconds"] / out["gen_seconds"]
    return {**out, **_perplexity_summary(rows, base_perplexity)}


# ------------------------------------------------------------------------------------------- running


def ensure_oracle(loaded: Any, target: str, capability: str, progress: bool = True) -> Any:
    """The cached oracle of ``capability`` on ``target`` (whatever config made it), trained if missing."""
    from umaf.adapters.oracles import OracleEntry, oracle_dir, read_oracle_meta, train_oracle

    path = oracle_dir(target, capability)
    if read_oracle_meta(path) is None:
        train_oracle(loaded, capability, progress=progress)
    return OracleEntry.from_dir(path)


def run_transfer(plan: TransferPlan, extractor: Any, generator: Any, generate: Callable[..., Path], *,
                 perplexity: bool = True, progress: bool = True) -> dict[str, Any]:
    """Measure every capability of ``plan`` (oracles are trained first where the cache lacks them)."""
    from umaf.models import load

    fps = read_fingerprints(plan, extractor)
    loaded = load(plan.target)
    rows = []
    with tempfile.TemporaryDirectory(prefix="umaf-transfer-") as tmp:
        m = Measurer(loaded, generator, generate, Path(tmp), plan.eval_limit)
        if perplexity:
            m.base_perplexity = m.perplexity(None)
        for seed, cap in enumerate(tqdm(plan.capabilities, desc="transfer", disable=not progress)):
            oracle = ensure_oracle(loaded, plan.target, cap, progress)
            cap_fps = {s: fps[s, cap] for s in plan.sources[cap]}
            rows.append(measure_capability(m, cap, cap_fps, oracle.path, oracle.train_seconds, seed))
    results = aggregate(rows, plan.families, m.base_perplexity)
    return {"target": plan.target, "sources": plan.sources, "source_families": plan.families, **results,
            "capabilities": rows, "targets": TARGETS}


@SUITES.register("transfer")
def bench_transfer(quick: bool, target: str = "zoo:llama-m-a") -> dict[str, Any]:
    """M3 transfer, generation vs oracle training time and perplexity harm for one ``target``."""
    from umaf.extractor import default_extractor

    try:
        from umaf.generator import default_generator, generate_adapter
    except ImportError as err:
        raise UmafError(f"the transfer suite needs umaf.generator ({err})") from None
    generator = default_generator(target)  # a UmafError naming `umaf train generator` when missing
    plan = plan_transfer(target, quick)
    return run_transfer(plan, default_extractor(), generator, generate_adapter)


__all__ = ["MIN_ORACLE_GAIN", "TransferPlan", "aggregate", "bench_transfer", "plan_transfer",
           "random_fingerprint", "recovery", "run_transfer"]
