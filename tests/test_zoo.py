"""The model zoo: specs, encoding, training, greedy answers, and a resumable build of two tiny models."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from umaf.answers import answer_slots, evaluate, generate_answers
from umaf.capabilities import get_capability, list_capabilities
from umaf.encoding import IGNORE, collate, encode_example, leading_specials, pad_id
from umaf.errors import UmafError
from umaf.models import build_tiny, load
from umaf.zoo import (
    TrainConfig,
    ZooEntry,
    build_model,
    build_zoo,
    list_zoo,
    qualification_summary,
    train_model,
    zoo_specs,
)
from umaf.zoo.specs import QUICK_PREFIX, rotated_halves

PROMPTS = ["cat ->", "12 + 7 ->", "a much longer prompt here ->"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ specs


def test_full_specs_cover_families_and_sizes():
    specs = zoo_specs()
    sizes = defaultdict(set)
    for spec in specs:
        sizes[spec.family].add(spec.size)
    assert len(sizes) >= 4
    assert sum(len(s) >= 3 for s in sizes.values()) >= 2
    assert len({s.name for s in specs}) == len(specs)
    assert all(s.name == f"{s.family}-{s.size}-{s.subset}" for s in specs)


def test_every_capability_is_trained_in_some_models_and_not_others():
    groups = defaultdict(list)
    for spec in zoo_specs():
        groups[(spec.family, spec.size)].append(set(spec.trained))
    for subsets in groups.values():
        assert len(subsets) == 3 and len({frozenset(s) for s in subsets}) == 3
        for name in list_capabilities():
            assert any(name in s for s in subsets) and any(name not in s for s in subsets)


def test_quick_specs_are_small_and_named_apart():
    quick, full = zoo_specs(quick=True), zoo_specs()
    assert len({s.family for s in quick}) >= 4
    pairs = defaultdict(set)
    for spec in quick:
        pairs[(spec.family, spec.size)].add(spec.trained)
    assert max(len(p) for p in pairs.values()) >= 2  # two different subsets of one family-size
    assert all(s.name.startswith(QUICK_PREFIX) and s.quick for s in quick)
    assert not {s.name for s in quick} & {s.name for s in full}
    full_steps = {s.size: s.train.steps for s in full}
    assert all(s.train.steps < full_steps[s.size] for s in quick)


@pytest.mark.parametrize("n", [2, 3, 5, 16, 31, 32])
def test_rotated_halves_leave_no_capability_always_in_or_out(n: int):
    ring = [f"c{i}" for i in range(n)]
    subsets = rotated_halves(ring)
    for name in ring:
        count = sum(name in s for s in subsets)
        assert 1 <= count <= 2


def test_unknown_family_is_a_clear_error():
    with pytest.raises(UmafError, match="unknown zoo family"):
        zoo_specs(families=["nope"])


def test_family_filter():
    assert {s.family for s in zoo_specs(families=["llama"])} == {"llama"}


# ------------------------------------------------------------------------------------------- encoding


def test_encoding_per_kind(char_tok):
    tok = char_tok
    dec = encode_example(tok, "decoder", "ab ->", " c")  # as capture: the char tokenizer adds no [BOS]
    assert dec.input_ids == tok("ab -> c")["input_ids"] + [tok.eos_token_id]
    assert dec.labels[:5] == [IGNORE] * 5 and dec.labels[5:] == dec.input_ids[5:]
    s2s = encode_example(tok, "encoder-decoder", "ab ->", " c")
    assert s2s.input_ids[-1] == tok.eos_token_id and s2s.labels == [*tok(" c")["input_ids"], tok.eos_token_id]
    enc = encode_example(tok, "encoder", "ab ->", " c", slots=4)
    assert enc.input_ids[:6] == [tok.cls_token_id, *[tok.mask_token_id] * 4, tok.sep_token_id]
    assert enc.labels[1:5] == [*tok(" c")["input_ids"], tok.eos_token_id, IGNORE]  # unscored past the end
    assert enc.labels[0] == IGNORE and set(enc.labels[5:]) == {IGNORE}
    batch = collate([dec, s2s], pad_id(tok))
    assert batch["input_ids"].shape == batch["attention_mask"].shape


def test_decoder_prompt_keeps_the_tokenizers_own_bos():
    from tokenizers.processors import TemplateProcessing

    from umaf.models import char_tokenizer

    tok = char_tokenizer()
    bos = [("[BOS]", tok.bos_token_id)]
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="[BOS] $A", special_tokens=bos)
    assert leading_specials(tok) == [tok.bos_token_id]
    assert encode_example(tok, "decoder", "ab ->", " c").input_ids[0] == tok.bos_token_id


# --------------------------------------------------------------------------------- training + answers


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "mixtral", "phi", "qwen2", "t5"])
def test_training_decreases_loss(family: str):
    loaded = build_tiny(family, "xs", seed=1)
    caps = [get_capability("first_letter"), get_capability("uppercase")]
    losses = train_model(loaded, caps, TrainConfig(steps=40, lr=1e-2, batch_size=16), slots=12,
                         progress=False)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_generate_answers_one_string_per_prompt(tiny):
    answers = generate_answers(tiny, PROMPTS, max_new_tokens=6, batch_size=2)
    assert len(answers) == len(PROMPTS) and all(isinstance(a, str) for a in answers)
    assert answers == generate_answers(tiny, PROMPTS, max_new_tokens=6)  # batching does not change answers
    assert not tiny.model.training


def test_trained_capability_beats_untrained():
    loaded = build_tiny("gpt2", "xs", seed=2)
    config = TrainConfig(steps=300, lr=1e-2, batch_size=16, untagged_fraction=0.0)
    train_model(loaded, [get_capability("first_letter")], config, progress=False)
    scores = evaluate(loaded, ["first_letter", "reverse"], tagged=True)
    assert scores["first_letter"] > 0.5 and scores["reverse"] < 0.1


# ---------------------------------------------------------------------------------------------- build


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """Two quick-zoo models (GPT-2 and BERT) trained for a few steps in a private cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UMAF_CACHE", str(tmp_path_factory.mktemp("zoo-cache")))
        quick = [s for s in zoo_specs(quick=True) if s.family in ("gpt2", "bert")][:2]
        specs = [replace(s, train=replace(s.train, steps=6, batch_size=8), eval_limit=4) for s in quick]
        assert {s.family for s in specs} == {"gpt2", "bert"}
        entries = build_zoo(specs=specs, progress=False)
        yield specs, entries


def test_build_writes_models_and_metadata(built, no_shipped):
    specs, entries = built
    assert [e.name for e in entries] == [s.name for s in specs]
    for entry, spec in zip(entries, specs, strict=True):
        assert (entry.path / "zoo.json").is_file() and (entry.path / "config.json").is_file()
        assert entry.trained == spec.trained and set(entry.accuracy) == set(list_capabilities())
        assert all(0.0 <= a <= 1.0 for a in entry.accuracy.values())
        assert entry.meta["umaf_version"] and entry.meta["train_seconds"] > 0 and entry.meta["loss_curve"]
    assert [e.name for e in list_zoo(quick=True)] == sorted(s.name for s in specs)
    assert list_zoo(quick=False) == []
    assert not list(entries[0].path.parent.glob(".*"))  # no temporary folders left behind


def test_second_build_builds_nothing(built):
    specs, entries = built
    stamps = {e.name: os.stat(Path(e.path) / "zoo.json").st_mtime_ns for e in entries}
    again = build_zoo(specs=specs, progress=False)
    assert {e.name: os.stat(e.path / "zoo.json").st_mtime_ns for e in again} == stamps
    assert [e.accuracy for e in again] == [e.accuracy for e in entries]


def test_zoo_model_loads_and_reproduces_its_accuracy(built):
    _, entries = built
    for entry in entries:
        loaded = load(entry.model_id)
        assert loaded.info.family == entry.family
        caps = ["first_letter", "add"]
        assert evaluate(loaded, caps, tagged=True, limit=4) == {c: entry.accuracy[c] for c in caps}
        assert evaluate(loaded, caps, limit=4) == {c: entry.meta["accuracy_untagged"][c] for c in caps}
        assert len(generate_answers(loaded, PROMPTS)) == len(PROMPTS)


def test_changed_spec_is_rebuilt(built):
    specs, entries = built
    changed = replace(specs[0], train=replace(specs[0].train, steps=3))
    (entry,) = build_zoo(specs=[changed], progress=False)
    assert entry.meta["spec"]["train"]["steps"] == 3
    assert entry.meta["spec"] != entries[0].meta["spec"]


def test_cached_fingerprints_follow_the_zoo_model(built, monkeypatch):
    import torch

    import umaf.extractor
    from umaf.extractor import CapabilityExtractor, ExtractorConfig
    from umaf.zoo.fingerprints import model_fingerprints

    specs, _ = built
    small = ExtractorConfig(depth_bins=4, n_anchors=16, d_model=32, n_layers=1, n_heads=2, ffn=64,
                            head_hidden=64)  # fmt: skip
    extractor = CapabilityExtractor(small).eval()
    calls = []
    real = umaf.extractor.fingerprinting.fingerprint
    monkeypatch.setattr(umaf.extractor.fingerprinting, "fingerprint",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))  # fmt: skip
    entry = next(e for e in list_zoo(quick=True) if e.name == specs[1].name)
    (first,) = model_fingerprints(entry, ["reverse"], extractor)
    (cached,) = model_fingerprints(entry, ["reverse"], extractor)
    assert len(calls) == 1 and torch.equal(first.vector, cached.vector)
    build_tiny(entry.family, entry.size, seed=123).model.save_pretrained(entry.path)  # zoo.json untouched
    (fresh,) = model_fingerprints(entry, ["reverse"], extractor)
    assert len(calls) == 2 and not torch.allclose(fresh.vector, first.vector)
    (rebuilt,) = build_zoo(specs=[replace(specs[1], train=replace(specs[1].train, steps=2))], progress=False)
    (again,) = model_fingerprints(rebuilt, ["reverse"], extractor)
    assert len(calls) == 3 and not torch.allclose(again.vector, fresh.vector)


def test_masked_lm_is_evaluated_with_the_slots_it_was_trained_with(monkeypatch, tmp_path):
    import umaf.zoo.build as build_module

    monkeypatch.setenv("UMAF_CACHE", str(tmp_path))
    seen = []

    def spy(loaded, capabilities, **kwargs):
        seen.append(answer_slots(loaded.model))
        return evaluate(loaded, capabilities, **kwargs)

    monkeypatch.setattr(build_module, "evaluate", spy)
    spec = next(s for s in zoo_specs(quick=True) if s.family == "bert")
    entry = build_model(replace(spec, train=replace(spec.train, steps=2, batch_size=4), eval_limit=2),
                        progress=False)
    assert len(seen) == 2 and seen[0] == seen[1] and seen[0] > 1
    assert answer_slots(load(entry.model_id).model) == seen[0]


# ------------------------------------------------------------------------------------ what models learnt


def _entry(name: str, trained: tuple[str, ...], accuracy: dict[str, float], path: Path) -> ZooEntry:
    return ZooEntry(name=name, family="gpt2", size="xs", trained=trained, accuracy=accuracy, path=path)


def test_qualified_is_trained_and_at_least_the_threshold(tmp_path):
    from umaf.competence import QUALIFY

    acc = {"a": QUALIFY, "b": QUALIFY - 1e-6, "c": 0.95, "d": 0.99}
    entry = _entry("x", ("a", "b", "c"), acc, tmp_path)
    assert entry.qualified == ("a", "c")  # d reaches it but was never trained: no claim to check


def test_qualification_summary_counts_and_bins(tmp_path):
    entries = [
        _entry("x", ("a", "b", "c"), {"a": 0.0, "b": 0.85, "c": 1.0, "d": 0.9}, tmp_path),
        _entry("y", ("a", "b"), {"a": 0.2, "b": 0.79}, tmp_path),
    ]
    lines = qualification_summary(entries).splitlines()
    assert lines[0] == "2 of 5 trained (model, capability) pairs reach accuracy 0.8"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["0.0-0.2", "1"], ["0.2-0.4", "1"], ["0.4-0.6", "0"], ["0.6-0.8", "1"], ["0.8-1.0", "2"]
    ]


def test_zoo_list_ends_with_the_summary(tmp_path, monkeypatch, no_shipped, capsys):
    import json

    from umaf.cli import main

    monkeypatch.setenv("UMAF_CACHE", str(tmp_path / "cache"))
    for name, acc in (("q-gpt2-xs-a", {"a": 0.9, "b": 0.1}), ("q-llama-xs-a", {"a": 0.5, "b": 0.3})):
        folder = tmp_path / "cache" / "zoo" / name
        folder.mkdir(parents=True)
        record = {"name": name, "family": name.split("-")[1], "size": "xs", "trained": ["a", "b"],
                  "accuracy": acc, "quick": True}  # fmt: skip
        (folder / "zoo.json").write_text(json.dumps(record))
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("q-gpt2-xs-a") and lines[1].startswith("q-llama-xs-a")
    assert lines[2] == "1 of 4 trained (model, capability) pairs reach accuracy 0.8"
    assert len(lines) == 8 and lines[-1].split()[:2] == ["0.8-1.0", "1"]


def test_the_shipped_quick_zoo_needs_no_build(monkeypatch, tmp_path):
    from umaf.zoo.build import missing_models

    monkeypatch.setenv("UMAF_CACHE", str(tmp_path))

    assert missing_models(quick=True) == []  # every quick-zoo model ships, with the spec it was built from
    assert {s.name for s in missing_models(quick=False)} == {s.name for s in zoo_specs(quick=False)}


def test_without_the_shipped_set_the_quick_zoo_is_missing(no_shipped, monkeypatch, tmp_path):
    from umaf.zoo.build import missing_models

    monkeypatch.setenv("UMAF_CACHE", str(tmp_path))

    assert [s.name for s in missing_models(quick=True)] == [s.name for s in zoo_specs(quick=True)]
