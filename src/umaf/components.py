"""One save/load mechanism for every trained component (extractor, interpolator, fusion gate, generator).

A component folder holds ``config.json`` (sorted JSON: ``format``, ``umaf_version``, ``dtype``, the
network's ``config`` and whatever a component adds, such as its training report) and
``model.safetensors`` (:data:`umaf.io.WEIGHTS_NAME`, stamped with the same format, version and dtype).
A component subclasses :class:`TrainedComponent`, names its ``FORMAT`` and ``config_class`` and gets
:meth:`~TrainedComponent.save_pretrained`, :meth:`~TrainedComponent.from_pretrained` and a
dtype-independent :attr:`~TrainedComponent.weights_hash`. Folders written before ``dtype`` was recorded
load as float32. Configs are built with :func:`config_from_dict`, which checks every value's type.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import umaf
from umaf.errors import UmafError
from umaf.io import WEIGHTS_NAME, atomic_path

CONFIG_NAME = "config.json"

#: Dtypes a component's floating tensors may be stored in, by the name config.json records.
#: The floating dtypes UMAF loads models in and stores weights in, by name.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

C = TypeVar("C")
T = TypeVar("T", bound="TrainedComponent")
_INVALID = object()  # what _coerce returns for a value that does not fit its annotation


# ------------------------------------------------------------------------------------ config checking


def _coerce(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (JSON lists become tuples, ints become floats), else ``_INVALID``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return next((out for arg in args if (out := _coerce(value, arg)) is not _INVALID), _INVALID)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _INVALID
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(kinds) != len(value):
            return _INVALID
        items = tuple(_coerce(v, k) for v, k in zip(value, kinds, strict=True))
        return _INVALID if any(i is _INVALID for i in items) else items
    if annotation is type(None):
        return value if value is None else _INVALID
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _INVALID
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if origin is dict or annotation in (bool, str, dict):
        return value if isinstance(value, origin or annotation) else _INVALID
    return value  # Any and other annotations are not checked


def _describe(annotation: Any) -> str:
    """Readable name of an annotation for error messages (``int``, ``str or null``, ``list of str``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"list of {_describe(args[0])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def check_type(value: Any, annotation: Any, name: str) -> Any:
    """``value`` checked against ``annotation`` (and JSON lists made tuples); a UmafError naming ``name``."""
    out = _coerce(value, annotation)
    if out is _INVALID:
        raise UmafError(f"{name} must be {_describe(annotation)}, got {value!r}")
    return out


def config_from_dict(cls: type[C], data: Any, what: str) -> C:
    """Build dataclass ``cls`` from a JSON dict: unknown or missing keys and wrong-typed values are a
    UmafError naming them (``what`` says whose keys they are, e.g. ``"extractor config"``)."""
    if not isinstance(data, Mapping):
        raise UmafError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UmafError(f"unknown {what} keys: {', '.join(unknown)}")
    no_default = dataclasses.MISSING
    required = [n for n, f in fields.items() if f.default is no_default and f.default_factory is no_default]
    missing = sorted(set(required) - set(data))
    if missing:
        raise UmafError(f"{what} lacks keys: {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: check_type(v, hints[k], f"{what} key {k!r}") for k, v in data.items()})


# ------------------------------------------------------------------------------------------- dtypes


def dtype_name(dtype: torch.dtype | str) -> str:
    """Name of a storage dtype (``torch.float16`` or ``"float16"`` -> ``"float16"``); others are an error."""
    for name, known in DTYPES.items():
        if dtype in (name, known):
            return name
    raise UmafError(f"weights can be stored as {', '.join(DTYPES)}, not {dtype}")


def _stored(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """A CPU copy of ``tensor`` as written to disk: floating tensors in ``dtype``, others unchanged."""
    tensor = tensor.detach().cpu()
    return (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()


# --------------------------------------------------------------------------------------- components


class TrainedComponent(nn.Module):
    """Base of every trained UMAF network: saving, loading, hashing and rounding in one place.

    Subclasses set ``FORMAT`` (config.json's ``format``), ``config_class`` (a dataclass with
    ``to_dict``/``from_dict``), ``NAME`` (for messages) and, if their training report is saved in
    config.json, ``REPORT_FIELD`` (the key it is saved under; the report lives in ``train_report``).
    Components with more than a config to save override :meth:`_config_dict`, :meth:`_extra_fields`
    and :meth:`_from_document`.
    """

    FORMAT: ClassVar[str]
    config_class: ClassVar[type]
    NAME: ClassVar[str] = "component"
    REPORT_FIELD: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.train_report: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------ identity

    @property
    def weights_hash(self) -> str:
        """sha256[:16] over the weights' names, shapes and float32 bytes: the same for a model however
        it is stored (a float32 model whose weights fit in float16 hashes the same after a float16 round
        trip), and for float32 weights the same as before storage dtypes existed."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            tensor = _stored(tensor, torch.float32)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.numpy().tobytes())
        return digest.hexdigest()[:16]

    @torch.no_grad()
    def round_to_dtype(self: T, dtype: torch.dtype | str) -> T:
        """Round every floating weight and buffer in place to what ``dtype`` can represent (the module
        keeps its own dtype), so its hash is recorded as it will be after saving in ``dtype``."""
        target = DTYPES[dtype_name(dtype)]
        for tensor in [*self.parameters(), *self.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(target))
        return self

    # ---------------------------------------------------------------------------------------- saving

    def _config_dict(self) -> dict[str, Any]:
        """What config.json records as ``config``."""
        return self.config.to_dict()

    def _extra_fields(self) -> dict[str, Any]:
        """Further top-level config.json fields (besides format, version, dtype, config and report)."""
        return {}

    def write_files(self, folder: Path, dtype: torch.dtype | str | None = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` into the existing ``folder`` (not atomic; use
        :meth:`save_pretrained`). Floating tensors are stored as ``dtype`` (default float32)."""
        name = dtype_name(dtype or torch.float32)
        stamp = {"format": self.FORMAT, "umaf_version": umaf.__version__, "dtype": name}
        doc = {**stamp, "config": self._config_dict(), **self._extra_fields()}
        if self.REPORT_FIELD:
            doc[self.REPORT_FIELD] = self.train_report
        state = {k: _stored(v, DTYPES[name]) for k, v in self.state_dict().items()}
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
        save_file(state, str(Path(folder) / WEIGHTS_NAME), metadata=stamp)

    def save_pretrained(
        self, directory: str | os.PathLike, overwrite: bool = False, dtype: torch.dtype | str | None = None
    ) -> Path:
        """Write the component folder atomically (all of it or nothing; an existing folder only with
        ``overwrite``); ``dtype=torch.float16`` stores floating tensors in half precision."""
        dtype_name(dtype or torch.float32)  # fail before anything is written
        with atomic_path(directory, overwrite=overwrite, is_dir=True) as tmp:
            self.write_files(tmp, dtype)
        return Path(directory)

    # --------------------------------------------------------------------------------------- loading

    @classmethod
    def read_document(cls, directory: str | os.PathLike) -> dict[str, Any]:
        """The checked config.json of a component folder: right ``format``, a dict ``config``."""
        directory = Path(directory)
        if not directory.is_dir():
            raise UmafError(f"no {cls.NAME} folder at {directory}")
        path = directory / CONFIG_NAME
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise UmafError(f"{path} is missing or not valid JSON") from None
        found = doc.get("format") if isinstance(doc, dict) else None
        if found != cls.FORMAT:
            raise UmafError(
                f"{directory} is not a UMAF {cls.NAME} folder (format {found!r}, not {cls.FORMAT!r})"
            )
        if not isinstance(doc.get("config"), dict):
            raise UmafError(f"{path}: config must be a JSON object, got {type(doc.get('config')).__name__}")
        return doc

    @classmethod
    def _from_document(cls: type[T], doc: dict[str, Any]) -> T:
        """An untrained instance built from a checked config.json document."""
        return cls(cls.config_class.from_dict(doc["config"]))

    @classmethod
    def _build(cls: type[T], doc: dict[str, Any], path: Path) -> T:
        """:meth:`_from_document` plus the saved report; any problem is a UmafError naming ``path``."""
        try:
            model = cls._from_document(doc)
            if cls.REPORT_FIELD:
                model.train_report = dict(check_type(doc.get(cls.REPORT_FIELD) or {}, dict, cls.REPORT_FIELD))
        except UmafError as err:
            raise UmafError(f"{path}: {err}") from None
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. a config no network can be built for
            raise UmafError(f"{path} is not a valid {cls.NAME} config ({err})") from None
        return model

    def _load_weights(self, path: Path, dtype: str) -> None:
        """Load ``path`` (floating tensors stored as ``dtype``) into this module as float32."""
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError, ValueError):
            raise UmafError(f"{path} is missing or not a safetensors file") from None
        floats = {dtype_name(v.dtype) for v in state.values() if v.is_floating_point()}
        stored = sorted(floats - {dtype})
        if stored:
            raise UmafError(f"{path} holds {', '.join(stored)} weights but its config.json says {dtype}")
        try:
            self.load_state_dict({k: _stored(v, torch.float32) for k, v in state.items()}, strict=True)
        except RuntimeError:
            raise UmafError(f"{path} does not match its config.json") from None

    @classmethod
    def from_pretrained(cls: type[T], directory: str | os.PathLike) -> T:
        """Load a folder written by :meth:`save_pretrained` as a float32 module in eval mode; anything
        missing, corrupt or inconsistent is a UmafError."""
        directory = Path(directory)
        doc = cls.read_document(directory)
        dtype = doc.get("dtype", "float32")  # folders written before dtypes were recorded are float32
        if dtype not in DTYPES:
            raise UmafError(f"{directory / CONFIG_NAME}: unknown dtype {dtype!r}")
        model = cls._build(doc, directory / CONFIG_NAME)
        model._load_weights(directory / WEIGHTS_NAME, dtype)
        return model.float().eval()
