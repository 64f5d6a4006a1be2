"""The CLI end to end on tiny models (its answers to bad input are the corpus in tests/test_bad_input.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from umaf.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA saved as a local Hugging Face folder."""
    from umaf.models import build_tiny

    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    loaded = build_tiny("llama", "xs", seed=1)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path


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


def fingerprint_cli(capsys, tiny_dir, extractor_dir, out: Path, capability: str = "sentiment", *extra: str):
    return run_cli(
        capsys, "fingerprint", tiny_dir, "-c", capability, "-o", out, "--extractor", extractor_dir, *extra
    )


def test_fingerprint_then_compare(capsys, tiny_dir, extractor_dir, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert fingerprint_cli(capsys, tiny_dir, extractor_dir, a, "sentiment", "--part", "0")[0] == 0
    assert fingerprint_cli(capsys, tiny_dir, extractor_dir, b, "reverse", "--part", "1")[0] == 0
    code, out, _ = run_cli(capsys, "compare", a, b, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["labels"][0].endswith(":sentiment") and result["labels"][1].endswith(":reverse")
    assert result["matrix"][0][0] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= result["matrix"][0][1] < 0.9999
    code, out, _ = run_cli(capsys, "compare", a, b, "--metric", "pearson")
    assert code == 0 and "[1]" in out and "sentiment" in out


def test_overwrite_replaces_an_existing_output(capsys, tiny_dir, extractor_dir, tmp_path):
    """Without --overwrite an existing file is refused (tests/test_bad_input.py); with it, replaced."""
    out = tmp_path / "fp.safetensors"
    out.write_bytes(b"keep me")
    assert fingerprint_cli(capsys, tiny_dir, extractor_dir, out, "sentiment", "--overwrite")[0] == 0
    assert out.read_bytes() != b"keep me"


def test_capabilities_list_and_show(capsys):
    code, out, _ = run_cli(capsys, "capabilities", "list")
    assert code == 0 and "sentiment" in out and "(held out)" in out
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


def test_train_lora_then_eval_with_the_adapter(capsys, tiny_dir, tmp_path):
    adapter = tmp_path / "oracle"
    code, _, _ = run_cli(
        capsys, "train", "lora", "--target", tiny_dir, "-c", "parity", "--steps", "2", "-o", adapter
    )
    assert code == 0 and (adapter / "adapter_config.json").is_file()
    code, out, _ = run_cli(
        capsys, "eval", tiny_dir, "--adapter", adapter, "-c", "parity", "--limit", "4", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["capability"] == "parity" and 0.0 <= result["accuracy"] <= 1.0


def test_train_lora_library(capsys, tiny_dir, umaf_cache):
    from umaf.adapters.oracles import library

    lora = ("train", "lora", "--target", tiny_dir, "-c", "parity")
    assert library(tiny_dir) == []
    code, _, err = run_cli(capsys, *lora, "reverse", "--steps", "2")
    assert code == 0 and "2 oracles for" in err
    assert [e.capability for e in library(tiny_dir)] == ["parity", "reverse"]
