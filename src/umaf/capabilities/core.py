"""Capability types and the rules every capability follows: deterministic splits and the held-out policy.

A :class:`Capability` is a deterministic pool of ``input -> output`` examples split three ways:
``train`` (to fit LoRAs), ``probe`` (the texts a model is run over to fingerprint it) and ``eval`` (to
measure accuracy). Built-ins and parametric families are registered in :data:`CAPABILITIES` and
:data:`FAMILIES` by name (:func:`register_capability`, :func:`register_family`); :func:`is_held_out` is
the one place that decides what UMAF never trains on.

Generators get a :class:`random.Random` seeded from the capability name (a SHA-256, never Python's
salted ``hash()``), so every process on every machine sees the same examples.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, partial

from umaf.config import HELD_OUT_CAPABILITIES, HELD_OUT_FAMILIES, HELD_OUT_INSTANCES
from umaf.errors import UmafError
from umaf.registry import Registry

#: Every character a built-in capability's text can contain (the char tokenizer's vocabulary).
CHARSET: str = string.ascii_lowercase + string.ascii_uppercase + string.digits + " .,'!?-+*=>"
#: Kinds of capability; ``custom`` is a user's JSONL file.
KINDS: tuple[str, ...] = ("classification", "arithmetic", "string", "lexical", "custom")
SPLITS: tuple[str, ...] = ("train", "probe", "eval")
#: Longest full text (prompt + target) of a built-in example, so tiny char-level models can learn it.
MAX_CHARS = 40
PROBE_SIZE = 64
EVAL_SIZE = 64
TRAIN_SIZE = 512
#: Fewest distinct inputs a capability needs (a user file with fewer cannot make a probe set).
MIN_INPUTS = 16

Pairs = Iterable[tuple[str, str]]
PairSource = Callable[[random.Random], Pairs]  # rng -> (input, output) pairs
FamilySource = Callable[[int, random.Random], Pairs]  # (param, rng) -> pairs

#: How a family instance is spelt: ``<family>:<integer>``.
INSTANCE_PATTERN = re.compile(r"^([a-z0-9_]+):(-?\d+)$")


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from ``parts`` that is the same in every process (unlike the salted ``hash()``)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def split_sizes(n: int) -> tuple[int, int, int]:
    """``(probe, eval, train)`` sizes for a pool of ``n`` distinct inputs (``n >= MIN_INPUTS``).

    Full pools get 64 / 64 / up to 512; smaller ones a quarter each for probe and eval, the rest train.
    """
    probe = min(PROBE_SIZE, max(n // 4, MIN_INPUTS // 2))
    evals = min(EVAL_SIZE, n // 4)
    return probe, evals, min(TRAIN_SIZE, n - probe - evals)


@dataclass(frozen=True)
class Example:
    """One ``input -> output`` pair: a model is given :meth:`prompt` and should go on with :meth:`target`."""

    input: str
    output: str

    def prompt(self) -> str:
        """What the model is given: ``"<input> ->"``."""
        return f"{self.input} ->"

    def target(self) -> str:
        """What should follow the prompt: ``" <output>"``."""
        return f" {self.output}"

    def text(self) -> str:
        """The full example, prompt then target (probe texts are these)."""
        return self.prompt() + self.target()


@dataclass(frozen=True)
class Capability:
    """A named task with deterministic, input-disjoint ``train`` / ``probe`` / ``eval`` splits."""

    name: str
    kind: str
    description: str
    source: PairSource = field(repr=False, compare=False)
    family: str | None = None
    seed: str = ""  # what seeds generation and the split; the name when empty

    @cached_property
    def _pool(self) -> tuple[Example, ...]:
        """Every distinct example, in the seeded order the splits are cut from."""
        seed = self.seed or self.name
        pool = _unique(self.source(random.Random(stable_seed("generate", seed))))
        if len(pool) < MIN_INPUTS:
            raise UmafError(f"capability {self.name!r} has {len(pool)} distinct inputs; need {MIN_INPUTS}")
        pool.sort(key=lambda ex: ex.input)
        random.Random(stable_seed("split", seed)).shuffle(pool)
        return tuple(pool)

    @cached_property
    def _splits(self) -> dict[str, tuple[Example, ...]]:
        pool = self._pool
        probe, evals, train = split_sizes(len(pool))
        return {
            "probe": tuple(pool[:probe]),
            "eval": tuple(pool[probe : probe + evals]),
            "train": tuple(pool[probe + evals : probe + evals + train]),
        }

    def split(self, which: str) -> list[Example]:
        """Examples of one split: ``"train"``, ``"probe"`` or ``"eval"`` (deterministic, input-disjoint)."""
        if which not in SPLITS:
            raise UmafError(f"unknown split {which!r}; choose from: {', '.join(SPLITS)}")
        return list(self._splits[which])

    def probe_examples(self, part: int | None = None, n: int | None = None,
                       split: str | None = None) -> list[Example]:
        """The examples a fingerprint reads: ``split`` when one is asked for, else the probe split of a
        built-in, and every example of a user's JSONL file (kind ``custom``: it is all the user has).
        ``part`` 0 or 1 picks one of two equal disjoint halves (query vs gallery); ``n`` keeps at most
        the first ``n``."""
        if split is not None:
            examples = self.split(split)
        else:
            examples = list(self._pool if self.kind == "custom" else self._splits["probe"])
        if part is not None:
            if part not in (0, 1):
                raise UmafError(f"probe part must be 0 or 1, got {part!r}")
            half = len(examples) // 2
            examples = examples[part * half : (part + 1) * half]
        if n is not None:
            if n < 1:
                raise UmafError(f"number of probe texts must be at least 1, got {n}")
            examples = examples[:n]
        return examples

    def probe_texts(self, part: int | None = None, n: int | None = None,
                    split: str | None = None) -> list[str]:
        """Full texts (prompt then target) of :meth:`probe_examples`."""
        return [ex.text() for ex in self.probe_examples(part, n, split)]

    def probe_hash(self, split: str | None = None) -> str:
        """First 16 hex digits of the SHA-256 of the probe texts: names the exact probe set."""
        return hashlib.sha256("\n".join(self.probe_texts(split=split)).encode("utf-8")).hexdigest()[:16]

    def accuracy(self, predictions: Sequence[str], examples: Sequence[Example]) -> float:
        """Fraction of ``predictions`` equal to the examples' outputs after stripping whitespace."""
        if len(predictions) != len(examples):
            raise UmafError(f"{len(predictions)} predictions for {len(examples)} examples of {self.name!r}")
        if not examples:
            raise UmafError(f"accuracy of {self.name!r} needs at least one example")
        hits = sum(p.strip() == ex.output.strip() for p, ex in zip(predictions, examples, strict=True))
        return hits / len(examples)

    @property
    def held_out(self) -> bool:
        """Whether this capability is kept out of all UMAF training (see :func:`is_held_out`)."""
        return is_held_out(self)

    def __reduce__(self) -> tuple:
        # built-ins and family instances travel by name (their generators are closures); files by value
        if self.kind == "custom":
            return (Capability, (self.name, self.kind, self.description, self.source, self.family, self.seed))
        return (registered_capability, (self.name,))

    def to_dict(self) -> dict:
        """Name, kind, description, family, held-out flag, split sizes and probe hash (for listings)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "family": self.family,
            "held_out": self.held_out,
            "sizes": {which: len(self._splits[which]) for which in SPLITS},
            "probe_hash": self.probe_hash(),
        }


def _unique(pairs: Pairs) -> list[Example]:
    """Examples from ``pairs``, first occurrence of each input kept."""
    seen: dict[str, Example] = {}
    for inp, out in pairs:
        seen.setdefault(inp, Example(inp, out))
    return list(seen.values())


@dataclass(frozen=True)
class CapabilityFamily:
    """A parametric family of capabilities: instance ``"<name>:<param>"`` for each param in ``params``."""

    name: str
    kind: str
    description: str  # may contain ``{k}``, filled with the parameter
    params: range
    source: FamilySource = field(repr=False, compare=False)

    def instance(self, param: int) -> Capability:
        """The capability for one parameter value; out-of-range values raise :class:`UmafError`."""
        if param not in self.params:
            lo, hi = self.params.start, self.params.stop - 1
            raise UmafError(f"{self.name}:{param}: parameter out of range; {self.name} takes {lo}..{hi}")
        return _family_instance(self.name, param)


CAPABILITIES: Registry[Capability] = Registry("capability")
#: Named capabilities of the generator's wider training world (:mod:`umaf.capabilities.world`): looked up
#: like any built-in, but not in the core list that the zoo, the extractor and the benches iterate over.
EXTENDED: set[str] = set()
#: Families of that wider world (the same rule as :data:`EXTENDED`).
EXTENDED_FAMILIES: set[str] = set()
FAMILIES: Registry[CapabilityFamily] = Registry("capability family")


# ----------------------------------------------------------------------------- registration


def _fits(pairs: Pairs) -> Pairs:
    """Drop built-in examples whose full text is longer than :data:`MAX_CHARS`."""
    return (p for p in pairs if len(Example(*p).text()) <= MAX_CHARS)


def _builtin_source(fn: PairSource) -> PairSource:
    return lambda rng: _fits(fn(rng))


def register_capability(
    name: str, kind: str, description: str, core: bool = True
) -> Callable[[PairSource], PairSource]:
    """Decorator: register ``fn(rng) -> [(input, output), ...]`` as the built-in capability ``name``
    (``core=False``: one of the :data:`EXTENDED` world's)."""
    if kind not in KINDS[:-1]:
        raise ValueError(f"unknown capability kind {kind!r}")

    def add(fn: PairSource) -> PairSource:
        CAPABILITIES.register(name, Capability(name, kind, description, source=_builtin_source(fn)))
        if not core:
            EXTENDED.add(name)
        return fn

    return add


def register_family(
    name: str, kind: str, description: str, params: range, core: bool = True
) -> Callable[[FamilySource], FamilySource]:
    """Decorator: register ``fn(k, rng) -> [(input, output), ...]`` as the family ``name`` over ``params``
    (``core=False``: one of the :data:`EXTENDED_FAMILIES`)."""
    if kind not in KINDS[:-1]:
        raise ValueError(f"unknown capability kind {kind!r}")

    def add(fn: FamilySource) -> FamilySource:
        FAMILIES.register(name, CapabilityFamily(name, kind, description, params, source=fn))
        if not core:
            EXTENDED_FAMILIES.add(name)
        return fn

    return add


@lru_cache(maxsize=4096)
def _family_instance(family: str, param: int) -> Capability:
    fam = FAMILIES.get(family)
    fn = partial(fam.source, param)
    return Capability(
        name=f"{fam.name}:{param}",
        kind=fam.kind,
        description=fam.description.format(k=param),
        source=_builtin_source(fn),
        family=fam.name,
    )


def registered_capability(name: str) -> Capability:
    """A built-in (``"reverse"``) or a family instance (``"add_k:7"``) by name; UmafError otherwise."""
    name = str(name).strip()
    if name.lower() in CAPABILITIES:
        return CAPABILITIES.get(name)
    match = INSTANCE_PATTERN.match(name.lower())
    if match:
        return FAMILIES.get(match.group(1)).instance(int(match.group(2)))
    if ":" in name and name.split(":", 1)[0].lower() in FAMILIES:
        raise UmafError(f"{name}: malformed family instance; write <family>:<integer>, e.g. add_k:7")
    raise UmafError(
        f"unknown capability {name!r}: not a built-in ({', '.join(CAPABILITIES.names())}), "
        f"a family instance <family>:<k> ({', '.join(FAMILIES.names())}) or a .jsonl file"
    )


# ----------------------------------------------------------------------------- held-out policy


def _registered_family(name: str) -> str | None:
    """The family of a family-instance name (``"add_k:7"`` -> ``"add_k"``), None for any other name."""
    match = INSTANCE_PATTERN.match(name)
    return match.group(1) if match and match.group(1) in FAMILIES else None


def is_held_out(capability: Capability | str) -> bool:
    """Whether ``capability`` is kept out of the training of every UMAF component.

    The one held-out policy; every module that makes training data or splits results into seen and
    held out asks it (or :func:`training_capabilities` / :func:`training_families`):

    - a built-in is held out if its name is in :data:`umaf.config.HELD_OUT_CAPABILITIES`;
    - a family instance (``add_k:7``) if its family is listed there, or the instance in
      :data:`umaf.config.HELD_OUT_INSTANCES`;
    - a user capability (a JSONL file, kind ``custom``) always: UMAF's components train on built-ins
      and family instances only, so a user's task is unseen by all of them, whatever its file is called.

    ``capability`` is a :class:`Capability` or a name as fingerprints and oracles record it
    (case-insensitive); a name that is neither a built-in nor a family instance is a user capability
    (no file is read).
    """
    if isinstance(capability, Capability):
        if capability.kind == "custom":
            return True
        name, family = capability.name, capability.family
    else:
        name = str(capability).strip().lower()
        family = _registered_family(name)
        if family is None and name not in CAPABILITIES:
            return True
    return (name in HELD_OUT_CAPABILITIES or name in HELD_OUT_INSTANCES
            or (family is not None and _family_held_out(family)))


def _family_held_out(family: str) -> bool:
    """Whether every instance of the capability family ``family`` is held out."""
    return family.lower() in HELD_OUT_CAPABILITIES


def training_capabilities(extended: bool = False) -> list[str]:
    """Core built-in names (with ``extended``, the :data:`EXTENDED` ones too) that UMAF components may
    train on: every one :func:`is_held_out` lets in."""
    return [n for n in CAPABILITIES.names() if (extended or n not in EXTENDED) and not is_held_out(n)]


def training_families(families: Iterable[str] | None = None, extended: bool = False) -> list[str]:
    """The capability families (the core ones, with ``extended`` all, or those of ``families``, in order)
    whose instances UMAF components may train on: a family listed in
    :data:`umaf.config.HELD_OUT_CAPABILITIES` is left out."""
    if families is None:
        families = [f for f in FAMILIES.names() if extended or f not in EXTENDED_FAMILIES]
    names = list(families)
    return [f for f in names if not _family_held_out(f)]


def check_trainable(capabilities: Iterable[Capability | str] = (), families: Iterable[str] = ()) -> None:
    """Refuse (:class:`UmafError`) any held-out capability (:func:`is_held_out`) or model family
    (:func:`is_held_out_model_family`); called wherever UMAF makes training data."""
    bad = [c if isinstance(c, str) else c.name for c in capabilities if is_held_out(c)]
    bad += [f"model family {f}" for f in families if is_held_out_model_family(f)]
    if bad:
        raise UmafError(f"held out of all UMAF training: {', '.join(sorted(set(bad)))}")


def is_held_out_model_family(family: str) -> bool:
    """Whether the activations of models of ``family`` (``"t5"``) are kept out of all UMAF training
    (:data:`umaf.config.HELD_OUT_FAMILIES`: the zero-shot architecture test)."""
    return family.lower() in HELD_OUT_FAMILIES
