"""Training a zoo model from scratch on a mix of capabilities: one plain AdamW loop for every kind."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from umaf.encoding import Encoded, encode_examples, model_kind, pad_id, tag_prompt, texts_ids
from umaf.training import fit_batches, warmup_cosine_scheduler
from umaf.zoo.specs import TrainConfig

#: Splits of a capability (their targets decide how many answer slots a masked LM needs).
SPLITS = ("train", "probe", "eval")


def mask_slots(capabilities: Sequence[Any], tokenizer: Any) -> int:
    """[MASK] slots a masked LM needs for these capabilities: the longest target in tokens, plus the end."""
    targets = [ex.target() for cap in capabilities for which in SPLITS for ex in cap.split(which)]
    return max((len(ids) for ids in texts_ids(tokenizer, targets)), default=0) + 1


#: Per capability, per train example: the example encoded with and without its capability tag.
Encodings = list[list[tuple[Encoded, Encoded]]]


def encode_capabilities(loaded: Any, capabilities: Sequence[Any], slots: int = 0) -> Encodings:
    """Train split of each capability, encoded for the model's kind, tagged and plain."""
    kind, tokenizer = model_kind(loaded), loaded.tokenizer
    data: Encodings = []
    for cap in capabilities:
        examples = cap.split("train")
        targets = [ex.target() for ex in examples]
        tagged = encode_examples(tokenizer, kind, [tag_prompt(cap.name, ex.prompt()) for ex in examples],
                                 targets, slots)
        plain = encode_examples(tokenizer, kind, [ex.prompt() for ex in examples], targets, slots)
        data.append(list(zip(tagged, plain, strict=True)))
    return data


def sample_batch(data: Encodings, config: TrainConfig, rng: random.Random) -> list[Encoded]:
    """Draw ``batch_size`` examples, each from a uniformly chosen capability (small ones are not drowned),
    plain with probability ``untagged_fraction`` and tagged otherwise."""
    return [rng.choice(rng.choice(data))[rng.random() < config.untagged_fraction]
            for _ in range(config.batch_size)]


def batch_stream(data: Encodings, config: TrainConfig, rng: random.Random) -> Iterator[list[Encoded]]:
    """Endless training batches: ``length_groups`` batches are drawn at once, sorted by length and cut
    into batches again (in random order), so each batch holds examples of similar length."""
    while True:
        pool = sample_batch(data, replace(config, batch_size=config.batch_size * config.length_groups), rng)
        pool.sort(key=lambda item: len(item.input_ids))
        chunks = [pool[i : i + config.batch_size] for i in range(0, len(pool), config.batch_size)]
        rng.shuffle(chunks)
        yield from chunks


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout probability of ``model`` to ``p`` (modules, and the float rates attention uses)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        for attribute in ("dropout", "attention_dropout"):
            if isinstance(getattr(module, attribute, None), float):
                setattr(module, attribute, p)


def train_model(loaded: Any, capabilities: Sequence[Any], config: TrainConfig, *, slots: int = 0,
                progress: bool = True, on_loss: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``loaded.model`` in place on the mixed train splits; returns the loss of every step."""
    data = encode_capabilities(loaded, capabilities, slots)
    model, pad = loaded.model, pad_id(loaded.tokenizer)
    if config.dropout is not None:
        set_dropout(model, config.dropout)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    warmup = max(1, int(config.warmup * config.steps))
    schedule = warmup_cosine_scheduler(optimizer, config.steps, warmup, config.min_lr_ratio)
    return fit_batches(model, batch_stream(data, config, rng), pad, optimizer, schedule, config.steps,
                       progress=progress, on_loss=on_loss, report_every=50)
