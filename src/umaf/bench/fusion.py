"""Fusion suite (M4): does one adapter generated from a fused fingerprint do every fused capability?

For pairs and triples of capabilities whose source fingerprints come from zoo models of different
families, each capability is scored on the target with: the base model, the adapter generated from
that capability's own fingerprint, the adapter generated from the fused fingerprint (every fusion mode
that needs no query), and PEFT ``add_weighted_adapter`` merges of the oracle LoRAs. A constituent's
*kept fraction* is its gain over base under the multi-capability adapter divided by its gain under its
own single adapter (generated for fusion, oracle for the PEFT merges); a combination scores its worst
constituent.
"""

from __future__ import annotations

import itertools
import random
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from umaf.bench.registry import SUITES, eval_limit
from umaf.capabilities import is_held_out, is_held_out_model_family
from umaf.config import HELD_OUT_CAPABILITIES, cache_dir
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.fusion import FUSION_MODES, fuse
from umaf.io import is_trained

DEFAULT_TARGET = "zoo:llama-m-a"
MERGES = ("linear", "ties", "dare_linear")
MERGE_DENSITY = 0.5  # kept share of each task vector for ties / dare_linear
MIN_ORACLE_GAIN = 0.2  # capabilities the target can learn: oracle - base accuracy
MIN_SINGLE_GAIN = 0.05  # below this a kept fraction is noise and is not computed
TARGETS = {"m4_keep_fraction": ">= 0.9", "m4_best_peft_merge_keep_fraction": "< m4_keep_fraction"}


@dataclass
class Toolkit:
    """What the suites need from the rest of UMAF, bound to one target (tests pass stand-ins)."""

    target: str
    generate: Callable[[Fingerprint, Path], Path]  # fingerprint, output folder -> PEFT adapter folder
    evaluate: Callable[[str, Path | None], float]  # capability, adapter (None: base) -> accuracy
    fingerprint: Callable[[Any, str], Fingerprint]  # zoo entry, capability -> fingerprint (cached)
    oracles: dict[str, Path] = field(default_factory=dict)  # capability -> oracle LoRA folder
    zoo: list = field(default_factory=list)  # umaf.zoo.ZooEntry of the full zoo
    merge: Callable[[Sequence[Path], str, float, Path], Path] | None = None  # PEFT merge (see peft_merge)
    target_family: str = ""  # the target's model family (sources of it are picked last)
    recorded_gain: dict[str, float] = field(default_factory=dict)  # oracle gain recorded in the library

    def merged(self, adapters: Sequence[Path], combination: str, weight: float, output: Path) -> Path:
        """A PEFT merge of ``adapters``: ``merge`` if set, else :func:`peft_merge` on the target."""
        if self.merge is not None:
            return self.merge(adapters, combination, weight, output)
        return peft_merge(self.target, adapters, combination, weight, output)


def resolve_toolkit(target: str, quick: bool = False) -> Toolkit:
    """The real toolkit (``quick``: the first eval examples only); a UmafError naming the command to run
    for whatever is missing."""
    from umaf.zoo.fingerprints import model_fingerprints, require_default_extractor, require_zoo

    zoo = require_zoo()
    extractor = require_default_extractor()
    try:
        from umaf.adapters.oracles import library
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
    return Toolkit(
        target=target,
        generate=lambda fp, out: generate_adapter(fp, generator, out),
        evaluate=lambda cap, adapter: evaluate(loaded, cap, adapter, limit=limit),
        fingerprint=lambda entry, cap: model_fingerprints(entry, [cap], extractor)[0],
        oracles={e.capability: Path(e.path) for e in entries},
        zoo=list(zoo),
        target_family=loaded.info.family,
        recorded_gain={e.capability: e.gain for e in entries},
    )


def peft_merge(target: str, adapters: Sequence[Path], combination: str, weight: float, output: Path) -> Path:
    """PEFT ``add_weighted_adapter`` of ``adapters`` (equal ``weight`` each) saved as a PEFT folder."""
    from peft import PeftModel

    from umaf.models import load

    base = load(target, device="cpu").model  # only adapter weights are combined here
    model = PeftModel.from_pretrained(base, str(adapters[0]), adapter_name="a0")
    for i, path in enumerate(adapters[1:], start=1):
        model.load_adapter(str(path), adapter_name=f"a{i}")
    names = [f"a{i}" for i in range(len(adapters))]
    density = None if combination == "linear" else MERGE_DENSITY
    torch.manual_seed(0)  # dare_linear drops entries at random
    model.add_weighted_adapter(
        names, [weight] * len(names), "merged", combination_type=combination, density=density
    )
    model.save_pretrained(str(output), selected_adapters=["merged"])
    return output / "merged"  # PEFT saves a non-default adapter in a subfolder named after it


# ------------------------------------------------------------------------------------------- planning


def pick_sources(combo: Sequence[str], zoo: Sequence, target_family: str) -> list | None:
    """One zoo model per capability, trained on it, all of different families (the target's family
    last in preference); the most accurate model of a family first. None if impossible."""
    chosen, used = [], set()
    for cap in combo:
        options = [e for e in zoo if cap in e.trained and e.family not in used]
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


# ---------------------------------------------------------------------------------------- measuring


def reference_accuracies(kit: Toolkit, quick: bool) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """Seen capabilities that zoo models were trained on and whose oracle LoRA teaches the target (gain >=
    MIN_ORACLE_GAIN), largest gain first (4 quick, else 8), with their base and oracle accuracy measured in
    this run. Candidates are pre-ranked by the gain the library recorded when it has one (saves measuring
    every oracle)."""
    readable = {c for e in kit.zoo for c in e.trained}  # a fused source must have learnt its capability
    caps = sorted(c for c in kit.oracles if not is_held_out(c) and c in readable)
    if kit.recorded_gain:
        caps = [c for c in caps if kit.recorded_gain.get(c, 1.0) >= MIN_ORACLE_GAIN]
        caps = sorted(caps, key=lambda c: -kit.recorded_gain.get(c, 1.0))[: 6 if quick else 12]
    base = {c: kit.evaluate(c, None) for c in tqdm(caps, desc="base accuracy", leave=False)}
    oracle = {c: kit.evaluate(c, kit.oracles[c]) for c in tqdm(caps, desc="oracle accuracy", leave=False)}
    learnable = sorted(
        (c for c in caps if oracle[c] - base[c] >= MIN_ORACLE_GAIN), key=lambda c: base[c] - oracle[c]
    )
    return learnable[: 4 if quick else 8], base, oracle


class SingleAdapters:
    """Accuracy of the adapter generated from one (source, capability) fingerprint, computed once."""

    def __init__(self, kit: Toolkit, folder: Path) -> None:
        self.kit, self.folder, self.scores = kit, folder, {}

    def accuracy(self, source: Any, cap: str) -> float:
        """Accuracy on ``cap`` of the adapter generated from ``source``'s fingerprint of it."""
        key = (source.name, cap)
        if key not in self.scores:
            adapter = self.kit.generate(
                self.kit.fingerprint(source, cap), self.folder / f"single-{len(self.scores)}"
            )
            self.scores[key] = self.kit.evaluate(cap, adapter)
        return self.scores[key]


def fused_accuracies(
    kit: Toolkit, fps: list[Fingerprint], combo: Sequence[str], folder: Path
) -> dict[str, dict]:
    """Accuracy on each capability of the adapter generated from the fused fingerprint, per mode."""
    out = {}
    for mode in FUSION_MODES.names():
        if FUSION_MODES.get(mode).uses_gate:
            continue  # a gate answers one query; fusing for several capabilities has none
        fused = fuse(fps, mode=mode)
        adapter = kit.generate(fused, folder / f"fused-{mode}")
        out[f"fused_{mode}"] = {c: kit.evaluate(c, adapter) for c in combo}
        out[f"fused_{mode}"]["norm"] = float(fused.vector.norm())
    return out


def merge_accuracies(
    kit: Toolkit, combo: Sequence[str], folder: Path, weights: Sequence[float]
) -> dict[str, dict]:
    """Accuracy on each capability of each PEFT merge of the oracles; per method the best weight."""
    out = {}
    adapters = [kit.oracles[c] for c in combo]
    for method in MERGES:
        best: dict[str, float] | None = None
        for weight in weights:
            merged = kit.merged(adapters, method, weight, folder / f"merge-{method}-{weight:g}")
            scores = {c: kit.evaluate(c, merged) for c in combo}
            if best is None or _mean(list(scores.values())) > _mean(list(best.values())):
                best = scores
        out[f"peft_{method}"] = best or {}
    return out


def measure_combination(
    kit: Toolkit, combo: Sequence[str], sources: Sequence, refs: dict, singles: SingleAdapters, folder: Path,
    weights: Sequence[float],
) -> dict[str, Any]:  # fmt: skip
    """Every method's accuracy and kept fraction on each capability of one combination."""
    base, oracle = refs["base"], refs["oracle"]
    single = {c: singles.accuracy(s, c) for c, s in zip(combo, sources, strict=True)}
    fps = [kit.fingerprint(s, c) for c, s in zip(combo, sources, strict=True)]
    accuracy = {**fused_accuracies(kit, fps, combo, folder), **merge_accuracies(kit, combo, folder, weights)}
    norms = {m: scores.pop("norm") for m, scores in accuracy.items() if "norm" in scores}
    kept: dict[str, dict[str, float | None]] = {}
    for method, scores in accuracy.items():
        reference = single if method.startswith("fused_") else oracle
        kept[method] = {c: kept_fraction(scores[c], base[c], reference[c]) for c in combo}
    worst = {m: min((v for v in k.values() if v is not None), default=None) for m, k in kept.items()}
    return {
        "capabilities": list(combo), "sources": [s.model_id for s in sources],
        "base": {c: base[c] for c in combo}, "oracle": {c: oracle[c] for c in combo},
        "single_generated": single, "accuracy": accuracy, "kept": kept, "worst_kept": worst,
        "fused_norm": norms,
    }  # fmt: skip


def summarise(records: Sequence[dict]) -> dict[str, Any]:
    """Top-level M4 figures: per method the mean (over combinations) of the worst kept fraction."""
    methods = sorted({m for r in records for m in r["worst_kept"]})
    out: dict[str, Any] = {}
    for method in methods:
        worst = [r["worst_kept"][method] for r in records if r["worst_kept"][method] is not None]
        means = [_mean(list(r["accuracy"][method].values())) for r in records]
        out[f"m4_keep_fraction_{method}"] = _mean(worst)
        out[f"m4_mean_accuracy_{method}"] = _mean(means)
        if method.startswith("fused_"):
            out[f"m4_fused_norm_{method.removeprefix('fused_')}"] = _mean(
                [r["fused_norm"][method] for r in records]
            )
    for tag in ("base", "oracle", "single_generated"):
        out[f"m4_mean_accuracy_{tag}"] = _mean([_mean(list(r[tag].values())) for r in records])
    fused = {m: out[f"m4_keep_fraction_{m}"] for m in methods if m.startswith("fused_")}
    merges = {m: out[f"m4_keep_fraction_{m}"] for m in methods if m.startswith("peft_")}
    best_fused = max(fused, key=lambda m: _nan_low(fused[m]), default=None)
    best_merge = max(merges, key=lambda m: _nan_low(merges[m]), default=None)
    out["m4_mode"] = best_fused
    out["m4_keep_fraction"] = fused.get(best_fused, float("nan")) if best_fused else float("nan")
    out["m4_best_peft_merge"] = best_merge
    out["m4_best_peft_merge_keep_fraction"] = merges[best_merge] if best_merge else float("nan")
    return out


def _nan_low(x: float) -> float:
    return float("-inf") if x != x else x


def run_fusion(kit: Toolkit, quick: bool) -> dict[str, Any]:
    """M4 over the planned combinations, with the per-combination records."""
    caps, base, oracle = reference_accuracies(kit, quick)
    if len(caps) < 3:
        raise UmafError(
            f"only {len(caps)} capabilities gain >= {MIN_ORACLE_GAIN} from an oracle on {kit.target}"
        )
    weights = (1.0,) if quick else (1.0, 0.5)
    records = []
    with tempfile.TemporaryDirectory(prefix="umaf-bench-fusion-") as tmp:
        singles = SingleAdapters(kit, Path(tmp))
        for i, combo in enumerate(tqdm(plan_combinations(caps, quick), desc="fusion combinations")):
            sources = pick_sources(combo, kit.zoo, kit.target_family)
            if sources is None:
                continue
            folder = Path(tmp) / f"combo-{i}"
            refs = {"base": base, "oracle": oracle}
            records.append(measure_combination(kit, combo, sources, refs, singles, folder, weights))
    if not records:
        raise UmafError("no capability combination has trained zoo sources of different families")
    return {
        **summarise(records),
        "m4_capabilities": caps,
        "m4_merge_weights": list(weights),
        "combinations": records,
    }


@SUITES.register("fusion")
def bench_fusion(quick: bool, target: str = DEFAULT_TARGET) -> dict[str, Any]:
    """M4 on ``target``: fused-fingerprint adapters vs single adapters, PEFT merges and base."""
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
