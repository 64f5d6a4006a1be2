"""Config dataclasses as command-line flags: every setting a config declares is a flag, with its own help.

A field becomes ``--<name-with-dashes>``; a field that is itself a config dataclass is flattened with a
dotted prefix (``TrainConfig.extractor.d_model`` is ``--extractor.d-model``). Types: ``int``, ``float``,
``str``; ``bool`` as ``--x`` / ``--no-x``; ``tuple[T, ...]`` as one or more values; ``T | None`` also
takes the word ``none``. The help is the field's ``metadata["help"]``, else its attribute docstring (the
string literal under it in the class body, as litgpt's ``args.py`` documents fields).

A flag that is not given is not set at all: :func:`config_overrides` returns only what was given, so the
API's own defaults apply to the rest (an oracle's per-target defaults included), and every value is
checked by the config itself (``--steps 0`` reaches ``__post_init__`` as 0). :func:`build_config` makes
the config, turning a ``TypeError`` / ``ValueError`` of its constructor into a :class:`UmafError`.

``transformers.HfArgumentParser`` reads the same ``help`` metadata but fits less: it exposes no nested
config, takes one value for a ``tuple[str, ...]`` field, ignores attribute docstrings, and fills every
default in, so "not given" cannot be told from "given the default".
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from umaf.errors import UmafError

C = TypeVar("C")
_PREFIX = "config:"  # argparse dest of every generated flag: config:<dotted field path>


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Collection[str] = (),
    aliases: dict[str, list[str]] | None = None,
    show_defaults: bool = True,
    required: Collection[str] = (),
) -> None:
    """Add a flag for every field of dataclass ``cls`` (nested configs flattened, see the module doc).

    ``exclude`` names dotted fields that get no flag (values training fills in); ``aliases`` maps a
    dotted field to extra option strings (``{"gate.reference_model": ["--reference-model"]}``).
    ``show_defaults`` appends the dataclass default to each help, except for the fields in ``required``,
    whose help says the command needs them (the command checks that, naming the flag).
    """
    group = parser.add_argument_group(f"{cls.__name__} settings", _group_help(cls))
    for path, owner, field, hint, default in _leaf_fields(cls):
        if path in exclude:
            continue
        flags = ["--" + path.replace("_", "-"), *(aliases or {}).get(path, [])]
        kwargs = _argparse_kwargs(hint, f"{cls.__name__}.{path}")
        text = _field_help(field.metadata, _attribute_docs(owner)[field.name])
        if path in required:
            text += " (required)"
        elif show_defaults and "default" not in text:  # some helps say what their default means
            text += f" (default: {_show(default)})"
        group.add_argument(*flags, dest=_PREFIX + path, default=argparse.SUPPRESS,
                           help=text.replace("%", "%%"), **kwargs)  # fmt: skip


class DeferredFlagsParser(argparse.ArgumentParser):
    """An ArgumentParser that adds the flags of a config (``config="module:Class"``, with
    ``flag_options`` for :func:`add_config_flags`) only when it parses or prints help, so that building
    the whole command line imports no config module (they import torch)."""

    def __init__(self, *args: Any, config: str | None = None, flag_options: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self._pending = (config, flag_options or {}) if config else None

    def _add_pending_flags(self) -> None:
        if self._pending is not None:
            (path, options), self._pending = self._pending, None
            module, name = path.split(":")
            add_config_flags(self, getattr(importlib.import_module(module), name), **options)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._add_pending_flags()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_pending_flags()
        return super().format_help()


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The generated flags that were given, nested by dotted path: ``{"extractor": {"d_model": 64}}``."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_PREFIX):
            continue
        *parents, name = dest.removeprefix(_PREFIX).split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return out


def build_config(cls: type[C], overrides: dict[str, Any], base: C | None = None, prefix: str = "") -> C:
    """``cls`` with ``overrides`` (nested as :func:`config_overrides` returns them) on its defaults, or on
    ``base``; a nested config is its default with the nested overrides. A bad value is a UmafError from
    the config's own check (or its constructor's TypeError / ValueError) that names fields as flags."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in overrides:
            continue
        value = overrides[field.name]
        if isinstance(value, dict) and dataclasses.is_dataclass(hint := _type_of_field(cls, field.name)):
            inner = getattr(base, field.name) if base is not None else _default(field)
            value = build_config(hint, value, inner, f"{prefix}{field.name}.")
        values[field.name] = value
    try:
        return cls(**values) if base is None else dataclasses.replace(base, **values)
    except UmafError as err:
        raise UmafError(_as_flags(str(err), cls, prefix)) from None
    except (TypeError, ValueError) as err:
        raise UmafError(_as_flags(f"bad {cls.__name__} setting: {err}", cls, prefix)) from None


def _as_flags(message: str, cls: type, prefix: str) -> str:
    """``message`` with the fields of ``cls`` it names written as their flags (``batch_size`` ->
    ``--batch-size``), so that a config's error says what to change on the command line."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not dataclasses.is_dataclass(hints[field.name]):
            flag = "--" + (prefix + field.name).replace("_", "-")
            message = re.sub(rf"(?<![\w.'-]){re.escape(field.name)}(?![\w'-])", flag, message)
    return message


# ------------------------------------------------------------------------------------------ fields


def _type_of_field(cls: type, path: str) -> Any:
    """The resolved annotation of dotted field ``path`` of ``cls`` (the class itself for ``""``)."""
    for name in filter(None, path.split(".")):
        cls = typing.get_type_hints(cls)[name]
    return cls


def _leaf_fields(cls: type, base: Any = None) -> list[tuple[str, type, dataclasses.Field, Any, Any]]:
    """``(dotted path, owning class, field, annotation, default)`` of every field that is not itself a
    config; those are flattened, their defaults read from the outer default (``base``)."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        default = getattr(base, field.name) if base is not None else _default(field)
        if dataclasses.is_dataclass(hint):
            out += [(f"{field.name}.{path}", *rest) for path, *rest in _leaf_fields(hint, default)]
        else:
            out.append((field.name, cls, field, hint, default))
    return out


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _argparse_kwargs(hint: Any, where: str) -> dict[str, Any]:
    """``type`` / ``nargs`` / ``action`` of the flag of a field annotated ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{where}: no flag for a field of type {hint}")
        hint = rest[0]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool and not optional:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
        return {"nargs": "+", "type": _parser(args[0], optional), "metavar": args[0].__name__.upper(),
                "action": _TupleAction}
    if hint in (int, float, str):
        return {"type": _parser(hint, optional), "metavar": hint.__name__.upper()}
    raise TypeError(f"{where}: no flag for a field of type {hint}")


class _TupleAction(argparse.Action):
    """Store a flag's values as a tuple (as the config field is typed); ``none`` alone stands for None."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        if None in values and len(values) > 1:
            parser.error(f"argument {option_string}: 'none' cannot be combined with values")
        setattr(namespace, self.dest, None if None in values else tuple(values))


def _parser(kind: type, optional: bool) -> Callable[[str], Any]:
    """Parse one value of ``kind`` (``none`` is None for an optional field), named for argparse errors."""

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        return kind(text)

    parse.__name__ = kind.__name__ + (" or none" if optional else "")
    return parse


# --------------------------------------------------------------------------------------------- help


def _field_help(metadata: Any, docstring: str | None) -> str:
    text = metadata.get("help") or docstring or ""
    return " ".join(text.split())


def _group_help(cls: type) -> str:
    nested = sorted({path.rsplit(".", 1)[0] for path, *_ in _leaf_fields(cls) if "." in path})
    note = f"; nested settings are --{'.*, --'.join(nested)}.*" if nested else ""
    return f"every setting of {cls.__module__}.{cls.__name__}{note}; not given: the default"


@functools.cache
def _attribute_docs(cls: type) -> dict[str, str | None]:
    """``{field: docstring}`` from the string literals that follow field annotations in the class body."""
    docs: dict[str, str | None] = {f.name: None for f in dataclasses.fields(cls)}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return docs
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for stmt, after in zip(body, body[1:], strict=False):
        named = isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        literal = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if named and literal and isinstance(after.value.value, str) and stmt.target.id in docs:
            docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)
