"""The fingerprint benchmark's measuring functions on synthetic readings and on a tiny model."""

from __future__ import annotations

import zlib

import pytest
import torch

from umaf.bench import markdown_table
from umaf.bench.fingerprints import (
    SCORERS,
    Reading,
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


def _readings(noise: float) -> tuple[dict, dict]:
    caps = ["a", "b", "c"]
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
    readings, families = _readings(noise=100.0)
    top1 = retrieval_top1(readings, families, ["x"], ["y"], ["a", "b", "c"], ["a", "b", "c"], SCORERS["umaf"])
    assert top1 < 1.0


def test_retrieval_skips_same_family_pairs():
    readings, families = _readings(noise=0.01)
    with pytest.raises(UmafError, match="no query and gallery models of different families"):
        retrieval_top1(readings, families, ["x"], ["z"], ["a"], ["a", "b"], SCORERS["umaf"])


def test_within_group_auc():
    pairs = [("g", "c", 0.9, True), ("g", "c", 0.1, False), ("h", "c", 0.2, True), ("h", "c", 0.3, False)]
    assert within_group_auc(pairs) == pytest.approx(0.5)
    assert within_group_auc(pairs[:2]) == 1.0


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
    assert r.fingerprint.shape == (512,) and 0.0 <= r.competence <= 1.0
    assert r.last_layer.shape[1] == tiny_llama.info.width


def test_markdown_table_lists_scalars_with_targets():
    table = markdown_table({"m2_auc": 0.75, "suite": "x", "targets": {"m2_auc": ">= 0.9"}})
    assert "| m2_auc | 0.750 | >= 0.9 |" in table and "suite" not in table
