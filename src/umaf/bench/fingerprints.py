"""Fingerprint suite: cross-architecture retrieval (M1), competence (M2) and capture cost (M6).

Every source model is read on two disjoint halves of each capability's probe split: part 0 makes the
queries, part 1 the gallery, so retrieval can never succeed by matching identical inputs.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.stats import spearmanr
from torch import Tensor
from tqdm.auto import tqdm

from umaf.bench.registry import SUITES
from umaf.capabilities import get_capability, is_held_out, is_held_out_model_family, list_capabilities
from umaf.capture import capture_activations
from umaf.errors import UmafError
from umaf.extractor import CapabilityExtractor, default_extractor
from umaf.extractor.fingerprinting import capture_channels, model_features
from umaf.extractor.processor import anchor_texts, layer_plan, process
from umaf.models import LoadedModel, load
from umaf.similarity import SIMILARITIES

REAL_MODELS = ("minilm", "smollm2")
TARGETS = {
    "m1_top1_heldout_family": ">= 0.95",
    "m1_top1_heldout_capability": ">= 0.90",
    "m2_spearman": ">= 0.8",
    "m2_auc": ">= 0.9",
    "extract_overhead": "<= 0.05",
    "capture_vs_forward_all": ">= 1.0",
    "capture_vs_forward_half": ">= 1.5",
}


@dataclass
class Reading:
    """What one (source, capability, part) gives: the fingerprint, competence and raw last-layer set."""

    fingerprint: Tensor  # [512]
    competence: float
    last_layer: Tensor  # [probes, width]


@dataclass
class Source:
    """A model read by the benchmark, with its zoo record when it has one."""

    name: str
    family: str
    size: str = ""
    trained: tuple[str, ...] = ()
    accuracy: dict[str, float] = field(default_factory=dict)


def read_source(
    loaded: LoadedModel, capabilities: Sequence[str], extractor: CapabilityExtractor
) -> dict[tuple[str, int], Reading]:
    """Read every capability on both probe halves; one capture serves the fingerprint and the baselines."""
    readings = {}
    for name in capabilities:
        cap = get_capability(name)
        for part in (0, 1):
            processed = model_features(loaded, cap.probe_texts(part=part), extractor.config, progress=False)
            vector = extractor.encode(processed.features)  # [512]
            competence = float(extractor.competence(vector[None])[0].detach())
            readings[name, part] = Reading(vector, competence, processed.activations[-1])
    return readings


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
}


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
) -> float:
    """Top-1: query (source q, capability c, half 0) vs gallery (source g of another family, half 1)."""
    hits = []
    for q in queries:
        for g in galleries:
            if families[q] == families[g]:
                continue
            for c in query_caps:
                scores = [scorer(readings[q][c, 0], readings[g][c2, 1]) for c2 in gallery_caps]
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
    from umaf.zoo import build_zoo

    zoo = build_zoo(quick=quick)
    sources = [Source(f"zoo:{e.name}", e.family, e.size, tuple(e.trained), dict(e.accuracy)) for e in zoo]
    return sources + [Source(name, "real") for name in REAL_MODELS]


def bench_capabilities(quick: bool) -> list[str]:
    """All named capabilities; ``quick``: every held-out one plus the first 12 others (16 in all)."""
    names = list_capabilities()
    if not quick:
        return names
    seen = [c for c in names if not is_held_out(c)]
    return [c for c in names if is_held_out(c)] + seen[:12]


def measure_retrieval(quick: bool) -> tuple[dict[str, Any], list[Source], dict]:
    """Read every source on every named capability and compute M1 for UMAF and both baselines."""
    extractor = default_extractor()
    caps = bench_capabilities(quick)
    sources = _sources(quick)
    readings, families = {}, {}
    for src in tqdm(sources, desc="reading sources", unit="model"):
        loaded = load(src.name)
        families[src.name] = loaded.info.family
        readings[src.name] = read_source(loaded, caps, extractor)
        del loaded
    held_fam = [s.name for s in sources if is_held_out_model_family(families[s.name])]
    seen_fam = [s.name for s in sources if not is_held_out_model_family(families[s.name])]
    held_caps = [c for c in caps if is_held_out(c)]
    setups = {
        "heldout_family": (held_fam, seen_fam, caps),
        "heldout_capability": (seen_fam, seen_fam, held_caps),
        "seen": (seen_fam, seen_fam, [c for c in caps if not is_held_out(c)]),
    }
    out: dict[str, Any] = {"n_sources": len(sources), "n_capabilities": len(caps)}
    for setup, (queries, galleries, query_caps) in setups.items():
        for method, scorer in SCORERS.items():
            prefix = "m1_top1" if method == "umaf" else f"m1_{method}"
            out[f"{prefix}_{setup}"] = retrieval_top1(
                readings, families, queries, galleries, query_caps, caps, scorer
            )
    for method in ("cka", "randproj"):  # one headline figure per baseline, over both held-out setups
        held = [out[f"m1_{method}_{s}"] for s in ("heldout_family", "heldout_capability")]
        out[f"m1_{method}_baseline"] = statistics.mean(held)
    return out, sources, readings


def measure_competence(sources: Sequence[Source], readings: dict) -> dict[str, float]:
    """M2 on (zoo model, capability) pairs the competence head never trained on, and on the seen ones."""
    unseen, seen = [], []
    for src in sources:
        if not src.accuracy:
            continue
        for cap, acc in src.accuracy.items():
            if (cap, 0) not in readings[src.name]:
                continue
            score = readings[src.name][cap, 0].competence
            row = (f"{src.family}-{src.size}", cap, score, cap in src.trained, acc)
            held = is_held_out(cap) or is_held_out_model_family(src.family)
            (unseen if held else seen).append(row)
    out = {}
    for tag, rows in (("", unseen), ("_seen", seen)):
        scores, accs = [r[2] for r in rows], [r[4] for r in rows]
        out[f"m2_spearman{tag}"] = float(spearmanr(scores, accs).statistic) if len(rows) > 2 else float("nan")
        out[f"m2_auc{tag}"] = within_group_auc([r[:4] for r in rows])
        out[f"m2_pairs{tag}"] = len(rows)
    return out


def _median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead_ratio(loaded: LoadedModel, extractor: CapabilityExtractor, texts: list[str]) -> float:
    """Extractor time (processor + network) over capture time (probes + anchors) on one model."""
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
    return _median_seconds(extract) / capture_s


def measure_overhead(extractor: CapabilityExtractor) -> dict[str, float]:
    """:func:`overhead_ratio` for each embedded model; the headline is the worst of them."""
    texts = get_capability("sentiment").probe_texts()
    ratios = {name: overhead_ratio(load(name), extractor, texts) for name in REAL_MODELS}
    per_model = {f"extract_overhead_{k}": v for k, v in ratios.items()}
    return {"extract_overhead": max(ratios.values()), **per_model}


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
    results.update(measure_competence(sources, readings))
    results.update(measure_overhead(default_extractor()))
    results.update(measure_capture_speed(quick))
    results["targets"] = TARGETS
    return results
