"""Measuring a target with and without a LoRA adapter: capability accuracy and general-text perplexity.

Accuracy is exact match of greedy answers to the plain prompts (``"<input> ->"``) of a capability's
eval split. Perplexity is per token over ``umaf/data/general.txt``, a fixed set of ordinary English
sentences written for UMAF, so that ``perplexity(with adapter) / perplexity(without)`` shows how much
an adapter harms what the target could already do. An adapter is attached with
``PeftModel.from_pretrained`` and removed again afterwards: the caller's model is left unchanged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch

from umaf.capabilities import Capability, get_capability
from umaf.config import data_lines
from umaf.errors import UmafError
from umaf.models import LoadedModel, load

#: Shipped general-text file (one sentence a line) that :func:`perplexity` reads.
GENERAL_TEXT = "general.txt"


@cache
def general_texts() -> tuple[str, ...]:
    """The shipped general-text sentences, in file order."""
    return data_lines(GENERAL_TEXT)


def as_loaded(target: str | LoadedModel, *, device: str | torch.device | None = None,
              dtype: torch.dtype | str | None = None) -> LoadedModel:
    """``target`` itself if already loaded (where it is), else :func:`umaf.models.load` of its name on
    ``device`` in ``dtype`` (defaults: CUDA when available, else the CPU; float32)."""
    return target if isinstance(target, LoadedModel) else load(target, dtype=dtype, device=device)


@contextmanager
def adapted(loaded: LoadedModel, adapter: str | Path | None,
            trainable: bool = False) -> Iterator[LoadedModel]:
    """``loaded`` with the PEFT LoRA ``adapter`` attached for the duration of the block (or as is if None;
    ``trainable``: its factors require gradients and the model is not put in eval mode).

    The adapter is checked first (files, safetensors, module names and shapes), so a bad one is a
    :class:`UmafError` and never leaves the model half-modified; afterwards it is unloaded again.
    """
    if adapter is None:
        yield loaded
        return
    from peft import PeftModel

    from umaf.adapters.peft_io import check_adapter_fits, preserved

    check_adapter_fits(adapter, loaded.model, loaded.info.name)
    with preserved(loaded.model):
        try:
            with warnings.catch_warnings():  # transformers' deprecation notices raised from inside PEFT
                warnings.simplefilter("ignore", FutureWarning)
                peft_model = PeftModel.from_pretrained(loaded.model, str(adapter), is_trainable=trainable)
        except (ValueError, RuntimeError, KeyError, OSError) as err:
            _strip_lora(loaded.model)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UmafError(f"cannot load adapter {adapter} on {loaded.info.name}: {first}") from None
        if not trainable:
            peft_model.eval()
        try:
            yield LoadedModel(peft_model, loaded.tokenizer, loaded.info)
        finally:
            peft_model.unload()


def _strip_lora(model: torch.nn.Module) -> None:
    """Put back the original layers wherever PEFT already wrapped one (after a failed load)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and "." in name:
            parent_name, child = name.rsplit(".", 1)
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())


def check_evaluation(capability: str | Capability, adapter: str | Path | None = None,
                     limit: int | None = None) -> Capability:
    """The capability to evaluate, after the checks that need no model: it exists, ``adapter`` (if
    given) is a PEFT LoRA folder, and ``limit`` (if given) is at least 1."""
    from umaf.adapters.peft_io import check_adapter_dir

    cap = get_capability(capability) if isinstance(capability, str) else capability
    if adapter is not None:
        check_adapter_dir(adapter)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UmafError(f"limit must be a whole number of at least 1, got {limit!r}")
    return cap


def evaluate(target: str | LoadedModel, capability: str | Capability, adapter: str | Path | None = None,
             split: str = "eval", *, limit: int | None = None, batch_size: int = 64,
             device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> float:
    """Exact-match accuracy of the target (with ``adapter`` if given) on ``capability``'s ``split``.

    Greedy decoding on the plain prompts; ``limit`` keeps the first examples only. A named target is
    loaded on ``device`` in ``dtype`` (see :func:`as_loaded`).
    """
    from umaf.answers import evaluate as answers_evaluate

    cap = check_evaluation(capability, adapter, limit)
    loaded = as_loaded(target, device=device, dtype=dtype)
    with adapted(loaded, adapter) as model:
        return answers_evaluate(model, [cap], split=split, limit=limit, batch_size=batch_size)[cap.name]


def perplexity(target: str | LoadedModel, adapter: str | Path | None = None, *,
               texts: list[str] | None = None, batch_size: int = 16,
               device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> float:
    """Per-token perplexity of a causal LM (with ``adapter`` if given) on the general text (or ``texts``).

    A named target is loaded on ``device`` in ``dtype`` (see :func:`as_loaded`); the loss is float32.
    """
    from umaf.adapters.peft_io import check_adapter_dir

    if adapter is not None:
        check_adapter_dir(adapter)  # before any model is loaded
    loaded = as_loaded(target, device=device, dtype=dtype)
    if loaded.info.kind != "decoder":
        raise UmafError(f"perplexity needs a causal LM; {loaded.info.name} is a {loaded.info.kind} model")
    texts = list(texts) if texts is not None else list(general_texts())
    if not texts:
        raise UmafError("perplexity needs at least one text")
    with adapted(loaded, adapter) as model:
        nll, count = _total_nll(model, texts, batch_size)
    return math.exp(nll / count)


def _total_nll(loaded: LoadedModel, texts: list[str], batch_size: int) -> tuple[float, int]:
    """Summed negative log-likelihood of every token after the first, and how many tokens that is."""
    from umaf.encoding import pad_id, pad_right, prompt_ids

    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = [prompt_ids(tokenizer, "decoder", t)[:256] for t in texts[start : start + batch_size]]
            ids, mask = pad_right(rows, pad_id(tokenizer))  # [batch, len]
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()  # [batch, len, vocab]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")  # [batch, len - 1]
            keep = mask[:, 1:].bool()
            total += float(nll[keep].sum())
            count += int(keep.sum())
    if count == 0:
        raise UmafError("the texts have no tokens to score")
    return total, count


__all__ = [
    "GENERAL_TEXT", "adapted", "as_loaded", "check_evaluation", "evaluate", "general_texts", "perplexity",
]
