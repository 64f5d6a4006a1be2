"""Capability registry: splits, determinism, character set, families, user JSONL files, accuracy."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys

import pytest

from umaf import capabilities as caps
from umaf.capabilities import (
    CHARSET,
    MAX_CHARS,
    SPLITS,
    Capability,
    Example,
    family_instances,
    get_capability,
    is_held_out,
    is_held_out_model_family,
    list_capabilities,
    list_families,
    training_capabilities,
    training_families,
)
from umaf.config import HELD_OUT_CAPABILITIES
from umaf.errors import UmafError

NAMED = list_capabilities()


def _check_splits(cap: Capability, min_probe: int, min_eval: int) -> None:
    splits = {which: cap.split(which) for which in SPLITS}
    inputs = {which: [ex.input for ex in exs] for which, exs in splits.items()}
    for which, xs in inputs.items():
        assert len(xs) == len(set(xs)), f"{cap.name} {which} repeats an input"
    assert not set(inputs["train"]) & set(inputs["probe"])
    assert not set(inputs["train"]) & set(inputs["eval"])
    assert not set(inputs["probe"]) & set(inputs["eval"])
    assert len(splits["probe"]) >= min_probe and len(splits["eval"]) >= min_eval
    assert len(splits["train"]) >= len(splits["eval"])


@pytest.mark.parametrize("name", NAMED)
def test_named_capability_splits(name: str) -> None:
    cap = get_capability(name)
    assert cap.name == name and cap.kind in caps.KINDS[:-1] and cap.family is None
    assert cap.description
    _check_splits(cap, min_probe=32, min_eval=24)
    if cap.kind != "lexical":  # generated pools are large; shipped word lists may be smaller
        assert [len(cap.split(w)) for w in ("probe", "eval")] == [64, 64]
        assert len(cap.split("train")) >= 200


@pytest.mark.parametrize("name", NAMED)
def test_named_capability_texts_short_and_in_charset(name: str) -> None:
    cap = get_capability(name)
    for which in SPLITS:
        for ex in cap.split(which):
            text = ex.text()
            assert len(text) <= MAX_CHARS, text
            assert set(text) <= set(CHARSET), text
            assert ex.input.strip() == ex.input and ex.output.strip() == ex.output and ex.output


@pytest.mark.parametrize("name", NAMED)
def test_named_capability_deterministic(name: str) -> None:
    first = get_capability(name)
    fresh = Capability(first.name, first.kind, first.description, source=first.source)  # no cached splits
    for which in SPLITS:
        assert fresh.split(which) == first.split(which)
    assert fresh.probe_hash() == first.probe_hash()
    assert len(first.probe_hash()) == 16


def test_splits_do_not_depend_on_python_hash_seed() -> None:
    code = "from umaf.capabilities import get_capability as g; print([g(n).probe_hash() for n in %r])"
    names = ["topic", "sentiment", "reverse", "subst:17", "letter_set:5"]
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", code % names], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        outs.add(run.stdout)
    assert len(outs) == 1
    assert outs.pop().strip() == str([get_capability(n).probe_hash() for n in names])


def test_registry_covers_all_kinds() -> None:
    assert len(NAMED) >= 20
    kinds = {get_capability(n).kind for n in NAMED}
    assert kinds == {"classification", "arithmetic", "string", "lexical"}
    for kind in kinds:
        assert len(list_capabilities(kind)) >= 4
    assert sorted(sum((list_capabilities(k) for k in kinds), [])) == NAMED
    with pytest.raises(UmafError, match="kind"):
        list_capabilities("poetry")


def test_held_out_capabilities() -> None:
    everything = list_capabilities(extended=True)
    for name in HELD_OUT_CAPABILITIES:
        assert name in everything
        assert get_capability(name).held_out
    for kind in ("classification", "arithmetic", "string", "lexical"):  # two per kind, so each kind is tested
        assert sum(get_capability(n).kind == kind for n in HELD_OUT_CAPABILITIES) >= 2
    assert not get_capability("reverse").held_out
    training = training_capabilities()
    assert not set(training) & set(HELD_OUT_CAPABILITIES)
    core_held = [n for n in HELD_OUT_CAPABILITIES if n in NAMED]
    assert len(training) == len(NAMED) - len(core_held)
    assert set(training) < set(training_capabilities(extended=True))


def test_held_out_instances_stay_out_of_every_draw() -> None:
    from umaf.capabilities import family_instances
    from umaf.config import HELD_OUT_INSTANCES

    for name in HELD_OUT_INSTANCES:
        family = name.split(":")[0]
        assert is_held_out(name) and get_capability(name).held_out
        assert family in training_families(extended=True)  # the family itself is trained
        drawn = [c.name for c in family_instances(family, len(caps.FAMILIES.get(family).params) - 1)]
        assert name not in drawn and len(set(drawn)) == len(drawn)
    with pytest.raises(UmafError, match="trainable instances"):
        family_instances("kth_letter", 6)  # 6 parameters, one held out


def test_generator_world() -> None:
    from umaf.capabilities.world import generator_world

    world = generator_world()
    assert len(world) >= 200 and len(set(world)) == len(world)
    assert not any(is_held_out(c) for c in world)
    kinds = {k: sum(get_capability(c).kind == k for c in world) for k in ("classification", "arithmetic",
                                                                          "string", "lexical")}
    assert min(kinds.values()) >= 20
    families = {get_capability(c).family for c in world} - {None}
    assert len(families) >= 15
    for name in world:  # every one fits the char tokenizer and has an eval split worth scoring
        cap = get_capability(name)
        assert len(cap.split("eval")) >= 8
        assert all(set(ex.text()) <= set(caps.CHARSET) for ex in cap.split("train"))
    # the wider world does not move the core list the zoo and the extractor are built on
    assert not set(list_capabilities()) & caps.EXTENDED
    assert not set(training_families()) & caps.EXTENDED_FAMILIES


def test_one_held_out_policy_for_names_instances_and_user_files(monkeypatch, tmp_path) -> None:
    assert is_held_out("subtract") and is_held_out(" Capital ") and not is_held_out("reverse")
    assert not is_held_out("add_k:7") and not is_held_out(get_capability("add_k:7"))
    # a user file is never trained on: held out whatever it is called, by object and by recorded name
    user = get_capability(_write(tmp_path / "reverse.jsonl", _rows(40)))
    assert user.name == "reverse" and user.held_out and is_held_out(user) and is_held_out("mytask")
    # a family listed as held out holds out every instance of it, and its name is left out of training
    monkeypatch.setattr(caps.core, "HELD_OUT_CAPABILITIES", (*HELD_OUT_CAPABILITIES, "add_k"))
    assert is_held_out("add_k:7") and get_capability("add_k:8").held_out
    assert "add_k" not in training_families() and training_families(["caesar", "add_k"]) == ["caesar"]
    assert is_held_out_model_family("t5") and not is_held_out_model_family("llama")


ARITHMETIC = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
WORD_RULES = {
    "reverse": lambda w: w[::-1],
    "uppercase": str.upper,
    "sort_letters": lambda w: "".join(sorted(w)),
    "first_letter": lambda w: w[0],
    "length": lambda w: str(len(w)),
}


def _all_examples(name: str) -> list[Example]:
    return [ex for which in SPLITS for ex in get_capability(name).split(which)]


@pytest.mark.parametrize("name", ["add", "subtract", "multiply"])
def test_arithmetic_answers(name: str) -> None:
    for ex in _all_examples(name):
        a, op, b = ex.input.split()
        assert ex.output == str(ARITHMETIC[op](int(a), int(b))) and int(ex.output) >= 0


@pytest.mark.parametrize("name", sorted(WORD_RULES))
def test_string_answers(name: str) -> None:
    for ex in _all_examples(name):
        assert ex.output == WORD_RULES[name](ex.input)


def test_lexical_and_classification_answers() -> None:
    samples = {"capital": ("france", "paris"), "plural": ("child", "children"), "past_tense": ("go", "went"),
               "antonym": ("cold", "hot"), "comparative": ("big", "bigger")}
    for name, (x, y) in samples.items():
        pool = dict(get_capability(name).source(random.Random(0)))
        assert pool[x] == y, name
    assert caps.number_word(342) == "three hundred forty-two" and caps.ordinal_word(21) == "twenty-first"
    assert caps.ordinal_word(100) == "one hundredth" and caps.ordinal_word(12) == "twelfth"
    assert all(ex.output == ("odd" if int(ex.input) % 2 else "even") for ex in _all_examples("parity"))
    topics = {ex.output for ex in get_capability("topic").split("train")}
    assert topics == {"sports", "food", "tech", "weather"}
    for name in list_capabilities("classification"):
        labels = [ex.output for ex in get_capability(name).split("train")]
        top = max(labels.count(label) for label in set(labels))
        assert top <= 0.6 * len(labels), f"{name}: one label dominates"


def test_probe_halves() -> None:
    cap = get_capability("add")
    a, b = cap.probe_texts(part=0), cap.probe_texts(part=1)
    assert len(a) == len(b) == 32 and not set(a) & set(b)
    assert a + b == cap.probe_texts()
    assert cap.probe_texts(n=5) == cap.probe_texts()[:5]
    assert all(t.startswith(ex.input + " -> ") for t, ex in zip(a, cap.split("probe"), strict=False))
    with pytest.raises(UmafError):
        cap.probe_texts(part=2)
    with pytest.raises(UmafError):
        cap.probe_texts(n=0)
    assert cap.probe_hash() != get_capability("multiply").probe_hash()


def test_example_format() -> None:
    ex = Example("ab", "ba")
    assert (ex.prompt(), ex.target(), ex.text()) == ("ab ->", " ba", "ab -> ba")


def test_split_name_checked() -> None:
    with pytest.raises(UmafError, match="split"):
        get_capability("add").split("test")


@pytest.mark.parametrize("family", list_families())
def test_family_instances_resolve_and_differ(family: str) -> None:
    fam = caps.FAMILIES.get(family)
    core = family not in caps.EXTENDED_FAMILIES  # the zoo's and the extractor's families are large
    assert len(fam.params) >= (19 if core else 3)
    picked = family_instances(family, 2, seed=1)
    assert picked == family_instances(family, 2, seed=1)
    assert len({c.name for c in picked}) == 2
    assert len({c.probe_hash() for c in picked}) == 2  # different tasks, different probe texts
    for cap in picked:
        assert cap.family == family and cap.kind == fam.kind and not cap.held_out
        assert get_capability(cap.name) is cap
        _check_splits(cap, min_probe=32 if core else 16, min_eval=24 if core else 16)
        texts = [ex.text() for w in SPLITS for ex in cap.split(w)]
        assert all(len(t) <= MAX_CHARS and set(t) <= set(CHARSET) for t in texts)
    edge = [fam.instance(fam.params[0]), fam.instance(fam.params[-1])]
    assert edge[0].probe_hash() != edge[1].probe_hash()


def test_family_instance_values() -> None:
    add7 = get_capability("add_k:7")
    assert add7.name == "add_k:7" and add7.family == "add_k" and add7.kind == "arithmetic"
    assert all(int(ex.output) == int(ex.input) + 7 for ex in add7.split("train"))
    caesar = get_capability("caesar:1")
    for ex in caesar.split("eval"):
        assert ex.output == "".join(chr((ord(c) - 96) % 26 + 97) for c in ex.input)
    assert get_capability("ADD_K:07").name == "add_k:7"
    assert len(list_families()) >= 4
    assert sum(len(caps.FAMILIES.get(f).params) for f in list_families()) >= 500


@pytest.mark.parametrize("bad", ["add_k:0", "add_k:100", "add_k:-3", "caesar:26", "subst:1000"])
def test_family_param_out_of_range(bad: str) -> None:
    with pytest.raises(UmafError, match="out of range"):
        get_capability(bad)


@pytest.mark.parametrize("bad", ["add_k:", "add_k:x", "add_k:1.5", "add_k:7:8"])
def test_family_param_malformed(bad: str) -> None:
    with pytest.raises(UmafError, match="malformed"):
        get_capability(bad)


def test_unknown_names() -> None:
    with pytest.raises(UmafError, match="unknown capability 'poetry'"):
        get_capability("poetry")
    with pytest.raises(UmafError, match="unknown capability family"):
        get_capability("nope_k:3")
    with pytest.raises(UmafError, match="cannot draw"):
        family_instances("caesar", 26)
    with pytest.raises(UmafError):
        family_instances("nope", 1)


def test_capabilities_pickle() -> None:
    for cap in (get_capability("reverse"), get_capability("mod_k:9")):
        assert pickle.loads(pickle.dumps(cap)) is cap


# ----------------------------------------------------------------------------- user JSONL


def _write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _rows(n: int) -> list[dict]:
    return [{"input": f"q{i}", "output": f"a{i % 3}"} for i in range(n)]


def test_jsonl_round_trip(tmp_path) -> None:
    path = _write(tmp_path / "mytask.jsonl", _rows(100))
    cap = get_capability(path)
    assert (cap.name, cap.kind, cap.family, cap.held_out) == ("mytask", "custom", None, True)
    _check_splits(cap, min_probe=25, min_eval=25)
    seen = {ex.input: ex.output for w in SPLITS for ex in cap.split(w)}
    assert seen == {r["input"]: r["output"] for r in _rows(100)}
    # same content in another order (and with blank lines, duplicates) splits the same way
    shuffled = _write(tmp_path / "other.jsonl", _rows(100)[::-1] + ["", json.dumps(_rows(1)[0])])
    again = get_capability(shuffled)
    assert again.probe_hash() == cap.probe_hash() and again.split("train") == cap.split("train")
    # write_jsonl -> load_jsonl keeps the examples
    out = caps.write_jsonl(cap.split("train") + cap.split("probe") + cap.split("eval"), tmp_path / "w.jsonl")
    assert get_capability(str(out)).probe_hash() == cap.probe_hash()
    with pytest.raises(UmafError, match="exists"):
        caps.write_jsonl(cap.split("train"), out)
    assert pickle.loads(pickle.dumps(cap)).split("eval") == cap.split("eval")


def test_jsonl_minimum_size(tmp_path) -> None:
    cap = get_capability(_write(tmp_path / "small.jsonl", _rows(16)))
    assert len(cap.probe_texts(part=0)) == len(cap.probe_texts(part=1)) >= 4
    assert all(len(cap.split(w)) > 0 for w in SPLITS)
    with pytest.raises(UmafError, match="only 15 distinct inputs"):
        get_capability(_write(tmp_path / "tiny.jsonl", _rows(15)))


def test_jsonl_allows_any_characters(tmp_path) -> None:
    rows = [{"input": f"Ünïcode {i} — long " + "x" * 50, "output": "ok!"} for i in range(20)]
    cap = get_capability(_write(tmp_path / "free.jsonl", rows))
    assert len(cap.split("probe")) == 8


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "empty file"),
        (["", "   "], "empty file"),
        (['{"input": "a", "output": '], r"bad\.jsonl:1: malformed JSON"),
        ([json.dumps(r) for r in _rows(3)] + ["not json"], r"bad\.jsonl:4: malformed JSON"),
        (['["a", "b"]'], r"bad\.jsonl:1: expected an object"),
        (['{"output": "b"}'], r"bad\.jsonl:1: missing key 'input'"),
        (['{"input": "a"}'], r"bad\.jsonl:1: missing key 'output'"),
        (['{"input": 3, "output": "b"}'], r"bad\.jsonl:1: 'input' must be a non-empty string"),
        (['{"input": "a", "output": null}'], r"bad\.jsonl:1: 'output' must be a non-empty string"),
        (['{"input": "a", "output": "b"}', '{"input": "a", "output": "c"}'], r"bad\.jsonl:2: input 'a'"),
    ],
)
def test_jsonl_errors(tmp_path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(UmafError, match=message) as err:
        get_capability(str(path))
    assert "\n" not in str(err.value)


def test_jsonl_missing_file(tmp_path) -> None:
    with pytest.raises(UmafError, match="no such capability file"):
        get_capability(str(tmp_path / "absent.jsonl"))


def test_jsonl_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"input": "caf\xe9", "output": "x"}\n')
    with pytest.raises(UmafError, match="cannot read"):
        get_capability(str(path))


def test_existing_file_without_jsonl_suffix(tmp_path) -> None:
    cap = get_capability(_write(tmp_path / "examples.txt", _rows(40)))
    assert cap.kind == "custom" and cap.name == "examples"


# ----------------------------------------------------------------------------- accuracy


def test_accuracy() -> None:
    cap = get_capability("add")
    exs = cap.split("eval")[:4]
    preds = [f"  {exs[0].output}\n", exs[1].output, "wrong", exs[3].output + "0"]
    assert cap.accuracy(preds, exs) == pytest.approx(0.5)
    assert cap.accuracy([ex.output for ex in exs], exs) == 1.0
    with pytest.raises(UmafError, match="3 predictions for 4 examples"):
        cap.accuracy(preds[:3], exs)
    with pytest.raises(UmafError):
        cap.accuracy([], [])


def test_to_dict() -> None:
    info = get_capability("capital").to_dict()
    assert info["held_out"] is True and info["kind"] == "lexical"
    assert info["sizes"]["probe"] >= 32 and info["probe_hash"] == get_capability("capital").probe_hash()
