"""Parametric capability families: ``add_k:7``, ``subst:42``, ... (hundreds of instances from a few rules).

Adding a family is one decorated generator of ``(k, rng) -> pairs`` over a parameter range
(:func:`~umaf.capabilities.core.register_family`); instance ``"<family>:<k>"`` is made on first use.
"""

from __future__ import annotations

import random
import string

from umaf.capabilities.builtins import balanced, word_list
from umaf.capabilities.core import Pairs, register_family, stable_seed


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
    return balanced(rng, [(str(x), "high" if x >= 10 * k else "low") for x in range(1000)])


@register_family("letter_set", "classification", "word -> yes if its first letter is in set #{k}, else no",
                 range(0, 1000))
def _letter_set(k: int, rng: random.Random) -> Pairs:
    chosen = set(random.Random(stable_seed("letter_set", k)).sample(string.ascii_lowercase, 13))
    return balanced(rng, [(w, "yes" if w[0] in chosen else "no") for w in word_list()])


@register_family("caesar", "string", "word -> every letter shifted {k} places along", range(1, 26))
def _caesar(k: int, rng: random.Random) -> Pairs:
    return [(w, _shift(w, k)) for w in word_list()]


@register_family("subst", "string", "word -> letters mapped through substitution #{k}", range(0, 1000))
def _subst(k: int, rng: random.Random) -> Pairs:
    alphabet = list(string.ascii_lowercase)
    random.Random(stable_seed("subst", k)).shuffle(alphabet)
    table = str.maketrans(string.ascii_lowercase, "".join(alphabet))
    return [(w, w.translate(table)) for w in word_list()]


@register_family("append_k", "string", "word -> word followed by suffix #{k} (two letters)", range(0, 676))
def _append_k(k: int, rng: random.Random) -> Pairs:
    suffix = string.ascii_lowercase[k // 26] + string.ascii_lowercase[k % 26]
    return [(w, w + suffix) for w in word_list()]
