"""Shared test setup: offline Hugging Face, a throw-away UMAF cache, and tiny models of every family.

Session fixtures are shared between tests: do not modify their weights or tokenizers in place (build a
fresh one with ``umaf.models.build_tiny`` when a test needs to). Set ``UMAF_TEST_CACHE`` to a folder to
keep the cache (e.g. the de-quantised SmolLM2) between test sessions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before anything imports huggingface_hub, which reads these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

_KEEP_CACHE = bool(os.environ.get("UMAF_TEST_CACHE"))
_CACHE = os.environ.get("UMAF_TEST_CACHE") or tempfile.mkdtemp(prefix="umaf-test-cache-")
os.environ["UMAF_CACHE"] = _CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _KEEP_CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def one_thread():
    """One torch thread for the test: small networks train fastest so, and do not fight other jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def umaf_cache() -> Path:
    """The UMAF cache folder of this test session (``$UMAF_CACHE``)."""
    return Path(_CACHE)


@pytest.fixture(scope="session")
def char_tok():
    """The char-level tokenizer of the tiny models."""
    from umaf.models import char_tokenizer

    return char_tokenizer()


@pytest.fixture(scope="session")
def tiny_models() -> dict:
    """One ``xs`` tiny model (``LoadedModel``) per family in ``TINY_FAMILIES``, keyed by family."""
    from umaf.models import TINY_FAMILIES, build_tiny

    return {family: build_tiny(family, "xs", seed=0) for family in TINY_FAMILIES}


@pytest.fixture(scope="session", params=["bert", "gpt2", "llama", "mixtral", "phi", "qwen2", "t5"])
def tiny(request: pytest.FixtureRequest, tiny_models: dict):
    """Each tiny family in turn (parametrized)."""
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def tiny_llama(tiny_models: dict):
    """A 2-block LLaMA of width 32."""
    return tiny_models["llama"]


@pytest.fixture(scope="session")
def tiny_bert(tiny_models: dict):
    """A 2-block BERT (masked LM) of width 32."""
    return tiny_models["bert"]


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_models: dict):
    """A 2-block GPT-2 of width 32."""
    return tiny_models["gpt2"]


@pytest.fixture(scope="session")
def tiny_moe(tiny_models: dict):
    """A 2-block Mixtral (4 experts, top-2) of width 32."""
    return tiny_models["mixtral"]


@pytest.fixture(scope="session")
def tiny_t5(tiny_models: dict):
    """A T5 with 2 encoder and 2 decoder blocks, width 32."""
    return tiny_models["t5"]


@pytest.fixture
def no_shipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide the shipped components (umaf.pretrained), as on an install that ships none."""
    import umaf.pretrained

    monkeypatch.setattr(umaf.pretrained, "SHIPPED_DIR", tmp_path / "nothing-shipped")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA (seed 1) saved as a local Hugging Face folder; tests only read it (a test that trains
    oracles on its own target builds a fresh folder)."""
    from umaf.models import build_tiny

    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    loaded = build_tiny("llama", "xs", seed=1)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path
