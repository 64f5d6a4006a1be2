"""Similarity metrics: known values for every registered metric, CKA invariances, bad shapes."""

from __future__ import annotations

import math

import pytest
import torch

from umaf.errors import UmafError
from umaf.similarity import SIMILARITIES, similarity, similarity_matrix

VECTOR_METRICS = [n for n in SIMILARITIES.names() if SIMILARITIES.get(n).inputs == "vectors"]


def _pair(metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A related pair of inputs of the right kind for ``metric``."""
    gen = torch.Generator().manual_seed(0)
    if SIMILARITIES.get(metric).inputs == "activations":
        x = torch.randn(40, 16, generator=gen)
        return x, x @ torch.randn(16, 24, generator=gen)
    return torch.randn(512, generator=gen), torch.randn(512, generator=gen)


def test_registry_has_the_documented_metrics() -> None:
    assert {"cosine", "kl", "pearson", "cka"} <= set(SIMILARITIES.names())
    assert SIMILARITIES.get("kl").higher_is_better is False
    assert all(SIMILARITIES.get(n).higher_is_better for n in ("cosine", "pearson", "cka"))


@pytest.mark.parametrize("name", SIMILARITIES.names())
def test_self_comparison_is_the_best_value(name: str) -> None:
    metric = SIMILARITIES.get(name)
    a, b = _pair(name)
    self_value, other = similarity(name, a, a), similarity(name, a, b)
    expected = 1.0 if metric.higher_is_better else 0.0
    assert self_value == pytest.approx(expected, abs=1e-6)
    assert (other < self_value) if metric.higher_is_better else (other > self_value)


@pytest.mark.parametrize("name", SIMILARITIES.names())
def test_symmetric(name: str) -> None:
    a, b = _pair(name)
    assert similarity(name, a, b) == pytest.approx(similarity(name, b, a), rel=1e-6)


@pytest.mark.parametrize("name", SIMILARITIES.names())
def test_mismatched_shapes_raise(name: str) -> None:
    a, _ = _pair(name)
    with pytest.raises(UmafError):
        similarity(name, a, a[:-1])


@pytest.mark.parametrize("name", SIMILARITIES.names())
def test_nan_raises(name: str) -> None:
    a, b = _pair(name)
    a = a.clone()
    a.view(-1)[0] = float("nan")
    with pytest.raises(UmafError):
        similarity(name, a, b)


def test_known_vector_values() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert similarity("cosine", a, b) == pytest.approx(0.0)
    assert similarity("cosine", a, -a) == pytest.approx(-1.0)
    assert similarity("pearson", torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.5])) > 0.99
    assert similarity(
        "pearson", torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])
    ) == pytest.approx(-1.0)
    # two-point distributions p = softmax([1, 0] / 0.1), q = its mirror image
    p = torch.softmax(torch.tensor([10.0, 0.0]), 0)
    expected = float((p * (p.log() - p.flip(0).log())).sum())
    assert similarity("kl", a, b) == pytest.approx(expected, rel=1e-5)


def test_cka_identity_orthogonal_and_scaling_invariance() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 20, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen))
    assert similarity("cka", x, x) == pytest.approx(1.0, abs=1e-9)
    assert similarity("cka", x, x @ q) == pytest.approx(1.0, abs=1e-6)
    assert similarity("cka", x, 7.5 * x) == pytest.approx(1.0, abs=1e-9)
    y = torch.randn(50, 30, generator=gen)
    assert similarity("cka", x, y) == pytest.approx(similarity("cka", x @ q * 3.0, y), abs=1e-6)
    assert 0.0 <= similarity("cka", x, y) < 0.9


def test_cka_gram_and_feature_forms_agree() -> None:
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(10, 64, generator=gen), torch.randn(10, 48, generator=gen)  # n < d: Gram form
    xt, yt = x[:, :8], y[:, :6]  # n > d: feature form
    kx, ky = x @ x.T, y @ y.T
    h = torch.eye(10) - 1 / 10
    kc, lc = h @ kx @ h, h @ ky @ h
    reference = float((kc * lc).sum() / (kc.norm() * lc.norm()))
    assert similarity("cka", x, y) == pytest.approx(reference, rel=1e-5)
    kx, ky = xt @ xt.T, yt @ yt.T
    kc, lc = h @ kx @ h, h @ ky @ h
    assert similarity("cka", xt, yt) == pytest.approx(
        float((kc * lc).sum() / (kc.norm() * lc.norm())), rel=1e-5
    )


def test_cka_needs_same_number_of_texts() -> None:
    with pytest.raises(UmafError, match="same n"):
        similarity("cka", torch.randn(10, 4), torch.randn(11, 4))


def test_unknown_metric() -> None:
    with pytest.raises(UmafError, match="unknown similarity"):
        similarity("nope", torch.ones(3), torch.ones(3))


@pytest.mark.parametrize("name", VECTOR_METRICS)
def test_similarity_matrix(name: str) -> None:
    vectors = torch.randn(4, 512, generator=torch.Generator().manual_seed(3))
    matrix = similarity_matrix(name, vectors)
    assert matrix.shape == (4, 4) and matrix.dtype == torch.float32
    assert torch.allclose(matrix, matrix.T)
    assert math.isclose(float(matrix[0, 1]), similarity(name, vectors[0], vectors[1]), rel_tol=1e-5)


def test_similarity_matrix_cka_on_activation_sets() -> None:
    gen = torch.Generator().manual_seed(4)
    sets = [torch.randn(12, d, generator=gen) for d in (8, 16, 32)]
    matrix = similarity_matrix("cka", sets)
    assert matrix.shape == (3, 3)
    assert torch.allclose(matrix.diagonal(), torch.ones(3))
