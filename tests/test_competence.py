"""Competence read from the model: agreement through an LM head (checked against greedy evaluation),
linear decodability without one, None where nothing can be read, and the metadata and CLI that carry it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from umaf.capabilities import get_capability
from umaf.competence import (
    AGREEMENT,
    COMPETENT,
    DECODABILITY,
    NO_READING,
    above_chance,
    class_labels,
    competence_warning,
    cross_validated_accuracy,
    describe_competence,
    fingerprint_competence,
    has_lm_head,
    measure_competence,
)
from umaf.errors import UmafError
from umaf.evaluation import evaluate
from umaf.fingerprint import Fingerprint
from umaf.models import LoadedModel, build_tiny, describe

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = "first_letter"


def small_extractor():
    from umaf.extractor import CapabilityExtractor, ExtractorConfig

    torch.manual_seed(0)
    config = ExtractorConfig(depth_bins=4, n_anchors=16, d_model=32, n_layers=1, n_heads=2, ffn=64,
                             head_hidden=64)  # fmt: skip
    return CapabilityExtractor(config).eval()


@pytest.fixture(scope="module")
def twins() -> tuple[LoadedModel, LoadedModel]:
    """Two tiny LLaMAs from the same initial weights; the first trained 300 steps on :data:`TASK`."""
    from umaf.zoo import TrainConfig, train_model

    trained, untrained = build_tiny("llama", "xs", seed=1), build_tiny("llama", "xs", seed=1)
    config = TrainConfig(steps=300, lr=1e-2, batch_size=16, untagged_fraction=1.0)  # plain prompts
    with torch.random.fork_rng(devices=[]):
        train_model(trained, [get_capability(TASK)], config, progress=False)
    return trained, untrained


@pytest.fixture(scope="module")
def bert_base() -> LoadedModel:
    """A tiny BERT *without* an LM head (``BertModel``, as ``AutoModel`` loads a sentence encoder)."""
    from transformers import BertModel

    masked = build_tiny("bert", "xs", seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(masked.model.config).eval()
    return LoadedModel(model, masked.tokenizer, describe(model, "tiny-bert-base"))


# ------------------------------------------------------------------------------------------- agreement


def test_trained_model_is_more_competent_than_its_untrained_twin(twins):
    trained, untrained = twins
    high, low = measure_competence(trained, TASK), measure_competence(untrained, TASK)
    assert high.method == low.method == AGREEMENT and high.n_examples == 64
    assert high.score >= 0.2 and low.score == 0.0
    assert high.answer_likelihood > 5 * low.answer_likelihood
    assert measure_competence(trained, "reverse").score < 0.05  # not what it was trained on


def test_agreement_matches_greedy_exact_match_on_the_eval_split(twins):
    for loaded in twins:
        cap = get_capability(TASK)
        reading = measure_competence(loaded, cap, cap.split("eval"), limit=None)
        assert reading.agreement == pytest.approx(evaluate(loaded, cap, split="eval"), abs=0.05)


def test_agreement_is_corrected_for_chance_on_classification_like_capabilities(tiny):
    assert above_chance(0.5, 0.5) == 0.0 and above_chance(0.3, 0.5) == 0.0
    assert above_chance(0.75, 0.5) == pytest.approx(0.5) and above_chance(1.0, 0.25) == 1.0
    reading = measure_competence(tiny, "sentiment", limit=32)  # two answers
    assert reading.method == AGREEMENT and 0.0 < reading.majority < 1.0
    assert reading.score == pytest.approx(above_chance(reading.agreement, reading.majority))
    assert measure_competence(tiny, "reverse", limit=32).majority is None  # open answers: no correction


def test_random_models_score_near_zero_on_a_generative_task(tiny):
    reading = measure_competence(tiny, "reverse", limit=32)
    assert reading.method == AGREEMENT and reading.n_examples == 32
    assert reading.score <= 0.05 and 0.0 < reading.answer_likelihood < 0.1
    assert not tiny.model.training


def test_tagged_prompts_and_bad_examples(tiny_gpt2):
    assert measure_competence(tiny_gpt2, "plural", limit=4, tagged=True).n_examples == 4
    with pytest.raises(UmafError, match="at least one example"):
        measure_competence(tiny_gpt2, "plural", examples=[])


# ---------------------------------------------------------------------------------------- decodability


def test_decodability_without_an_lm_head(bert_base):
    assert not has_lm_head(bert_base.model)
    sentiment = measure_competence(bert_base, "sentiment")
    assert sentiment.method == DECODABILITY and 0.0 <= sentiment.score <= 1.0
    assert 0.0 <= sentiment.cv_accuracy <= 1.0 and 0.5 <= sentiment.majority < 1.0
    open_answers = measure_competence(bert_base, "reverse")
    assert open_answers.score is None and open_answers.method == NO_READING


def test_cross_validation_separates_decodable_from_noise():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    noise = torch.randn(60, 40, generator=gen)
    signal = noise + 4.0 * torch.nn.functional.one_hot(labels, 40).float()
    assert cross_validated_accuracy(signal, labels) > 0.9
    assert cross_validated_accuracy(noise, labels) < 0.6


def test_class_labels_need_few_classes_with_enough_examples():
    cap = get_capability("sentiment")
    assert sorted(set(class_labels(cap.split("probe")))) == [0, 1]
    assert class_labels(get_capability("reverse").split("probe")) is None
    assert class_labels(cap.split("probe")[:5]) is None  # a class with fewer than 4 examples


# -------------------------------------------------------------------------------- fingerprints and CLI


def test_fingerprint_metadata_round_trips_with_none(bert_base, tiny_llama, tmp_path: Path):
    from umaf.extractor import fingerprint

    extractor = small_extractor()
    unknown = fingerprint(bert_base, "reverse", extractor, n_probes=8, progress=False)
    assert unknown.meta["competence"] is None and unknown.meta["competence_method"] == NO_READING
    back = Fingerprint.load(unknown.save(tmp_path / "none.safetensors"))
    assert back.meta == unknown.meta and fingerprint_competence(back) is None
    known = fingerprint(tiny_llama, "reverse", extractor, part=1, progress=False)
    assert known.meta["competence_method"] == AGREEMENT and known.meta["competence_examples"] == 32
    assert Fingerprint.load(known.save(tmp_path / "known.safetensors")).meta["competence"] == 0.0
    known.meta["competence"] = 1.5
    with pytest.raises(UmafError, match=r"competence must be a number in \[0, 1\] or null"):
        known.save(tmp_path / "bad.safetensors")


def test_user_jsonl_is_fingerprinted_on_all_its_examples(tiny_llama, tmp_path: Path):
    from umaf.extractor import fingerprint

    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"input": f"w{i}", "output": f"x{i}"}) + "\n" for i in range(40)))
    cap = get_capability(str(path))
    assert len(cap.probe_examples()) == 40 and len(cap.probe_examples(split="probe")) == 10
    fp = fingerprint(tiny_llama, cap, small_extractor(), progress=False)
    assert fp.meta["n_probes"] == fp.meta["competence_examples"] == 40
    fp_probe = fingerprint(tiny_llama, cap, small_extractor(), split="probe", progress=False)
    assert fp_probe.meta["n_probes"] == 10 and fp_probe.meta["probe_split"] == "probe"
    assert fp_probe.meta["probe_hash"] != fp.meta["probe_hash"]


def _meta(**extra) -> dict:
    return {"model": "minilm", "capability": "plural", **extra}


def test_warning_names_weak_and_unknown_sources():
    weak = Fingerprint(torch.ones(512), None, _meta(competence=0.0, competence_method=AGREEMENT))
    assert competence_warning(weak) == (
        f"minilm reads plural with competence 0.00 (< {COMPETENT}): the adapter may not carry the capability"
    )
    strong = Fingerprint(torch.ones(512), None, _meta(competence=0.9, competence_method=AGREEMENT))
    assert competence_warning(strong) is None and describe_competence(strong) == "competence 0.90 (agreement)"
    legacy = Fingerprint(torch.ones(512), None, _meta(competence=0.9))  # the extractor head's old value
    assert fingerprint_competence(legacy) is None and "unknown competence" in competence_warning(legacy)
    sources = [{"model": "a", "capability": "x", "weight": 0.5, "competence": 0.8},
               {"model": "b", "capability": "y", "weight": 0.5, "competence": None}]  # fmt: skip
    fused = Fingerprint(torch.ones(512), None, _meta(sources=sources))
    assert competence_warning(fused).startswith("b reads y with unknown competence")


def test_cli_prints_competence(capsys, tmp_path: Path, monkeypatch):
    from umaf.cli import main

    model_dir, extractor_dir = tmp_path / "model", tmp_path / "extractor"
    loaded = build_tiny("llama", "xs", seed=1)
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    small_extractor().save_pretrained(extractor_dir)
    out = tmp_path / "fp.safetensors"
    argv = ["fingerprint", str(model_dir), "-c", "reverse", "-o", str(out), "--extractor", str(extractor_dir)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith("reverse, competence 0.00 (agreement))")  # the summary
    assert main(["compare", str(out), str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["competence"] == [0.0, 0.0]
    assert main(["compare", str(out)]) == 0
    assert re.search(r"^competence +0\.000$", capsys.readouterr().out, re.MULTILINE)
