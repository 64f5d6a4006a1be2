"""Fusion suite (M4): does one adapter keep every capability it was made of, on the real target?

For pairs and triples of capabilities the target's generator was trained on, each read from a zoo model
of a different family, each constituent is scored on the target with: the base model, the adapter
generated from its own fingerprint (*single*), and every multi-capability adapter:

- ``fused_<mode>``: generated from the fingerprints fused by a fingerprint fusion mode;
- ``peft_<method>``: PEFT ``add_weighted_adapter`` of the single adapters (linear, cat, ties, dare_linear);
- ``distil``: the single adapters merged by distillation on their inputs (:mod:`umaf.adapters.merge`);
- ``oracle_multitask``: one oracle LoRA trained on the union of the constituents' gold train splits (the
  ceiling; measured against the single oracles).

A constituent's *kept fraction* is its gain over base under the multi-capability adapter divided by its
gain under its single adapter; a combination scores its worst constituent. Every setting (merge weight,
distillation steps) and the headline method are chosen on the *probe* split (validation); the figures
are the eval split's. The rule for which combinations count: one static adapter can only serve
capabilities whose inputs the target tells apart, so a combination counts when a linear probe on the
target's prompt states says which constituent an input belongs to with balanced accuracy >=
SEPARABLE (:func:`umaf.adapters.merge.input_separability`); the others are reported apart.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from umaf.adapters.merge import PEFT_MERGES, SEPARABLE
from umaf.bench.registry import SUITES, eval_limit
from umaf.capabilities import is_held_out, is_held_out_model_family
from umaf.config import HELD_OUT_CAPABILITIES, cache_dir
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.fusion import fuse
from umaf.io import is_trained

DEFAULT_TARGET = "smollm2"
FUSED_MODES = ("average", "slerp")  # fingerprint fusion modes that need no query
MERGE_WEIGHTS = (1.0, 0.5)  # PEFT merge weight per adapter, chosen on validation
DISTIL_STEPS = (60, 120)  # distillation steps, chosen on validation
MIN_ORACLE_GAIN = 0.2  # capabilities the target can learn: oracle - base accuracy
MIN_SINGLE_GAIN = 0.05  # below this a kept fraction is noise and is not computed
VALIDATION, EVAL = "probe", "eval"
TARGETS = {
    "m4_keep_fraction": ">= 0.9",
    "m4_keep_fraction_margin": ">= 0.1 (m4_keep_fraction - m4_best_peft_merge_keep_fraction)",
    "m4_oracle_multitask_keep_fraction": "reported",
}


@dataclass
class Toolkit:
    """What the suites need from the rest of UMAF, bound to one target (tests pass stand-ins)."""

    target: str
    generate: Callable[[Fingerprint, Path], Path]  # fingerprint, output folder -> PEFT adapter folder
    evaluate: Callable[..., float]  # capability, adapter (None: base), split="eval" -> accuracy
    fingerprint: Callable[[Any, str], Fingerprint]  # zoo entry, capability -> fingerprint (cached)
    oracles: dict[str, Path] = field(default_factory=dict)  # capability -> oracle LoRA folder
    zoo: list = field(default_factory=list)  # umaf.zoo.ZooEntry of the full zoo
    # adapters, method, capabilities, output folder, weight per adapter, distillation steps -> PEFT folder
    merge: Callable[[Sequence[Path], str, Sequence[str], Path, float, int], Path] | None = None
    separability: Callable[[Sequence[str]], float] | None = None  # capabilities -> input separability
    multitask: Callable[[Sequence[str]], Path] | None = None  # capabilities -> union oracle LoRA folder
    target_family: str = ""  # the target's model family (sources of it are picked last)
    recorded_gain: dict[str, float] = field(default_factory=dict)  # oracle gain recorded in the library
    known: set[str] = field(default_factory=set)  # capabilities the generator was trained on (empty: any)
    trained_sources: set[str] = field(default_factory=set)  # models whose fingerprints trained the generator


def resolve_toolkit(target: str, quick: bool = False) -> Toolkit:
    """The real toolkit (``quick``: the first eval examples only); a UmafError naming the command to run
    for whatever is missing."""
    from umaf.zoo.fingerprints import model_fingerprints, require_default_extractor, require_zoo

    zoo = require_zoo()
    extractor = require_default_extractor()
    try:
        from umaf.adapters.merge import DistilConfig, input_separability, merge_adapters
        from umaf.adapters.oracles import library, train_multitask
        from umaf.capabilities import get_capability
        from umaf.evaluation import evaluate
        from umaf.generator import default_generator, generate_adapter
    except ImportError as err:
        raise UmafError(f"this suite needs umaf.adapters, umaf.evaluation, umaf.generator ({err})") from None
    entries = library(target)
    if not entries:
        raise UmafError(
            f"no oracle LoRAs for {target} under {cache_dir() / 'oracles'}; "
            f"run `umaf train lora --target {target}` first"
        )
    generator = default_generator(target)  # names `umaf train generator` itself when missing
    from umaf.models import load

    loaded = load(target)  # loaded once; evaluate() attaches and removes each adapter
    limit = eval_limit(quick)
    report = generator.training_report or {}

    def merge(
        adapters: Sequence[Path], method: str, caps: Sequence[str], out: Path, weight: float, steps: int
    ) -> Path:
        return merge_adapters(
            loaded,
            adapters,
            out,
            method=method,
            weights=[weight] * len(adapters),
            capabilities=[get_capability(c) for c in caps],
            config=DistilConfig(steps=max(1, steps)),
            progress=False,
        )

    return Toolkit(
        target=target,
        # the suites measure the generator on zoo sources, whatever each can do: no competence check
        generate=lambda fp, out: generate_adapter(fp, generator, out, min_competence=None),
        evaluate=lambda cap, adapter, split=EVAL: evaluate(loaded, cap, adapter, split, limit=limit),
        fingerprint=lambda entry, cap: model_fingerprints(entry, [cap], extractor)[0],
        oracles={e.capability: Path(e.path) for e in entries},
        zoo=list(zoo),
        merge=merge,
        separability=lambda caps: input_separability(loaded, [get_capability(c) for c in caps]),
        multitask=lambda caps: train_multitask(loaded, caps, progress=False)[0],
        target_family=loaded.info.family,
        recorded_gain={e.capability: e.gain for e in entries},
        known=set(report.get("e2e_capabilities") or report.get("capabilities") or ()),
        trained_sources=set(report.get("sources") or ()),
    )


# ------------------------------------------------------------------------------------------- planning


def pick_sources(combo: Sequence[str], zoo: Sequence, target_family: str,
                 exclude: Collection[str] = ()) -> list | None:
    """One zoo model per capability, trained on it, all of different families (the target's family
    last in preference), none of the models in ``exclude`` (the generator's training sources); the most
    accurate model of a family first. None if impossible."""
    chosen, used = [], set()
    for cap in combo:
        options = [e for e in zoo if cap in e.trained and e.family not in used and e.model_id not in exclude]
        options.sort(key=lambda e: (e.family == target_family, -e.accuracy.get(cap, 0.0), e.name))
        if not options:
            return None
        chosen.append(options[0])
        used.add(options[0].family)
    return chosen


def plan_combinations(capabilities: Sequence[str], quick: bool) -> list[tuple[str, ...]]:
    """Pairs and triples of ``capabilities``: a reproducible sample (2 + 1 quick, 6 + 4 full)."""
    counts = {2: 2, 3: 1} if quick else {2: 6, 3: 4}
    rng = random.Random(0)
    combos: list[tuple[str, ...]] = []
    for k, n in counts.items():
        pool = list(itertools.combinations(capabilities, k))
        combos += rng.sample(pool, min(n, len(pool)))
    return combos


def kept_fraction(accuracy: float, base: float, reference: float) -> float | None:
    """(accuracy - base) / (reference - base); None when the reference gain is too small to divide by."""
    gain = reference - base
    return None if gain < MIN_SINGLE_GAIN else (accuracy - base) / gain


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def _worst(kept: dict[str, float | None]) -> float | None:
    return min((v for v in kept.values() if v is not None), default=None)


# ---------------------------------------------------------------------------------------- measuring


def reference_accuracies(kit: Toolkit, quick: bool) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """Seen capabilities that zoo models were trained on (and the generator, where it says) and whose
    oracle LoRA teaches the target (gain >= MIN_ORACLE_GAIN on the validation split), largest gain first
    (4 quick, else 8), with their base and oracle *eval* accuracy measured in this run. Candidates are
    pre-ranked by the gain the library recorded when it has one (saves measuring every oracle)."""
    readable = {c for e in kit.zoo for c in e.trained}  # a fused source must have learnt its capability
    caps = sorted(c for c in kit.oracles if not is_held_out(c) and c in readable
                  and (not kit.known or c in kit.known))  # fmt: skip
    if kit.recorded_gain:
        caps = [c for c in caps if kit.recorded_gain.get(c, 1.0) >= MIN_ORACLE_GAIN]
        caps = sorted(caps, key=lambda c: -kit.recorded_gain.get(c, 1.0))[: 6 if quick else 12]
    gain = {
        c: kit.evaluate(c, kit.oracles[c], VALIDATION) - kit.evaluate(c, None, VALIDATION)
        for c in tqdm(caps, desc="oracle gain (validation)", leave=False)
    }
    learnable = sorted((c for c in caps if gain[c] >= MIN_ORACLE_GAIN), key=lambda c: -gain[c])
    chosen = learnable[: 4 if quick else 8]
    base = {c: kit.evaluate(c, None) for c in tqdm(chosen, desc="base accuracy", leave=False)}
    oracle = {c: kit.evaluate(c, kit.oracles[c]) for c in tqdm(chosen, desc="oracle accuracy", leave=False)}
    return chosen, base, oracle


def memoised(evaluate: Callable[..., float]) -> Callable[..., float]:
    """``evaluate(capability, adapter, split)`` computed once per argument triple (adapters are folders
    written once per run, so their path names them)."""
    scores: dict[tuple[str, str, str], float] = {}

    def score(cap: str, adapter: Path | None, split: str = EVAL) -> float:
        key = (cap, str(adapter), split)
        if key not in scores:
            scores[key] = evaluate(cap, adapter, split)
        return scores[key]

    return score


def candidates(kit: Toolkit, combo: Sequence[str], fps: list[Fingerprint], singles: list[Path], folder: Path,
               quick: bool) -> dict[str, dict[str, Path]]:  # fmt: skip
    """Every multi-capability adapter of one combination: method -> setting -> PEFT folder."""
    out: dict[str, dict[str, Path]] = {}
    for mode in FUSED_MODES:
        out[f"fused_{mode}"] = {"": kit.generate(fuse(fps, mode=mode), folder / f"fused-{mode}")}
    if kit.merge is None:
        return out
    for method in PEFT_MERGES:
        out[f"peft_{method}"] = {
            f"weight {w:g}": kit.merge(singles, method, combo, folder / f"peft-{method}-{w:g}", w, 0)
            for w in (MERGE_WEIGHTS[:1] if quick else MERGE_WEIGHTS)
        }  # fmt: skip
    out["distil"] = {f"{n} steps": kit.merge(singles, "distil", combo, folder / f"distil-{n}", 1.0, n)
                     for n in (DISTIL_STEPS[:1] if quick else DISTIL_STEPS)}  # fmt: skip
    return out


def measure_combination(kit: Toolkit, combo: Sequence[str], sources: Sequence, oracle: dict,
                        folder: Path, quick: bool) -> dict[str, Any]:  # fmt: skip
    """Every method's accuracy and kept fraction on each capability of one combination; per method the
    setting with the best worst-constituent kept fraction on validation."""
    score = kit.evaluate
    fps = [kit.fingerprint(s, c) for c, s in zip(combo, sources, strict=True)]
    singles = [kit.generate(fp, folder / f"single-{i}") for i, fp in enumerate(fps)]
    base = {sp: {c: score(c, None, sp) for c in combo} for sp in (VALIDATION, EVAL)}
    single = {
        sp: {c: score(c, a, sp) for c, a in zip(combo, singles, strict=True)} for sp in (VALIDATION, EVAL)
    }
    record: dict[str, Any] = {
        "capabilities": list(combo), "sources": [s.model_id for s in sources],
        "separability": kit.separability(combo) if kit.separability else None,
        "base": base[EVAL], "single_generated": single[EVAL], "oracle": {c: oracle[c] for c in combo},
        "accuracy": {}, "kept": {}, "worst_kept": {}, "validation_worst_kept": {}, "setting": {},
    }  # fmt: skip
    for method, settings in candidates(kit, combo, fps, singles, folder, quick).items():
        val = {name: _worst({c: kept_fraction(score(c, a, VALIDATION), base[VALIDATION][c],
                                              single[VALIDATION][c]) for c in combo})
               for name, a in settings.items()}  # fmt: skip
        chosen = max(val, key=lambda n: _nan_low(val[n]))
        accuracy = {c: score(c, settings[chosen], EVAL) for c in combo}
        kept = {c: kept_fraction(accuracy[c], base[EVAL][c], single[EVAL][c]) for c in combo}
        record["accuracy"][method], record["kept"][method] = accuracy, kept
        record["worst_kept"][method], record["validation_worst_kept"][method] = _worst(kept), val[chosen]
        record["setting"][method] = chosen
    if kit.multitask is not None:
        union = kit.multitask(combo)
        accuracy = {c: score(c, union, EVAL) for c in combo}
        kept = {c: kept_fraction(accuracy[c], base[EVAL][c], oracle[c]) for c in combo}
        record["accuracy"]["oracle_multitask"], record["kept"]["oracle_multitask"] = accuracy, kept
        record["worst_kept"]["oracle_multitask"] = _worst(kept)
    return record


def summarise(records: Sequence[dict]) -> dict[str, Any]:
    """Top-level M4 figures over the separable combinations: per method the mean (over combinations) of
    the worst kept fraction; the headline method and the best PEFT merge are the ones whose mean worst
    kept fraction is highest on *validation*."""
    counted = [r for r in records if r["separability"] is None or r["separability"] >= SEPARABLE]
    apart = [r for r in records if r not in counted]
    methods = sorted({m for r in records for m in r["worst_kept"]})
    out: dict[str, Any] = {"m4_combinations": len(counted), "m4_combinations_inseparable": len(apart)}

    def mean_worst(rows: Sequence[dict], method: str, key: str = "worst_kept") -> float:
        return _mean([r[key][method] for r in rows if r[key].get(method) is not None])

    for method in methods:
        out[f"m4_keep_fraction_{method}"] = mean_worst(counted, method)
        out[f"m4_keep_fraction_{method}_inseparable"] = mean_worst(apart, method)
        out[f"m4_mean_accuracy_{method}"] = _mean(
            [_mean(list(r["accuracy"][method].values())) for r in counted]
        )
    for tag in ("base", "oracle", "single_generated"):
        out[f"m4_mean_accuracy_{tag}"] = _mean([_mean(list(r[tag].values())) for r in counted])
    validation = {
        m: mean_worst(counted, m, "validation_worst_kept") for m in methods if m != "oracle_multitask"
    }
    ours = [m for m in validation if not m.startswith("peft_")]
    merges = [m for m in validation if m.startswith("peft_")]
    best = max(ours, key=lambda m: _nan_low(validation[m]), default=None)
    best_merge = max(merges, key=lambda m: _nan_low(validation[m]), default=None)
    nan = float("nan")
    out["m4_mode"] = best
    out["m4_keep_fraction"] = out[f"m4_keep_fraction_{best}"] if best else nan
    out["m4_best_peft_merge"] = best_merge
    out["m4_best_peft_merge_keep_fraction"] = out[f"m4_keep_fraction_{best_merge}"] if best_merge else nan
    out["m4_keep_fraction_margin"] = out["m4_keep_fraction"] - out["m4_best_peft_merge_keep_fraction"]
    out["m4_oracle_multitask_keep_fraction"] = out.get("m4_keep_fraction_oracle_multitask", nan)
    out["m4_validation_keep_fraction"] = {m: validation[m] for m in validation}
    return out


def _nan_low(x: float | None) -> float:
    return float("-inf") if x is None or x != x else x


def run_fusion(kit: Toolkit, quick: bool) -> dict[str, Any]:
    """M4 over the planned combinations, with the per-combination records (every accuracy measured once:
    the base and oracle ones of the capability choice are reused)."""
    kit = dataclasses.replace(kit, evaluate=memoised(kit.evaluate))
    caps, _, oracle = reference_accuracies(kit, quick)
    if len(caps) < 3:
        raise UmafError(
            f"only {len(caps)} capabilities gain >= {MIN_ORACLE_GAIN} from an oracle on {kit.target}"
        )
    records, planned = [], plan_combinations(caps, quick)
    with tempfile.TemporaryDirectory(prefix="umaf-bench-fusion-") as tmp:
        for i, combo in enumerate(tqdm(planned, desc="fusion combinations")):
            sources = pick_sources(combo, kit.zoo, kit.target_family, kit.trained_sources)
            if sources is None:
                continue
            folder = Path(tmp) / f"combo-{i}"
            records.append(measure_combination(kit, combo, sources, oracle, folder, quick))
    if not records:
        raise UmafError("no capability combination has trained zoo sources of different families")
    return {
        **summarise(records),
        "m4_capabilities": caps,
        "m4_combinations_without_sources": len(planned) - len(records),  # no zoo families to read them
        "m4_separable_from": SEPARABLE,
        "m4_validation_split": VALIDATION,
        "m4_eval_split": EVAL,
        "combinations": records,
    }


@SUITES.register("fusion")
def bench_fusion(quick: bool, target: str = DEFAULT_TARGET) -> dict[str, Any]:
    """M4 on ``target``: multi-capability adapters (fused fingerprints, PEFT merges, distillation, the
    multi-task oracle) against the single adapters they are made of."""
    results = run_fusion(resolve_toolkit(target, quick=quick), quick)
    results.update(gate_figures(quick))
    results["target"] = target
    results["targets"] = TARGETS
    return results


def gate_figures(quick: bool) -> dict[str, Any]:
    """The default gate on episodes of held-out capabilities (never trained on): cosine of the fused
    vector to the asked capability's prototype for the gate, its untrained cosine prior, equal weights
    and an oracle selection. Skipped with a note when no gate is trained."""
    from umaf.fusion import FusionGate, GateConfig, default_gate_dir, evaluate_gate
    from umaf.interpolator.data import default_capabilities
    from umaf.zoo.fingerprints import require_zoo, zoo_fingerprints

    if not is_trained(default_gate_dir()):
        return {"gate_note": "no trained fusion gate; run `umaf train fusion` to measure it"}
    gate = FusionGate.from_pretrained(default_gate_dir())
    entries = [e for e in require_zoo() if not is_held_out_model_family(e.family)]
    held = list(HELD_OUT_CAPABILITIES)
    samples = zoo_fingerprints(entries, held + default_capabilities(0), progress=False)
    n = 256 if quick else 1024
    trained = evaluate_gate(gate, samples, held, n_episodes=n)
    prior = evaluate_gate(
        FusionGate(GateConfig(temperature=gate.config.temperature)), samples, held, n_episodes=n
    )
    out = {f"gate_heldout_{k}": v for k, v in trained.items()}
    out["gate_heldout_cosine_prior"] = prior["cosine_gate"]
    return out
