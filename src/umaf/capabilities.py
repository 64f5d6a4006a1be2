"""Capabilities: small ``input -> output`` tasks that UMAF reads out of models and moves between them.

A capability is a deterministic pool of examples split three ways: ``train`` (to fit LoRAs),
``probe`` (the texts a model is run over to fingerprint it) and ``eval`` (to measure accuracy).
Built-ins come in four kinds (classification, arithmetic, string, lexical); parametric *families*
such as ``add_k:7`` or ``subst:42`` supply hundreds more; users bring their own as JSONL.

Adding a built-in is one decorated generator::

    @register_capability("double", "arithmetic", "twice a number")
    def _double(rng: random.Random) -> Pairs:
        return [(str(x), str(2 * x)) for x in range(500)]

Generators get a :class:`random.Random` seeded from the capability name (a SHA-256, never Python's
salted ``hash()``), so every process on every machine sees the same examples.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache, partial
from pathlib import Path

from umaf.config import HELD_OUT_CAPABILITIES, data_lines
from umaf.errors import UmafError
from umaf.io import atomic_path
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
WordRule = Callable[[str], str]  # word -> output
VOWELS = "aeiou"


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
    def _splits(self) -> dict[str, tuple[Example, ...]]:
        seed = self.seed or self.name
        pool = _unique(self.source(random.Random(stable_seed("generate", seed))))
        if len(pool) < MIN_INPUTS:
            raise UmafError(f"capability {self.name!r} has {len(pool)} distinct inputs; need {MIN_INPUTS}")
        pool.sort(key=lambda ex: ex.input)
        random.Random(stable_seed("split", seed)).shuffle(pool)
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

    def probe_texts(self, part: int | None = None, n: int | None = None) -> list[str]:
        """Full texts of the probe split; ``part`` 0 or 1 picks one of two equal disjoint halves
        (query vs gallery); ``n`` keeps at most the first ``n``."""
        texts = [ex.text() for ex in self._splits["probe"]]
        if part is not None:
            if part not in (0, 1):
                raise UmafError(f"probe part must be 0 or 1, got {part!r}")
            half = len(texts) // 2
            texts = texts[part * half : (part + 1) * half]
        if n is not None:
            if n < 1:
                raise UmafError(f"number of probe texts must be at least 1, got {n}")
            texts = texts[:n]
        return texts

    def probe_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the probe texts: names the exact probe set."""
        return hashlib.sha256("\n".join(self.probe_texts()).encode("utf-8")).hexdigest()[:16]

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
        """Whether this capability (or its family) is kept out of all UMAF training."""
        if self.kind == "custom":
            return False
        return self.name in HELD_OUT_CAPABILITIES or self.family in HELD_OUT_CAPABILITIES

    def __reduce__(self) -> tuple:
        # built-ins and family instances travel by name (their generators are closures); files by value
        if self.kind == "custom":
            return (Capability, (self.name, self.kind, self.description, self.source, self.family, self.seed))
        return (get_capability, (self.name,))

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
FAMILIES: Registry[CapabilityFamily] = Registry("capability family")


def _fits(pairs: Pairs) -> Pairs:
    """Drop built-in examples whose full text is longer than :data:`MAX_CHARS`."""
    return (p for p in pairs if len(Example(*p).text()) <= MAX_CHARS)


def _builtin_source(fn: PairSource) -> PairSource:
    return lambda rng: _fits(fn(rng))


def register_capability(name: str, kind: str, description: str) -> Callable[[PairSource], PairSource]:
    """Decorator: register ``fn(rng) -> [(input, output), ...]`` as the built-in capability ``name``."""
    if kind not in KINDS[:-1]:
        raise ValueError(f"unknown capability kind {kind!r}")

    def add(fn: PairSource) -> PairSource:
        CAPABILITIES.register(name, Capability(name, kind, description, source=_builtin_source(fn)))
        return fn

    return add


def register_family(
    name: str, kind: str, description: str, params: range
) -> Callable[[FamilySource], FamilySource]:
    """Decorator: register ``fn(k, rng) -> [(input, output), ...]`` as the family ``name`` over ``params``."""
    if kind not in KINDS[:-1]:
        raise ValueError(f"unknown capability kind {kind!r}")

    def add(fn: FamilySource) -> FamilySource:
        FAMILIES.register(name, CapabilityFamily(name, kind, description, params, source=fn))
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


# ----------------------------------------------------------------------------- shipped word lists


@cache
def _table(filename: str) -> tuple[tuple[str, str], ...]:
    """Rows of a shipped two-column TSV under ``umaf/data``."""
    rows = (line.split("\t") for line in data_lines(filename))
    return tuple((a.strip(), b.strip()) for a, b in rows)


def _grouped(filename: str) -> dict[str, list[str]]:
    """A ``label<TAB>word`` table as ``{label: [words...]}`` in file order."""
    groups: dict[str, list[str]] = {}
    for label, word in _table(filename):
        groups.setdefault(label, []).append(word)
    return groups


@cache
def _words() -> tuple[str, ...]:
    """Common English words (3 to 8 letters) for the string tasks, sorted."""
    words: set[str] = set()
    for filename in ("plurals.tsv", "past_tense.tsv", "comparatives.tsv", "antonyms.tsv"):
        for a, b in _table(filename):
            words.update(w for w in (a, b) if w.isalpha() and 3 <= len(w) <= 8)
    return tuple(sorted(words))


def _balanced(rng: random.Random, pairs: Pairs) -> list[tuple[str, str]]:
    """As many pairs of every output as of the rarest one, so no single answer is a free win."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        groups.setdefault(pair[1], []).append(pair)
    m = min(len(g) for g in groups.values())
    return [pair for label in sorted(groups) for pair in rng.sample(groups[label], m)]


def _pseudo_word(rng: random.Random, lo: int = 3, hi: int = 7) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                    "nine": "ninth", "twelve": "twelfth"}


def number_word(n: int) -> str:
    """English words for ``0 <= n < 1000``: ``342 -> "three hundred forty-two"``."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" {number_word(rest)}" if rest else "")


def ordinal_word(n: int) -> str:
    """English ordinal for ``1 <= n < 1000``: ``21 -> "twenty-first"``."""
    words = number_word(n)
    head, last = re.match(r"(.*?)([a-z]+)$", words).groups()
    if last in _ORDINAL_ENDINGS:
        return head + _ORDINAL_ENDINGS[last]
    return head + (last[:-1] + "ieth" if last.endswith("y") else last + "th")


# ----------------------------------------------------------------------------- classification


@register_capability("sentiment", "classification", "short review phrase -> positive or negative")
def _sentiment(rng: random.Random) -> Pairs:
    words = _grouped("sentiment.tsv")
    pos, neg, subjects = words["positive"], words["negative"], words["subject"]
    templates = ("the {s} was {a}", "a {a} {s}", "what a {a} {s}", "the {s} is so {a}", "really {a}")
    for _ in range(3000):
        label = rng.choice(("positive", "negative"))
        if label == "negative" and rng.random() < 0.25:  # a negated positive word is negative
            yield f"the {rng.choice(subjects)} was not {rng.choice(pos)}", label
            continue
        adj = rng.choice(pos if label == "positive" else neg)
        yield rng.choice(templates).format(s=rng.choice(subjects), a=adj), label


@register_capability("topic", "classification", "two or three keywords -> sports, food, tech or weather")
def _topic(rng: random.Random) -> Pairs:
    topics = _grouped("topics.tsv")
    names = sorted(topics)
    templates = ("{a} and {b}", "{a}, {b}, {c}", "news about {a}", "the {a} and the {b}", "{a} {b}")
    for _ in range(3000):
        name = rng.choice(names)
        a, b, c = rng.sample(topics[name], 3)
        yield rng.choice(templates).format(a=a, b=b, c=c), name


@register_capability("parity", "classification", "number -> even or odd")
def _parity(rng: random.Random) -> Pairs:
    return [(str(x), "odd" if x % 2 else "even") for x in range(1000)]


@register_capability("vowel_start", "classification", "word -> vowel or consonant (its first letter)")
def _vowel_start(rng: random.Random) -> Pairs:
    consonants = sorted(set(string.ascii_lowercase) - set(VOWELS))
    for i in range(2000):
        first = rng.choice(VOWELS if i % 2 else consonants)
        yield first + _pseudo_word(rng, 2, 6), "vowel" if i % 2 else "consonant"


@register_capability("palindrome", "classification", "letters -> yes if they read the same backwards")
def _palindrome(rng: random.Random) -> Pairs:
    for i in range(2000):
        word = _pseudo_word(rng, 3, 7)
        if i % 2:  # mirror half of the words so both labels are common
            half = word[: (len(word) + 1) // 2]
            word = half + half[: len(word) // 2][::-1]
        yield word, "yes" if word == word[::-1] else "no"


@register_capability("compare", "classification", "'a vs b' -> less or more (is a less or more than b)")
def _compare(rng: random.Random) -> Pairs:
    return [(f"{a} vs {b}", "less" if a < b else "more") for a in range(100) for b in range(100) if a != b]


# ----------------------------------------------------------------------------- arithmetic


@register_capability("add", "arithmetic", "sum of two numbers below 100")
def _add(rng: random.Random) -> Pairs:
    return [(f"{a} + {b}", str(a + b)) for a in range(100) for b in range(100)]


@register_capability("subtract", "arithmetic", "difference of two numbers below 100 (never negative)")
def _subtract(rng: random.Random) -> Pairs:
    return [(f"{a} - {b}", str(a - b)) for a in range(100) for b in range(a + 1)]


@register_capability("multiply", "arithmetic", "product of two numbers up to 25")
def _multiply(rng: random.Random) -> Pairs:
    return [(f"{a} * {b}", str(a * b)) for a in range(26) for b in range(26)]


@register_capability("successor", "arithmetic", "number -> the next number")
def _successor(rng: random.Random) -> Pairs:
    return [(str(x), str(x + 1)) for x in range(1000)]


@register_capability("predecessor", "arithmetic", "number -> the number before it")
def _predecessor(rng: random.Random) -> Pairs:
    return [(str(x), str(x - 1)) for x in range(1, 1001)]


@register_capability("double", "arithmetic", "number -> twice the number")
def _double(rng: random.Random) -> Pairs:
    return [(str(x), str(2 * x)) for x in range(500)]


@register_capability("half", "arithmetic", "even number -> half of it")
def _half(rng: random.Random) -> Pairs:
    return [(str(x), str(x // 2)) for x in range(0, 1000, 2)]


@register_capability("maximum", "arithmetic", "three numbers -> the largest")
def _maximum(rng: random.Random) -> Pairs:
    for _ in range(2000):
        xs = [rng.randrange(100) for _ in range(3)]
        yield " ".join(map(str, xs)), str(max(xs))


@register_capability("digit_sum", "arithmetic", "number -> the sum of its digits")
def _digit_sum(rng: random.Random) -> Pairs:
    return [(str(x), str(sum(map(int, str(x))))) for x in range(10000)]


# ----------------------------------------------------------------------------- string manipulation


def register_word_capability(name: str, description: str) -> Callable[[WordRule], WordRule]:
    """Decorator: register ``fn(word) -> output``, applied to every shipped word, as a string capability."""

    def add(fn: WordRule) -> WordRule:
        register_capability(name, "string", description)(lambda rng: [(w, fn(w)) for w in _words()])
        return fn

    return add


@register_word_capability("reverse", "word -> its letters backwards")
def _reverse(word: str) -> str:
    return word[::-1]


@register_word_capability("uppercase", "word -> the word in capital letters")
def _uppercase(word: str) -> str:
    return word.upper()


@register_word_capability("capitalize", "word -> the word with its first letter capitalised")
def _capitalize(word: str) -> str:
    return word.capitalize()


@register_word_capability("first_letter", "word -> its first letter")
def _first_letter(word: str) -> str:
    return word[0]


@register_word_capability("last_letter", "word -> its last letter")
def _last_letter(word: str) -> str:
    return word[-1]


@register_word_capability("length", "word -> how many letters it has")
def _length(word: str) -> str:
    return str(len(word))


@register_word_capability("remove_vowels", "word -> the word without a, e, i, o, u")
def _remove_vowels(word: str) -> str:
    return "".join(c for c in word if c not in VOWELS) or "-"


@register_word_capability("double_letters", "word -> every letter written twice")
def _double_letters(word: str) -> str:
    return "".join(c + c for c in word)


@register_capability("sort_letters", "string", "letters -> the same letters in alphabetical order")
def _sort_letters(rng: random.Random) -> Pairs:
    for _ in range(2000):
        word = _pseudo_word(rng, 3, 8)
        yield word, "".join(sorted(word))


@register_capability("repeat", "string", "'ab * 3' -> ababab")
def _repeat(rng: random.Random) -> Pairs:
    for _ in range(2000):
        word, times = _pseudo_word(rng, 1, 4), rng.randint(2, 4)
        yield f"{word} * {times}", word * times


# ----------------------------------------------------------------------------- lexical / factual


@register_capability("antonym", "lexical", "word -> its opposite")
def _antonym(rng: random.Random) -> Pairs:
    for a, b in _table("antonyms.tsv"):
        yield a, b
        yield b, a


@register_capability("capital", "lexical", "country -> its capital city")
def _capital(rng: random.Random) -> Pairs:
    return _table("capitals.tsv")


@register_capability("plural", "lexical", "noun -> its plural")
def _plural(rng: random.Random) -> Pairs:
    return _table("plurals.tsv")


@register_capability("past_tense", "lexical", "verb -> its simple past")
def _past_tense(rng: random.Random) -> Pairs:
    return _table("past_tense.tsv")


@register_capability("comparative", "lexical", "adjective -> its comparative (big -> bigger)")
def _comparative(rng: random.Random) -> Pairs:
    return _table("comparatives.tsv")


@register_capability("number_word", "lexical", "number -> its English name")
def _number_word(rng: random.Random) -> Pairs:
    return [(str(n), number_word(n)) for n in range(1000)]


@register_capability("ordinal", "lexical", "number -> its English ordinal (21 -> twenty-first)")
def _ordinal(rng: random.Random) -> Pairs:
    return [(str(n), ordinal_word(n)) for n in range(1, 1000)]


# ----------------------------------------------------------------------------- parametric families


def _shift(word: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


@register_family("add_k", "arithmetic", "number -> number + {k}", range(1, 100))
def _add_k(k: int, rng: random.Random) -> Pairs:
    return [(str(x), str(x + k)) for x in range(900)]


@register_family("mul_k", "arithmetic", "number -> number * {k}", range(2, 21))
def _mul_k(k: int, rng: random.Random) -> Pairs:
    return [(str(x), str(x * k)) for x in range(500)]


@register_family("mod_k", "arithmetic", "number -> remainder after dividing by {k}", range(2, 100))
def _mod_k(k: int, rng: random.Random) -> Pairs:
    return [(str(x), str(x % k)) for x in range(1000)]


@register_family("threshold_k", "classification", "number -> high if at least {k}0, else low", range(10, 91))
def _threshold_k(k: int, rng: random.Random) -> Pairs:
    return _balanced(rng, [(str(x), "high" if x >= 10 * k else "low") for x in range(1000)])


@register_family("letter_set", "classification", "word -> yes if its first letter is in set #{k}, else no",
                 range(0, 1000))
def _letter_set(k: int, rng: random.Random) -> Pairs:
    chosen = set(random.Random(stable_seed("letter_set", k)).sample(string.ascii_lowercase, 13))
    return _balanced(rng, [(w, "yes" if w[0] in chosen else "no") for w in _words()])


@register_family("caesar", "string", "word -> every letter shifted {k} places along", range(1, 26))
def _caesar(k: int, rng: random.Random) -> Pairs:
    return [(w, _shift(w, k)) for w in _words()]


@register_family("subst", "string", "word -> letters mapped through substitution #{k}", range(0, 1000))
def _subst(k: int, rng: random.Random) -> Pairs:
    alphabet = list(string.ascii_lowercase)
    random.Random(stable_seed("subst", k)).shuffle(alphabet)
    table = str.maketrans(string.ascii_lowercase, "".join(alphabet))
    return [(w, w.translate(table)) for w in _words()]


@register_family("append_k", "string", "word -> word followed by suffix #{k} (two letters)", range(0, 676))
def _append_k(k: int, rng: random.Random) -> Pairs:
    suffix = string.ascii_lowercase[k // 26] + string.ascii_lowercase[k % 26]
    return [(w, w + suffix) for w in _words()]


# ----------------------------------------------------------------------------- user JSONL files


def _parse_jsonl_line(line: str, where: str) -> tuple[str, str]:
    """``(input, output)`` from one JSONL line; ``where`` (``file:line``) prefixes every error."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UmafError(f"{where}: malformed JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise UmafError(f'{where}: expected an object like {{"input": "...", "output": "..."}}')
    values = []
    for key in ("input", "output"):
        if key not in obj:
            raise UmafError(f"{where}: missing key {key!r}")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise UmafError(f"{where}: {key!r} must be a non-empty string, got {obj[key]!r}")
        values.append(obj[key].strip())
    return values[0], values[1]


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    """Distinct ``(input, output)`` pairs of a user file; conflicting duplicates are an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UmafError(f"{path}: no such capability file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UmafError(f"{path}: cannot read capability file ({err})") from None
    seen: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        inp, out = _parse_jsonl_line(line, f"{path}:{lineno}")
        if inp in seen and seen[inp][0] != out:
            raise UmafError(f"{path}:{lineno}: input {inp!r} already has output {seen[inp][0]!r} "
                            f"(line {seen[inp][1]})")
        seen.setdefault(inp, (out, lineno))
    if not seen:
        raise UmafError(f'{path}: empty file; expected one {{"input": ..., "output": ...}} object per line')
    if len(seen) < MIN_INPUTS:
        raise UmafError(
            f"{path}: only {len(seen)} distinct inputs; need at least {MIN_INPUTS} to make a probe set"
        )
    return sorted((inp, out) for inp, (out, _) in seen.items())


@dataclass(frozen=True)
class _FixedPairs:
    """Source of a file-backed capability: the same pairs whatever the seed (picklable, unlike a lambda)."""

    pairs: tuple[tuple[str, str], ...]

    def __call__(self, rng: random.Random) -> Pairs:
        return self.pairs


def load_jsonl(path: str | os.PathLike) -> Capability:
    """A ``custom`` capability from a JSONL file of ``{"input": ..., "output": ...}`` lines.

    The split is a shuffle seeded by the file's content (its distinct pairs), so the same examples
    always split the same way, whatever their order in the file.
    """
    path = Path(path)
    pairs = _read_jsonl(path)
    digest = hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()
    return Capability(
        name=path.stem,
        kind="custom",
        description=f"user examples from {path.name} ({len(pairs)} distinct inputs)",
        source=_FixedPairs(tuple(pairs)),
        seed=f"jsonl:{digest}",
    )


def write_jsonl(examples: Iterable[Example], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``examples`` as JSONL that :func:`load_jsonl` reads back; atomic, refuses to clobber."""
    lines = [json.dumps({"input": ex.input, "output": ex.output}) for ex in examples]
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return Path(path)


# ----------------------------------------------------------------------------- lookup


_INSTANCE = re.compile(r"^([a-z0-9_]+):(-?\d+)$")


def get_capability(name_or_path: str | os.PathLike) -> Capability:
    """A built-in by name (``"reverse"``), a family instance (``"add_k:7"``), or a ``.jsonl`` file."""
    name = str(name_or_path).strip()
    if name.lower() in CAPABILITIES:
        return CAPABILITIES.get(name)
    if name.endswith(".jsonl") or Path(name).expanduser().is_file():
        return load_jsonl(Path(name).expanduser())
    match = _INSTANCE.match(name.lower())
    if match:
        return FAMILIES.get(match.group(1)).instance(int(match.group(2)))
    if ":" in name and name.split(":", 1)[0].lower() in FAMILIES:
        raise UmafError(f"{name}: malformed family instance; write <family>:<integer>, e.g. add_k:7")
    raise UmafError(
        f"unknown capability {name!r}: not a built-in ({', '.join(CAPABILITIES.names())}), "
        f"a family instance <family>:<k> ({', '.join(FAMILIES.names())}) or a .jsonl file"
    )


def list_capabilities(kind: str | None = None) -> list[str]:
    """Names of the built-in capabilities (not family instances), optionally of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise UmafError(f"unknown capability kind {kind!r}; choose from: {', '.join(KINDS)}")
    return [n for n in CAPABILITIES.names() if kind is None or CAPABILITIES.get(n).kind == kind]


def list_families() -> list[str]:
    """Names of the parametric capability families."""
    return FAMILIES.names()


def family_instances(family: str, n: int, seed: int = 0) -> list[Capability]:
    """``n`` distinct instances of ``family``, drawn from its parameter range reproducibly by ``seed``."""
    fam = FAMILIES.get(family)
    if not 0 <= n <= len(fam.params):
        raise UmafError(f"{family} has {len(fam.params)} instances; cannot draw {n}")
    params = random.Random(stable_seed("family_instances", fam.name, seed)).sample(list(fam.params), n)
    return [fam.instance(k) for k in params]


def training_capabilities() -> list[str]:
    """Built-in names that UMAF components may train on (all but ``HELD_OUT_CAPABILITIES``)."""
    return [n for n in CAPABILITIES.names() if n not in HELD_OUT_CAPABILITIES]
