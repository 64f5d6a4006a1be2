"""Several LoRA adapters of one target -> one adapter that does what each of them does.

Two ways, one function (:func:`merge_adapters`):

- ``distil`` (the default): the adapters are concatenated along the rank (their ΔWs summed), then that
  LoRA is trained for a few steps to answer each constituent's *inputs* as the constituent adapter
  answers them (sequence-level distillation: the teachers' greedy answers are the labels; the gold
  outputs only bound how many tokens an answer may take). Summing alone makes every adapter act on
  every input; the short fit removes the interference wherever the target's activations tell the
  inputs apart (:func:`input_separability`). A constituent whose adapter answers its inputs (exact
  match on the first ``DistilConfig.screen``) less than ``DistilConfig.min_gain`` better than the target
  alone is left out, as its answers would teach the merge its errors. The merged rank is the sum of the
  kept adapters' ranks.
- PEFT's ``add_weighted_adapter``: ``linear``, ``cat``, ``ties``, ``dare_linear`` (no training).

The result is a plain PEFT LoRA folder (with ``merge.json``: method, constituents, seconds and, for
``distil``, what the screen measured of each constituent; :func:`left_out_note` says it in one line).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from umaf.adapters.peft_io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_adapter_fits, read_adapter
from umaf.capabilities import Capability
from umaf.encoding import encode_examples, pad_id, pad_right, prompts_ids, texts_ids
from umaf.errors import UmafError
from umaf.io import atomic_path, check_writable
from umaf.models import LoadedModel

#: PEFT ``add_weighted_adapter`` combinations :func:`merge_adapters` offers besides ``distil``.
PEFT_MERGES = ("linear", "cat", "ties", "dare_linear")
MERGE_METHODS = ("distil", *PEFT_MERGES)
MERGE_FILE = "merge.json"
#: Kept share of each task vector for ties / dare_linear.
MERGE_DENSITY = 0.5
#: Input separability (:func:`input_separability`) below which one adapter is not expected to serve all.
SEPARABLE = 0.75


@dataclass(frozen=True)
class DistilConfig:
    """How ``distil`` fits the merged adapter (AdamW with cosine decay, the oracles' fit step and the
    target's oracle defaults otherwise, the replay loss on general text included)."""

    steps: int = 60
    """Optimiser steps."""
    lr: float = 1e-3
    """Peak learning rate (the start is already close: the summed adapters)."""
    batch_size: int = 16
    """Distilled examples per step, drawn from every constituent."""
    inputs: int = 512
    """Train-split inputs per constituent that its adapter answers (the distillation set; chosen over 128
    on the validation split of the fusion bench, before constituents were balanced). A constituent with
    fewer is repeated to the size of the largest, so each capability weighs the same."""
    min_gain: float | None = 0.05
    """A constituent whose adapter's exact-match accuracy on the first ``screen`` train inputs exceeds the
    target's own by less than this is left out (unless none reaches it); None keeps every one."""
    screen: int = 128
    """Train inputs per constituent (at most ``inputs``) on which the adapter's gain over the target is
    measured."""
    seed: int = 0
    """Seed of the example order."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "inputs", "screen"):
            if int(getattr(self, name)) < 1:
                raise UmafError(f"distil config: {name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UmafError(f"distil config: lr must be positive, got {self.lr}")


def check_merge(
    adapters: Sequence[str | Path],
    method: str,
    weights: Sequence[float] | None,
    capabilities: Sequence[Capability] | None,
) -> list[float]:
    """The weights to merge with (ones by default), after every check that needs no model."""
    if method not in MERGE_METHODS:
        raise UmafError(f"unknown merge method {method!r}; choose from: {', '.join(MERGE_METHODS)}")
    if len(adapters) < 2:
        raise UmafError("merging needs at least two adapters")
    configs = [read_adapter(a)[0] for a in adapters]  # bad folders fail here
    # PEFT stores a module list from a set (any order) or a regex string
    modules = {json.dumps(sorted(m) if isinstance(m := c.get("target_modules"), list) else m)
               for c in configs}  # fmt: skip
    if len(modules) != 1:
        raise UmafError("the adapters adapt different modules; they cannot be merged into one LoRA")
    w = [1.0] * len(adapters) if weights is None else [float(x) for x in weights]
    if len(w) != len(adapters) or not all(x == x and abs(x) != float("inf") and x > 0 for x in w):
        raise UmafError(f"give one positive weight per adapter ({len(adapters)}), got {list(weights or [])}")
    if method == "distil" and (capabilities is None or len(capabilities) != len(adapters)):
        raise UmafError("merge method 'distil' needs each adapter's capability (its inputs are distilled)")
    return w


def merge_adapters(
    target: LoadedModel,
    adapters: Sequence[str | Path],
    output: str | Path,
    *,
    method: str = "distil",
    weights: Sequence[float] | None = None,
    capabilities: Sequence[Capability] | None = None,
    config: DistilConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Merge PEFT LoRA ``adapters`` of ``target`` into one PEFT folder ``output`` (see the module doc).

    ``capabilities`` (one per adapter, needed by ``distil``) say whose inputs each adapter answers;
    ``weights`` scale each adapter's ΔW (default 1). ``target.model`` is left as it was.
    """
    from umaf.adapters.oracles import check_generative

    check_writable(output, overwrite)
    w = check_merge(adapters, method, weights, capabilities)
    for adapter in adapters:
        check_adapter_fits(adapter, target.model, target.info.name)
    if method == "distil":
        check_generative(target)  # it learns from the target's own generated answers
    start = time.perf_counter()
    with atomic_path(output, overwrite=overwrite, is_dir=True) as tmp:
        meta: dict[str, Any] = {"method": method, "weights": w, "adapters": [str(a) for a in adapters]}
        if method == "distil":
            assert capabilities is not None
            config = config or DistilConfig()
            meta.update(
                _distil(target, adapters, capabilities, w, config, tmp, progress),
                config=asdict(config),
                capabilities=[c.name for c in capabilities],
            )
        else:
            _peft_merge(target, adapters, method, w, tmp)
        meta["seconds"] = round(time.perf_counter() - start, 2)
        (tmp / MERGE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(output)


# ---------------------------------------------------------------------------------------- PEFT merges


def _peft_merge(
    target: LoadedModel, adapters: Sequence[str | Path], method: str, weights: list[float], folder: Path
) -> None:
    """PEFT ``add_weighted_adapter`` of ``adapters`` written as a plain LoRA folder in ``folder``."""
    from umaf.evaluation import adapted

    with adapted(target, adapters[0]) as first, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = first.model
        for i, path in enumerate(adapters[1:], start=1):
            model.load_adapter(str(path), adapter_name=f"a{i}")
        names = ["default", *(f"a{i}" for i in range(1, len(adapters)))]
        density = None if method in ("linear", "cat") else MERGE_DENSITY
        try:
            with torch.random.fork_rng():  # dare_linear drops entries at random
                torch.manual_seed(0)
                model.add_weighted_adapter(names, weights, "merged", combination_type=method, density=density)
        except ValueError as err:  # e.g. linear merges of adapters of different ranks
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UmafError(f"PEFT cannot merge these adapters with {method!r}: {first_line}") from None
        model.save_pretrained(str(folder / "peft"), selected_adapters=["merged"], save_embedding_layers=False)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):  # PEFT saves a non-default adapter in a subfolder
        (folder / "peft" / "merged" / name).rename(folder / name)
    shutil.rmtree(folder / "peft")
    # PEFT folds every scale into the merged factors and saves lora_alpha = r, but keeps the first
    # adapter's use_rslora, which would scale the merge by sqrt(r) instead of 1.
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    config["use_rslora"] = False
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


# ------------------------------------------------------------------------------------------- distil


def concatenated(
    adapters: Sequence[str | Path], weights: Sequence[float]
) -> tuple[dict, dict[str, torch.Tensor]]:
    """One LoRA whose ΔW is ``Σ weight_i · ΔW_i``: the adapters' factors stacked along the rank, each B
    scaled by its weight and its own PEFT scale, written with scale 1 (``lora_alpha = r``)."""
    from umaf.adapters.peft_io import _factor_pairs, check_plain_lora, lora_scale

    configs, factors = [], []
    for adapter in adapters:
        config, tensors = read_adapter(adapter)
        check_plain_lora(config, tensors, adapter)
        configs.append(config)
        factors.append(_factor_pairs(tensors, adapter))
    modules = sorted(factors[0])
    if any(sorted(f) != modules for f in factors):
        raise UmafError("the adapters adapt different layers; they cannot be merged into one LoRA")
    tensors, ranks = {}, {}
    for module in modules:
        a = torch.cat([f[module][0].float() for f in factors])  # [R, in]
        b = torch.cat(
            [
                w * lora_scale(c, module)[1] * f[module][1].float()
                for f, c, w in zip(factors, configs, weights, strict=True)
            ],
            dim=1,
        )  # [out, R]
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
        ranks[module] = a.shape[0]
    rank = ranks[modules[0]]
    pattern = {m: r for m, r in ranks.items() if r != rank}  # adapters with their own rank patterns
    config = dict(configs[0], rank_pattern=pattern, alpha_pattern=dict(pattern))
    config.update(r=rank, lora_alpha=rank, use_rslora=False, lora_dropout=0.0, inference_mode=True)
    return config, tensors


def _write_lora(config: dict, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def teacher_answers(
    target: LoadedModel, adapter: str | Path | None, capability: Capability, n: int, screen: int, budget: int
) -> tuple[list[tuple[str, str]], float]:
    """``(prompt, answer)`` for the first ``n`` train-split inputs of ``capability``, answered greedily by
    ``target`` with ``adapter`` (None: the target alone) in at most ``budget`` new tokens (an empty answer
    is dropped: there is nothing to distil), and the exact-match accuracy of the first ``screen`` answers
    (empty ones count as wrong)."""
    from umaf.answers import generate_answers
    from umaf.evaluation import adapted

    examples = capability.split("train")[:n]
    prompts = [ex.prompt() for ex in examples]
    with adapted(target, adapter) as model:
        answers = generate_answers(model, prompts, max_new_tokens=budget)
    accuracy = float(capability.accuracy(answers[:screen], examples[:screen]))
    return [(p, a) for p, a in zip(prompts, answers, strict=True) if a], accuracy


def answer_budget(target: LoadedModel, capability: Capability, n: int) -> int:
    """New tokens an answer to the first ``n`` train-split inputs may take: one past the longest gold one,
    so a model that does not stop is never right."""
    examples = capability.split("train")[:n]
    if not examples:
        raise UmafError(f"capability {capability.name!r} has no train-split inputs to distil")
    return max(len(ids) for ids in texts_ids(target.tokenizer, [ex.target() for ex in examples])) + 1


def screen_constituents(
    target: LoadedModel,
    capabilities: Sequence[Capability],
    accuracies: Sequence[float],
    budgets: Sequence[int],
    config: DistilConfig,
) -> list[dict[str, Any]]:
    """Per constituent (in order): its capability, its adapter's accuracy on the first ``config.screen``
    distilled inputs (``accuracies``), the target's own on the same inputs with the same ``budgets``, and
    whether it is kept (gain >= ``config.min_gain``). When none reaches it, every one is kept and marked
    ``"none_gains"``; with ``min_gain`` None every one is kept unmeasured."""
    if config.min_gain is None:
        return [{"capability": c.name, "adapter": round(a, 4), "kept": True}
                for c, a in zip(capabilities, accuracies, strict=True)]  # fmt: skip
    n = min(config.screen, config.inputs)
    alone = [teacher_answers(target, None, c, n, n, budget)[1]
             for c, budget in zip(capabilities, budgets, strict=True)]  # fmt: skip
    gains = [a - b >= config.min_gain for a, b in zip(accuracies, alone, strict=True)]
    entries = [{"capability": c.name, "adapter": round(a, 4), "target": round(b, 4),
                "kept": gain or not any(gains)}
               for c, a, b, gain in zip(capabilities, accuracies, alone, gains, strict=True)]  # fmt: skip
    if not any(gains):
        for entry in entries:
            entry["none_gains"] = True
    return entries


def balanced(groups: Sequence[Sequence[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Every non-empty group repeated (cycled) to the size of the largest, then all concatenated: each
    constituent weighs the same in the distillation, whatever the size of its train split."""
    most = max((len(rows) for rows in groups), default=0)
    return [rows[i % len(rows)] for rows in groups if rows for i in range(most)]


def left_out_note(folder: str | Path) -> str | None:
    """One line on what the screen of a ``distil`` merge in ``folder`` found: the constituents it left
    out, or that no adapter gains on its inputs (all were kept); None when every one passed or none was
    screened."""
    path = Path(folder) / MERGE_FILE
    meta = json.loads(path.read_text()) if path.is_file() else {}
    screen = [s for s in meta.get("screen", []) if "target" in s]
    gain = meta.get("config", {}).get("min_gain")
    scores = ", ".join(f"{s['capability']} (adapter {s['adapter']:.2f}, target alone {s['target']:.2f})"
                       for s in screen if not s["kept"] or s.get("none_gains"))  # fmt: skip
    if not scores:
        return None
    if any(s.get("none_gains") for s in screen):
        return f"no adapter answers its inputs {gain} better than the target alone, all kept: {scores}"
    return ("left out of the merge, as their adapters answer their inputs less than "
            f"{gain} better than the target alone: {scores}")


def _distil(
    target: LoadedModel,
    adapters: Sequence[str | Path],
    capabilities: Sequence[Capability],
    weights: list[float],
    config: DistilConfig,
    folder: Path,
    progress: bool,
) -> dict[str, Any]:
    """Fit the concatenated adapters on the teachers' answers; the trained LoRA is written to ``folder``."""
    from umaf.adapters.oracles import default_config, fit_attached
    from umaf.evaluation import adapted

    concatenated(adapters, weights)  # refuses adapters that are not plain LoRAs, before any answering
    budgets = [answer_budget(target, c, config.inputs) for c in capabilities]
    answered = [teacher_answers(target, a, c, config.inputs, config.screen, budget) for a, c, budget in
                tqdm(list(zip(adapters, capabilities, budgets, strict=True)), desc="teacher answers",
                     leave=False, disable=not progress)]  # fmt: skip
    screen = screen_constituents(target, capabilities, [acc for _, acc in answered], budgets, config)
    kept = [i for i, entry in enumerate(screen) if entry["kept"]]
    lora, tensors = concatenated([adapters[i] for i in kept], [weights[i] for i in kept])
    for i in kept:
        screen[i]["n_distilled"] = len(answered[i][0])
    rows = balanced([answered[i][0] for i in kept])
    if not rows:
        raise UmafError("no kept constituent adapter answers any of its inputs; there is nothing to merge")
    prompts, answers = [p for p, _ in rows], [f" {a}" for _, a in rows]
    items = encode_examples(target.tokenizer, target.info.kind, prompts, answers)
    _write_lora(lora, tensors, folder / "start")
    fit = replace(
        default_config(target.info),
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        warmup=0.0,
    )
    with adapted(target, folder / "start", trainable=True) as student:
        losses, _ = fit_attached(student.model, target, items, fit, "distil", progress)
        student.model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
    shutil.rmtree(folder / "start")
    return {
        "screen": screen,
        "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "rank": lora["r"],
    }


# ------------------------------------------------------------------------------- input separability


@torch.no_grad()
def prompt_states(target: LoadedModel, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """The target's hidden state at the last prompt token, middle layer: ``[n, width]`` (float32)."""
    kind = target.info.kind
    model = target.model
    rows = prompts_ids(target.tokenizer, kind, prompts)
    out = []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_right(rows[start : start + batch_size], pad_id(target.tokenizer))
        ids, mask = ids.to(target.device), mask.to(target.device)
        if kind == "encoder-decoder":
            states = model.get_encoder()(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        else:
            states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = states.hidden_states[len(states.hidden_states) // 2]  # [b, t, width]
        last = mask.sum(-1) - 1
        out.append(hidden[torch.arange(len(last)), last].float().cpu())
    return torch.cat(out)


def separability_warning(separability: float) -> str | None:
    """The warning for an input separability below :data:`SEPARABLE` (None at or above it), one line
    shared by ``umaf merge`` and pipelines."""
    if separability >= SEPARABLE:
        return None
    return (f"below {SEPARABLE}: one adapter cannot serve inputs the target confuses; "
            "expect the merged adapter to lose some of each")


def input_separability(target: LoadedModel, capabilities: Sequence[Capability], n: int = 128) -> float:
    """Whether one static adapter can serve all ``capabilities`` on ``target``: the balanced accuracy with
    which a linear probe on the target's prompt states (:func:`prompt_states`), fit on train-split
    inputs, says which capability a probe-split input belongs to. 1.0: the target tells every input
    apart; 1 / len(capabilities): it cannot (two tasks asking ``word ->`` of the same words)."""
    if len(capabilities) < 2:
        raise UmafError("separability needs at least two capabilities")
    feats, labels = {}, {}
    for split in ("train", "probe"):
        xs, ys = [], []
        for i, cap in enumerate(capabilities):
            prompts = [ex.prompt() for ex in cap.split(split)[:n]]
            if not prompts:
                raise UmafError(f"capability {cap.name!r} has no {split}-split inputs")
            xs.append(prompt_states(target, prompts))
            ys += [i] * len(prompts)
        feats[split], labels[split] = torch.cat(xs), torch.tensor(ys)
    mean, std = feats["train"].mean(0), feats["train"].std(0).clamp_min(1e-6)
    x_train, x_val = (feats["train"] - mean) / std, (feats["probe"] - mean) / std
    probe = torch.nn.Linear(x_train.shape[1], len(capabilities))
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=100)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(probe(x_train), labels["train"])
            + 1e-2 * probe.weight.square().sum()
        )
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    predicted = probe(x_val).argmax(-1)
    per_class = [
        float((predicted[labels["probe"] == i] == i).float().mean()) for i in range(len(capabilities))
    ]
    return sum(per_class) / len(per_class)
