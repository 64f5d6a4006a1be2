"""Capabilities: small ``input -> output`` tasks that UMAF reads out of models and moves between them.

A capability is a deterministic pool of examples split three ways: ``train`` (to fit LoRAs),
``probe`` (the texts a model is run over to fingerprint it) and ``eval`` (to measure accuracy).
Built-ins come in four kinds (classification, arithmetic, string, lexical); parametric *families*
such as ``add_k:7`` or ``subst:42`` supply hundreds more; users bring their own as JSONL.

``core`` (types, splits, registries, the held-out policy :func:`is_held_out`) -> ``builtins`` and
``families`` (the registered tasks) -> ``jsonl`` (user files) -> ``lookup`` (:func:`get_capability`).
"""

from umaf.capabilities import families as _families  # noqa: F401  (registers the families)
from umaf.capabilities import world as _world  # noqa: F401  (registers the wider world)
from umaf.capabilities.builtins import VOWELS, WordRule, number_word, ordinal_word, register_word_capability
from umaf.capabilities.core import (
    CAPABILITIES,
    CHARSET,
    EVAL_SIZE,
    EXTENDED,
    EXTENDED_FAMILIES,
    FAMILIES,
    KINDS,
    MAX_CHARS,
    MIN_INPUTS,
    PROBE_SIZE,
    SPLITS,
    TRAIN_SIZE,
    Capability,
    CapabilityFamily,
    Example,
    FamilySource,
    Pairs,
    PairSource,
    check_trainable,
    is_held_out,
    is_held_out_model_family,
    register_capability,
    register_family,
    split_sizes,
    stable_seed,
    training_capabilities,
    training_families,
)
from umaf.capabilities.jsonl import load_jsonl, write_jsonl
from umaf.capabilities.lookup import family_instances, get_capability, list_capabilities, list_families

__all__ = [
    "CAPABILITIES", "CHARSET", "EVAL_SIZE", "EXTENDED", "EXTENDED_FAMILIES", "FAMILIES", "KINDS", "MAX_CHARS",
    "MIN_INPUTS", "PROBE_SIZE",
    "SPLITS", "TRAIN_SIZE", "VOWELS", "Capability", "CapabilityFamily", "Example", "FamilySource",
    "PairSource", "Pairs", "WordRule", "check_trainable", "family_instances", "get_capability",
    "is_held_out", "is_held_out_model_family", "list_capabilities", "list_families", "load_jsonl",
    "number_word", "ordinal_word", "register_capability", "register_family", "register_word_capability",
    "split_sizes", "stable_seed", "training_capabilities", "training_families", "write_jsonl",
]
