"""The CLI end to end on tiny models, and its answer to bad input: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("umaf: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


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


def test_existing_output_is_not_clobbered(capsys, tiny_dir, extractor_dir, tmp_path):
    out = tmp_path / "fp.safetensors"
    out.write_bytes(b"keep me")
    code, _, err = fingerprint_cli(capsys, tiny_dir, extractor_dir, out)
    assert_one_line_error(code, err, "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert fingerprint_cli(capsys, tiny_dir, extractor_dir, out, "sentiment", "--overwrite")[0] == 0
    assert out.read_bytes() != b"keep me"


@pytest.mark.parametrize(
    ("model", "capability", "jsonl", "needle"),
    [
        ("no-such-model-xyz", "sentiment", None, "no-such-model-xyz"),
        (None, "no_such_capability", None, "no_such_capability"),
        (None, "{jsonl}", "", "empty"),
        (None, "{jsonl}", '{"input": "a", "output": \n', "user.jsonl:1: malformed"),
        (None, "{jsonl}", "".join(f'{{"input": "x{i}", "output": "y"}}\n' for i in range(5)), "16"),
    ],
    ids=["unknown-model", "unknown-capability", "empty-jsonl", "malformed-jsonl", "too-few-probes"],
)
def test_fingerprint_bad_input(capsys, tiny_dir, extractor_dir, tmp_path, model, capability, jsonl, needle):
    if jsonl is not None:
        path = tmp_path / "user.jsonl"
        path.write_text(jsonl)
        capability = str(path)
    out = tmp_path / "fp.safetensors"
    code, _, err = run_cli(
        capsys, "fingerprint", model or tiny_dir, "-c", capability, "-o", out, "--extractor", extractor_dir
    )
    assert_one_line_error(code, err, needle)
    assert list(tmp_path.glob("*.safetensors")) == [] and list(tmp_path.glob(".*")) == []


def test_compare_rejects_foreign_and_misshapen_files(capsys, tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    code, _, err = run_cli(capsys, "compare", foreign, foreign)
    assert_one_line_error(code, err, "foreign.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    code, _, err = run_cli(capsys, "compare", garbage)
    assert_one_line_error(code, err, "garbage.safetensors")


def test_compare_rejects_mixed_extractors(capsys, tiny_dir, extractor_dir, tmp_path):
    from umaf.extractor import CapabilityExtractor

    torch.manual_seed(1)
    other = tmp_path / "other-extractor"
    CapabilityExtractor().save_pretrained(other)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert fingerprint_cli(capsys, tiny_dir, extractor_dir, a)[0] == 0
    assert run_cli(capsys, "fingerprint", tiny_dir, "-c", "sentiment", "-o", b, "--extractor", other)[0] == 0
    code, _, err = run_cli(capsys, "compare", a, b)
    assert_one_line_error(code, err, "different extractors")


def test_capabilities_list_and_show(capsys):
    code, out, _ = run_cli(capsys, "capabilities", "list")
    assert code == 0 and "sentiment" in out and "(held out)" in out
    code, out, _ = run_cli(capsys, "capabilities", "show", "add_k:7")
    assert code == 0 and "splits: train=" in out
    code, _, err = run_cli(capsys, "capabilities", "show", "add_k:x")
    assert_one_line_error(code, err, "add_k:x")


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
    code, out, _ = run_cli(capsys, "eval", tiny_dir, "--adapter", adapter, "-c", "parity", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["capability"] == "parity" and 0.0 <= result["accuracy"] <= 1.0


def test_train_lora_library_and_its_bad_input(capsys, tiny_dir, umaf_cache, tmp_path):
    from umaf.lora import library

    lora = ("train", "lora", "--target", tiny_dir, "-c", "parity")
    code, _, err = run_cli(capsys, *lora, "flying")
    assert_one_line_error(code, err, "flying")
    code, _, err = run_cli(capsys, *lora, "reverse", "-o", tmp_path)
    assert_one_line_error(code, err, "--output takes one capability")
    assert library(tiny_dir) == []
    code, _, err = run_cli(capsys, *lora, "reverse", "--steps", "2")
    assert code == 0 and "2 oracles for" in err
    assert [e.capability for e in library(tiny_dir)] == ["parity", "reverse"]


def test_generate_without_a_trained_generator_says_how_to_train_one(
    capsys, tiny_dir, extractor_dir, tmp_path
):
    fp = tmp_path / "fp.safetensors"
    assert fingerprint_cli(capsys, tiny_dir, extractor_dir, fp)[0] == 0
    code, _, err = run_cli(capsys, "generate", fp, "--target", "zoo:nothing", "-o", tmp_path / "adapter")
    assert_one_line_error(code, err, "umaf train generator --target zoo:nothing")
    assert not (tmp_path / "adapter").exists()
