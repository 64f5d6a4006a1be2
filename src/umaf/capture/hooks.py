"""Forward hooks that pool each block's output on the fly and stop the forward after the deepest block needed.

A block's output is the residual stream after that block (the first element when a block returns a tuple).
Hooks pool over real tokens at once and move only ``[batch, width]`` to the CPU, so memory does not grow
with depth or sequence length; they are always removed, even when the forward fails.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from umaf.errors import UmafError
from umaf.registry import Registry

Pooling = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Poolings over the token axis: ``(hidden [B, T, H], mask [B, T]) -> [B, H]``, real tokens only.
POOLINGS: Registry[Pooling] = Registry("pooling")

#: Names of the ``nn.ModuleList`` attributes that hold transformer blocks across HF architectures:
#: BERT ``encoder.layer``, GPT-2 ``h``, LLaMA/Mixtral/Qwen/Gemma ``layers``, T5 ``block``.
_BLOCK_LIST_NAMES = ("layer", "layers", "h", "block", "blocks")


@POOLINGS.register("mean")
def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real (``mask == 1``) tokens of each row."""
    real = mask.bool().unsqueeze(-1)  # [B, T, 1]
    total = torch.where(real, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device)).sum(1)
    return total / real.sum(1).clamp(min=1).to(hidden.dtype)  # [B, H]


@POOLINGS.register("last")
def last_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last real token of each row (works for left and right padding)."""
    positions = torch.arange(mask.shape[1], device=mask.device)  # [T]
    last = (mask.bool() * positions).argmax(dim=1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, H]


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks of ``model`` in execution order, as ``(dotted name, block)`` pairs.

    Works on base models, models with heads and PEFT-wrapped models. T5-style models list the encoder
    blocks, then the decoder blocks. Lists nested inside a block (T5's ``layer``) are not blocks.
    """
    blocks: list[tuple[str, nn.Module]] = []
    lists: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if name.rsplit(".", 1)[-1] not in _BLOCK_LIST_NAMES or any(name.startswith(f"{p}.") for p in lists):
            continue
        lists.append(name)
        blocks.extend((f"{name}.{i}", block) for i, block in enumerate(module))
    if not blocks:
        raise UmafError(
            f"cannot find transformer blocks in {type(model).__name__}; "
            "UMAF reads BERT-, GPT-2-, LLaMA-, MoE- and T5-style models"
        )
    return blocks


@contextmanager
def attached_hooks(hooks: Sequence[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """Register forward hooks ``(module, hook)`` for the duration of the block; always removes them."""
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block: nothing after it is needed."""


def _pooling_hook(
    layer: int, pool: Pooling, masks: dict[str, torch.Tensor], stream: str, sink: list[torch.Tensor],
    stop: bool,
) -> Callable[..., None]:
    """Hook pooling block ``layer``'s output with ``masks[stream]`` into ``sink``; ``stop`` ends the pass."""

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        hidden = output if isinstance(output, torch.Tensor) else output[0]  # [B, T, H]
        mask = masks[stream].to(hidden.device)  # [B, T]
        pooled = pool(hidden.float(), mask).to("cpu", torch.float32)  # [B, H]
        if not torch.isfinite(pooled).all():
            raise UmafError(
                f"activations of layer {layer} contain NaN or inf; the weights are broken "
                "or the dtype overflows (try float32)"
            )
        sink.append(pooled)
        if stop:
            raise _StopForward

    return hook


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise UmafError("texts must be a list of strings")
    if len(texts) == 0:
        raise UmafError("no texts to capture activations on")
    return list(texts)


def _check_layers(layers: Sequence[int] | None, n_blocks: int) -> list[int]:
    if layers is None:
        return list(range(n_blocks))
    checked = [operator.index(layer) for layer in layers]
    if not checked:
        raise UmafError("no layers requested; pass block indices or None for all blocks")
    for layer in checked:
        if not 0 <= layer < n_blocks:
            raise UmafError(
                f"layer {layer} is out of range: the model has {n_blocks} blocks (0-{n_blocks - 1})"
            )
    return checked


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of every text, unpadded (padding happens per batch, on the right)."""
    ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    for i, row in enumerate(ids):
        if len(row) == 0:
            raise UmafError(f"text {i} ({texts[i]!r}) has no tokens; drop empty texts")
    return [list(row) for row in ids]


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``rows`` into ``input_ids`` and ``attention_mask``, both ``[B, T]``."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its eos id (decoder-only tokenizers often lack a pad token)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _decoder_start_id(model: nn.Module, pad_id: int) -> int:
    for source in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        start = getattr(source, "decoder_start_token_id", None)
        if start is not None:
            return int(start)
    return pad_id


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _forward_inputs(
    model: nn.Module, rows: list[list[int]], pad_id: int, masks: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Model inputs for one batch; fills ``masks`` with the attention mask of each stream."""
    device = _model_device(model)
    input_ids, attention_mask = _pad(rows, pad_id, device)  # [B, T]
    masks["encoder"] = attention_mask
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None) is not None:
        inputs["use_cache"] = False
    if getattr(config, "is_encoder_decoder", False):
        # One decoder-start token per row: the decoder blocks read the text through cross-attention.
        start = torch.full((len(rows), 1), _decoder_start_id(model, pad_id), dtype=torch.long, device=device)
        masks["decoder"] = torch.ones_like(start)  # [B, 1]
        inputs.update(decoder_input_ids=start, decoder_attention_mask=masks["decoder"])
    return inputs


def capture_activations(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    pooling: str = "mean",
    batch_size: int = 16,
    max_length: int = 64,
    progress: bool = True,
) -> torch.Tensor:
    """Pooled residual stream after each requested block, float32 ``[len(layers), len(texts), width]``.

    ``layers`` are block indices into :func:`find_blocks` order (``0 .. n_blocks - 1``, no negative
    indices; T5: encoder blocks first, then decoder blocks), in the order wanted in the output; ``None``
    means every block. ``pooling`` is a :data:`POOLINGS` name, applied over the real (non-pad) tokens.
    Texts are truncated to ``max_length`` tokens and batched by length; the output keeps their order.
    The forward stops after the deepest requested block, so shallow captures are cheap.
    """
    texts = _check_texts(texts)
    pool = POOLINGS.get(pooling)
    if batch_size < 1 or max_length < 1:
        raise UmafError("batch_size and max_length must be at least 1")
    blocks = find_blocks(model)
    layers = _check_layers(layers, len(blocks))
    rows = _tokenize(tokenizer, texts, max_length)
    order = sorted(range(len(texts)), key=lambda i: -len(rows[i]))  # longest first: OOM shows up at once
    sinks: dict[int, list[torch.Tensor]] = {layer: [] for layer in sorted(set(layers))}
    masks: dict[str, torch.Tensor] = {}
    hooks = _build_hooks(model, blocks, sinks, masks, pool)
    pad_id = _pad_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with attached_hooks(hooks), torch.inference_mode(), tqdm(
            total=len(texts), desc="capture", unit="text", disable=not progress, leave=False
        ) as bar:
            for start in range(0, len(order), batch_size):
                batch = [rows[i] for i in order[start : start + batch_size]]
                with suppress(_StopForward):
                    model(**_forward_inputs(model, batch, pad_id, masks))
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return _assemble(sinks, layers, order)


def _build_hooks(
    model: nn.Module, blocks: list[tuple[str, nn.Module]], sinks: dict[int, list[torch.Tensor]],
    masks: dict[str, torch.Tensor], pool: Pooling,
) -> list[tuple[nn.Module, Callable[..., Any]]]:
    """One pooling hook per requested block (the keys of ``sinks``); the deepest one stops the forward."""
    deepest = max(sinks)
    hooks = []
    for layer, sink in sinks.items():
        name, block = blocks[layer]
        stream = "decoder" if _is_decoder_block(model, name) else "encoder"
        hooks.append((block, _pooling_hook(layer, pool, masks, stream, sink, layer == deepest)))
    return hooks


def _is_decoder_block(model: nn.Module, name: str) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False)) and "decoder" in name.split(".")


def _assemble(sinks: dict[int, list[torch.Tensor]], layers: list[int], order: list[int]) -> torch.Tensor:
    """Stack the pooled batches into ``[layers, texts, width]`` in the caller's text order.

    Runs outside inference mode, so the result is an ordinary tensor that autograd code can use.
    """
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    per_layer = {}
    for layer, parts in sinks.items():
        pooled = torch.cat(parts) if parts else torch.empty(0)  # [texts, width], sorted by length
        if pooled.shape[0] != len(order):
            raise UmafError(f"layer {layer} did not run during the forward pass; this model is unsupported")
        per_layer[layer] = pooled[inverse]
    return torch.stack([per_layer[layer] for layer in layers])  # [layers, texts, width]
