"""The generator's wider training world: more named capabilities and families than the core set.

The core capabilities (:mod:`umaf.capabilities.builtins`, :mod:`umaf.capabilities.families`) are what
the zoo learns and the extractor is trained on. An adapter generator that should write capabilities
it never saw needs far more tasks than that, and tasks a pretrained target half-knows: lexical and
world-knowledge relations (hand-written in ``umaf/data/relations.tsv``), classification of real
words and sentences, number formats, and families whose instances differ in *meaning* (k-th letter,
prefix and suffix rules, letter rules, sequence continuation). They are registered with
``core=False``: looked up by name like any built-in, listed with ``extended=True``, and subject to the
same held-out policy (:func:`umaf.capabilities.is_held_out`). :func:`generator_world` is the list one
generator trains on.
"""

from __future__ import annotations

import random
from functools import cache

from umaf.capabilities.builtins import VOWELS, _grouped, _table, balanced, number_word, word_list
from umaf.capabilities.core import (
    FAMILIES,
    Pairs,
    is_held_out,
    register_capability,
    register_family,
    training_capabilities,
    training_families,
)
from umaf.capabilities.lookup import family_instances
from umaf.config import data_lines

# ----------------------------------------------------------------------------- hand-written relations

RELATIONS: dict[str, str] = {
    "animal_young": "animal -> the name of its young",
    "animal_sound": "animal -> the sound it makes",
    "country_language": "country -> its main language",
    "country_continent": "country -> its continent",
    "element_symbol": "chemical element -> its symbol",
    "synonym": "word -> a word of the same meaning",
    "category": "word -> what kind of thing it is (fruit, animal, colour, ...)",
    "gender_pair": "male noun -> its female counterpart",
    "color_of": "thing -> its usual colour",
    "english_french": "English word -> French word",
    "profession_place": "profession -> where it is done",
    "currency": "country -> its currency",
    "city_country": "city -> the country it lies in",
}


@cache
def relation(name: str) -> tuple[tuple[str, str], ...]:
    """The pairs of one hand-written relation of ``relations.tsv``."""
    rows = (line.split("\t") for line in data_lines("relations.tsv"))
    return tuple((a.strip(), b.strip()) for rel, a, b in rows if rel == name)


def _register_relation(name: str, description: str) -> None:
    register_capability(name, "lexical", description, core=False)(lambda rng: relation(name))


for _name, _description in RELATIONS.items():
    _register_relation(_name, _description)


def _inverse(filename: str) -> Pairs:
    return [(b, a) for a, b in _table(filename)]


@register_capability("singular", "lexical", "plural noun -> its singular", core=False)
def _singular(rng: random.Random) -> Pairs:
    return _inverse("plurals.tsv")


@register_capability("present_tense", "lexical", "simple past -> the verb's base form", core=False)
def _present_tense(rng: random.Random) -> Pairs:
    return _inverse("past_tense.tsv")


@register_capability("base_adjective", "lexical", "comparative -> its adjective (bigger -> big)", core=False)
def _base_adjective(rng: random.Random) -> Pairs:
    return _inverse("comparatives.tsv")


@register_capability("number_value", "lexical", "English number name -> the number", core=False)
def _number_value(rng: random.Random) -> Pairs:
    return [(number_word(n), str(n)) for n in range(1000)]


# ----------------------------------------------------------------------------- classification


def _animals() -> list[str]:
    return sorted({a for a, _ in relation("animal_young") + relation("animal_sound")})


@register_capability("is_animal", "classification", "word -> yes if it names an animal, else no", core=False)
def _is_animal(rng: random.Random) -> Pairs:
    animals = set(_animals())
    others = [w for w, kind in relation("category") if kind != "animal" and w not in animals]
    others += [w for w in word_list() if w not in animals]
    return balanced(rng, [(w, "yes") for w in animals] + [(w, "no") for w in others])


@register_capability("is_food", "classification", "word -> yes if it names a fruit or vegetable, else no",
                     core=False)
def _is_food(rng: random.Random) -> Pairs:
    kinds = dict(relation("category"))
    food = [w for w, k in kinds.items() if k in ("fruit", "vegetable")]
    others = [w for w, k in kinds.items() if k not in ("fruit", "vegetable")] + _animals()
    return balanced(rng, [(w, "yes") for w in food] + [(w, "no") for w in others])


@register_capability("is_prime", "classification", "number -> yes if it is prime, else no", core=False)
def _is_prime(rng: random.Random) -> Pairs:
    prime = lambda n: n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))  # noqa: E731
    return balanced(rng, [(str(n), "yes" if prime(n) else "no") for n in range(2, 1000)])


@register_capability("is_question", "classification", "sentence -> yes if it asks a question, else no",
                     core=False)
def _is_question(rng: random.Random) -> Pairs:
    words = _grouped("sentiment.tsv")
    adjectives, subjects = words["positive"] + words["negative"], words["subject"]
    questions = ("is the {s} {a}?", "was the {s} {a}?", "why is the {s} {a}?", "is it {a}?")
    statements = ("the {s} is {a}.", "the {s} was {a}.", "it is {a}.", "my {s} is {a}.")
    for i in range(3000):
        templates = questions if i % 2 else statements
        text = rng.choice(templates).format(s=rng.choice(subjects), a=rng.choice(adjectives))
        yield text, "yes" if i % 2 else "no"


@register_capability("is_plural_word", "classification", "noun -> plural or singular", core=False)
def _is_plural_word(rng: random.Random) -> Pairs:
    rows = _table("plurals.tsv")
    return balanced(rng, [(s, "singular") for s, _ in rows] + [(p, "plural") for _, p in rows])


@register_capability("is_past_form", "classification", "verb -> past or present", core=False)
def _is_past_form(rng: random.Random) -> Pairs:
    rows = _table("past_tense.tsv")
    rows = [(a, b) for a, b in rows if a != b]
    return balanced(rng, [(a, "present") for a, _ in rows] + [(b, "past") for _, b in rows])


# ----------------------------------------------------------------------------- arithmetic and formats


def roman(n: int) -> str:
    """Roman numeral of ``1 <= n < 4000``."""
    out = []
    for value, letters in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                           (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        count, n = divmod(n, value)
        out.append(letters * count)
    return "".join(out)


@register_capability("square", "arithmetic", "number -> its square", core=False)
def _square(rng: random.Random) -> Pairs:
    return [(str(n), str(n * n)) for n in range(100)]


@register_capability("roman", "arithmetic", "number -> Roman numeral", core=False)
def _roman(rng: random.Random) -> Pairs:
    return [(str(n), roman(n)) for n in range(1, 400)]


@register_capability("binary", "arithmetic", "number -> its binary digits", core=False)
def _binary(rng: random.Random) -> Pairs:
    return [(str(n), format(n, "b")) for n in range(256)]


@register_capability("minimum", "arithmetic", "three numbers -> the smallest", core=False)
def _minimum(rng: random.Random) -> Pairs:
    for _ in range(2000):
        xs = [rng.randrange(100) for _ in range(3)]
        yield " ".join(map(str, xs)), str(min(xs))


@register_capability("sum_three", "arithmetic", "three numbers below 10 -> their sum", core=False)
def _sum_three(rng: random.Random) -> Pairs:
    return [(f"{a} {b} {c}", str(a + b + c)) for a in range(10) for b in range(10) for c in range(10)]


@register_capability("tens_digit", "arithmetic", "number -> its tens digit", core=False)
def _tens_digit(rng: random.Random) -> Pairs:
    return [(str(n), str(n // 10 % 10)) for n in range(10, 1000)]


# ----------------------------------------------------------------------------- strings


def _word_groups(rng: random.Random, lo: int, hi: int) -> list[str]:
    words = word_list()
    return [" ".join(rng.sample(words, rng.randint(lo, hi))) for _ in range(2000)]


@register_capability("acronym", "string", "words -> their first letters in capitals", core=False)
def _acronym(rng: random.Random) -> Pairs:
    return [(g, "".join(w[0] for w in g.split()).upper()) for g in _word_groups(rng, 2, 4)]


@register_capability("first_word", "string", "words -> the first one", core=False)
def _first_word(rng: random.Random) -> Pairs:
    return [(g, g.split()[0]) for g in _word_groups(rng, 2, 4)]


@register_capability("last_word", "string", "words -> the last one", core=False)
def _last_word(rng: random.Random) -> Pairs:
    return [(g, g.split()[-1]) for g in _word_groups(rng, 2, 4)]


@register_capability("word_count", "string", "words -> how many there are", core=False)
def _word_count(rng: random.Random) -> Pairs:
    return [(g, str(len(g.split()))) for g in _word_groups(rng, 1, 5)]


@register_capability("vowel_count", "string", "word -> how many vowels it has", core=False)
def _vowel_count(rng: random.Random) -> Pairs:
    return [(w, str(sum(c in VOWELS for c in w))) for w in word_list()]


@register_capability("swap_ends", "string", "word -> first and last letters swapped", core=False)
def _swap_ends(rng: random.Random) -> Pairs:
    return [(w, w[-1] + w[1:-1] + w[0]) for w in word_list()]


# ----------------------------------------------------------------------------- families of rules

PREFIXES: tuple[str, ...] = ("un", "re", "pre", "dis", "over", "mis", "out", "sub", "non", "anti")
SUFFIXES: tuple[str, ...] = ("ing", "ed", "er", "ly", "ness", "ful", "less", "able", "ment", "ish")


@register_family("kth_letter", "string", "word -> its letter number {k}", range(1, 7), core=False)
def _kth_letter(k: int, rng: random.Random) -> Pairs:
    return [(w, w[k - 1]) for w in word_list() if len(w) >= k]


@register_family("first_k", "string", "word -> its first {k} letters", range(2, 5), core=False)
def _first_k(k: int, rng: random.Random) -> Pairs:
    return [(w, w[:k]) for w in word_list() if len(w) > k]


@register_family("last_k", "string", "word -> its last {k} letters", range(2, 5), core=False)
def _last_k(k: int, rng: random.Random) -> Pairs:
    return [(w, w[-k:]) for w in word_list() if len(w) > k]


@register_family("prefix", "string", "word -> the word after prefix number {k} of: " + " ".join(PREFIXES),
                 range(len(PREFIXES)), core=False)
def _prefix(k: int, rng: random.Random) -> Pairs:
    return [(w, PREFIXES[k] + w) for w in word_list()]


@register_family("suffix", "string", "word -> the word before suffix number {k} of: " + " ".join(SUFFIXES),
                 range(len(SUFFIXES)), core=False)
def _suffix(k: int, rng: random.Random) -> Pairs:
    return [(w, w + SUFFIXES[k]) for w in word_list()]


#: Letters of the ``contains`` family, most frequent first (rarer ones leave too few examples).
COMMON_LETTERS = "etaoinsrhldcumpgbfwy"


@register_family("contains", "classification",
                 "word -> yes if it contains letter number {k} of " + COMMON_LETTERS,
                 range(len(COMMON_LETTERS)), core=False)
def _contains(k: int, rng: random.Random) -> Pairs:
    letter = COMMON_LETTERS[k]
    return balanced(rng, [(w, "yes" if letter in w else "no") for w in word_list()])


@register_family("length_over", "classification", "word -> yes if it has more than {k} letters",
                 range(3, 8), core=False)
def _length_over(k: int, rng: random.Random) -> Pairs:
    return balanced(rng, [(w, "yes" if len(w) > k else "no") for w in word_list()])


@register_family("count_by", "arithmetic", "three numbers {k} apart -> the next one", range(1, 21),
                 core=False)
def _count_by(k: int, rng: random.Random) -> Pairs:
    return [(f"{a} {a + k} {a + 2 * k}", str(a + 3 * k)) for a in range(300)]


# ----------------------------------------------------------------------------- the world

#: Instances per family in :func:`generator_world` (families not listed give :data:`DEFAULT_INSTANCES`).
#: Seeded random mappings (``subst``, ``letter_set``, ``append_k``) teach little that carries over, so
#: they get few.
INSTANCES: dict[str, int] = {"add_k": 20, "mul_k": 12, "mod_k": 10, "threshold_k": 12, "caesar": 6,
                             "subst": 3, "letter_set": 4, "append_k": 6, "contains": 20, "count_by": 19}
DEFAULT_INSTANCES = 10


def generator_world(seed: int = 0) -> list[str]:
    """Every capability an adapter generator trains on: core and extended named built-ins, and up to
    :data:`INSTANCES` instances of every family; nothing :func:`is_held_out`."""
    names = training_capabilities(extended=True)
    for family in training_families(extended=True):
        trainable = sum(not is_held_out(f"{family}:{k}") for k in FAMILIES.get(family).params)
        n = min(INSTANCES.get(family, DEFAULT_INSTANCES), trainable)
        names += [c.name for c in family_instances(family, n, seed=seed)]
    return names


__all__ = ["PREFIXES", "RELATIONS", "SUFFIXES", "generator_world", "relation", "roman"]
