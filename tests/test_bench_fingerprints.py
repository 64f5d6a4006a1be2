"""The fingerprint benchmark's measuring functions on synthetic readings and on a tiny model."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace

import pytest
import torch

import umaf.bench.fingerprints as bench
from umaf.bench import markdown_table
from umaf.bench.fingerprints import (
    REAL,
    SCORERS,
    TARGETS,
    Reading,
    Source,
    bench_capabilities,
    competence_metrics,
    random_projection,
    read_source,
    retrieval_metrics,
    retrieval_top1,
    within_group_auc,
)
from umaf.capabilities import is_held_out
from umaf.errors import UmafError
from umaf.extractor.processor import pool_features
from umaf.report.data import parse_target


def _reading(direction: torch.Tensor, noise: float, seed: int) -> Reading:
    gen = torch.Generator().manual_seed(seed)
    vector = torch.nn.functional.normalize(direction + noise * torch.randn(512, generator=gen), dim=0)
    return Reading(vector, 0.5, torch.randn(8, 16, generator=gen))


def _readings(noise: float, caps: tuple[str, ...] = ("a", "b", "c")) -> tuple[dict, dict]:
    directions = {c: torch.nn.functional.normalize(torch.randn(512), dim=0) for c in caps}
    readings = {
        src: {
            (c, part): _reading(directions[c], noise, zlib.crc32(f"{src}{c}{part}".encode()))
            for c in caps
            for part in (0, 1)
        }
        for src in ("x", "y", "z")
    }
    return readings, {"x": "llama", "y": "bert", "z": "llama"}


def test_retrieval_is_perfect_when_capabilities_are_far_apart():
    torch.manual_seed(0)
    readings, families = _readings(noise=0.01)
    top1 = retrieval_top1(
        readings, families, ["x"], ["y", "z"], ["a", "b", "c"], ["a", "b", "c"], SCORERS["umaf"]
    )
    assert top1 == 1.0


def test_retrieval_is_near_chance_for_pure_noise():
    torch.manual_seed(0)
    caps = tuple(f"c{i}" for i in range(40))
    readings, families = _readings(noise=100.0, caps=caps)
    top1 = retrieval_top1(readings, families, ["x"], ["y"], caps, caps, SCORERS["umaf"])
    assert top1 <= 0.2  # chance is 1/40: 40 queries with 8 or more hits by luck is below 1e-5
    torch.manual_seed(0)
    mid, _ = _readings(noise=0.12, caps=caps)  # some signal: far above chance, not yet perfect
    assert 0.4 < retrieval_top1(mid, families, ["x"], ["y"], caps, caps, SCORERS["umaf"]) < 0.9


def test_retrieval_skips_same_family_pairs():
    readings, families = _readings(noise=0.01)
    with pytest.raises(UmafError, match="no query and gallery models of different families"):
        retrieval_top1(readings, families, ["x"], ["z"], ["a"], ["a", "b"], SCORERS["umaf"])


# ------------------------------------------------------------------ M1: every figure from one set of readings

#: Stand-in sources and their families: a held-out family (t5), seen ones, and the two embedded models.
FAMILIES = {"zoo:t5": "t5", "zoo:llama": "llama", "zoo:gpt2": "gpt2", "minilm": "bert", "smollm2": "llama"}


def _unit(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=gen), dim=-1)


def _m1_readings(raw_aligned: bool, families: dict[str, str] = FAMILIES) -> tuple[dict, list[str]]:
    """Readings of every stand-in on the quick bench's capabilities. Fingerprints share one direction per
    capability across models (UMAF is perfect). Raw features share one too when ``raw_aligned``, else each
    model has its own (as untrained features of different architectures may). The last block of a model is
    the same texts' activations through its own orthonormal basis (widths differ): CKA on the same texts
    is exact, across the two halves it compares unrelated sets."""
    gen = torch.Generator().manual_seed(0)
    caps = bench_capabilities(quick=True)
    fp_dirs = {c: _unit(gen, 512) for c in caps}
    raw_dirs = {c: _unit(gen, 96) for c in caps}
    texts = {(c, part): torch.randn(8, 16, generator=gen) for c in caps for part in (0, 1)}
    readings = {}
    for i, src in enumerate(families):
        basis = torch.linalg.qr(torch.randn(16 + 8 * i, 16, generator=gen))[0].T  # [16, width], orthonormal
        own = {c: _unit(gen, 96) for c in caps}
        readings[src] = {
            (c, part): Reading(
                _unit(gen, 512) * 0.05 + fp_dirs[c], 0.5, texts[c, part] @ basis, 0.5,
                (raw_dirs if raw_aligned else own)[c] + 0.05 * _unit(gen, 96),
            )
            for c in caps
            for part in (0, 1)
        }  # fmt: skip
    return readings, caps


def test_raw_features_retrieve_perfectly_when_models_agree_on_them():
    readings, caps = _m1_readings(raw_aligned=True)
    out = retrieval_metrics(readings, FAMILIES, caps)
    for setup in ("heldout_family", "heldout_capability", "seen", "real_models"):
        assert out[f"m1_top1_{setup}"] == 1.0 and out[f"m1_raw_{setup}"] == 1.0
    assert out["m1_raw_features_baseline"] == 1.0  # UMAF would then not be above raw: the note fails


def test_raw_features_fail_when_each_model_has_its_own():
    readings, caps = _m1_readings(raw_aligned=False)
    out = retrieval_metrics(readings, FAMILIES, caps)
    assert out["m1_top1_heldout_family"] == 1.0 and out["m1_top1_real_models"] == 1.0
    assert out["m1_raw_features_baseline"] <= 0.3 and out["m1_raw_real_models"] <= 0.3  # chance: 1/16
    assert out["m1_cka_paired"] == 1.0 and out["m1_cka_baseline"] <= 0.3  # same texts vs disjoint halves


def test_the_cosine_baseline_is_scored_when_readings_carry_it():
    readings, caps = _m1_readings(raw_aligned=True)
    assert "m1_cosine_baseline" not in retrieval_metrics(readings, FAMILIES, caps)
    gen = torch.Generator().manual_seed(1)
    for by_cap in readings.values():  # each model its own direction: the baseline must fall to chance
        own = {c: _unit(gen, 96) for c in caps}
        for (c, _), reading in by_cap.items():
            reading.cosine = own[c] + 0.05 * _unit(gen, 96)
    out = retrieval_metrics(readings, FAMILIES, caps)
    assert out["m1_raw_features_baseline"] == 1.0 and out["m1_cosine_baseline"] <= 0.3
    assert out["m1_cosine_real_models"] <= 0.3


def test_real_model_figures_need_both_embedded_models():
    families = {k: v for k, v in FAMILIES.items() if k != "smollm2"}
    readings, caps = _m1_readings(raw_aligned=True, families=families)
    out = retrieval_metrics(readings, families, caps)
    assert "m1_top1_real_models" not in out and "m1_raw_real_models" not in out
    assert out["m1_top1_heldout_capability"] == 1.0


def test_real_model_retrieval_averages_both_directions():
    readings, caps = _m1_readings(raw_aligned=True)
    held = [c for c in caps if is_held_out(c)]
    wrong = {**readings["smollm2"], (held[0], 0): readings["smollm2"][held[1], 0]}  # a query reads as another
    out = retrieval_metrics({**readings, "smollm2": wrong}, FAMILIES, caps)
    assert out["m1_top1_real_models"] == pytest.approx((1.0 + (1 - 1 / len(held))) / 2)  # smollm2 -> minilm


def test_m1_targets_parse_with_their_note():
    for key in ("m1_top1_heldout_family", "m1_top1_heldout_capability", "m1_top1_real_models"):
        assert "above raw by >= 0.2" in TARGETS[key]
    assert parse_target(TARGETS["m1_top1_real_models"]).met(0.85)
    assert not parse_target(TARGETS["m1_top1_heldout_family"]).met(0.85)


def test_within_group_auc():
    pairs = [("g", "c", 0.9, True), ("g", "c", 0.1, False), ("h", "c", 0.2, True), ("h", "c", 0.3, False)]
    assert within_group_auc(pairs) == pytest.approx(0.5)
    assert within_group_auc(pairs[:2]) == 1.0


def _competence_setup(track: float, weak: bool = False) -> tuple[list[Source], dict]:
    """Two zoo groups and a real model; a pair's competence is ``track * accuracy + (1 - track) * noise``.
    ``weak``: subset ``a`` was trained on ``c1`` but did not learn it (accuracy 0.01, below the untrained)."""
    gen = torch.Generator().manual_seed(0)
    sources, readings = [], {}
    for group in ("llama-xs", "gpt2-xs"):
        for subset, trained in (("a", ("c0", "c1")), ("b", ("c2", "c3"))):
            family, size = group.split("-")
            name = f"zoo:{group}-{subset}"
            acc = {f"c{i}": (0.9 if f"c{i}" in trained else 0.05) + 0.02 * i for i in range(4)}
            if weak and subset == "a":
                acc["c1"] = 0.01
            qualified = tuple(c for c in trained if acc[c] >= 0.8)
            sources.append(Source(name, family, size, trained, acc, qualified))
    sources += [Source("real-lm", REAL, accuracy={"c0": 0.3, "c1": 0.0}), Source("real-enc", REAL)]
    for src in sources:
        caps = src.accuracy or {"c0": 0.0, "c1": 0.0}
        readings[src.name] = {}
        for cap, acc in caps.items():
            noise = float(torch.rand((), generator=gen))
            score = None if src.name == "real-enc" and cap == "c1" else track * acc + (1 - track) * noise
            for part in (0, 1):
                readings[src.name][cap, part] = Reading(torch.zeros(512), score, torch.zeros(2, 4), head=0.5)
    return sources, readings


def test_competence_metrics_reward_a_score_that_tracks_accuracy():
    sources, readings = _competence_setup(track=1.0)
    out = competence_metrics(sources, readings)
    assert out["m2_spearman"] == pytest.approx(1.0) and out["m2_auc"] == 1.0
    assert out["m2_pairs"] == 18 and out["m2_pairs_real"] == 2  # the encoder has no accuracy to compare
    assert math.isnan(out["m2_head_spearman"]) and out["m2_head_auc"] == 0.5  # a constant head: no signal
    c0 = readings["real-enc"]["c0", 0].competence
    assert out["m2_real_competence"]["real-enc"] == {"c0": pytest.approx(c0), "c1": None}


def test_m2_auc_leaves_out_trained_pairs_that_do_not_qualify():
    sources, readings = _competence_setup(track=1.0, weak=True)
    out = competence_metrics(sources, readings)
    assert out["m2_auc"] == 1.0 and out["m2_auc_all_trained"] < 0.9  # the weak pair scores below untrained
    assert out["zoo_pairs_trained"] == 8 and out["zoo_pairs_qualified"] == 6
    assert out["m2_auc_plain"] == 1.0 and out["zoo_pairs_qualified_plain"] == 6  # the same accuracies here
    zoo_only = [s if s.family == REAL else replace(s, qualified=s.trained) for s in sources]
    tagged = competence_metrics(zoo_only, readings)  # the zoo's own eval claims the weak pair too
    assert tagged["m2_auc"] < 0.9 and tagged["m2_auc_plain"] == 1.0


def test_competence_metrics_fail_a_score_that_ignores_accuracy():
    sources, readings = _competence_setup(track=0.0)
    out = competence_metrics(sources, readings)
    assert out["m2_spearman"] < 0.8 and out["m2_auc"] < 0.9


def test_random_projection_is_fixed_per_width():
    x = torch.randn(96)
    assert torch.equal(random_projection(x), random_projection(x.clone()))
    assert random_projection(torch.randn(32)).shape == (512,)


def test_read_source_on_a_tiny_model(tiny_llama, monkeypatch):
    from umaf.extractor import CapabilityExtractor

    torch.manual_seed(0)
    processed = []
    real = bench.model_features
    monkeypatch.setattr(
        bench, "model_features", lambda *a, **k: processed.append(real(*a, **k)) or processed[-1]
    )
    extractor = CapabilityExtractor().eval()
    readings = read_source(tiny_llama, ["sentiment", "reverse"], extractor)
    assert set(readings) == {(c, p) for c in ("sentiment", "reverse") for p in (0, 1)}
    assert len(processed) == 4  # one capture and one processor pass per (capability, half)
    r = readings["sentiment", 0]
    assert r.fingerprint.shape == (512,) and r.competence == 0.0  # a random model answers nothing right
    assert 0.0 <= r.head <= 1.0
    assert r.last_layer.shape[1] == tiny_llama.info.width
    cfg = extractor.config
    assert r.raw.shape == (cfg.depth_bins * cfg.n_channels * cfg.n_anchors,)
    assert torch.equal(r.raw, pool_features(processed[0].features))
    assert abs(float(r.raw.mean())) < 1e-5 and float(r.raw.std()) == pytest.approx(1.0)


def test_measure_retrieval_on_tiny_stand_ins(tiny_models, monkeypatch):
    """The whole M1 wiring with tiny models standing in for the zoo and the embedded models."""
    from umaf.extractor import CapabilityExtractor, ExtractorConfig

    torch.manual_seed(0)
    stand_ins = {"zoo:t5": "t5", "zoo:llama": "llama", "minilm": "bert", "smollm2": "gpt2"}
    sources = [Source(n, REAL if n in bench.REAL_MODELS else f, "xs") for n, f in stand_ins.items()]
    small = ExtractorConfig(n_anchors=16, d_model=32, n_layers=1, n_heads=2, ffn=64, head_hidden=64)
    monkeypatch.setattr(bench, "_sources", lambda quick: sources)
    monkeypatch.setattr(bench, "load", lambda name: tiny_models[stand_ins[name]])
    caps = ["capital", "topic", "plural", "sentiment"]  # two held-out, two seen
    monkeypatch.setattr(bench, "bench_capabilities", lambda quick: caps)
    monkeypatch.setattr(bench, "default_extractor", lambda: CapabilityExtractor(small).eval())
    out, _, readings = bench.measure_retrieval(quick=True)
    for prefix in ("m1_top1", "m1_raw", "m1_cka", "m1_cka_paired", "m1_randproj"):
        for setup in ("heldout_family", "heldout_capability", "seen"):
            assert 0.0 <= out[f"{prefix}_{setup}"] <= 1.0
    headlines = {"m1_raw_features_baseline", "m1_cka_paired", "m1_top1_real_models", "m1_raw_real_models"}
    assert headlines <= set(out) and out["n_sources"] == 4 and out["n_capabilities"] == 4
    assert readings["smollm2"]["topic", 1].raw.shape == (small.depth_bins * small.n_channels * 16,)


def test_markdown_table_lists_scalars_with_targets():
    table = markdown_table({"m2_auc": 0.75, "suite": "x", "targets": {"m2_auc": ">= 0.9"}})
    assert "| m2_auc | 0.750 | >= 0.9 |" in table and "suite" not in table
