"""Built-in capabilities: classification, arithmetic, string and lexical tasks, one decorated generator each.

Adding a built-in is one decorated generator::

    @register_capability("double", "arithmetic", "twice a number")
    def _double(rng: random.Random) -> Pairs:
        return [(str(x), str(2 * x)) for x in range(500)]

Word lists and tables are shipped under ``umaf/data``; every example fits in :data:`MAX_CHARS`.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from functools import cache

from umaf.capabilities.core import Pairs, register_capability
from umaf.config import data_lines

WordRule = Callable[[str], str]  # word -> output
VOWELS = "aeiou"


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
def word_list() -> tuple[str, ...]:
    """Common English words (3 to 8 letters) for the string tasks, sorted."""
    words: set[str] = set()
    for filename in ("plurals.tsv", "past_tense.tsv", "comparatives.tsv", "antonyms.tsv"):
        for a, b in _table(filename):
            words.update(w for w in (a, b) if w.isalpha() and 3 <= len(w) <= 8)
    return tuple(sorted(words))


def balanced(rng: random.Random, pairs: Pairs) -> list[tuple[str, str]]:
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
        register_capability(name, "string", description)(lambda rng: [(w, fn(w)) for w in word_list()])
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
