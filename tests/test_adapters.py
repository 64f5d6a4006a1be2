"""Oracle LoRAs: training a few steps, the PEFT folder, ΔW, the cache, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from umaf.adapters.oracles import (
    ORACLE_FILE,
    OracleConfig,
    build_library,
    default_config,
    library,
    oracle_dir,
    train_oracle,
)
from umaf.adapters.peft_io import delta_weights, linear_module_names, read_adapter
from umaf.errors import UmafError
from umaf.models import build_tiny, load

FAST = OracleConfig(steps=3, batch_size=4, lr=1e-2, eval_examples=8)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh tiny LLaMA saved as a local folder (the oracles' target)."""
    path = tmp_path_factory.mktemp("target") / "tiny-llama"
    loaded = build_tiny("llama", "xs", seed=1)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def oracle(tiny_dir: str) -> Path:
    """One cached oracle of ``uppercase`` trained for three steps."""
    return train_oracle(tiny_dir, "uppercase", FAST, progress=False)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_oracle_is_a_plain_peft_folder(oracle: Path, tiny_dir: str) -> None:
    from peft import PeftModel

    files = {p.name for p in oracle.iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors", ORACLE_FILE}
    meta = json.loads((oracle / ORACLE_FILE).read_text())
    assert meta["capability"] == "uppercase" and meta["config"] == FAST.to_dict()
    assert 0 <= meta["base_accuracy"] <= 1 and 0 <= meta["oracle_accuracy"] <= 1
    assert meta["train_seconds"] > 0 and meta["umaf_version"]
    base = load(tiny_dir).model
    before = _logits(base)
    peft_model = PeftModel.from_pretrained(base, str(oracle))
    merged = peft_model.merge_and_unload()
    assert not torch.allclose(_logits(merged), before)


def test_delta_weights_match_the_merged_difference(oracle: Path, tiny_dir: str) -> None:
    from peft import PeftModel

    base = load(tiny_dir).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, str(oracle)).merge_and_unload().state_dict()
    deltas = delta_weights(oracle)
    assert len(deltas) == 2 * 2  # q_proj and v_proj of 2 blocks
    for name, delta in deltas.items():
        assert delta.shape == before[f"{name}.weight"].shape  # [out, in]
        torch.testing.assert_close(merged[f"{name}.weight"] - before[f"{name}.weight"], delta,
                                   atol=1e-6, rtol=1e-4)
    assert any(d.abs().max() > 0 for d in deltas.values())


def _peft_lora(folder: Path, seed: int = 0, **settings: object) -> dict[str, torch.Tensor]:
    """Save a PEFT adapter (``LoraConfig(**settings)``) with random non-zero factors on a fresh tiny LLaMA;
    returns the base model's state dict from before."""
    from peft import LoraConfig, get_peft_model

    base = build_tiny("llama", "xs", seed=3).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(target_modules=["q_proj", "v_proj"], **settings))
    for name, param in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    model.save_pretrained(str(folder))
    return before


@pytest.mark.parametrize("settings", [
    {"r": 4, "lora_alpha": 8, "use_rslora": True},  # scale alpha / sqrt(r) = 4, not alpha / r = 2
    {"r": 4, "lora_alpha": 8, "rank_pattern": {"v_proj": 2},
     "alpha_pattern": {"layers.0.self_attn.q_proj": 3}},
], ids=["rslora", "rank-and-alpha-pattern"])
def test_delta_weights_are_what_peft_merges(settings: dict, tmp_path: Path) -> None:
    from peft import PeftModel

    before = _peft_lora(tmp_path / "adapter", **settings)
    merged = PeftModel.from_pretrained(build_tiny("llama", "xs", seed=3).model, str(tmp_path / "adapter"))
    merged = merged.merge_and_unload().state_dict()
    deltas = delta_weights(tmp_path / "adapter")
    assert len(deltas) == 4
    for name, delta in deltas.items():
        torch.testing.assert_close(delta, merged[f"{name}.weight"] - before[f"{name}.weight"],
                                   atol=1e-5, rtol=1e-4)
    if "rank_pattern" in settings:
        from umaf.adapters.peft_io import lora_factors

        ranks = {name: a.shape[0] for name, (a, _) in lora_factors(tmp_path / "adapter")[1].items()}
        assert ranks["model.layers.1.self_attn.v_proj"] == 2 and ranks["model.layers.1.self_attn.q_proj"] == 4


@pytest.mark.parametrize(("settings", "needle"), [
    ({"use_dora": True}, "DoRA"),
    ({"lora_bias": True}, "lora_bias"),
    ({"bias": "lora_only"}, "bias=lora_only"),
], ids=["dora", "lora-bias", "trained-bias"])
def test_adapters_that_are_not_plain_lora_are_refused(settings: dict, needle: str, tmp_path: Path) -> None:
    from umaf.adapters.peft_io import check_adapter_fits, lora_factors

    _peft_lora(tmp_path / "adapter", r=4, lora_alpha=8, **settings)
    with pytest.raises(UmafError, match="cannot read ΔW") as err:
        delta_weights(tmp_path / "adapter")
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert len(lora_factors(tmp_path / "adapter")[1]) == 4  # still readable: evaluation can apply it
    check_adapter_fits(tmp_path / "adapter", build_tiny("llama", "xs").model)


def test_an_adapter_of_another_peft_type_is_refused(tmp_path: Path) -> None:
    from peft import IA3Config, get_peft_model

    config = IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"])
    model = get_peft_model(build_tiny("llama", "xs").model, config)
    model.save_pretrained(str(tmp_path / "ia3"))
    with pytest.raises(UmafError, match="not a LoRA adapter"):
        delta_weights(tmp_path / "ia3")


def test_cached_oracle_is_reused(oracle: Path, tiny_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from umaf.adapters import oracles

    assert oracle == oracle_dir(tiny_dir, "uppercase")
    monkeypatch.setattr(oracles, "fit_oracle", lambda *a, **k: pytest.fail("retrained a cached oracle"))
    assert train_oracle(tiny_dir, "uppercase", FAST, progress=False) == oracle
    entries = library(tiny_dir)
    assert [e.capability for e in entries] == ["uppercase"] and entries[0].config == FAST


def test_cached_oracle_with_another_config_needs_overwrite(oracle: Path, tiny_dir: str) -> None:
    with pytest.raises(UmafError, match="another config"):
        train_oracle(tiny_dir, "uppercase", OracleConfig(steps=2, batch_size=4, eval_examples=8),
                     progress=False)


def test_training_is_deterministic(tiny_dir: str, tmp_path: Path) -> None:
    a = train_oracle(tiny_dir, "reverse", FAST, output=tmp_path / "a", progress=False)
    b = train_oracle(tiny_dir, "reverse", FAST, output=tmp_path / "b", progress=False)
    for name, delta in delta_weights(a).items():
        torch.testing.assert_close(delta, delta_weights(b)[name])


def test_existing_output_needs_overwrite(tiny_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    with pytest.raises(UmafError, match="exists"):
        train_oracle(tiny_dir, "reverse", FAST, output=out, progress=False)
    train_oracle(tiny_dir, "reverse", FAST, output=out, overwrite=True, progress=False)
    assert (out / "adapter_model.safetensors").is_file()


def test_failed_training_leaves_nothing(tiny_dir: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from umaf.adapters import oracles

    def boom(*args: object, **kwargs: object) -> None:
        raise UmafError("interrupted")

    def half_written(peft_model: object, tmp: Path, meta: dict) -> None:
        (tmp / "adapter_config.json").write_text("{}")
        raise UmafError("disk full")

    monkeypatch.setattr(oracles, "fit_lora", boom)
    with pytest.raises(UmafError, match="interrupted"):
        train_oracle(tiny_dir, "reverse", FAST, output=tmp_path / "out", progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(oracles, "_save_adapter", half_written)
    with pytest.raises(UmafError, match="disk full"):
        train_oracle(tiny_dir, "reverse", FAST, output=tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_target_module_names_the_available_ones(tiny_dir: str, tmp_path: Path) -> None:
    config = OracleConfig(steps=1, target_modules=("q_proj", "c_attn"))
    with pytest.raises(UmafError, match=r"c_attn.*q_proj.*v_proj"):
        train_oracle(tiny_dir, "reverse", config, output=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_rank_larger_than_the_module_is_refused(tiny_dir: str, tmp_path: Path) -> None:
    with pytest.raises(UmafError, match="rank 64"):
        config = OracleConfig(steps=1, rank=64)
        train_oracle(tiny_dir, "reverse", config, output=tmp_path / "x", progress=False)


def test_masked_lm_target_is_refused(tiny_bert, tmp_path: Path) -> None:
    with pytest.raises(UmafError, match="generates answers"):
        train_oracle(tiny_bert, "reverse", FAST, output=tmp_path / "x", progress=False)


@pytest.mark.parametrize("bad", [{"rank": 0}, {"lr": -1.0}, {"steps": 0}, {"dtype": "int8"},
                                 {"target_modules": ()}, {"dropout": 1.5}, {"eval_examples": 0},
                                 {"replay": -1.0}, {"replay_batch": 0}])
def test_config_validation(bad: dict) -> None:
    with pytest.raises(UmafError, match="oracle config"):
        OracleConfig(**bad)


def test_config_round_trip_and_defaults(tiny_llama) -> None:
    config = OracleConfig(target_modules=["q_proj", "o_proj"])
    assert config.target_modules == ("q_proj", "o_proj")
    assert OracleConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(UmafError, match="unknown field"):
        OracleConfig.from_dict({"rank": 4, "colour": "red"})
    from dataclasses import replace

    from umaf.adapters.oracles import resolve_config

    defaults = default_config(tiny_llama.info)  # overrides land on the target's defaults, None keeps one
    assert resolve_config(tiny_llama.info, {"steps": 2, "lr": None}) == replace(defaults, steps=2)
    assert resolve_config(tiny_llama.info, FAST) is FAST
    names = set(linear_module_names(tiny_llama.model))
    assert {"q_proj", "v_proj", "o_proj", "up_proj", "down_proj"} <= names
    assert "lm_head" not in linear_module_names(tiny_llama.model)


def test_build_library_resumes(tiny_dir: str, oracle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from umaf.adapters import oracles

    entries = build_library(tiny_dir, ["uppercase", "first_letter", "add_k:7"], FAST, progress=False)
    assert [e.capability for e in entries] == ["uppercase", "first_letter", "add_k:7"]
    assert entries[2].path == oracle_dir(tiny_dir, "add_k:7") and entries[2].path.name == "add_k-7"
    monkeypatch.setattr(oracles, "fit_oracle", lambda *a, **k: pytest.fail("rebuilt a finished oracle"))
    again = build_library(tiny_dir, ["first_letter", "add_k:7"], FAST, progress=False)
    assert [e.oracle_accuracy for e in again] == [e.oracle_accuracy for e in entries[1:]]
    assert {"uppercase", "first_letter", "add_k:7"} <= {e.capability for e in library(tiny_dir)}


def test_config_overrides_of_the_defaults(tiny_dir: str, tmp_path: Path) -> None:
    overrides = {"steps": 2, "batch_size": 4, "eval_examples": 4, "lr": None}  # None: keep the default
    out = train_oracle(tiny_dir, "reverse", overrides, output=tmp_path / "o", progress=False)
    config = json.loads((out / ORACLE_FILE).read_text())["config"]
    assert config["steps"] == 2 and config["lr"] == default_config(load(tiny_dir).info).lr
    with pytest.raises(UmafError, match="unknown field"):
        train_oracle(tiny_dir, "reverse", {"colour": "red"}, output=tmp_path / "p", progress=False)


def test_slug() -> None:
    from umaf.io import slug

    assert slug("zoo:llama-m-a") == "zoo-llama-m-a"
    assert slug("/tmp/x y/model") == "tmp-x-y-model"


def test_missing_and_corrupt_adapters(oracle: Path, tmp_path: Path) -> None:
    import shutil

    with pytest.raises(UmafError, match="does not exist"):
        delta_weights(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(oracle, broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UmafError, match="corrupt"):
        delta_weights(broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(UmafError, match="not valid JSON"):
        read_adapter(broken)
    weights.unlink()
    with pytest.raises(UmafError, match="missing adapter_model.safetensors"):
        delta_weights(broken)


def test_half_an_adapter_is_corrupt(oracle: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    half = tmp_path / "half"
    half.mkdir()
    (half / "adapter_config.json").write_text((oracle / "adapter_config.json").read_text())
    tensors = {k: v for k, v in load_file(oracle / "adapter_model.safetensors").items() if "lora_B" not in k}
    save_file(tensors, half / "adapter_model.safetensors")
    with pytest.raises(UmafError, match="missing or mismatched"):
        delta_weights(half)


def test_replay_text_is_disjoint_from_the_perplexity_set(tiny_llama, tiny_t5) -> None:
    from umaf.adapters.oracles import replay_items
    from umaf.evaluation import general_texts

    items = replay_items(tiny_llama, max_length=32)
    assert len(items) >= 50 and all(it.input_ids == it.labels and 0 < len(it.input_ids) <= 32 for it in items)
    replay = (Path(__file__).parents[1] / "src/umaf/data/replay.txt").read_text().splitlines()
    assert not set(replay) & set(general_texts())
    assert replay_items(tiny_t5, max_length=32) == []  # only causal LMs read general text


def test_replay_changes_training_and_keeps_task_loss_reported(tiny_dir: str, tmp_path: Path) -> None:
    plain = train_oracle(tiny_dir, "reverse", FAST, output=tmp_path / "plain")
    replayed = train_oracle(tiny_dir, "reverse", OracleConfig(**{**FAST.to_dict(), "replay": 1.0}),
                            output=tmp_path / "replay")  # fmt: skip
    metas = [json.loads((p / ORACLE_FILE).read_text()) for p in (plain, replayed)]
    assert metas[1]["config"]["replay"] == 1.0 and metas[0]["config"]["replay"] == 0.0
    assert metas[0]["loss_curve"][0] == metas[1]["loss_curve"][0]  # same first task batch, before any update
    assert metas[0]["loss_curve"][-1] != metas[1]["loss_curve"][-1]
