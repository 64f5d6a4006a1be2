"""Greedy answers from any HF causal LM, seq2seq model or masked LM, and exact-match evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from umaf.encoding import (
    end_id,
    model_kind,
    pad_id,
    pad_left,
    pad_right,
    position_limit,
    prompts_ids,
    slot_head,
    tag_prompt,
    texts_ids,
)

#: Answer length (tokens, end token included) when neither the caller nor the model config says.
DEFAULT_ANSWER_TOKENS = 32

#: Config attribute in which zoo masked LMs record how many [MASK] slots they were trained with.
SLOTS_ATTRIBUTE = "umaf_answer_slots"


def answer_slots(model: Any) -> int | None:
    """Number of answer slots a zoo masked LM was trained with, if recorded in its config."""
    value = getattr(getattr(model, "config", None), SLOTS_ATTRIBUTE, None)
    return int(value) if value else None


def generate_answers(loaded: Any, prompts: Sequence[str], *, max_new_tokens: int | None = None,
                     batch_size: int = 64, progress: bool = False) -> list[str]:
    """Greedy answer to each prompt (decoded, cut at the end token, stripped): one string per prompt.

    Decoders generate until EOS or ``max_new_tokens``; encoder-decoders use ``generate``; masked LMs
    take the argmax of each ``[MASK]`` slot (as many as they were trained with) and stop at EOS.
    """
    kind = model_kind(loaded)
    model, tokenizer = loaded.model, loaded.tokenizer
    limit = max_new_tokens or answer_slots(model) or DEFAULT_ANSWER_TOKENS
    step = {"decoder": _causal, "encoder-decoder": _seq2seq, "encoder": _masked}[kind]
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="generate"):
                rows = list(prompts[start : start + batch_size])
                answers += [decode_answer(tokenizer, ids) for ids in step(model, tokenizer, rows, limit)]
    finally:
        model.train(was_training)
    return answers


def decode_answer(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text of generated ids up to the first end/pad token, without special tokens, stripped."""
    stops = {end_id(tokenizer), pad_id(tokenizer)}
    kept: list[int] = []
    for token in ids:
        if int(token) in stops:
            break
        kept.append(int(token))
    return tokenizer.decode(kept, skip_special_tokens=True).strip()


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _budget(model: Any, new_tokens: int) -> int | None:
    """Prompt tokens that leave room for ``new_tokens`` in the model's position table (None: no limit)."""
    limit = position_limit(model)
    return None if limit is None else limit - new_tokens


def _generation_kwargs(tokenizer: Any, limit: int) -> dict:
    return {"max_new_tokens": limit, "do_sample": False, "num_beams": 1,
            "pad_token_id": pad_id(tokenizer), "eos_token_id": end_id(tokenizer)}


def _causal(model: Any, tokenizer: Any, prompts: list[str], limit: int) -> list[list[int]]:
    ids, mask = pad_left(
        prompts_ids(tokenizer, "decoder", prompts, budget=_budget(model, limit)), pad_id(tokenizer))
    device = _device(model)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                         **_generation_kwargs(tokenizer, limit))  # [batch, prompt + new]
    return out[:, ids.shape[1] :].tolist()


def _seq2seq(model: Any, tokenizer: Any, prompts: list[str], limit: int) -> list[list[int]]:
    ids, mask = pad_right(
        prompts_ids(tokenizer, "encoder-decoder", prompts, budget=_budget(model, 0)), pad_id(tokenizer))
    device = _device(model)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                         **_generation_kwargs(tokenizer, limit))  # [batch, 1 + new]: the start token first
    return out[:, 1:].tolist()


def _masked(model: Any, tokenizer: Any, prompts: list[str], limit: int) -> list[list[int]]:
    ids, mask = pad_right(
        prompts_ids(tokenizer, "encoder", prompts, slots=limit, budget=_budget(model, 0)), pad_id(tokenizer))
    device = _device(model)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # [batch, len, vocab]
    head = len(slot_head(tokenizer))
    return logits[:, head : head + limit].argmax(-1).tolist()


def evaluate(loaded: Any, capabilities: Sequence[Any], *, tagged: bool = False, split: str = "eval",
             limit: int | None = None, batch_size: int = 64, progress: bool = False) -> dict[str, float]:
    """Exact-match accuracy of greedy answers on each capability's ``split`` (first ``limit`` examples).

    ``tagged`` puts the capability's name before each prompt, as zoo models are trained to expect.
    """
    from umaf.capabilities import get_capability

    scores: dict[str, float] = {}
    caps = [get_capability(c) if isinstance(c, str) else c for c in capabilities]
    for cap in tqdm(caps, disable=not progress, desc="evaluate", leave=False):
        examples = cap.split(split)[:limit]
        longest = max(len(ids) for ids in texts_ids(loaded.tokenizer, [ex.target() for ex in examples]))
        # Room for one token past the longest answer, so a model that does not stop is never right.
        budget = None if model_kind(loaded) == "encoder" else longest + 1
        prompts = [tag_prompt(cap.name, ex.prompt()) if tagged else ex.prompt() for ex in examples]
        answers = generate_answers(loaded, prompts, max_new_tokens=budget, batch_size=batch_size)
        scores[cap.name] = float(cap.accuracy(answers, examples))
    return scores
