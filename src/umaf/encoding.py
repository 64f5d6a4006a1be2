"""One encoding of capability examples for all model kinds, shared by training and generation.

- decoder (causal LM): ``prompt`` then ``target [EOS]``; the loss sees only the target. The prompt
  starts with whatever the tokenizer itself puts first (a Llama tokenizer's ``<s>``; nothing for the
  char tokenizer, GPT-2 or SmolLM2), exactly as activation capture tokenizes probe texts.
- encoder-decoder (seq2seq): encoder reads ``prompt [EOS]``, labels are ``target [EOS]``.
- encoder (masked LM): ``[CLS]``, ``slots`` × ``[MASK]``, ``[SEP] prompt [SEP]``; the slots must spell
  ``target [EOS]`` (the rest is not scored; tokenizers without an EOS token end the answer with ``[SEP]``).

A zoo model learns many capabilities whose inputs look alike (``push ->`` could ask for the first
letter, the plural, the reversal, ...), so it is told which one is asked: :func:`tag_prompt` puts the
capability's name in front of the prompt (``first letter. push ->``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: Label value that the HF losses ignore.
IGNORE = -100

KINDS = ("decoder", "encoder-decoder", "encoder")


def tag_prompt(capability: str, prompt: str) -> str:
    """``prompt`` preceded by the capability's name, which tells a multi-task zoo model what to do."""
    return f"{capability.replace('_', ' ').replace(':', ' ')}. {prompt}"


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example; ``labels`` is aligned to ``input_ids`` except for seq2seq."""

    input_ids: list[int]
    labels: list[int]


def model_kind(loaded: Any) -> str:
    """``decoder`` | ``encoder-decoder`` | ``encoder`` for a LoadedModel (or anything with ``.model``)."""
    kind = getattr(getattr(loaded, "info", None), "kind", None)
    if kind in KINDS:
        return kind
    model = loaded.model
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder"
    return "decoder" if model.can_generate() else "encoder"


def texts_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (one batched tokenizer call)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without any special tokens."""
    return texts_ids(tokenizer, [text])[0]


def leading_specials(tokenizer: Any) -> list[int]:
    """Special tokens the tokenizer puts before any text on its own (e.g. ``[BOS]``), often none."""
    plain = text_ids(tokenizer, "a")
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    start = next((i for i in range(len(full)) if full[i : i + len(plain)] == plain), 0)
    return full[:start]


def pad_id(tokenizer: Any) -> int:
    """The padding id (EOS, then 0, for tokenizers without a pad token)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def end_id(tokenizer: Any) -> int:
    """The id that ends an answer: EOS, else SEP (BERT-style tokenizers)."""
    for value in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if value is not None:
            return int(value)
    raise ValueError("the tokenizer has neither an EOS nor a SEP token to end answers with")


def slot_head(tokenizer: Any) -> list[int]:
    """What precedes the answer slots of a masked LM: ``[CLS]`` where the tokenizer has one."""
    return [int(tokenizer.cls_token_id)] if tokenizer.cls_token_id is not None else []


def sep_ids(tokenizer: Any) -> list[int]:
    """``[SEP]`` where the tokenizer has one."""
    return [int(tokenizer.sep_token_id)] if tokenizer.sep_token_id is not None else []


def position_limit(model: Any) -> int | None:
    """How many positions ``model`` can read (None: no learnt position table, e.g. T5's relative ones)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", "") == "t5":
        return None
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(limit) if limit else None


def prompts_ids(tokenizer: Any, kind: str, prompts: Sequence[str], slots: int = 0,
                budget: int | None = None) -> list[list[int]]:
    """What the model reads before answering each prompt (for ``encoder``, including the ``slots`` masks).

    ``budget`` caps each row's length: a longer prompt keeps its *end* (the part next to the answer),
    so an input longer than the model's position table is cut instead of overflowing it.
    """
    rows = texts_ids(tokenizer, prompts)
    if budget is not None:
        extra = {"decoder": len(leading_specials(tokenizer)), "encoder-decoder": 1}.get(
            kind, len(slot_head(tokenizer)) + slots + 2 * len(sep_ids(tokenizer)))
        keep = max(1, budget - extra)
        rows = [row[-keep:] for row in rows]
    if kind == "decoder":
        head = leading_specials(tokenizer)
        return [head + row for row in rows]
    if kind == "encoder-decoder":
        return [row + [end_id(tokenizer)] for row in rows]
    # The slots come first, so slot k always sits at the same position whatever the prompt's length.
    head = slot_head(tokenizer) + [int(tokenizer.mask_token_id)] * slots + sep_ids(tokenizer)
    return [head + row + sep_ids(tokenizer) for row in rows]


def prompt_ids(tokenizer: Any, kind: str, prompt: str, slots: int = 0) -> list[int]:
    """What the model reads before answering ``prompt`` (one prompt of :func:`prompts_ids`)."""
    return prompts_ids(tokenizer, kind, [prompt], slots)[0]


def encode_examples(tokenizer: Any, kind: str, prompts: Sequence[str], targets: Sequence[str],
                    slots: int = 0, limit: int | None = None) -> list[Encoded]:
    """Input ids and labels that teach the model to answer each prompt with its target; with ``limit``
    (the model's :func:`position_limit`) a long prompt is cut from the left to leave room for its answer."""
    answers = [ids + [end_id(tokenizer)] for ids in texts_ids(tokenizer, targets)]
    if limit is None:
        sources = prompts_ids(tokenizer, kind, prompts, slots)
    else:
        room = [limit - (len(a) if kind == "decoder" else 0) for a in answers]
        sources = [prompts_ids(tokenizer, kind, [p], slots, budget=r)[0] for p, r in zip(prompts, room,
                                                                                       strict=True)]
    head = len(slot_head(tokenizer))
    return [_pair(kind, source, answer, slots, head) for source, answer in zip(sources, answers, strict=True)]


def encode_example(tokenizer: Any, kind: str, prompt: str, target: str, slots: int = 0) -> Encoded:
    """Input ids and labels that teach the model to answer ``prompt`` with ``target``."""
    return encode_examples(tokenizer, kind, [prompt], [target], slots)[0]


def _pair(kind: str, source: list[int], answer: list[int], slots: int, head: int) -> Encoded:
    if kind == "decoder":
        return Encoded(source + answer, [IGNORE] * len(source) + answer)
    if kind == "encoder-decoder":
        return Encoded(source, answer)
    # Slots after the end token are not scored: the answer is cut there, and scoring the [PAD]s would let
    # a tiny model lower the loss by predicting padding while never learning the answer.
    filled = (answer + [IGNORE] * slots)[:slots]
    return Encoded(source, [IGNORE] * head + filled + [IGNORE] * (len(source) - head - slots))


def pad_left(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists (for generation): ``ids, attention_mask`` both ``[batch, max_len]``."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[value] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def pad_right(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: ``ids, mask`` both ``[batch, max_len]``."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [value] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def collate(items: list[Encoded], pad: int) -> dict[str, torch.Tensor]:
    """Right-padded training batch with ``input_ids``, ``attention_mask`` and ``labels``."""
    input_ids, attention_mask = pad_right([it.input_ids for it in items], pad)
    labels, _ = pad_right([it.labels for it in items], IGNORE)  # seq2seq labels have their own length
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
