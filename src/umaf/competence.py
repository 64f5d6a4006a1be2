"""How well a model *has* a capability, read from the model itself: one score in [0, 1] per capability.

A fingerprint's vector says *what* capability a model's activations describe. Probe texts contain the gold
answers and the extractor is trained to pull every model's reading of a capability together, so the
vector cannot say whether the model can *do* the task. That is read here, from signals every
architecture offers, on the examples the fingerprint reads (never the eval split, which measures
accuracy):

- ``agreement`` -- models with an LM head (causal LMs, seq2seq models, masked LMs answering through
  ``[MASK]`` slots). Each example is encoded as UMAF trains and generates with (:mod:`umaf.encoding`) and
  the gold answer is teacher-forced in one batched forward pass. An example *agrees* when every gold
  token, the end token included, is the model's argmax given the gold prefix: greedy exact match, up to
  how an answer stops. ``score`` is the fraction of agreeing examples, corrected for chance on a
  classification-like capability (as below: a model that always gives the commonest answer scores 0);
  ``answer_likelihood`` is the mean over examples of ``exp(mean gold-token log-prob)``.
- ``decodability`` -- no LM head (a sentence-embedding encoder such as ``minilm``) and a
  classification-like capability (at most :data:`MAX_CLASSES` distinct answers, each of at least
  :data:`MIN_PER_CLASS` examples). A ridge classifier reads the answer class from *prompt-only* mean-pooled
  last-block activations, cross-validated over :data:`FOLDS` stratified folds; ``score =
  clip((cv_accuracy - majority) / (1 - majority), 0, 1)``, so 0 is no better than always guessing the
  commonest answer.
- otherwise (no LM head and open answers) there is nothing to read: ``score`` is None.

Zoo models are asked as they are trained and evaluated, with the capability's name before the prompt;
every other model with the plain prompt.

:data:`COMPETENT` is the one threshold that says whether a source has a capability; :data:`QUALIFY` the
one that says whether a zoo model learnt a capability it was trained on.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from umaf.answers import DEFAULT_ANSWER_TOKENS, answer_slots
from umaf.encoding import (
    IGNORE,
    Encoded,
    collate,
    encode_examples,
    model_kind,
    pad_id,
    pad_left,
    position_limit,
    tag_prompt,
    texts_ids,
)
from umaf.errors import UmafError

if TYPE_CHECKING:  # reading a fingerprint's competence (reports, the CLI) needs no capability registry
    from umaf.capabilities import Capability, Example

#: The competence score at or above which a source counts as having the capability; below it, UMAF does
#: not generate an adapter from the source's fingerprint unless asked to (:func:`lacking_sources`).
COMPETENT = 0.5

#: The eval-split accuracy at or above which a zoo model counts as competent at a capability it was trained
#: on (:attr:`umaf.zoo.ZooEntry.qualified`); a trained capability below it was claimed but not learnt, so
#: benchmarks that contrast trained with untrained models leave it out.
QUALIFY = 0.8

#: Most distinct answers a capability may have for the decodability reading.
MAX_CLASSES = 8
#: Fewest examples every answer class needs for the decodability reading.
MIN_PER_CLASS = 4
#: Stratified folds of the cross-validated decodability reading (fewer if a class is smaller).
FOLDS = 5
#: Ridge strength of the decodability classifier, relative to the mean squared feature norm.
RIDGE = 1.0

AGREEMENT = "agreement"
DECODABILITY = "decodability"
NO_READING = "none: no LM head and open answers"


@dataclass(frozen=True)
class CompetenceReading:
    """What :func:`measure_competence` read from one model on one capability."""

    score: float | None
    """Competence in [0, 1]; None when the model offers no signal for this capability."""
    method: str
    """:data:`AGREEMENT`, :data:`DECODABILITY` or :data:`NO_READING`."""
    n_examples: int
    """Examples read."""
    answer_likelihood: float | None = None
    """``agreement``: mean over examples of exp(mean log-prob of the gold answer tokens)."""
    cv_accuracy: float | None = None
    """``decodability``: cross-validated accuracy of the linear read-out of the answer class."""
    majority: float | None = None
    """Classification-like capabilities: share of the commonest answer (the accuracy of always giving it)."""
    agreement: float | None = None
    """``agreement``: the fraction of agreeing examples, before the chance correction."""

    def to_meta(self) -> dict[str, Any]:
        """The fingerprint metadata keys: ``competence``, ``competence_method``, ``answer_likelihood``,
        ``competence_examples`` (and the decodability figures when read that way)."""
        meta: dict[str, Any] = {
            "competence": _rounded(self.score),
            "competence_method": self.method,
            "answer_likelihood": _rounded(self.answer_likelihood),
            "competence_examples": self.n_examples,
        }
        extra = {"competence_agreement": self.agreement, "competence_cv_accuracy": self.cv_accuracy,
                 "competence_majority": self.majority}
        meta.update({key: _rounded(value) for key, value in extra.items() if value is not None})
        return meta


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def has_lm_head(model: Any) -> bool:
    """Whether ``model`` (possibly PEFT-wrapped) maps hidden states to vocabulary logits."""
    get = getattr(model, "get_output_embeddings", None)
    return callable(get) and get() is not None


def class_labels(examples: Sequence[Example]) -> list[int] | None:
    """Answer class of each example (by first appearance) if the answers are classification-like (2 to
    :data:`MAX_CLASSES` distinct outputs, each at least :data:`MIN_PER_CLASS` times), else None."""
    outputs = [ex.output.strip() for ex in examples]
    counts = Counter(outputs)
    if not 2 <= len(counts) <= MAX_CLASSES or min(counts.values()) < MIN_PER_CLASS:
        return None
    index = {out: i for i, out in enumerate(dict.fromkeys(outputs))}
    return [index[out] for out in outputs]


def measure_competence(
    loaded: Any, capability: Capability | str, examples: Sequence[Example] | None = None,
    limit: int | None = 64, *, tagged: bool | None = None, batch_size: int = 32,
) -> CompetenceReading:
    """Competence of ``loaded`` (a LoadedModel) on ``capability``, read on the model's device.

    ``examples`` default to what a fingerprint reads (:meth:`Capability.probe_examples`: the probe split,
    or all of a user's JSONL file); ``limit`` keeps the first ones (None: all). ``tagged`` puts the
    capability's name before each prompt, as zoo models are trained and evaluated; None (the default)
    does so for zoo models (loaded as ``zoo:<name>``) only. See the module docstring.
    """
    from umaf.capabilities import get_capability

    cap = get_capability(capability) if isinstance(capability, str) else capability
    chosen = list(cap.probe_examples() if examples is None else examples)[:limit]
    if not chosen:
        raise UmafError(f"competence of {cap.name!r} needs at least one example")
    if tagged is None:
        tagged = str(loaded.info.name).startswith("zoo:")
    prompts = [tag_prompt(cap.name, ex.prompt()) if tagged else ex.prompt() for ex in chosen]
    labels = class_labels(chosen)
    majority = None if labels is None else float(torch.bincount(torch.tensor(labels)).max()) / len(labels)
    if has_lm_head(loaded.model):
        agree, likelihood = teacher_forced(loaded, prompts, [ex.target() for ex in chosen], batch_size)
        rate = float(agree.float().mean())
        score = rate if majority is None else above_chance(rate, majority)
        return CompetenceReading(score, AGREEMENT, len(chosen), answer_likelihood=float(likelihood.mean()),
                                 majority=majority, agreement=rate)
    if labels is None or majority is None:
        return CompetenceReading(None, NO_READING, len(chosen))
    features = prompt_features(loaded, prompts, batch_size)  # [examples, width]
    cv = cross_validated_accuracy(features, torch.tensor(labels))
    return CompetenceReading(above_chance(cv, majority), DECODABILITY, len(chosen), cv_accuracy=cv,
                             majority=majority)


def above_chance(accuracy: float, majority: float) -> float:
    """``clip((accuracy - majority) / (1 - majority), 0, 1)``: 0 is no better than always giving the
    commonest answer (whose share is ``majority``), 1 is always right."""
    return min(max((accuracy - majority) / (1.0 - majority), 0.0), 1.0)


# --------------------------------------------------------------------------------------------- agreement


def teacher_forced(loaded: Any, prompts: Sequence[str], targets: Sequence[str],
                   batch_size: int = 32) -> tuple[Tensor, Tensor]:
    """Per example: whether every gold token (end token included) is the argmax given the gold prefix
    ``[N] bool``, and exp(mean gold-token log-prob) ``[N]``; one forward pass per batch, no generation."""
    kind, tokenizer, model = model_kind(loaded), loaded.tokenizer, loaded.model
    slots = (answer_slots(model) or DEFAULT_ANSWER_TOKENS) if kind == "encoder" else 0
    encoded = encode_examples(tokenizer, kind, prompts, targets, slots, limit=position_limit(model))
    if kind == "encoder":  # the slots may cut an answer short: such an example cannot agree
        gold_lengths = [len(ids) + 1 for ids in texts_ids(tokenizer, targets)]  # the answer, then its end
    else:
        gold_lengths = [sum(label != IGNORE for label in item.labels) for item in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))  # little padding per batch
    agree, likelihood = torch.zeros(len(encoded), dtype=torch.bool), torch.zeros(len(encoded))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = _batch(kind, [encoded[i] for i in rows], pad_id(tokenizer))
                hits, logp, scored = _gold_scores(loaded, kind, batch)  # each [batch, answer_len]
                n_scored = scored.sum(1).cpu()  # [batch]
                whole = n_scored == torch.tensor([gold_lengths[i] for i in rows])  # not cut off by the slots
                agree[rows] = (hits | ~scored).all(1).cpu() & whole
                likelihood[rows] = ((logp * scored).sum(1).cpu() / n_scored.clamp(min=1)).exp()
    finally:
        model.train(was_training)
    return agree, likelihood


def _batch(kind: str, items: list[Encoded], pad: int) -> dict[str, Tensor]:
    """A batch as training collates it, except that decoders are left-padded as in generation (every
    answer then ends the row, and only the last positions need logits)."""
    if kind != "decoder":
        return collate(items, pad)
    input_ids, attention_mask = pad_left([it.input_ids for it in items], pad)
    labels, _ = pad_left([it.labels for it in items], IGNORE)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _accepts(model: Any, argument: str) -> bool:
    """Whether the forward of ``model`` (or of the model a PEFT wrapper adapts) names ``argument``."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    return argument in inspect.signature(base.forward).parameters


def _gold_scores(loaded: Any, kind: str, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``hits``, gold-token log-probs and ``scored`` (a gold token is there), each ``[batch, answer_len]``."""
    model, device = loaded.model, loaded.device
    inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
    if getattr(model.config, "use_cache", None) is not None:
        inputs["use_cache"] = False
    labels = batch["labels"].to(device)
    if kind == "encoder-decoder":  # the model shifts the labels right to make the decoder's input
        logits = model(**inputs, labels=labels).logits  # [batch, answer_len, vocab]
    elif kind == "decoder":
        span = int((labels != IGNORE).sum(1).max())  # the longest answer (end token included)
        if _accepts(model, "position_ids"):  # positions count real tokens only, as generation does
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        if _accepts(model, "logits_to_keep"):
            inputs["logits_to_keep"] = span + 1
        logits = model(**inputs).logits[:, -(span + 1) :]  # [batch, span + 1, vocab]
        logits, labels = logits[:, :-1], labels[:, -span:]  # position t predicts token t + 1
    else:
        logits = model(**inputs).logits  # [batch, len, vocab]
    logp = logits.float().log_softmax(-1)
    scored = labels != IGNORE
    gold = labels.clamp(min=0)
    hits = logp.argmax(-1) == gold
    return hits, logp.gather(-1, gold[..., None]).squeeze(-1), scored


# ----------------------------------------------------------------------------------------- decodability


def prompt_features(loaded: Any, prompts: Sequence[str], batch_size: int = 32) -> Tensor:
    """Mean-pooled activations of the prompts after the last (encoder) block: ``[prompts, width]``."""
    from umaf.capture import capture_activations, find_blocks

    blocks = find_blocks(loaded.model)
    if getattr(loaded.model.config, "is_encoder_decoder", False):  # the encoder is what reads the prompt
        blocks = [(name, block) for name, block in blocks if "decoder" not in name.split(".")]
    return capture_activations(loaded.model, loaded.tokenizer, list(prompts), layers=[len(blocks) - 1],
                               batch_size=batch_size, progress=False)[0]


def cross_validated_accuracy(features: Tensor, labels: Tensor, folds: int = FOLDS) -> float:
    """Accuracy of a ridge classifier of ``labels [N]`` from ``features [N, D]`` over stratified folds
    (as many as the smallest class allows, at most ``folds``); every example is predicted once."""
    x = features.double()
    k = max(2, min(folds, int(torch.bincount(labels).min())))
    fold = torch.empty_like(labels)
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        fold[members] = torch.arange(len(members)) % k  # round robin: every fold holds every class
    correct = 0
    for f in range(k):
        test = fold == f
        predicted = _ridge_predict(x[~test], labels[~test], x[test], int(labels.max()) + 1)
        correct += int((predicted == labels[test]).sum())
    return correct / len(labels)


def _ridge_predict(x: Tensor, y: Tensor, x_test: Tensor, n_classes: int) -> Tensor:
    """Fit one-hot ridge regression on standardised ``x [n, D]`` (dual form: n is small) and predict."""
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x, x_test = (x - mean) / std, (x_test - mean) / std
    onehot = torch.nn.functional.one_hot(y, n_classes).double()  # [n, classes]
    prior = onehot.mean(0)
    gram = x @ x.T  # [n, n]
    alpha = RIDGE * float(gram.trace()) / len(x)
    dual = torch.linalg.solve(gram + alpha * torch.eye(len(x), dtype=x.dtype), onehot - prior)  # [n, classes]
    return (x_test @ x.T @ dual + prior).argmax(1)


# --------------------------------------------------------------------------------------- reading it back


def fingerprint_competence(meta: Mapping[str, Any] | Any) -> float | None:
    """The measured competence recorded in a fingerprint (or its ``meta``); None when unknown.

    A fingerprint written before competence was measured (no ``competence_method``) counts as unknown:
    its ``competence`` came from the extractor's training head, which does not track ability.
    """
    meta = getattr(meta, "meta", meta)
    value = meta.get("competence")
    if "competence_method" not in meta or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def describe_competence(meta: Mapping[str, Any] | Any) -> str:
    """``competence 0.42 (agreement)`` or ``competence unknown (<why>)``, for one-line outputs."""
    meta = getattr(meta, "meta", meta)
    score = fingerprint_competence(meta)
    method = meta.get("competence_method") or "not measured"
    return f"competence {'unknown' if score is None else f'{score:.2f}'} ({method})"


def source_readings(fp: Any) -> list[tuple[str, str, float | None]]:
    """``(model, capability, competence)`` of each source of ``fp`` (one, or each source of a fused
    fingerprint, which records them); competence is None when unknown."""
    meta = fp.meta
    fused = isinstance(meta.get("sources"), list)  # fusion records each source's measured competence
    sources = [s for s in meta["sources"] if isinstance(s, dict)] if fused else [meta]
    out = []
    for src in sources:
        score = src.get("competence") if fused else fingerprint_competence(src)
        known = isinstance(score, int | float) and not isinstance(score, bool)
        model, cap = str(src.get("model", "?")), str(src.get("capability", "?"))
        out.append((model, cap, float(score) if known else None))
    return out


def lacking_sources(fp: Any, threshold: float = COMPETENT) -> list[str]:
    """Each source of ``fp`` whose *measured* competence is below ``threshold``, as one phrase
    (``zoo:x reads plural with competence 0.03``); an unknown competence is not counted.

    An adapter generated from such a source would carry what the generator learnt of the capability, not
    what the source can do: :func:`umaf.generator.generate_adapter` refuses to write it by default."""
    return [f"{model} reads {cap} with competence {score:.2f}"
            for model, cap, score in source_readings(fp) if score is not None and score < threshold]


def competence_warning(fp: Any) -> str | None:
    """Why an adapter generated from ``fp`` may lack the capability (a source whose competence is below
    :data:`COMPETENT` or unknown), as one line; None when every source is competent."""
    weak = [f"{model} reads {cap} with unknown competence" if score is None
            else f"{model} reads {cap} with competence {score:.2f} (< {COMPETENT})"
            for model, cap, score in source_readings(fp) if score is None or score < COMPETENT]
    if not weak:
        return None
    return "; ".join(weak) + ": the adapter may not carry the capability"


__all__ = [
    "AGREEMENT", "COMPETENT", "DECODABILITY", "FOLDS", "MAX_CLASSES", "MIN_PER_CLASS", "NO_READING",
    "QUALIFY", "RIDGE", "CompetenceReading", "above_chance", "class_labels", "competence_warning",
    "cross_validated_accuracy", "describe_competence", "fingerprint_competence", "has_lm_head",
    "lacking_sources", "measure_competence", "prompt_features", "source_readings", "teacher_forced",
]
