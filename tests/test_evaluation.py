"""Accuracy and perplexity of a target with and without an adapter; the caller's model stays as it was."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from umaf.adapters.oracles import OracleConfig, fit_oracle
from umaf.capabilities import CHARSET
from umaf.errors import UmafError
from umaf.evaluation import adapted, evaluate, general_texts, perplexity
from umaf.models import build_tiny


@pytest.fixture(scope="module")
def target():
    """A fresh tiny LLaMA (module-private: tests check that it is never changed)."""
    return build_tiny("llama", "xs", seed=2)


@pytest.fixture(scope="module")
def adapter(target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from umaf.capabilities import get_capability

    out = tmp_path_factory.mktemp("adapters") / "uppercase"
    config = OracleConfig(steps=4, batch_size=4, lr=2e-2, eval_examples=8)
    return fit_oracle(target, "tiny", get_capability("uppercase"), config, out, progress=False)


def _snapshot(model: torch.nn.Module) -> dict:
    return {"weights": {k: v.clone() for k, v in model.state_dict().items()},
            "grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "types": [type(m).__name__ for m in model.modules()], "training": model.training}


def _assert_unchanged(model: torch.nn.Module, snap: dict) -> None:
    now = _snapshot(model)
    assert now["types"] == snap["types"] and now["grad"] == snap["grad"]
    assert now["training"] == snap["training"]
    assert now["weights"].keys() == snap["weights"].keys()
    for key, value in snap["weights"].items():
        assert torch.equal(now["weights"][key], value), key


def test_general_text_is_shipped_and_plain() -> None:
    texts = general_texts()
    assert 90 <= len(texts) <= 200 and len(set(texts)) == len(texts)
    assert set("".join(texts)) <= set(CHARSET)


def test_evaluate_with_and_without_adapter(target, adapter: Path) -> None:
    snap = _snapshot(target.model)
    base = evaluate(target, "uppercase")
    tuned = evaluate(target, "uppercase", adapter=adapter, limit=16)
    assert 0.0 <= base <= 1.0 and 0.0 <= tuned <= 1.0
    _assert_unchanged(target.model, snap)


def test_adapter_changes_the_outputs_only_inside_the_block(target, adapter: Path) -> None:
    ids = torch.tensor([[2, 10, 11, 12]])
    with torch.inference_mode():
        before = target.model(input_ids=ids).logits
    with adapted(target, adapter) as model, torch.inference_mode():
        during = model.model(input_ids=ids).logits
    with torch.inference_mode():
        after = target.model(input_ids=ids).logits
    assert not torch.allclose(before, during) and torch.equal(before, after)


def test_perplexity_is_finite_with_and_without_adapter(target, adapter: Path) -> None:
    snap = _snapshot(target.model)
    base = perplexity(target)
    tuned = perplexity(target, adapter)
    assert math.isfinite(base) and base > 1 and math.isfinite(tuned) and tuned > 1 and base != tuned
    assert perplexity(target, texts=["a b c", "hello there."]) > 1
    _assert_unchanged(target.model, snap)


def test_perplexity_needs_a_causal_lm(tiny_bert) -> None:
    with pytest.raises(UmafError, match="causal LM"):
        perplexity(tiny_bert)


def test_missing_adapter(target, tmp_path: Path) -> None:
    with pytest.raises(UmafError, match="does not exist"):
        evaluate(target, "uppercase", adapter=tmp_path / "nowhere")


def test_adapter_of_another_model_is_refused_and_changes_nothing(target, tmp_path: Path) -> None:
    from umaf.capabilities import get_capability

    wider = build_tiny("llama", "s", seed=0)  # width 64 instead of 32
    config = OracleConfig(steps=1, batch_size=2, eval_examples=2)
    other = fit_oracle(wider, "wider", get_capability("uppercase"), config, tmp_path / "w", progress=False)
    snap = _snapshot(target.model)
    with pytest.raises(UmafError, match="does not fit"):
        evaluate(target, "uppercase", adapter=other)
    _assert_unchanged(target.model, snap)
    gpt2 = build_tiny("gpt2", "xs")
    with pytest.raises(UmafError, match="no linear layer"):
        perplexity(gpt2, other)


def test_corrupt_adapter_is_refused(target, adapter: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(adapter, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UmafError, match="corrupt"):
        evaluate(target, "uppercase", adapter=broken)


def test_inputs_longer_than_the_position_table_are_cut_not_overflowed(tiny_gpt2, tmp_path, one_thread):
    import json

    from umaf.competence import measure_competence
    from umaf.encoding import position_limit

    limit = position_limit(tiny_gpt2.model)
    assert limit is not None
    path = tmp_path / "long.jsonl"
    rows = [{"input": f"w{i} " * limit, "output": f"x{i % 3}"} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert 0.0 <= evaluate(tiny_gpt2, str(path)) <= 1.0
    reading = measure_competence(tiny_gpt2, str(path))
    assert reading.score is not None and 0.0 <= reading.score <= 1.0
