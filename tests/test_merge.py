"""Merging LoRA adapters of one target: rank concatenation, PEFT merges, distillation, input separability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from umaf.adapters.merge import (
    MERGE_FILE,
    MERGE_METHODS,
    PEFT_MERGES,
    SEPARABLE,
    DistilConfig,
    check_merge,
    concatenated,
    input_separability,
    left_out_note,
    merge_adapters,
    screen_constituents,
    separability_warning,
)
from umaf.adapters.peft_io import delta_weights
from umaf.capabilities import get_capability
from umaf.errors import UmafError
from umaf.models import build_tiny


def _lora(folder: Path, seed: int, **settings: object) -> Path:
    """A PEFT LoRA with random non-zero factors for the tiny LLaMA (seed 1, as ``tiny_llama``)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **settings}
    model = get_peft_model(build_tiny("llama", "xs", seed=1).model, LoraConfig(**config))
    for name, param in model.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(param, std=0.2)
    model.save_pretrained(str(folder))
    return folder


def _save(config: dict, tensors: dict, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def test_concatenation_sums_the_weighted_updates(tmp_path: Path) -> None:
    a = _lora(tmp_path / "a", 0)
    b = _lora(tmp_path / "b", 1, r=2, lora_alpha=3, rank_pattern={"v_proj": 3})
    config = json.loads((b / "adapter_config.json").read_text())  # PEFT writes the modules in any order
    config["target_modules"] = sorted(config["target_modules"], reverse=True)
    (b / "adapter_config.json").write_text(json.dumps(config))
    assert check_merge([a, b], "linear", None, None) == [1.0, 1.0]
    config, tensors = concatenated([a, b], [0.5, 2.0])
    cat = _save(config, tensors, tmp_path / "cat")
    da, db, dc = delta_weights(a), delta_weights(b), delta_weights(cat)
    assert set(dc) == set(da) == set(db)
    for name, delta in dc.items():
        torch.testing.assert_close(delta, 0.5 * da[name] + 2.0 * db[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", PEFT_MERGES)
def test_peft_merges_write_a_plain_lora(method: str, tiny_llama, tmp_path: Path) -> None:
    from peft import PeftModel

    adapters = [_lora(tmp_path / f"lora{i}", i) for i in range(2)]
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    merged = merge_adapters(tiny_llama, adapters, tmp_path / "merged", method=method)
    assert sorted(p.name for p in merged.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                       MERGE_FILE]  # fmt: skip
    assert json.loads((merged / MERGE_FILE).read_text())["method"] == method
    loaded = PeftModel.from_pretrained(build_tiny("llama", "xs", seed=1).model, str(merged))
    assert any(p.abs().sum() > 0 for n, p in loaded.named_parameters() if "lora_B" in n)
    after = tiny_llama.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_distillation_trains_from_the_concatenation(tiny_llama, tmp_path: Path) -> None:
    adapters = [_lora(tmp_path / f"lora{i}", i, r=2, lora_alpha=2) for i in range(2)]
    caps = [get_capability("uppercase"), get_capability("reverse")]
    config = DistilConfig(steps=3, batch_size=4, inputs=6)
    model = tiny_llama.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags, training = {n: p.requires_grad for n, p in model.named_parameters()}, model.training
    merged = merge_adapters(tiny_llama, adapters, tmp_path / "merged", capabilities=caps, config=config)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags and model.training == training
    meta = json.loads((merged / MERGE_FILE).read_text())
    assert meta["method"] == "distil" and meta["rank"] == 4
    assert meta["capabilities"] == ["uppercase", "reverse"]
    assert 0 < sum(s.get("n_distilled", 0) for s in meta["screen"]) <= 12 and meta["config"]["steps"] == 3
    start = _save(*concatenated(adapters, [1.0, 1.0]), tmp_path / "start")
    trained, summed = delta_weights(merged), delta_weights(start)
    assert set(trained) == set(summed)
    assert any(not torch.allclose(trained[k], summed[k]) for k in trained), "the fit changed the adapter"
    assert not (tmp_path / "merged" / "start").exists()


def test_bad_merges_fail_before_writing(tiny_llama, tmp_path: Path) -> None:
    a, b = _lora(tmp_path / "a", 0), _lora(tmp_path / "b", 1)
    other = _lora(tmp_path / "other", 2, target_modules=["q_proj"])
    smaller = _lora(tmp_path / "smaller", 3, r=2)
    out = tmp_path / "out"
    cases = [
        ({"adapters": [a, b], "method": "mean"}, "unknown merge method 'mean'"),
        ({"adapters": [a]}, "at least two adapters"),
        ({"adapters": [a, other], "method": "linear"}, "different modules"),
        ({"adapters": [a, b]}, "needs each adapter's capability"),
        ({"adapters": [a, b], "method": "linear", "weights": [1.0]}, "one positive weight per adapter"),
        ({"adapters": [a, b], "method": "linear", "weights": [1.0, -1.0]}, "one positive weight"),
        ({"adapters": [a, tmp_path / "missing"], "method": "linear"}, "does not exist"),
        ({"adapters": [a, smaller], "method": "linear"}, "PEFT cannot merge these adapters with 'linear'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UmafError, match=message):
            merge_adapters(tiny_llama, output=out, **kwargs)
        assert not out.exists()
    out.mkdir()
    with pytest.raises(UmafError, match="--overwrite"):
        merge_adapters(tiny_llama, [a, b], out, method="linear")
    with pytest.raises(UmafError, match="steps must be at least 1"):
        DistilConfig(steps=0)


def test_separability_is_chance_for_the_same_inputs(tiny_llama) -> None:
    cap = get_capability("uppercase")
    assert input_separability(tiny_llama, [cap, cap], n=32) == pytest.approx(0.5)
    apart = input_separability(tiny_llama, [cap, get_capability("sentiment")], n=32)
    assert apart > 0.75, "words and sentences look different even to a random-init model"
    with pytest.raises(UmafError, match="at least two"):
        input_separability(tiny_llama, [cap])


def test_separability_warns_below_the_threshold() -> None:
    assert separability_warning(SEPARABLE) is None and separability_warning(1.0) is None
    assert str(SEPARABLE) in (separability_warning(SEPARABLE - 0.02) or "")


def test_cli_offers_every_merge_method() -> None:
    from umaf.cli import build_parser

    merge = build_parser()._subparsers._group_actions[0].choices["merge"]
    method = next(a for a in merge._actions if a.dest == "method")
    assert tuple(method.choices) == MERGE_METHODS and method.default == "distil"


def test_cli_merge(tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from umaf.cli import main

    a, b = _lora(tmp_path / "a", 0), _lora(tmp_path / "b", 1)
    out = tmp_path / "merged"
    common = ["--target", str(tiny_llama_dir), "-o", str(out)]
    assert main(["merge", str(a), str(b), "-c", "uppercase", "sentiment", "--steps", "2", *common]) == 0
    err = capsys.readouterr().err
    assert "tells the inputs of uppercase / sentiment apart at" in err and "wrote" in err
    assert json.loads((out / MERGE_FILE).read_text())["config"]["steps"] == 2
    for argv, message in [
        (["merge", str(a), str(b), *common, "--overwrite", "--method", "mean"], None),  # argparse choice
        (["merge", str(a), str(b), *common], "exists; pass --overwrite"),
        (["merge", str(a), str(b), *common, "--overwrite"], "needs each adapter's capability"),
        (["merge", str(a), str(b), *common, "--overwrite", "-c", "plural"], "give one each"),
        (["merge", str(a), str(b), *common, "--overwrite", "-c", "plural", "flying"], "unknown capability"),
        (["merge", str(a), str(b), *common, "--overwrite", "--method", "ties", "--steps", "3"], "--steps is"),
    ]:
        if message is None:
            with pytest.raises(SystemExit):
                main(argv)
            capsys.readouterr()
            continue
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert json.loads((out / MERGE_FILE).read_text())["config"]["steps"] == 2, "left as it was"


def test_distillation_weighs_every_constituent_the_same() -> None:
    from umaf.adapters.merge import balanced

    small, large = [("a", "1")], [(f"b{i}", "2") for i in range(5)]
    rows = balanced([small, large, []])
    assert len(rows) == 10 and rows.count(("a", "1")) == 5 and set(large) <= set(rows)
    assert balanced([[], []]) == []


def test_constituents_that_do_not_beat_the_target_are_left_out(tiny_llama, tmp_path: Path) -> None:
    caps = [get_capability("uppercase"), get_capability("reverse"), get_capability("uppercase")]
    config = DistilConfig(screen=8)  # the tiny LLaMA answers none of them: 0.0 on each
    budgets = [20, 20, 20]
    screen = screen_constituents(tiny_llama, caps, [0.5, 0.02, 0.0], budgets, config)
    assert [(s["capability"], s["target"], s["kept"]) for s in screen] == [
        ("uppercase", 0.0, True), ("reverse", 0.0, False), ("uppercase", 0.0, False)]  # one entry per adapter
    none = screen_constituents(tiny_llama, caps[:2], [0.0, 0.0], budgets[:2], config)
    assert all(s["kept"] and s["none_gains"] for s in none)
    off = DistilConfig(min_gain=None)
    unscreened = screen_constituents(tiny_llama, caps[:2], [0.5, 0.0], budgets[:2], off)
    assert all(s["kept"] and "target" not in s for s in unscreened)
    assert left_out_note(tmp_path) is None
    for entries, expected in [(unscreened, None), (screen, "left out of the merge"), (none, "all kept")]:
        (tmp_path / MERGE_FILE).write_text(json.dumps({"screen": entries, "config": {"min_gain": 0.05}}))
        note = left_out_note(tmp_path)
        assert note == expected if expected is None else (note is not None and expected in note)
    (tmp_path / MERGE_FILE).write_text(json.dumps({"screen": screen, "config": {"min_gain": 0.05}}))
    note = left_out_note(tmp_path)
    assert note is not None and "reverse (adapter 0.02, target alone 0.00)" in note and "0.05 better" in note
    assert "uppercase (adapter 0.50" not in note
