"""The fingerprint benchmark's measuring functions on synthetic readings and on a tiny model."""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from umaf.bench import markdown_table
from umaf.bench.fingerprints import (
    REAL,
    SCORERS,
    Reading,
    Source,
    competence_metrics,
    random_projection,
    read_source,
    retrieval_top1,
    within_group_auc,
)
from umaf.errors import UmafError


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


def test_within_group_auc():
    pairs = [("g", "c", 0.9, True), ("g", "c", 0.1, False), ("h", "c", 0.2, True), ("h", "c", 0.3, False)]
    assert within_group_auc(pairs) == pytest.approx(0.5)
    assert within_group_auc(pairs[:2]) == 1.0


def _competence_setup(track: float) -> tuple[list[Source], dict]:
    """Two zoo groups and a real model; a pair's competence is ``track * accuracy + (1 - track) * noise``."""
    gen = torch.Generator().manual_seed(0)
    sources, readings = [], {}
    for group in ("llama-xs", "gpt2-xs"):
        for subset, trained in (("a", ("c0", "c1")), ("b", ("c2", "c3"))):
            family, size = group.split("-")
            name = f"zoo:{group}-{subset}"
            acc = {f"c{i}": (0.9 if f"c{i}" in trained else 0.05) + 0.02 * i for i in range(4)}
            sources.append(Source(name, family, size, trained, acc))
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


def test_competence_metrics_fail_a_score_that_ignores_accuracy():
    sources, readings = _competence_setup(track=0.0)
    out = competence_metrics(sources, readings)
    assert out["m2_spearman"] < 0.8 and out["m2_auc"] < 0.9


def test_random_projection_is_fixed_per_width():
    x = torch.randn(96)
    assert torch.equal(random_projection(x), random_projection(x.clone()))
    assert random_projection(torch.randn(32)).shape == (512,)


def test_read_source_on_a_tiny_model(tiny_llama):
    from umaf.extractor import CapabilityExtractor

    torch.manual_seed(0)
    readings = read_source(tiny_llama, ["sentiment", "reverse"], CapabilityExtractor().eval())
    assert set(readings) == {(c, p) for c in ("sentiment", "reverse") for p in (0, 1)}
    r = readings["sentiment", 0]
    assert r.fingerprint.shape == (512,) and r.competence == 0.0  # a random model answers nothing right
    assert 0.0 <= r.head <= 1.0
    assert r.last_layer.shape[1] == tiny_llama.info.width


def test_markdown_table_lists_scalars_with_targets():
    table = markdown_table({"m2_auc": 0.75, "suite": "x", "targets": {"m2_auc": ">= 0.9"}})
    assert "| m2_auc | 0.750 | >= 0.9 |" in table and "suite" not in table
