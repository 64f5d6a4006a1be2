"""Plain PEFT LoRA folders: reading them, their ΔW, and whether they (or a LoRA of given modules) fit a model.

A LoRA folder is what PEFT's ``save_pretrained`` writes and ``PeftModel.from_pretrained`` loads::

    adapter_config.json          # peft_type LORA, r, lora_alpha, target_modules, ...
    adapter_model.safetensors    # lora_A / lora_B factors of every adapted module

Oracles (:mod:`umaf.adapters.oracles`), generated adapters (:mod:`umaf.generator`) and evaluation all
read and check adapters through this module. Only safetensors weights are read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from torch import Tensor, nn

from umaf.errors import UmafError

#: The two files that make a plain PEFT LoRA directory.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# --------------------------------------------------------------------------------- reading adapters


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    """``adapter_dir`` as a Path if it is a folder with both PEFT LoRA files (their contents unread)."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise UmafError(f"adapter folder {path} does not exist")
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (path / n).is_file()]
    if missing:
        raise UmafError(f"{path} is not a PEFT adapter folder (missing {', '.join(missing)})")
    return path


def read_adapter(adapter_dir: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """The ``adapter_config.json`` and the tensors of a PEFT LoRA folder (safetensors only).

    A missing folder, a missing file or an unreadable one is a :class:`UmafError`.
    """
    from safetensors import safe_open

    path = check_adapter_dir(adapter_dir)
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UmafError(f"{path / ADAPTER_CONFIG} is not valid JSON") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise UmafError(f"{path} is not a LoRA adapter (peft_type {config.get('peft_type')!r})"
                        if isinstance(config, dict) else f"{path / ADAPTER_CONFIG} is not a JSON object")
    try:
        with safe_open(str(path / ADAPTER_WEIGHTS), framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # safetensors raises several types for truncated or foreign files
        raise UmafError(f"{path / ADAPTER_WEIGHTS} is corrupt or not a safetensors file") from None
    return config, tensors


#: Settings under which a saved LoRA's effect is not ``scale · B @ A`` added to the original weight,
#: by their ``adapter_config.json`` key (PEFT's own ``is_lora_variant`` fields are added to these).
_NOT_PLAIN: dict[str, str] = {
    "use_dora": "DoRA (use_dora) rescales the merged weight by a learned magnitude",
    "lora_bias": "lora_bias adds a trained bias to every adapted layer",
    "use_qalora": "QA-LoRA (use_qalora) pools the layer's inputs",
    "layer_replication": "layer_replication stacks copies of the model's layers",
    "alora_invocation_tokens": "aLoRA (alora_invocation_tokens) acts only after its invocation tokens",
    "target_parameters": "target_parameters adapts bare parameters, not linear layers",
    "trainable_token_indices": "trainable_token_indices also trains embedding rows",
    "modules_to_save": "modules_to_save also trains whole modules",
}
#: ``init_lora_weights`` values (prefixes) that change the base weights when the adapter is made, so
#: its factors only make sense on the changed base (PEFT converts them on save only when asked to).
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
#: Key of one LoRA factor in a PEFT state dict: ``[base_model.model.]<module>.lora_<A|B>[.<adapter>].weight``.
_FACTOR_KEY = re.compile(
    r"(?:base_model\.model\.)?(.+)\.lora_(A|B|embedding_A|embedding_B)(?:\.\w+)?\.weight"
)


def _peft_variants() -> tuple[list[str], tuple[str, ...]]:
    """PEFT's LoRA variants: the ``LoraConfig`` fields marked ``is_lora_variant`` (DoRA, VeLoRA, ...) and
    the ``init_lora_weights`` values (prefixes) that select one (MiCA)."""
    import dataclasses

    from peft import LoraConfig

    names, inits = [], []
    for f in dataclasses.fields(LoraConfig):
        if f.metadata.get("is_lora_variant"):
            names.append(f.name)
        inits += f.metadata.get("lora_variants", [])
    return names, tuple(inits)


def check_plain_lora(config: dict, tensors: dict[str, Tensor], source: str | Path = "the adapter") -> None:
    """UmafError (one line) unless the adapter is a plain LoRA, whose effect on the original model is
    exactly ``scale · B @ A`` per adapted layer: no DoRA or other PEFT variant, no trained bias, no
    base-changing initialisation, and no tensors besides the LoRA factors."""
    variants, variant_inits = _peft_variants()
    reasons = [why for key, why in _NOT_PLAIN.items() if config.get(key)]
    reasons += [f"{key} selects a PEFT LoRA variant" for key in variants
                if config.get(key) and key not in _NOT_PLAIN]
    init = str(config.get("init_lora_weights", True))
    if variant_inits and init.startswith(variant_inits):
        reasons.append(f"init_lora_weights={init} selects a PEFT LoRA variant")
    if init.startswith(_BASE_CHANGING_INITS):
        reasons.append(f"init_lora_weights={init} changes the base weights")
    if config.get("bias", "none") != "none":
        reasons.append(f"bias={config['bias']} also trains the base model's biases")
    extra = sorted(k for k in tensors if not _FACTOR_KEY.fullmatch(k))
    if extra and not reasons:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        reasons.append(f"it holds weights besides the LoRA factors ({extra[0]}{more})")
    if reasons:
        raise UmafError(f"{source}: cannot read ΔW as scale · B @ A: {'; '.join(reasons)}")


def _factor_pairs(tensors: dict[str, Tensor], source: str | Path) -> dict[str, tuple[Tensor, Tensor]]:
    """``{module: (A [r, in], B [out, r])}`` of a PEFT state dict; other tensors are left out."""
    factors: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        match = _FACTOR_KEY.fullmatch(key)
        if match is None:
            continue  # e.g. a DoRA magnitude or a modules_to_save copy: not a factor
        if match.group(2).startswith("embedding"):
            raise UmafError(f"{source}: LoRA on embeddings ({match.group(1)}) is not supported")
        factors.setdefault(match.group(1), {})[match.group(2)] = value
    pairs = {}
    for module, parts in sorted(factors.items()):
        a, b = parts.get("A"), parts.get("B")
        if a is None or b is None or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise UmafError(f"{source} is corrupt: LoRA factors of {module} are missing or mismatched")
        pairs[module] = (a, b)
    if not pairs:
        raise UmafError(f"{source} holds no LoRA factors")
    return pairs


def lora_factors(adapter_dir: str | Path) -> tuple[dict, dict[str, tuple[Tensor, Tensor]]]:
    """The adapter config and ``{module: (A [r, in], B [out, r])}`` (module names as in the base model).

    Any LoRA adapter is read (a DoRA one too: its factors still say which layers it fits); only
    :func:`delta_weights` asks for a plain LoRA.
    """
    config, tensors = read_adapter(adapter_dir)
    return config, _factor_pairs(tensors, adapter_dir)


def lora_scale(config: dict, module: str) -> tuple[int, float]:
    """``(r, scale)`` PEFT gives ``module`` (its name in the base model): ``rank_pattern`` and
    ``alpha_pattern`` looked up with PEFT's own matcher, then ``alpha / r`` (``alpha / sqrt(r)`` with
    ``use_rslora``), as ``LoraLayer.update_layer`` sets ``scaling``."""
    from peft.utils.other import get_pattern_key

    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    rank = int(ranks.get(get_pattern_key(ranks.keys(), module), config.get("r", 8)))
    alpha = float(alphas.get(get_pattern_key(alphas.keys(), module), config.get("lora_alpha", 8)))
    return rank, alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def delta_weights(adapter_dir: str | Path) -> dict[str, Tensor]:
    """ΔW of every adapted module, scaling applied: ``{module name: scale · B @ A}``, each ``[out, in]``.

    Module names are the base model's (``model.layers.0.self_attn.q_proj``). For layers stored
    transposed (GPT-2's Conv1D) the merged weight changes by the transpose. The scale is PEFT's
    (:func:`lora_scale`: rslora, rank and alpha patterns); an adapter whose effect is not ``scale · B @ A``
    (DoRA, lora_bias, other variants: :func:`check_plain_lora`) is refused. Reads safetensors only.
    """
    config, tensors = read_adapter(adapter_dir)
    check_plain_lora(config, tensors, adapter_dir)
    deltas = {}
    for module, (a, b) in _factor_pairs(tensors, adapter_dir).items():
        rank, scale = lora_scale(config, module)
        if rank != a.shape[0]:
            raise UmafError(f"{adapter_dir} is corrupt: {module} has rank {a.shape[0]} factors, "
                            f"its config says rank {rank}")
        deltas[module] = scale * (b.float() @ a.float())  # [out, r] @ [r, in] -> [out, in]
    return deltas


# ------------------------------------------------------------------------------ the model it goes on


def _base_model(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _weight_shape(layer: nn.Module | None) -> tuple[int, int] | None:
    """``(out, in)`` of a linear layer (GPT-2's Conv1D included), None for anything else."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features
    if isinstance(layer, Conv1D):
        return layer.nf, layer.weight.shape[0]
    return None


def linear_module_names(model: nn.Module) -> list[str]:
    """Last-part names of the linear layers a LoRA can adapt (output head excluded), sorted."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, nn.Linear | Conv1D) and module is not head and name}
    return sorted(names)


def check_target_modules(model: nn.Module, modules: Sequence[str], rank: int | None = None) -> None:
    """UmafError naming the available modules if any of ``modules`` is not a linear layer of ``model``;
    or if ``rank`` exceeds the smaller side of an adapted layer."""
    available = linear_module_names(model)
    unknown = [m for m in modules if m not in available]
    if unknown:
        raise UmafError(f"unknown target module(s) {', '.join(unknown)}; "
                        f"this model has: {', '.join(available)}")
    if rank is None:
        return
    for name, module in model.named_modules():
        shape = _weight_shape(module)
        if name.rsplit(".", 1)[-1] in modules and shape is not None and rank > min(shape):
            raise UmafError(f"rank {rank} is larger than {name} allows ({shape[0]}x{shape[1]})")


def check_adapter_fits(adapter_dir: str | Path, model: nn.Module, model_name: str = "the model") -> None:
    """UmafError unless every LoRA module of the adapter is a layer of ``model`` with matching shape."""
    _, pairs = lora_factors(adapter_dir)
    modules = dict(_base_model(model).named_modules())
    for name, (a, b) in pairs.items():
        layer = modules.get(name)
        shape = _weight_shape(layer)
        if shape is None:
            raise UmafError(f"adapter {adapter_dir} does not fit {model_name}: it has no linear layer {name}")
        if (b.shape[0], a.shape[1]) != shape:
            raise UmafError(f"adapter {adapter_dir} does not fit {model_name}: {name} is "
                            f"{shape[0]}x{shape[1]}, the adapter's ΔW is {b.shape[0]}x{a.shape[1]}")


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every parameter's ``requires_grad`` and the train/eval mode of ``model`` afterwards."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    training = model.training
    try:
        yield model
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(flags.get(name, param.requires_grad))
        model.train(training)
