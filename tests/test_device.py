"""Device and dtype: one place parses and defaults them, every model load honours them, and the CLI flags
reach the API. Runs on the CPU; CUDA is only ever pretended (``torch.cuda.is_available`` patched)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import umaf.models
from umaf.cli import main
from umaf.errors import UmafError
from umaf.models import (
    DTYPES,
    default_device,
    load,
    load_defaults,
    parse_device,
    resolve_device,
    resolve_dtype,
)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---------------------------------------------------------------------------------------- one place


@pytest.mark.parametrize(("available", "expected"), [(False, "cpu"), (True, "cuda")])
def test_default_device_is_cuda_when_available(monkeypatch: pytest.MonkeyPatch, available: bool,
                                               expected: str) -> None:  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device(None) == torch.device(expected)
    assert resolve_device("auto") == default_device() == torch.device(expected)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_cuda_is_one_line_error(no_cuda: None, tiny_llama_dir: Path, name: str) -> None:
    with pytest.raises(UmafError, match="CUDA is not available") as err:
        resolve_device(name)
    assert "\n" not in str(err.value)
    with pytest.raises(UmafError, match="CUDA is not available"):
        load(tiny_llama_dir, device=name)


@pytest.mark.parametrize("name", ["tpu9", "xla", "cuda:x", "", "gpu"])
def test_unknown_device_names_are_refused(name: str) -> None:
    with pytest.raises(UmafError, match=f"unknown device '{name}'"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["int3", "float64", "int8", torch.int8, torch.float64])
def test_unknown_dtypes_are_refused(name: object) -> None:
    with pytest.raises(UmafError, match="unknown dtype"):
        resolve_dtype(name)


def test_names_parse_without_the_device_being_here(no_cuda: None) -> None:
    assert parse_device("cuda:1") == torch.device("cuda", 1) and parse_device("auto") is None
    assert resolve_dtype(None) is torch.float32
    for name, dtype in DTYPES.items():
        assert resolve_dtype(name) is dtype and resolve_dtype(dtype) is dtype


def test_load_defaults_scope_the_defaults(no_cuda: None, tiny_llama_dir: Path) -> None:
    with load_defaults("cpu", "bfloat16"):
        assert load(tiny_llama_dir).dtype == torch.bfloat16
        with load_defaults(dtype="float16"):  # None keeps the outer device
            assert default_device() == torch.device("cpu") and resolve_dtype(None) is torch.float16
        assert load(tiny_llama_dir, dtype="float32").dtype == torch.float32  # an explicit dtype wins
    assert resolve_dtype(None) is torch.float32


# ------------------------------------------------------------------------------------- bfloat16 on cpu


@pytest.fixture(scope="module")
def bf16(tiny_llama_dir: Path):
    loaded = load(tiny_llama_dir, dtype="bfloat16", device="cpu")
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.bfloat16
    return loaded


def test_bfloat16_fingerprint_stays_float32_and_matches(bf16, tiny_llama_dir: Path) -> None:
    from umaf.extractor import CapabilityExtractor, fingerprint

    torch.manual_seed(0)
    extractor = CapabilityExtractor().eval()
    half = fingerprint(bf16, "plural", extractor, n_probes=16, progress=False)
    full = fingerprint(load(tiny_llama_dir, device="cpu"), "plural", extractor, n_probes=16, progress=False)
    assert half.vector.dtype == torch.float32 and torch.isfinite(half.vector).all()
    assert float(torch.nn.functional.cosine_similarity(half.vector, full.vector, dim=0)) > 0.95


def test_bfloat16_evaluates(bf16, tiny_llama_dir: Path) -> None:
    from umaf.evaluation import evaluate, perplexity

    assert 0.0 <= evaluate(bf16, "plural", limit=4) <= 1.0
    assert math.isfinite(perplexity(bf16, texts=["a short line of text.", "another one."]))
    assert 0.0 <= evaluate(str(tiny_llama_dir), "plural", limit=4, device="cpu", dtype="bfloat16") <= 1.0


def test_loaded_model_moves_in_place(tiny_llama_dir: Path) -> None:
    loaded = load(tiny_llama_dir, device="cpu")
    assert loaded.to("cpu", "bfloat16") is loaded and loaded.dtype == torch.bfloat16


# ----------------------------------------------------------------------------------- API and CLI reach


class _Stop(Exception):
    """Raised by the recording stand-ins: the test needs only the arguments."""


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Calls to ``umaf.models.load`` are recorded (and stopped) instead of loading anything."""
    calls: dict = {}

    def fake_load(name, allow_download=False, dtype=None, device=None):
        calls.update(name=name, dtype=dtype, device=device)
        raise _Stop

    monkeypatch.setattr(umaf.models, "load", fake_load)
    return calls


@pytest.mark.parametrize("command", ["fingerprint", "eval"])
def test_cli_device_and_dtype_reach_load(command: str, recorded: dict, tmp_path: Path) -> None:
    from umaf.extractor import CapabilityExtractor

    CapabilityExtractor().save_pretrained(tmp_path / "extractor")
    extra = ["-o", tmp_path / "fp.safetensors", "--extractor", tmp_path / "extractor"]
    argv = [command, "some-model", "-c", "plural", *(extra if command == "fingerprint" else [])]
    with pytest.raises(_Stop):
        main([str(a) for a in argv] + ["--device", "cpu", "--dtype", "bfloat16"])
    assert recorded == {"name": "some-model", "dtype": "bfloat16", "device": "cpu"}


def test_oracle_config_device_and_dtype_reach_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from umaf.adapters import oracles

    calls: dict = {}

    def fake_load(name, **kwargs):
        calls.update(kwargs)
        raise _Stop

    monkeypatch.setattr(oracles, "load", fake_load)
    with pytest.raises(_Stop):
        oracles.load_target("some-model", {"device": "cpu", "dtype": "bfloat16"})
    assert calls == {"dtype": "bfloat16", "device": "cpu"}
    assert "device" not in oracles.OracleConfig(device="cpu").to_dict()  # reused whatever trains it


def test_cli_bench_passes_device_and_dtype(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import umaf.bench

    calls: dict = {}
    monkeypatch.setattr(umaf.bench, "run_benchmark", lambda *a, **kw: calls.update(kw))
    assert main(["bench", "size", "--json", str(tmp_path / "b.json"), "--device", "cpu", "--dtype",
                 "bfloat16"]) == 0  # fmt: skip
    assert calls["device"] == "cpu" and calls["dtype"] == "bfloat16"


def test_cli_zoo_build_passes_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import umaf.zoo

    calls: dict = {}
    monkeypatch.setattr(umaf.zoo, "build_zoo", lambda **kw: calls.update(kw) or [])
    assert main(["zoo", "build", "--quick", "--device", "cpu"]) == 0
    assert calls == {"quick": True, "device": "cpu"}


def test_cli_demo_flags_override_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import umaf.pipeline

    specs: list = []
    monkeypatch.setattr(umaf.pipeline, "run_pipeline", lambda spec, **kw: specs.append(spec) or {})
    monkeypatch.setattr(umaf.pipeline, "print_summary", lambda *a: None)
    assert main(["demo", "-o", str(tmp_path / "out"), "--device", "cpu", "--dtype", "bfloat16"]) == 0
    (spec,) = specs
    assert (spec.device, spec.dtype) == ("cpu", "bfloat16")
    assert spec.raw["dtype"] == "bfloat16" and spec.output == tmp_path / "out"


# ---------------------------------------------------------------------------------------- pipeline


def test_pipeline_device_and_dtype_keys(no_cuda: None) -> None:
    from umaf.pipeline import check_ready, parse_pipeline

    sources = {"sources": [{"model": "minilm", "capabilities": ["plural"]}]}
    spec = parse_pipeline({**sources, "device": "cpu", "dtype": "bfloat16"}, "p.yaml")
    assert (spec.device, spec.dtype) == ("cpu", "bfloat16")
    plain = parse_pipeline(sources, "p.yaml")
    assert (plain.device, plain.dtype) == (None, "float32")
    with pytest.raises(UmafError, match="p.yaml: device: unknown device 'tpu9'"):
        parse_pipeline({**sources, "device": "tpu9"}, "p.yaml")
    with pytest.raises(UmafError, match="p.yaml: dtype: expected one of float32"):
        parse_pipeline({**sources, "dtype": "int3"}, "p.yaml")
    with pytest.raises(UmafError, match="p.yaml: devices: unknown key"):
        parse_pipeline({**sources, "devices": "cpu"}, "p.yaml")
    with pytest.raises(UmafError, match="p.yaml: device: .*CUDA is not available"):
        check_ready(parse_pipeline({**sources, "device": "cuda", "output": "nowhere-yet"}, "p.yaml"))
