"""Fingerprint suite: cross-architecture retrieval (M1), competence (M2) and capture cost (M6).

Every source model is read on two disjoint halves of each capability's probe split: part 0 makes the
queries, part 1 the gallery, so retrieval can never succeed by matching identical inputs. M1's baselines
are measured on the same readings: linear CKA of the last block's activations (across the halves, and
``m1_cka_paired`` on the same half, i.e. the same texts on both sides), a width-dependent random
projection, the processor's features without the trained network (``m1_raw_*``: what the extractor's
training adds over its untrained path), and the cosine relative representation that the ridge basis
replaced (``m1_cosine_*``). The competence
of a (source, capability) pair is the mean of what the two half fingerprints record
(:func:`umaf.competence.measure_competence` on the probe examples); M2 sets it against accuracy measured
on the eval split with the same plain prompts, and against the extractor's competence head as a baseline.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.stats import spearmanr
from torch import Tensor
from tqdm.auto import tqdm

from umaf.bench.registry import SUITES, eval_limit
from umaf.capabilities import get_capability, is_held_out, is_held_out_model_family, list_capabilities
from umaf.capture import capture_activations
from umaf.competence import QUALIFY, has_lm_head, measure_competence
from umaf.errors import UmafError
from umaf.extractor import CapabilityExtractor, ExtractorConfig, default_extractor
from umaf.extractor.fingerprinting import anchor_activations, capture_channels, model_features
from umaf.extractor.processor import ProcessedFeatures, anchor_texts, layer_plan, pool_features, process
from umaf.models import LoadedModel, load
from umaf.similarity import SIMILARITIES

REAL_MODELS = ("minilm", "smollm2")
#: ``Source.family`` of the embedded real models (zoo sources carry their model family).
REAL = "real"
TARGETS = {
    "m1_top1_heldout_family": ">= 0.9; above raw by >= 0.2",
    "m1_top1_heldout_capability": ">= 0.8; above raw by >= 0.2",
    "m1_top1_real_models": ">= 0.8; above raw by >= 0.2",
    "m2_spearman": ">= 0.8",
    "m2_auc": ">= 0.95",
    "m2_pairs": ">= 50",
    "zoo_pairs_qualified": ">= 50",
    "extract_overhead": "<= 0.05",
    "capture_vs_forward_all": ">= 1.0",
    "capture_vs_forward_half": ">= 1.5",
}


@dataclass
class Reading:
    """What one (source, capability, part) gives: the fingerprint, its competence, the raw last-layer set,
    the extractor head's score (the M2 baseline) and the processor's features pooled by
    :func:`pool_features` (the raw-features baseline of M1)."""

    fingerprint: Tensor  # [512]
    competence: float | None  # as fingerprint(part=...) records it; None: the model offers no signal
    last_layer: Tensor  # [probes, width]
    head: float = math.nan
    raw: Tensor | None = None  # [depth_bins * channels * anchors]
    cosine: Tensor | None = None  # the same with the cosine basis on the first 64 anchors


@dataclass
class Source:
    """A model read by the benchmark, with its zoo record when it has one; ``accuracy`` is on the eval
    split with plain prompts (as the fingerprint reads), measured here for real models with an LM head;
    ``qualified``: the trained capabilities it really learnt (:attr:`umaf.zoo.ZooEntry.qualified`)."""

    name: str
    family: str
    size: str = ""
    trained: tuple[str, ...] = ()
    accuracy: dict[str, float] = field(default_factory=dict)
    qualified: tuple[str, ...] = ()


def read_source(
    loaded: LoadedModel, capabilities: Sequence[str], extractor: CapabilityExtractor
) -> dict[tuple[str, int], Reading]:
    """Read every capability on both probe halves; one capture (and one pass of the processor) serves the
    fingerprint and the baselines, and the competence is measured on the same examples, as
    :func:`umaf.extractor.fingerprint` does."""
    readings = {}
    device = next(extractor.parameters()).device
    for name in capabilities:
        cap = get_capability(name)
        for part in (0, 1):
            examples = cap.probe_examples(part=part)
            texts = [ex.text() for ex in examples]
            processed, cosine = _features_and_cosine_baseline(loaded, texts, extractor.config)
            vector = extractor.encode(processed.features)  # [512]
            with torch.no_grad():
                head = float(extractor.competence(vector[None].to(device))[0])
            competence = measure_competence(loaded, cap, examples, limit=None).score
            last = processed.activations[-1]  # [probes, width]
            readings[name, part] = Reading(
                vector, competence, last, head, pool_features(processed.features), pool_features(cosine)
            )
    return readings


#: The relative representation of the first extractors (cosine to each of the first 64 anchors, or all
#: of a smaller extractor's), the untrained baseline that the ridge basis replaced: ``m1_cosine_*``.
COSINE_BASELINE: dict[str, Any] = {"anchor_basis": "cosine", "n_anchors": 64}


def _features_and_cosine_baseline(
    loaded: LoadedModel, texts: list[str], config: ExtractorConfig
) -> tuple[ProcessedFeatures, Tensor]:
    """One capture serves both: the extractor's processed features, and the features of
    :data:`COSINE_BASELINE` (its other settings kept; its anchors are the first of the extractor's)."""
    processed = model_features(loaded, texts, config, progress=False)
    n_anchors = min(COSINE_BASELINE["n_anchors"], config.n_anchors)  # a small test extractor has fewer
    baseline = dataclasses.replace(config, **{**COSINE_BASELINE, "n_anchors": n_anchors})
    layers, weights = layer_plan(loaded.info.n_layers, config.depth_bins)
    anchors = anchor_activations(loaded, layers, config)[..., : baseline.n_anchors, :]  # cached per model
    prompts = (processed.prompt_activations, anchors[1]) if config.delta else (None, None)
    return processed, process(processed.activations, anchors[0], weights, baseline, *prompts).features


def random_projection(x: Tensor, dim: int = 512, seed: int = 0) -> Tensor:
    """Project ``x [width]`` with a fixed Gaussian matrix that depends only on the width and ``seed``."""
    gen = torch.Generator().manual_seed(seed * 100_003 + x.shape[-1])
    return x @ torch.randn(x.shape[-1], dim, generator=gen)


Scorer = Callable[[Reading, Reading], float]
SCORERS: dict[str, Scorer] = {
    "umaf": lambda q, g: SIMILARITIES.get("cosine")(q.fingerprint, g.fingerprint),
    "cka": lambda q, g: _cka(q.last_layer, g.last_layer),
    "randproj": lambda q, g: SIMILARITIES.get("cosine")(
        random_projection(q.last_layer.mean(0)), random_projection(g.last_layer.mean(0))
    ),
    "raw": lambda q, g: SIMILARITIES.get("cosine")(q.raw, g.raw),
    "cosine": lambda q, g: SIMILARITIES.get("cosine")(q.cosine, g.cosine),
}
#: Result-key prefix of each scorer's figures (``<prefix>_<setup>``).
PREFIXES = {"umaf": "m1_top1", "cka": "m1_cka", "randproj": "m1_randproj", "raw": "m1_raw",
            "cosine": "m1_cosine"}  # fmt: skip


def _cka(x: Tensor, y: Tensor) -> float:
    n = min(len(x), len(y))  # the halves can differ by one probe
    return SIMILARITIES.get("cka")(x[:n], y[:n])


def retrieval_top1(
    readings: dict[str, dict[tuple[str, int], Reading]],
    families: dict[str, str],
    queries: Sequence[str],
    galleries: Sequence[str],
    query_caps: Sequence[str],
    gallery_caps: Sequence[str],
    scorer: Scorer,
    parts: tuple[int, int] = (0, 1),
) -> float:
    """Top-1: query (source q, capability c, half ``parts[0]``) vs gallery (source g of another family,
    half ``parts[1]``); the default, disjoint halves, never lets identical inputs match."""
    hits = []
    qpart, gpart = parts
    for q in queries:
        for g in galleries:
            if families[q] == families[g]:
                continue
            for c in query_caps:
                scores = [scorer(readings[q][c, qpart], readings[g][c2, gpart]) for c2 in gallery_caps]
                hits.append(gallery_caps[max(range(len(scores)), key=scores.__getitem__)] == c)
    if not hits:
        raise UmafError(
            "the fingerprint benchmark found no query and gallery models of different families; build a "
            "zoo with several families (`umaf zoo build`, or `umaf zoo build --quick`)"
        )
    return sum(hits) / len(hits)


def within_group_auc(pairs: Sequence[tuple[str, str, float, bool]]) -> float:
    """AUC of the score separating trained from untrained models of one (family-size, capability) group.

    ``pairs`` holds ``(group, capability, score, trained)``; only pairs in the same group and capability
    are compared, so family and size cannot explain the separation.
    """
    wins = total = 0.0
    groups: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for group, cap, score, trained in pairs:
        groups.setdefault((group, cap), []).append((score, trained))
    for members in groups.values():
        pos = [s for s, t in members if t]
        neg = [s for s, t in members if not t]
        for p in pos:
            for n in neg:
                wins += 1.0 if p > n else 0.5 if p == n else 0.0
                total += 1
    return wins / total if total else float("nan")


def _sources(quick: bool) -> list[Source]:
    from umaf.zoo import build_zoo, list_zoo, zoo_specs
    from umaf.zoo.build import missing_models

    build_zoo(specs=missing_models(quick=quick))  # the shipped quick zoo is used as it is
    names = {spec.name for spec in zoo_specs(quick=quick)}
    zoo = [e for e in list_zoo(quick=quick) if e.name in names]
    sources = [Source(f"zoo:{e.name}", e.family, e.size, tuple(e.trained),
                      dict(e.accuracy), e.qualified)
               for e in zoo]  # fmt: skip
    return sources + [Source(name, REAL) for name in REAL_MODELS]


def bench_capabilities(quick: bool) -> list[str]:
    """All named capabilities; ``quick``: every held-out one plus the first 12 others (16 in all)."""
    names = list_capabilities()
    if not quick:
        return names
    seen = [c for c in names if not is_held_out(c)]
    return [c for c in names if is_held_out(c)] + seen[:12]


def read_sources(
    sources: Sequence[Source], caps: Sequence[str], extractor: CapabilityExtractor, quick: bool
) -> tuple[dict[str, dict[tuple[str, int], Reading]], dict[str, str]]:
    """:func:`read_source` for every source, and each one's model family; a real model with an LM head
    also gets its eval accuracy (zoo accuracies come with the zoo)."""
    readings, families = {}, {}
    for src in tqdm(sources, desc="reading sources", unit="model"):
        loaded = load(src.name)
        families[src.name] = loaded.info.family
        readings[src.name] = read_source(loaded, caps, extractor)
        if src.family == REAL and has_lm_head(loaded.model):
            from umaf.answers import evaluate

            src.accuracy = evaluate(loaded, caps, split="eval", limit=eval_limit(quick))
        del loaded
    return readings, families


def real_model_retrieval(
    readings: dict[str, dict[tuple[str, int], Reading]], families: dict[str, str], caps: Sequence[str]
) -> dict[str, float]:
    """MiniLM <-> SmolLM2 top-1 on the held-out capabilities (among all ``caps``), disjoint halves, the
    mean of both directions: UMAF (``m1_top1_real_models``) and raw features (``m1_raw_real_models``).
    Empty unless both embedded models were read."""
    if not all(name in readings for name in REAL_MODELS):
        return {}
    held = [c for c in caps if is_held_out(c)]
    a, b = REAL_MODELS
    out = {}
    for method in [m for m in ("umaf", "raw", "cosine") if m in _scorers(readings)]:
        both = [retrieval_top1(readings, families, [q], [g], held, caps, SCORERS[method]) for q, g in
                ((a, b), (b, a))]  # fmt: skip
        out[f"{PREFIXES[method]}_real_models"] = statistics.mean(both)
    return out


def _scorers(readings: dict[str, dict[tuple[str, int], Reading]]) -> dict[str, Scorer]:
    """:data:`SCORERS` the readings carry what for (every reading has ``cosine`` or none has)."""
    sample = next(iter(next(iter(readings.values())).values()))
    return {m: s for m, s in SCORERS.items() if m != "cosine" or sample.cosine is not None}


def retrieval_metrics(
    readings: dict[str, dict[tuple[str, int], Reading]], families: dict[str, str], caps: Sequence[str]
) -> dict[str, float]:
    """M1 from the readings: top-1 of UMAF and every baseline on held-out model families, held-out
    capabilities and the seen ones; CKA on the same texts (``m1_cka_paired_*``); one headline per
    baseline (the mean of both held-out setups); the real-model pair (:func:`real_model_retrieval`)."""
    held_fam = [s for s in readings if is_held_out_model_family(families[s])]
    seen_fam = [s for s in readings if not is_held_out_model_family(families[s])]
    setups = {
        "heldout_family": (held_fam, seen_fam, list(caps)),
        "heldout_capability": (seen_fam, seen_fam, [c for c in caps if is_held_out(c)]),
        "seen": (seen_fam, seen_fam, [c for c in caps if not is_held_out(c)]),
    }
    out: dict[str, float] = {}
    scorers = _scorers(readings)
    for setup, (queries, galleries, query_caps) in setups.items():
        for method, scorer in scorers.items():
            out[f"{PREFIXES[method]}_{setup}"] = retrieval_top1(
                readings, families, queries, galleries, query_caps, caps, scorer
            )
        out[f"m1_cka_paired_{setup}"] = retrieval_top1(
            readings, families, queries, galleries, query_caps, caps, SCORERS["cka"], parts=(0, 0)
        )
    headlines = {"m1_cka_baseline": "m1_cka", "m1_randproj_baseline": "m1_randproj",
                 "m1_raw_features_baseline": "m1_raw", "m1_cka_paired": "m1_cka_paired"}  # fmt: skip
    if "cosine" in scorers:
        headlines["m1_cosine_baseline"] = "m1_cosine"
    for key, prefix in headlines.items():
        out[key] = statistics.mean(out[f"{prefix}_{s}"] for s in ("heldout_family", "heldout_capability"))
    return out | real_model_retrieval(readings, families, caps)


def measure_retrieval(quick: bool) -> tuple[dict[str, Any], list[Source], dict]:
    """Read every source on every named capability and compute M1 for UMAF and its baselines."""
    caps = bench_capabilities(quick)
    sources = _sources(quick)
    readings, families = read_sources(sources, caps, default_extractor(), quick)
    out: dict[str, Any] = {"n_sources": len(sources), "n_capabilities": len(caps)}
    return out | retrieval_metrics(readings, families, caps), sources, readings


@dataclass(frozen=True)
class CompetencePair:
    """One (source, capability) pair of M2: its measured competence, the head's score and the accuracy."""

    source: Source
    capability: str
    competence: float
    head: float
    accuracy: float

    @property
    def group(self) -> str:
        """Family and size: AUC compares trained and untrained models only within one group."""
        return f"{self.source.family}-{self.source.size}"

    def auc_item(self, score: float, qualified: str | None = "zoo") -> tuple[str, str, float, bool] | None:
        """This pair for :func:`within_group_auc`: positive when trained on the capability (and reaching
        :data:`umaf.competence.QUALIFY` on it: ``"zoo"``, the zoo's own eval with the capability's name
        before each prompt; ``"plain"``, the plain prompts the fingerprint reads; None: every trained pair),
        negative when not trained on it; None for a trained pair that does not qualify (claimed but not
        learnt: neither)."""
        trained = self.capability in self.source.trained
        learnt = {"zoo": self.capability in self.source.qualified, "plain": self.accuracy >= QUALIFY,
                  None: True}
        if trained and not learnt[qualified]:
            return None
        return self.group, self.capability, score, trained


def competence_pairs(sources: Sequence[Source], readings: dict) -> list[CompetencePair]:
    """Every (source, capability) pair with a measured accuracy and a competence on both probe halves. A
    model without an LM head has no accuracy to compare (it cannot answer), so it is never among them; its
    decodability scores are reported in ``m2_real_competence``."""
    pairs = []
    for src in sources:
        for cap, acc in src.accuracy.items():
            halves = [readings[src.name].get((cap, part)) for part in (0, 1)]
            if any(h is None or h.competence is None for h in halves) or math.isnan(acc):
                continue
            pairs.append(CompetencePair(src, cap, statistics.mean(h.competence for h in halves),
                                        statistics.mean(h.head for h in halves), acc))  # fmt: skip
    return pairs


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho; NaN with fewer than three pairs or a constant side (no ranking to compare)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def competence_metrics(sources: Sequence[Source], readings: dict) -> dict[str, Any]:
    """M2: Spearman of competence vs eval accuracy over zoo models (trained and not trained on each
    capability) and real models with a score; AUC of trained-and-qualified vs untrained zoo models of one
    family and size (``m2_auc_all_trained``: every trained pair counts); the same for the extractor's
    competence head (``m2_head_*``, the baseline); how many trained zoo pairs there are and qualify; and
    every real model's competence per capability (None where it offers no signal)."""
    pairs = competence_pairs(sources, readings)
    zoo = [p for p in pairs if p.source.family != REAL]

    def auc(score: Callable[[CompetencePair], float], qualified: str | None = "zoo") -> float:
        items = [p.auc_item(score(p), qualified) for p in zoo]
        return within_group_auc([item for item in items if item is not None])

    zoo_sources = [s for s in sources if s.family != REAL]
    out: dict[str, Any] = {
        "m2_spearman": _spearman([p.competence for p in pairs], [p.accuracy for p in pairs]),
        "m2_spearman_zoo": _spearman([p.competence for p in zoo], [p.accuracy for p in zoo]),
        "m2_auc": auc(lambda p: p.competence),
        "m2_auc_all_trained": auc(lambda p: p.competence, qualified=None),
        "m2_auc_plain": auc(lambda p: p.competence, qualified="plain"),
        "m2_head_spearman": _spearman([p.head for p in pairs], [p.accuracy for p in pairs]),
        "m2_head_auc": auc(lambda p: p.head),
        "m2_pairs": len(pairs),
        "m2_pairs_real": len(pairs) - len(zoo),
        "zoo_pairs_trained": sum(len(s.trained) for s in zoo_sources),
        "zoo_pairs_qualified": sum(len(s.qualified) for s in zoo_sources),
        "zoo_pairs_qualified_plain": sum(p.accuracy >= QUALIFY for p in zoo
                                         if p.capability in p.source.trained),
    }
    real = [s.name for s in sources if s.family == REAL and s.name in readings]
    out["m2_real_competence"] = {name: _competence_by_capability(readings[name]) for name in real}
    return out


def _competence_by_capability(readings: dict[tuple[str, int], Reading]) -> dict[str, float | None]:
    """Mean competence of the two probe halves per capability (None where the model offers no signal)."""
    out = {}
    for cap in dict.fromkeys(c for c, _ in readings):
        scores = [readings[cap, part].competence for part in (0, 1)]
        out[cap] = None if None in scores else statistics.mean(scores)
    return out


def _median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead_ratios(loaded: LoadedModel, extractor: CapabilityExtractor, capability: str) -> dict[str, float]:
    """Extractor time (processor + network) and competence time (:func:`umaf.competence.measure_competence`),
    each over capture time (probes + anchors), on one model and the probe split of ``capability``."""
    cap = get_capability(capability)
    texts = cap.probe_texts()
    cfg = extractor.config
    layers, weights = layer_plan(loaded.info.n_layers, cfg.depth_bins)
    anchors = anchor_texts(cfg.n_anchors)

    def capture(batch: list[str]) -> Tensor:
        return capture_channels(loaded, batch, layers, cfg, progress=False)  # [channels, layers, texts, W]

    probe_acts, anchor_acts = capture(texts), capture(anchors)
    prompts = (probe_acts[1], anchor_acts[1]) if cfg.delta else (None, None)

    def extract() -> Tensor:
        return extractor.encode(process(probe_acts[0], anchor_acts[0], weights, cfg, *prompts).features)

    capture_s = _median_seconds(lambda: (capture(texts), capture(anchors)))
    competence_s = _median_seconds(lambda: measure_competence(loaded, cap, limit=None))
    return {"extract": _median_seconds(extract) / capture_s, "competence": competence_s / capture_s}


def measure_overhead(extractor: CapabilityExtractor) -> dict[str, float]:
    """:func:`overhead_ratios` for each embedded model; each headline is the worst of them."""
    ratios = {name: overhead_ratios(load(name), extractor, "sentiment") for name in REAL_MODELS}
    out = {}
    for kind in ("extract", "competence"):
        per_model = {f"{kind}_overhead_{name}": r[kind] for name, r in ratios.items()}
        out |= {f"{kind}_overhead": max(per_model.values()), **per_model}
    return out


def measure_capture_speed(quick: bool) -> dict[str, float]:
    """Capture throughput over a bare ``model(**batch)`` loop on the same inputs, for ``smollm2``."""
    loaded = load("smollm2")
    model, tok = loaded.model, copy.copy(loaded.tokenizer)
    tok.pad_token = tok.pad_token or tok.eos_token  # the bare loop pads like capture does
    texts = get_capability("sentiment").probe_texts()[: 16 if quick else 64]
    batch_size = 16

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = tok(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=64).to(loaded.device)  # fmt: skip
                model(**batch, use_cache=False)
        if loaded.device.type == "cuda":  # capture waits for its results; so must the bare loop
            torch.cuda.synchronize(loaded.device)

    n = loaded.info.n_layers
    run = lambda layers: lambda: capture_activations(  # noqa: E731
        model, tok, texts, layers=layers, batch_size=batch_size, max_length=64, progress=False
    )
    bare()  # warm-up
    base = _median_seconds(bare)
    return {
        "capture_vs_forward_all": base / _median_seconds(run(list(range(n)))),
        "capture_vs_forward_half": base / _median_seconds(run(list(range(n // 2)))),
        "bare_forward_probes_per_s": len(texts) / base,
    }


@SUITES.register("fingerprints")
def bench_fingerprints(quick: bool) -> dict[str, Any]:
    """M1 retrieval, M2 competence, extractor overhead and capture speed, all measured in this run."""
    results, sources, readings = measure_retrieval(quick)
    results.update(competence_metrics(sources, readings))
    results.update(measure_overhead(default_extractor()))
    results.update(measure_capture_speed(quick))
    results["targets"] = TARGETS
    return results
