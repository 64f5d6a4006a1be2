"""The CLI end to end on tiny models (its answers to bad input are the corpus in tests/test_bad_input.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from umaf.cli import main
from umaf.errors import UmafError


@pytest.fixture(scope="module")
def extractor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained extractor saved to disk (the CLI must accept any saved extractor)."""
    from umaf.extractor import CapabilityExtractor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("extractors") / "untrained"
    CapabilityExtractor().save_pretrained(path)
    return path


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fingerprint_cli(capsys, model_dir, extractor_dir, out: Path, capability: str = "sentiment", *extra: str):
    return run_cli(
        capsys, "fingerprint", model_dir, "-c", capability, "-o", out, "--extractor", extractor_dir, *extra
    )


def test_fingerprint_then_compare(capsys, tiny_llama_dir, extractor_dir, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert fingerprint_cli(capsys, tiny_llama_dir, extractor_dir, a, "sentiment", "--part", "0")[0] == 0
    assert fingerprint_cli(capsys, tiny_llama_dir, extractor_dir, b, "reverse", "--part", "1")[0] == 0
    code, out, _ = run_cli(capsys, "compare", a, b, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["labels"][0].endswith(":sentiment") and result["labels"][1].endswith(":reverse")
    assert result["matrix"][0][0] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= result["matrix"][0][1] < 0.9999
    code, out, _ = run_cli(capsys, "compare", a, b, "--metric", "pearson")
    assert code == 0 and "[1]" in out and "sentiment" in out


def test_overwrite_replaces_an_existing_output(capsys, tiny_llama_dir, extractor_dir, tmp_path):
    """Without --overwrite an existing file is refused (tests/test_bad_input.py); with it, replaced."""
    out = tmp_path / "fp.safetensors"
    out.write_bytes(b"keep me")
    assert fingerprint_cli(capsys, tiny_llama_dir, extractor_dir, out, "sentiment", "--overwrite")[0] == 0
    assert out.read_bytes() != b"keep me"


def test_capabilities_list_and_show(capsys):
    code, out, _ = run_cli(capsys, "capabilities", "list")
    assert code == 0 and "sentiment" in out and "(held out)" in out and "synonym" not in out
    code, wide, _ = run_cli(capsys, "capabilities", "list", "--all")
    assert code == 0 and "synonym" in wide and "country_continent lexical" in wide
    code, out, _ = run_cli(capsys, "capabilities", "show", "add_k:7")
    assert code == 0 and "splits: train=" in out


def test_console_script_exit_code(tmp_path):
    """The installed entry point answers bad input without a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "umaf.cli", "compare", str(tmp_path / "missing.safetensors")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("umaf: error: ") and "Traceback" not in proc.stderr


def test_train_lora_then_eval_with_the_adapter(capsys, tiny_llama_dir, tmp_path):
    adapter = tmp_path / "oracle"
    code, _, _ = run_cli(
        capsys, "train", "lora", "--target", tiny_llama_dir, "-c", "parity", "--steps", "2", "-o", adapter
    )
    assert code == 0 and (adapter / "adapter_config.json").is_file()
    code, out, _ = run_cli(
        capsys, "eval", tiny_llama_dir, "--adapter", adapter, "-c", "parity", "--limit", "4", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["capability"] == "parity" and 0.0 <= result["accuracy"] <= 1.0


def test_train_lora_library(capsys, tiny_llama_dir, umaf_cache):
    from umaf.adapters.oracles import library

    lora = ("train", "lora", "--target", tiny_llama_dir, "-c", "parity")
    assert library(tiny_llama_dir) == []
    code, _, err = run_cli(capsys, *lora, "reverse", "--steps", "2")
    assert code == 0 and "2 oracles for" in err
    assert [e.capability for e in library(tiny_llama_dir)] == ["parity", "reverse"]


# ------------------------------------------------------------------------------------- train flags


def _leaf_flags(cls: type, prefix: str = "") -> dict[str, object]:
    """``{flag: default}`` of every field of a config dataclass, nested configs flattened with a dot."""
    import dataclasses
    import typing

    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_leaf_flags(hints[f.name], f"{prefix}{f.name}."))
        else:
            out["--" + (prefix + f.name).replace("_", "-")] = f
    return out


@pytest.mark.parametrize("component", ["extractor", "interpolator", "fusion", "lora", "generator"])
def test_every_training_setting_is_a_flag_with_the_config_help(component, capsys, monkeypatch):
    from umaf.adapters.oracles import OracleConfig
    from umaf.extractor import TrainConfig
    from umaf.fusion import FusionTrainConfig
    from umaf.generator import GeneratorConfig
    from umaf.interpolator import InterpolatorTrainConfig

    cls = {"extractor": TrainConfig, "interpolator": InterpolatorTrainConfig, "fusion": FusionTrainConfig,
           "lora": OracleConfig, "generator": GeneratorConfig}[component]
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping: each help reads as one line
    with pytest.raises(SystemExit):
        main(["train", component, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = {f: field for f, field in _leaf_flags(cls).items() if not f.endswith("extractor-hash")}
    missing = [f for f in flags if f"{f} " not in text and f"{f}, " not in text]
    assert not missing, missing
    helps = [" ".join(field.metadata["help"].split()) for field in flags.values() if "help" in field.metadata]
    assert all(h in text for h in helps)
    if component == "lora":  # OracleConfig documents its fields with attribute docstrings
        assert "LoRA rank r of every adapted module." in text


def test_flags_reach_the_training_call(monkeypatch, capsys, tmp_path):
    from collections import defaultdict
    from types import SimpleNamespace

    import umaf.adapters.oracles
    import umaf.extractor
    import umaf.fusion
    import umaf.generator
    import umaf.interpolator

    seen = {}

    def spy(name):
        def call(*args, **kwargs):
            seen[name] = args
            return SimpleNamespace(train_report=defaultdict(float))

        return call

    for module, name in ((umaf.extractor, "train_extractor"), (umaf.interpolator, "train_interpolator"),
                         (umaf.fusion, "train_fusion"), (umaf.generator, "train_generator"),
                         (umaf.adapters.oracles, "train_oracle")):  # fmt: skip
        monkeypatch.setattr(module, name, spy(name))
    out = tmp_path / "out"

    def train(*argv):
        assert run_cli(capsys, "train", *argv)[0] == 0

    train("extractor", "--steps", "7", "--extractor.d-model", "64", "--extractor.n-heads", "4",
          "--no-extractor.delta", "--capabilities", "add", "reverse", "--no-progress", "-o", out)  # fmt: skip
    config = seen["train_extractor"][0]
    assert (config.steps, config.extractor.d_model, config.extractor.n_heads) == (7, 64, 4)
    assert config.extractor.delta is False and config.capabilities == ("add", "reverse")
    assert config.progress is False and config.lr == 3e-4  # not given: the default
    train("interpolator", "--held-out-sizes", "xs", "m", "--interpolator.hidden", "32", "-o", out)
    config = seen["train_interpolator"][0]
    assert config.held_out_sizes == ("xs", "m") and config.interpolator.hidden == 32
    train("fusion", "--reference-model", "zoo:x", "--gate.key-dim", "16", "-o", out)
    gate = seen["train_fusion"][0].gate
    assert (gate.reference_model, gate.key_dim, gate.temperature) == ("zoo:x", 16, 0.1)
    train("generator", "--target", "tiny", "--target-modules", "q_proj", "--e2e-steps", "0")
    target, config = seen["train_generator"]
    assert target == config.target == "tiny" and config.target_modules == ("q_proj",)
    train("lora", "--target", "tiny", "-c", "parity", "--steps", "3", "--eval-examples", "4")
    assert seen["train_oracle"][2] == {"steps": 3, "eval_examples": 4}  # only these: the rest is per target


def test_building_the_parser_stays_light():
    code = "import sys, umaf.cli; umaf.cli.build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


@dataclasses.dataclass(frozen=True)
class ToyInner:
    width: int = 8
    """Width of the thing."""

    def __post_init__(self) -> None:
        if self.width < 1:
            raise UmafError(f"width must be positive, got {self.width}")


@dataclasses.dataclass
class ToyOuter:
    inner: ToyInner = dataclasses.field(default_factory=lambda: ToyInner(width=4))
    steps: int = dataclasses.field(default=10, metadata={"help": "Steps."})
    names: tuple[str, ...] | None = ("a",)
    limit: int | None = 5
    fast: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise UmafError(f"steps must be at least 1, got {self.steps}")


def test_config_flags_of_a_toy_config():
    from umaf.config_args import add_config_flags, build_config, config_overrides

    parser = argparse.ArgumentParser()
    add_config_flags(parser, ToyOuter)
    assert "Width of the thing. (default: 4)" in " ".join(parser.format_help().split())

    def parse(*argv: str) -> ToyOuter:
        return build_config(ToyOuter, config_overrides(parser.parse_args(argv)))

    assert parse() == ToyOuter()
    got = parse("--inner.width", "2", "--names", "x", "y", "--limit", "none", "--no-fast")
    assert got == ToyOuter(inner=ToyInner(2), names=("x", "y"), limit=None, fast=False)
    assert parse("--names", "none").names is None
    with pytest.raises(UmafError, match=r"^--steps must be at least 1, got 0$"):  # 0 is a value, not "unset"
        parse("--steps", "0")
    with pytest.raises(UmafError, match=r"^--inner.width must be positive, got 0$"):
        parse("--inner.width", "0")
    with pytest.raises(SystemExit):
        parse("--names", "x", "none")
