"""Activation capture on tiny models: blocks, shapes, pooling, hook hygiene, early stop, ordering, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from umaf.capture import POOLINGS, capture_activations, find_blocks
from umaf.errors import UmafError
from umaf.models import TINY_SIZES, build_tiny

TEXTS = ["hello world", "a", "the cat sat on the mat", "12 + 7 -> 19", "xyz", "Paris ->"]
N_BLOCKS = TINY_SIZES["xs"][0]


def _hooks(model: nn.Module) -> set[tuple[str, int]]:
    """Every forward hook on ``model`` (transformers itself keeps some once hidden states were requested)."""
    return {(name, key) for name, m in model.named_modules() for key in m._forward_hooks}


@pytest.fixture
def call_counter():
    """Attach counting forward hooks to modules; yields ``count(module) -> int``; removes them after."""
    counts: dict[int, int] = {}
    handles = []

    def watch(module: nn.Module) -> None:
        counts[id(module)] = 0

        def hook(mod: nn.Module, args: object, output: object) -> None:
            counts[id(mod)] += 1

        handles.append(module.register_forward_hook(hook))

    yield watch, lambda module: counts[id(module)]
    for handle in handles:
        handle.remove()


def test_find_blocks_counts(tiny):
    blocks = find_blocks(tiny.model)
    expected = N_BLOCKS * (2 if tiny.info.family == "t5" else 1)
    assert len(blocks) == expected == tiny.info.n_layers
    names = [name for name, _ in blocks]
    assert len(set(names)) == len(names)
    if tiny.info.family == "t5":
        assert names[0].startswith("encoder.") and names[-1].startswith("decoder.")


def test_find_blocks_on_base_model(tiny_llama, tiny_bert, tiny_gpt2, tiny_t5):
    for loaded in (tiny_llama, tiny_bert, tiny_gpt2):
        base = loaded.model.base_model  # model without the LM head
        assert [b for _, b in find_blocks(base)] == [b for _, b in find_blocks(loaded.model)]
    assert len(find_blocks(tiny_t5.model.get_encoder())) == N_BLOCKS


def test_find_blocks_on_peft_model():
    from peft import LoraConfig, get_peft_model

    loaded = build_tiny("llama")
    plain = capture_activations(loaded.model, loaded.tokenizer, TEXTS, progress=False)
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    names = [name for name, _ in find_blocks(peft_model)]
    assert names == ["base_model.model.model.layers.0", "base_model.model.model.layers.1"]
    wrapped = capture_activations(peft_model, loaded.tokenizer, TEXTS, progress=False)
    torch.testing.assert_close(wrapped, plain)  # fresh LoRA B = 0: same activations


def test_find_blocks_rejects_blockless_model():
    with pytest.raises(UmafError, match="cannot find transformer blocks in Linear"):
        find_blocks(nn.Linear(3, 3))


def test_capture_shape_every_family(tiny):
    before = _hooks(tiny.model)
    acts = capture_activations(tiny.model, tiny.tokenizer, TEXTS, progress=False)
    assert acts.shape == (tiny.info.n_layers, len(TEXTS), tiny.info.width)  # [layers, texts, width]
    assert acts.dtype == torch.float32
    assert torch.isfinite(acts).all()
    assert not acts.is_inference()  # usable as input of autograd code
    assert _hooks(tiny.model) == before


def _reference(loaded, text: str, pooling: str) -> torch.Tensor:
    """Pooled block outputs of one unpadded text, from ``output_hidden_states``: ``[layers, width]``."""
    ids = loaded.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        hidden = loaded.model(**ids, output_hidden_states=True).hidden_states[1:]  # per block [1, T, H]
    reduce = (lambda h: h[0].mean(0)) if pooling == "mean" else (lambda h: h[0, -1])
    return torch.stack([reduce(h) for h in hidden])


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_pooling_matches_hidden_states(tiny_models, family, pooling):
    loaded = tiny_models[family]
    acts = capture_activations(loaded.model, loaded.tokenizer, TEXTS, pooling=pooling, batch_size=3,
                               progress=False)  # batches of unequal lengths: padding present
    # LLaMA's last hidden state is after the final norm, so only blocks before the last are comparable.
    n = N_BLOCKS if family == "bert" else N_BLOCKS - 1
    for i, text in enumerate(TEXTS):
        torch.testing.assert_close(acts[:n, i], _reference(loaded, text, pooling)[:n], atol=1e-5, rtol=1e-4)


def test_poolings_ignore_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [B, T, H]
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])  # right and left padding
    hidden[0, 2] = float("nan")  # a pad position must not leak in
    torch.testing.assert_close(POOLINGS.get("mean")(hidden, mask), torch.tensor([[1.0, 2.0], [9.0, 10.0]]))
    torch.testing.assert_close(POOLINGS.get("last")(hidden, mask), torch.tensor([[2.0, 3.0], [10.0, 11.0]]))
    assert POOLINGS.names() == ["last", "mean"]


def test_layers_select_and_order(tiny_llama):
    lm = tiny_llama
    full = capture_activations(lm.model, lm.tokenizer, TEXTS, progress=False)
    picked = capture_activations(lm.model, lm.tokenizer, TEXTS, layers=[1, 0, 1], progress=False)
    torch.testing.assert_close(picked, full[[1, 0, 1]])


def test_order_restored_after_length_sorting(tiny_gpt2):
    lm = tiny_gpt2
    batched = capture_activations(lm.model, lm.tokenizer, TEXTS, batch_size=2, progress=False)
    for i, text in enumerate(TEXTS):
        single = capture_activations(lm.model, lm.tokenizer, [text], progress=False)
        torch.testing.assert_close(batched[:, i], single[:, 0], atol=1e-5, rtol=1e-4)


def test_early_stop_skips_deeper_blocks(tiny_llama, call_counter):
    watch, count = call_counter
    blocks = [block for _, block in find_blocks(tiny_llama.model)]
    for module in (*blocks, tiny_llama.model.lm_head):
        watch(module)
    lm = tiny_llama
    capture_activations(lm.model, lm.tokenizer, TEXTS, layers=[0], batch_size=2, progress=False)
    assert count(blocks[0]) == 3 and count(blocks[1]) == 0
    capture_activations(tiny_llama.model, tiny_llama.tokenizer, TEXTS, batch_size=2, progress=False)
    assert count(blocks[1]) == 3
    assert count(tiny_llama.model.lm_head) == 0  # the head never runs


def test_t5_encoder_layers_skip_decoder(tiny_t5, call_counter):
    watch, count = call_counter
    blocks = [block for _, block in find_blocks(tiny_t5.model)]
    for block in blocks:
        watch(block)
    acts = capture_activations(tiny_t5.model, tiny_t5.tokenizer, TEXTS, layers=[1], progress=False)
    assert acts.shape == (1, len(TEXTS), tiny_t5.info.width)
    assert [count(b) for b in blocks] == [1, 1, 0, 0]


def test_nan_raises_and_hooks_are_removed():
    loaded = build_tiny("llama")
    with torch.no_grad():
        loaded.model.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(UmafError, match="activations of layer 1 contain NaN"):
        capture_activations(loaded.model, loaded.tokenizer, TEXTS, progress=False)
    assert not _hooks(loaded.model)
    # Layer 0 comes before the broken block, and the forward stops there.
    assert torch.isfinite(capture_activations(loaded.model, loaded.tokenizer, TEXTS, layers=[0],
                                              progress=False)).all()


def test_hooks_removed_when_forward_fails(tiny_llama):
    def broken(module: nn.Module, args: object, output: object) -> None:
        raise RuntimeError("boom")

    before = _hooks(tiny_llama.model)
    handle = tiny_llama.model.model.layers[0].register_forward_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            capture_activations(tiny_llama.model, tiny_llama.tokenizer, TEXTS, progress=False)
    finally:
        handle.remove()
    assert _hooks(tiny_llama.model) == before


def test_tokenizer_without_pad_token_is_left_alone(tiny_llama):
    from umaf.models import char_tokenizer

    tok = char_tokenizer()
    tok.pad_token = None
    acts = capture_activations(tiny_llama.model, tok, TEXTS, batch_size=4, progress=False)
    assert tok.pad_token is None
    ref = capture_activations(tiny_llama.model, tiny_llama.tokenizer, TEXTS, batch_size=4, progress=False)
    torch.testing.assert_close(acts, ref)


def test_training_mode_restored_and_dtype_float32():
    loaded = build_tiny("bert")
    loaded.model.train()
    loaded.model.to(torch.bfloat16)
    acts = capture_activations(loaded.model, loaded.tokenizer, TEXTS, progress=False)
    assert loaded.model.training
    assert acts.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texts": []}, "no texts"),
        ({"texts": "one string"}, "list of strings"),
        ({"layers": [2]}, r"layer 2 is out of range: the model has 2 blocks \(0-1\)"),
        ({"layers": [-1]}, "layer -1 is out of range"),
        ({"layers": []}, "no layers requested"),
        ({"pooling": "max"}, "unknown pooling 'max'"),
        ({"batch_size": 0}, "batch_size"),
        ({"texts": ["ok", ""]}, "text 1 .* has no tokens"),
    ],
)
def test_bad_input_raises_umaf_error(tiny_llama, kwargs, message):
    args = {"texts": TEXTS, "progress": False, **kwargs}
    texts = args.pop("texts")
    before = _hooks(tiny_llama.model)
    with pytest.raises(UmafError, match=message):
        capture_activations(tiny_llama.model, tiny_llama.tokenizer, texts, **args)
    assert _hooks(tiny_llama.model) == before


class _ToyModel(nn.Module):
    """A model that is not a transformers model: an embedding and a ModuleList called ``blocks``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(128, 8)
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)  # [B, T, 8]
        for block in self.blocks:
            hidden = block(hidden)
        return hidden


def test_generic_module_list_model(char_tok):
    acts = capture_activations(_ToyModel(), char_tok, TEXTS, layers=[2, 0], progress=False)
    assert acts.shape == (2, len(TEXTS), 8)
