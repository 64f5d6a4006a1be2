"""Transfer suite (M3 transfer, M6 cost, M7 harm): does a generated adapter give the target the capability?

Every capability of the plan is measured on its full eval split, in one run, as:

- ``base`` and ``oracle`` (a PEFT LoRA trained on the capability: the yardstick, also for held-out ones);
- ``generated`` from each source's fingerprint. *Out-of-sample* sources are models the generator never
  read in training (its ``val_sources``: another zoo model of a trained family, and a model of the
  held-out family); *in-sample* ones (MiniLM) are reported apart;
- two baselines a generator has to beat: ``retrieval`` (the adapter of the training capability whose
  fingerprint, read from the same source, is nearest: what the generator learnt for the closest known
  task) and ``multitask`` (one LoRA trained on the train splits of all the generator's capabilities, on
  at least as many examples as the generator saw end to end: :func:`multitask_steps`);
- controls that can fail: ``wrong`` (the adapter of *another* capability's real fingerprint, scored on
  this one), ``untrained`` (fingerprints from sources that lack the capability: a randomly initialised
  model, and a zoo model of the same family and size not trained on it), and ``random`` (a random unit
  vector, which the generator is taught to map to no change: reported, not a target).

Adapters are generated from every fingerprint whatever the source can do (the generator alone). What a
user gets by default is then read off each source's measured competence: where
:func:`umaf.competence.lacking_sources` says the source lacks the capability, ``umaf generate`` refuses
and the target stays at ``base``. ``recovery_untrained_source`` is that default (the generator alone:
``recovery_untrained_source_ungated``), and ``recovery_seen_qualified_sources`` is the default on the
seen capabilities read by out-of-sample zoo sources that learnt them (eval accuracy at least
:data:`umaf.competence.QUALIFY`, measured apart from the probe examples competence is read on).

``recovery = (x - base) / (oracle - base)`` per capability; aggregates are means over capabilities whose
oracle gains at least :data:`MIN_ORACLE_GAIN`, split into seen capabilities (in the generator's
training world), held-out instances of trained families, and held-out named capabilities
(:func:`umaf.capabilities.is_held_out` decides; none of them is in any UMAF training).
"""

from __future__ import annotations

import functools
import math
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
from umaf.capabilities import get_capability, is_held_out
from umaf.competence import fingerprint_competence, lacking_sources
from umaf.config import FINGERPRINT_DIM, HELD_OUT_CAPABILITIES, HELD_OUT_INSTANCES
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint

#: Oracles that gain less than this over base are left out of every aggregate.
MIN_ORACLE_GAIN = 0.1
#: Seen capabilities measured (those in the generator's training world), named first then world ones.
SEEN_CAPABILITIES: tuple[str, ...] = (
    "plural", "first_letter", "antonym", "past_tense", "sentiment", "uppercase", "vowel_start", "compare",
    "successor", "length", "synonym", "country_language",
)
#: Held-out instances measured (of :data:`umaf.config.HELD_OUT_INSTANCES`; quick mode keeps the first two).
HELDOUT_INSTANCES: tuple[str, ...] = ("add_k:10", "prefix:3", "suffix:2", "kth_letter:2")
#: Held-out named capabilities a quick run measures (of :data:`umaf.config.HELD_OUT_CAPABILITIES`): ones
#: whose SmolLM2 oracle gains at least :data:`MIN_ORACLE_GAIN` on the quick eval examples (`subtract`,
#: `sort_letters`, `capital` and `acronym` do not, so a quick run of them measures nothing).
QUICK_HELDOUT: tuple[str, ...] = ("topic", "is_animal", "city_country")
#: A randomly initialised model: a source that has no capability at all.
RANDOM_INIT_SOURCE = ("gpt2", "xs", 1)
#: The generator's multi-task baseline LoRA trains at least this many steps per 100 capabilities (at least
#: one oracle's budget), and at least as many train examples as the generator's end-to-end phase saw.
MULTITASK_STEPS_PER_100 = 200


def multitask_steps(generator: Any, n_capabilities: int, batch_size: int) -> int:
    """Steps of the multi-task baseline: :data:`MULTITASK_STEPS_PER_100` per 100 capabilities (100 at
    least), raised so that it sees as many train examples as ``generator`` saw end to end (equal budget;
    read from its training report, as a saved generator keeps only its architecture in its config)."""
    trained = generator.training_report.get("config", {})
    e2e_examples = (trained.get("e2e_steps", 0) * trained.get("e2e_caps_per_step", 0)
                    * trained.get("e2e_examples_per_cap", 0))
    return max(100, MULTITASK_STEPS_PER_100 * n_capabilities // 100, math.ceil(e2e_examples / batch_size))


def multitask_config(steps: int) -> dict[str, Any]:
    """Overrides of the target's oracle config for the multi-task baseline (no replay loss: like the
    bench's oracles, it is scored on its capabilities)."""
    return {"steps": steps, "replay": 0.0}
TARGETS = {
    "n_train_capabilities": ">= 200",
    "recovery_seen": ">= 0.9",
    "recovery_heldout_instances": ">= 0.7",
    "recovery_heldout": ">= 0.5, and >= 0.15 above the better baseline",
    "recovery_wrong_capability": "<= 0.1",
    "recovery_untrained_source": "<= 0.3",
    "recovery_seen_qualified_sources": ">= 0.9",
    "gen_seconds": "<= 1.0",
    "perplexity_rise": "<= 0.05",
}


@dataclass
class TransferPlan:
    """What one run measures: capabilities in three groups and the sources to read them from."""

    target: str
    seen: list[str]
    heldout_instances: list[str]
    heldout: list[str]
    sources: list[str]  # out-of-sample: never read in generator training
    in_sample: list[str]  # read in generator training (on training capabilities)
    world: list[str]  # the generator's training capabilities (retrieval gallery, multi-task LoRA)
    untrained: dict[str, list[str]] = field(default_factory=dict)  # capability -> zoo models lacking it
    qualified: dict[str, list[str]] = field(default_factory=dict)  # capability -> sources that learnt it
    eval_limit: int | None = None
    user: list[str] = field(default_factory=list)  # a user's JSONL files (paths), measured as held out

    @property
    def capabilities(self) -> list[str]:
        return self.seen + self.heldout_instances + self.heldout + self.user

    def group(self, capability: str) -> str:
        if capability in self.user:
            return "user"
        if capability in self.heldout:
            return "heldout"
        return "heldout_instances" if capability in self.heldout_instances else "seen"


# ------------------------------------------------------------------------------------------ planning


def _zoo_untrained(capability: str, sources: Sequence[str]) -> list[str]:
    """Zoo models of the same family and size as an out-of-sample source that were not trained on
    ``capability`` while that source was (a model that lacks the capability, all else equal)."""
    from umaf.zoo import list_zoo

    zoo = list_zoo(quick=True) + list_zoo()
    by_id = {e.model_id: e for e in zoo}
    out = []
    for source in sources:
        entry = by_id.get(source)
        if entry is None or capability not in entry.trained:
            continue
        out += [e.model_id for e in zoo if e.family == entry.family and e.size == entry.size
                and capability not in e.trained and e.model_id not in out]
    return out[:1]


def _zoo_qualified(capability: str, sources: Sequence[str]) -> list[str]:
    """The zoo models among ``sources`` that learnt ``capability``: trained on it and at least
    :data:`umaf.competence.QUALIFY` accurate on its eval split (:attr:`umaf.zoo.ZooEntry.qualified`)."""
    from umaf.zoo import list_zoo

    learnt = {e.model_id for e in list_zoo(quick=True) + list_zoo() if capability in e.qualified}
    return [s for s in sources if s in learnt]


def plan_transfer(target: str, quick: bool, generator: Any, tasks: Sequence[str] = ()) -> TransferPlan:
    """Capabilities and sources for ``target`` from what ``generator`` was trained on (its report);
    ``tasks`` are a user's JSONL files, measured as a group of their own."""
    report = generator.training_report or {}
    world = list(report.get("e2e_capabilities") or report.get("capabilities") or [])
    if not world:
        raise UmafError("the generator records no training capabilities; retrain it "
                        "with `umaf train generator`")
    trained_sources = set(report.get("sources", []))
    sources = [s for s in report.get("val_sources", []) if s not in trained_sources]
    if not sources:
        raise UmafError("the generator records no held-apart sources to read out-of-sample fingerprints from")
    seen = [c for c in SEEN_CAPABILITIES if c in world]
    instances = [c for c in HELDOUT_INSTANCES if c in HELD_OUT_INSTANCES]
    heldout = list(HELD_OUT_CAPABILITIES)
    if quick:
        seen, instances = seen[:2], instances[:2]
        heldout = [c for c in heldout if c in QUICK_HELDOUT]
    from umaf.generator.data import REAL_SOURCES  # real models (besides the zoo) a generator trains on

    in_sample = [s for s in REAL_SOURCES if s in trained_sources]
    plan = TransferPlan(target, seen, instances, heldout, sources, in_sample, world,
                        eval_limit=eval_limit(quick))
    plan.user = [str(t) for t in tasks if get_capability(str(t)).kind == "custom"]  # reads and checks each
    plan.untrained = {c: _zoo_untrained(c, sources) for c in plan.capabilities}
    plan.qualified = {c: _zoo_qualified(c, sources) for c in plan.capabilities}
    return plan


# ---------------------------------------------------------------------------------------- measuring


def read_fingerprints(plan: TransferPlan, extractor: Any) -> dict[tuple[str, str], Fingerprint]:
    """Fingerprint of every (source, capability) pair the run reads: plan capabilities from every source,
    the training world from the first out-of-sample source (the retrieval gallery), and the random-init
    model's (key ``"random-init"``)."""
    from umaf.extractor import fingerprint
    from umaf.extractor.cache import cached_fingerprints
    from umaf.models import build_tiny

    wanted: dict[str, list[str]] = {s: list(plan.capabilities) for s in plan.sources + plan.in_sample}
    wanted[plan.sources[0]] += [c for c in plan.world if c not in plan.capabilities]
    for cap, models in plan.untrained.items():
        for model in models:
            wanted.setdefault(model, []).append(cap)
    fps: dict[tuple[str, str], Fingerprint] = {}
    for source, caps in tqdm(wanted.items(), desc="source fingerprints", unit="model"):
        for cap, fp in zip(caps, cached_fingerprints(source, caps, extractor)[0], strict=True):
            fps[source, cap] = fp
    family, size, seed = RANDOM_INIT_SOURCE
    random_init = build_tiny(family, size, seed=seed)
    for cap in plan.capabilities:
        fps["random-init", cap] = fingerprint(random_init, cap, extractor, progress=False)
    return fps


def random_fingerprint(fp: Fingerprint, seed: int) -> Fingerprint:
    """A random unit vector in place of ``fp``'s, with the same layer profile and metadata."""
    gen = torch.Generator().manual_seed(seed)
    vector = torch.randn(FINGERPRINT_DIM, generator=gen)
    return Fingerprint(vector / vector.norm(), fp.layer_profile, dict(fp.meta))


def nearest_training_capability(query: Fingerprint, gallery: dict[str, Fingerprint], exclude: str) -> str:
    """The gallery capability (other than ``exclude``) whose fingerprint is nearest to ``query`` (cosine)."""
    names = [c for c in gallery if c != exclude]
    vectors = torch.stack([gallery[c].vector for c in names])
    sims = torch.nn.functional.cosine_similarity(vectors, query.vector[None], dim=-1)
    return names[int(sims.argmax())]


def recovery(value: float, base: float, oracle: float) -> float | None:
    """Share of the oracle's gain an adapter recovers; None when the oracle gains nothing."""
    gain = oracle - base
    return None if gain <= 0 else (value - base) / gain


@dataclass
class Measurer:
    """Everything one capability's measurement needs: the loaded target and the generator API."""

    loaded: Any
    generator: Any
    generate: Callable[..., Path]  # (fp, generator, output) -> PEFT folder
    workdir: Path
    eval_limit: int | None = None
    base_perplexity: float = float("nan")
    gen_seconds: list[float] = field(default_factory=list)

    def accuracy(self, cap: str, adapter: Path | None = None) -> float:
        from umaf.evaluation import evaluate

        return evaluate(self.loaded, cap, adapter, limit=self.eval_limit)

    def adapter(self, fp: Fingerprint, name: str) -> Path:
        out = self.workdir / name
        start = time.perf_counter()
        self.generate(fp, self.generator, out)
        self.gen_seconds.append(time.perf_counter() - start)
        return out

    def generated_accuracy(self, cap: str, fp: Fingerprint, name: str) -> float:
        return self.accuracy(cap, self.adapter(fp, name))

    def perplexity(self, adapter: Path | None) -> float:
        from umaf.evaluation import perplexity

        return perplexity(self.loaded, adapter)


def adapter_tag(index: int, capability: str) -> str:
    """Folder-name stem of the adapters a run writes for its ``index``-th capability (a user's file is
    named by its capability name, never by its path)."""
    from umaf.io import slug

    return f"{index:02d}-{slug(get_capability(capability).name)}"


def measure_capability(m: Measurer, plan: TransferPlan, cap: str, fps: dict[tuple[str, str], Fingerprint],
                       oracle: Any, multitask: Path, seed: int) -> dict[str, Any]:
    """One row: base, oracle, generated per source, the two baselines and the three controls; every
    adapter is written under the run's work folder, named by :func:`adapter_tag`."""
    info, tag = get_capability(cap), adapter_tag(seed, cap)
    row: dict[str, Any] = {"capability": cap, "group": plan.group(cap), "kind": info.kind,
                           "oracle_train_seconds": oracle.train_seconds,
                           "base": m.accuracy(cap), "oracle": m.accuracy(cap, oracle.path)}
    row["oracle_gain"] = row["oracle"] - row["base"]
    row["included"] = row["oracle_gain"] >= MIN_ORACLE_GAIN
    main = plan.sources[0]
    row["generated"] = {s: m.generated_accuracy(cap, fps[s, cap], f"{tag}-{i}")
                        for i, s in enumerate(plan.sources + plan.in_sample)}
    gallery = {c: fps[main, c] for c in plan.world}
    row["retrieved"] = nearest_training_capability(fps[main, cap], gallery, exclude=cap)
    row["retrieval"] = m.generated_accuracy(cap, gallery[row["retrieved"]], f"{tag}-retrieval")
    row["multitask"] = m.accuracy(cap, multitask)
    others = plan.capabilities
    row["wrong_from"] = others[(others.index(cap) + 1) % len(others)]
    row["wrong"] = m.generated_accuracy(cap, fps[main, row["wrong_from"]], f"{tag}-wrong")
    untrained = ["random-init"] + plan.untrained.get(cap, [])
    row["untrained"] = {s: m.generated_accuracy(cap, fps[s, cap], f"{tag}-untrained-{i}")
                        for i, s in enumerate(untrained)}
    row["random"] = m.generated_accuracy(cap, random_fingerprint(fps[main, cap], seed), f"{tag}-random")
    row["competence"] = {s: fingerprint_competence(fps[s, cap]) for s in [*row["generated"], *untrained]}
    row["refused"] = [s for s in row["competence"] if lacking_sources(fps[s, cap])]  # by `umaf generate`
    rec = lambda v: recovery(v, row["base"], row["oracle"])  # noqa: E731
    by_default = lambda s, v: rec(row["base"] if s in row["refused"] else v)  # noqa: E731
    row["recovery"] = {s: rec(v) for s, v in row["generated"].items()}
    row["recovery_out_of_sample"] = _mean([row["recovery"][s] for s in plan.sources])
    row["qualified"] = plan.qualified.get(cap, [])
    row["recovery_qualified"] = {s: by_default(s, row["generated"][s]) for s in row["qualified"]}
    for key in ("retrieval", "multitask", "wrong", "random"):
        row[f"recovery_{key}"] = rec(row[key])
    row["recovery_untrained_ungated"] = _mean([rec(v) for v in row["untrained"].values()])
    row["recovery_untrained"] = _mean([by_default(s, v) for s, v in row["untrained"].items()])
    if m.base_perplexity == m.base_perplexity:  # not NaN: perplexity is measured in this run
        row["perplexity_generated"] = m.perplexity(m.workdir / f"{tag}-0")
        row["perplexity_oracle"] = m.perplexity(oracle.path)
    return row


# --------------------------------------------------------------------------------------- aggregating


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.mean(kept) if kept else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _perplexity_summary(rows: Sequence[dict], base: float) -> dict[str, float | None]:
    gen = [r["perplexity_generated"] for r in rows if r["included"] and "perplexity_generated" in r]
    ora = [r["perplexity_oracle"] for r in rows if r["included"] and "perplexity_oracle" in r]
    rise = lambda ppl: None if not ppl or base != base else statistics.median(ppl) / base - 1  # noqa: E731
    return {"perplexity_base": None if base != base else base, "perplexity_generated": _median(gen),
            "perplexity_oracle": _median(ora), "perplexity_rise": rise(gen),
            "perplexity_rise_oracle": rise(ora)}


def aggregate(rows: Sequence[dict], plan: TransferPlan, base_perplexity: float = float("nan"),
              gen_seconds: Sequence[float] = ()) -> dict:
    """Top-level figures over the included rows (oracle gain >= :data:`MIN_ORACLE_GAIN`)."""
    used = [r for r in rows if r["included"]]
    names = ("seen", "heldout_instances", "heldout") + (("user",) if plan.user else ())
    groups = {g: [r for r in used if r["group"] == g] for g in names}
    out: dict[str, Any] = {"n_train_capabilities": len(plan.world)}
    for group, grows in groups.items():
        out[f"recovery_{group}"] = _mean([r["recovery_out_of_sample"] for r in grows])
        for baseline in ("retrieval", "multitask"):
            out[f"recovery_baseline_{baseline}_{group}"] = _mean([r[f"recovery_{baseline}"] for r in grows])
        out[f"recovery_{group}_in_sample"] = _mean([r["recovery"][s] for r in grows for s in plan.in_sample])
    out["recovery_seen_qualified_sources"] = _mean(
        [v for r in groups["seen"] for v in r["recovery_qualified"].values()])
    out["n_qualified_pairs"] = sum(len(r["recovery_qualified"]) for r in groups["seen"])
    controls = {"wrong_capability": "wrong", "untrained_source": "untrained",
                "untrained_source_ungated": "untrained_ungated", "random_control": "random"}
    for name, key in controls.items():
        out[f"recovery_{name}"] = _mean([r[f"recovery_{key}"] for r in used])
    out["refused"] = {  # what `umaf generate` refuses by default: pairs that learnt it / pairs that lack it
        "qualified": sum(s in r["refused"] for r in groups["seen"] for s in r["recovery_qualified"]),
        "untrained": sum(s in r["refused"] for r in used for s in r["untrained"]),
        "untrained_pairs": sum(len(r["untrained"]) for r in used),
    }
    oracle_seconds = [r["oracle_train_seconds"] for r in rows]
    out.update({
        "gen_seconds": _median(list(gen_seconds)),
        "oracle_train_seconds": _median(oracle_seconds),
        "n_included": {g: len(v) for g, v in groups.items()},
        "excluded": [r["capability"] for r in rows if not r["included"]],
        "min_oracle_gain": MIN_ORACLE_GAIN,
        "sources_out_of_sample": plan.sources, "sources_in_sample": plan.in_sample,
    })
    for key in ("base", "oracle", "multitask", "retrieval", "wrong", "random"):
        out[f"accuracy_{key}"] = _mean([r[key] for r in used])
    if out["gen_seconds"] and out["oracle_train_seconds"]:
        out["speedup_vs_oracle"] = out["oracle_train_seconds"] / out["gen_seconds"]
    return {**out, **_perplexity_summary(rows, base_perplexity)}


# ------------------------------------------------------------------------------------------- running


def ensure_oracle(loaded: Any, target: str, capability: str, progress: bool = True,
                  config: dict[str, Any] | None = None) -> Any:
    """The oracle of ``capability`` on ``target`` (the cached or shipped one, whatever config made it),
    trained into the cache if there is none (with the target's default oracle config, ``config``
    overriding fields).

    A user's file gets its own folder, named by its contents, outside the oracle library (so a file
    called like a built-in never reads the built-in's oracle, and no generator trains on it)."""
    from umaf.adapters.oracles import OracleEntry, find_oracle, oracle_dir, read_oracle_meta, train_oracle
    from umaf.config import cache_dir
    from umaf.io import slug

    cap = get_capability(capability)
    if cap.kind == "custom":
        path = cache_dir() / "baselines" / slug(target) / f"user-{slug(cap.name)}-{cap.probe_hash()}"
    else:
        path = find_oracle(target, cap.name) or oracle_dir(target, cap.name)
    if read_oracle_meta(path) is None:
        train_oracle(loaded, cap, config, output=path if cap.kind == "custom" else None, overwrite=True,
                     progress=progress)
    return OracleEntry.from_dir(path)


def run_transfer(plan: TransferPlan, extractor: Any, generator: Any, generate: Callable[..., Path], *,
                 perplexity: bool = True, progress: bool = True) -> dict[str, Any]:
    """Measure every capability of ``plan`` (oracles and the multi-task LoRA are trained first where the
    cache lacks them)."""
    from umaf.adapters.oracles import default_config, train_multitask
    from umaf.models import load

    if any(is_held_out(c) for c in plan.world):
        raise UmafError("the generator's training world holds a held-out capability")
    fps = read_fingerprints(plan, extractor)
    loaded = load(plan.target)
    steps = multitask_steps(generator, len(plan.world), default_config(loaded.info).batch_size)
    multitask, multitask_seconds = train_multitask(loaded, plan.world, multitask_config(steps), progress)
    rows = []
    with tempfile.TemporaryDirectory(prefix="umaf-transfer-") as tmp:
        m = Measurer(loaded, generator, generate, Path(tmp), plan.eval_limit)
        if perplexity:
            m.base_perplexity = m.perplexity(None)
        for seed, cap in enumerate(tqdm(plan.capabilities, desc="transfer", disable=not progress)):
            oracle = ensure_oracle(loaded, plan.target, cap, progress)
            rows.append(measure_capability(m, plan, cap, fps, oracle, multitask, seed))
    results = aggregate(rows, plan, m.base_perplexity, m.gen_seconds)
    return {"target": plan.target, **results, "multitask_path": str(multitask),
            "multitask_train_seconds": multitask_seconds,
            "multitask_steps": steps, "capabilities": rows, "targets": TARGETS}


@SUITES.register("transfer")
def bench_transfer(quick: bool, target: str = "smollm2", tasks: Sequence[str] = ()) -> dict[str, Any]:
    """M3 transfer against retrieval and multi-task baselines, generation vs oracle training time and
    perplexity harm for one ``target``; ``tasks`` (a user's JSONL files) are measured as well."""
    from umaf.extractor import default_extractor

    try:
        from umaf.generator import default_generator, generate_adapter
    except ImportError as err:
        raise UmafError(f"the transfer suite needs umaf.generator ({err})") from None
    generator = default_generator(target)  # a UmafError naming `umaf train generator` when missing
    plan = plan_transfer(target, quick, generator, tasks)
    # every adapter is generated (the generator alone); the competence check is applied in the figures
    generate = functools.partial(generate_adapter, min_competence=None)
    return run_transfer(plan, default_extractor(), generator, generate)


__all__ = ["MIN_ORACLE_GAIN", "TransferPlan", "adapter_tag", "aggregate", "bench_transfer", "multitask_steps",
           "nearest_training_capability", "plan_transfer", "random_fingerprint", "recovery", "run_transfer"]
