"""Transfer suite: recovery arithmetic, the oracle-gain exclusion, a whole run with a stand-in generator."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch

from umaf.adapters.oracles import OracleConfig, train_oracle
from umaf.bench.transfer import (
    MIN_ORACLE_GAIN,
    TransferPlan,
    adapter_tag,
    aggregate,
    bench_transfer,
    multitask_steps,
    nearest_training_capability,
    plan_transfer,
    random_fingerprint,
    recovery,
    run_transfer,
)
from umaf.config import FINGERPRINT_DIM, HELD_OUT_CAPABILITIES
from umaf.fingerprint import Fingerprint
from umaf.models import build_tiny


def _row(cap: str, group: str, base: float, oracle: float, generated: dict[str, float],
         refused: tuple[str, ...] = (), qualified: tuple[str, ...] = (), **others: float) -> dict:
    """A measured row as :func:`measure_capability` makes it (``others``: retrieval, multitask, wrong,
    random and the random-init source's untrained accuracies, default 0; ``refused``: the sources the
    competence check refuses; ``qualified``: the sources that learnt ``cap``)."""
    rec = lambda v: recovery(v, base, oracle)  # noqa: E731
    by_default = lambda s, v: rec(base if s in refused else v)  # noqa: E731
    row = {"capability": cap, "group": group, "base": base, "oracle": oracle, "oracle_gain": oracle - base,
           "included": oracle - base >= MIN_ORACLE_GAIN, "generated": generated, "oracle_train_seconds": 10.0,
           "recovery": {s: rec(a) for s, a in generated.items()}, "refused": list(refused),
           "recovery_qualified": {s: by_default(s, generated[s]) for s in qualified},
           "perplexity_generated": 11.0, "perplexity_oracle": 10.5}
    for key in ("retrieval", "multitask", "wrong", "random"):
        row[key] = others.get(key, 0.0)
        row[f"recovery_{key}"] = rec(row[key])
    row["untrained"] = {"random-init": others.get("untrained", 0.0)}
    row["recovery_untrained_ungated"] = rec(row["untrained"]["random-init"])
    row["recovery_untrained"] = by_default("random-init", row["untrained"]["random-init"])
    row["recovery_out_of_sample"] = rec(generated["zoo:q-gpt2-xs-b"])
    return row


def _plan(**kw: object) -> TransferPlan:
    base = dict(target="t", seen=["plural"], heldout_instances=["add_k:10"], heldout=["capital"],
                sources=["zoo:q-gpt2-xs-b"], in_sample=["minilm"], world=["plural", "reverse", "antonym"])
    return TransferPlan(**{**base, **kw})


def test_recovery_arithmetic() -> None:
    assert recovery(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert recovery(0.9, 0.1, 0.9) == pytest.approx(1.0)
    assert recovery(0.0, 0.1, 0.9) == pytest.approx(-0.125)
    assert recovery(0.3, 0.5, 0.5) is None and recovery(0.3, 0.5, 0.4) is None


def test_aggregate_groups_baselines_and_controls() -> None:
    src = "zoo:q-gpt2-xs-b"
    rows = [
        _row("plural", "seen", 0.0, 1.0, {src: 0.8, "minilm": 0.6}, retrieval=0.5, multitask=0.4, wrong=0.1,
             qualified=(src,)),
        _row("add_k:10", "heldout_instances", 0.2, 0.6, {src: 0.4, "minilm": 0.3}, multitask=0.3),
        _row("capital", "heldout", 0.1, 0.9, {src: 0.5, "minilm": 0.3}, retrieval=0.3, untrained=0.5,
             refused=("random-init",)),
        _row("parity", "seen", 0.5, 0.55, {src: 0.0, "minilm": 0.0}),  # oracle gains 0.05: excluded
    ]
    out = aggregate(rows, _plan(), base_perplexity=10.0, gen_seconds=[0.2, 0.4])
    assert out["excluded"] == ["parity"]
    assert out["n_included"] == {"seen": 1, "heldout_instances": 1, "heldout": 1}
    assert out["n_train_capabilities"] == 3
    assert out["recovery_seen"] == pytest.approx(0.8) and out["recovery_seen_in_sample"] == pytest.approx(0.6)
    assert out["recovery_heldout_instances"] == pytest.approx(0.5)
    assert out["recovery_heldout"] == pytest.approx(0.4 / 0.8)
    assert out["recovery_baseline_retrieval_seen"] == pytest.approx(0.5)
    assert out["recovery_baseline_multitask_heldout_instances"] == pytest.approx(0.25)
    assert out["recovery_baseline_retrieval_heldout"] == pytest.approx(0.2 / 0.8)
    assert out["recovery_wrong_capability"] == pytest.approx((0.1 - 0.5 - 0.125) / 3)
    assert out["recovery_untrained_source_ungated"] == pytest.approx((0.0 - 0.5 + 0.5) / 3)
    assert out["recovery_untrained_source"] == pytest.approx((0.0 - 0.5 + 0.0) / 3)  # capital's: refused
    assert out["refused"] == {"qualified": 0, "untrained": 1, "untrained_pairs": 3}
    assert out["recovery_seen_qualified_sources"] == pytest.approx(0.8) and out["n_qualified_pairs"] == 1
    assert out["gen_seconds"] == pytest.approx(0.3) and out["oracle_train_seconds"] == pytest.approx(10.0)
    assert out["perplexity_rise"] == pytest.approx(0.1)
    assert out["perplexity_rise_oracle"] == pytest.approx(0.05)


def test_aggregate_with_nothing_included() -> None:
    out = aggregate([_row("parity", "seen", 0.5, 0.55, {"zoo:q-gpt2-xs-b": 0.5})], _plan())
    assert out["recovery_seen"] is None and out["recovery_random_control"] is None
    assert out["perplexity_base"] is None and out["excluded"] == ["parity"]
    json.dumps(out)  # no NaN in the JSON


def test_multitask_baseline_sees_as_many_examples_as_the_generator() -> None:
    from types import SimpleNamespace

    from umaf.generator import GeneratorConfig

    recon_only = SimpleNamespace(training_report={"config": GeneratorConfig(e2e_steps=0).to_dict()})
    assert multitask_steps(recon_only, 20, 16) == 100  # the floor
    assert multitask_steps(recon_only, 202, 16) == 404  # the per-capability rule
    assert multitask_steps(SimpleNamespace(training_report={}), 202, 16) == 404  # no report: the rule
    trained = GeneratorConfig(e2e_steps=1600, e2e_caps_per_step=8, e2e_examples_per_cap=3).to_dict()
    e2e = SimpleNamespace(training_report={"config": trained})
    assert multitask_steps(e2e, 202, 16) == 2400  # 1600 * 8 * 3 examples in batches of 16
    assert multitask_steps(e2e, 202, 7) == 5486  # rounded up


def test_nearest_training_capability_skips_the_query_itself() -> None:
    def fp(*v: float) -> Fingerprint:
        vec = torch.zeros(FINGERPRINT_DIM)
        vec[: len(v)] = torch.tensor(v)
        return Fingerprint(vec / vec.norm(), torch.ones(8), {})

    gallery = {"plural": fp(1, 0), "reverse": fp(0.9, 0.1), "antonym": fp(0, 1)}
    assert nearest_training_capability(fp(1, 0), gallery, exclude="capital") == "plural"
    assert nearest_training_capability(fp(1, 0), gallery, exclude="plural") == "reverse"
    assert nearest_training_capability(fp(0.1, 1), gallery, exclude="plural") == "antonym"


def test_random_fingerprint_keeps_the_metadata() -> None:
    fp = Fingerprint(torch.ones(FINGERPRINT_DIM), torch.ones(8), {"capability": "plural", "family": "gpt2"})
    control = random_fingerprint(fp, seed=3)
    assert control.meta == fp.meta and control.meta is not fp.meta
    assert control.vector.norm() == pytest.approx(1.0)
    assert torch.equal(control.vector, random_fingerprint(fp, seed=3).vector)
    assert not torch.equal(control.vector, random_fingerprint(fp, seed=4).vector)


def test_plan_reads_the_generator_report() -> None:
    from types import SimpleNamespace

    from umaf.errors import UmafError

    report = {"e2e_capabilities": ["plural", "antonym", "reverse"], "sources": ["minilm", "zoo:q-gpt2-xs-a"],
              "val_sources": ["zoo:q-gpt2-xs-b", "zoo:q-t5-xs-a"]}
    plan = plan_transfer("smollm2", False, SimpleNamespace(training_report=report))
    assert plan.seen == ["plural", "antonym"] and plan.heldout == list(HELD_OUT_CAPABILITIES)
    assert plan.sources == ["zoo:q-gpt2-xs-b", "zoo:q-t5-xs-a"] and plan.in_sample == ["minilm"]
    assert all(plan.group(c) == "heldout_instances" for c in plan.heldout_instances)
    assert plan.group("capital") == "heldout" and plan.group("plural") == "seen"
    quick = plan_transfer("smollm2", True, SimpleNamespace(training_report=report))
    assert quick.heldout and set(quick.heldout) <= set(HELD_OUT_CAPABILITIES)
    with pytest.raises(UmafError, match="held-apart"):
        plan_transfer("smollm2", False, SimpleNamespace(training_report={**report, "val_sources": []}))
    with pytest.raises(UmafError, match="training capabilities"):
        plan_transfer("smollm2", False, SimpleNamespace(training_report={}))


def test_a_shipped_oracle_is_measured_against_not_retrained(monkeypatch: pytest.MonkeyPatch) -> None:
    from umaf.adapters import oracles
    from umaf.bench.transfer import ensure_oracle
    from umaf.pretrained import SHIPPED_DIR

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a shipped oracle was retrained")

    monkeypatch.setattr(oracles, "train_oracle", no_training)
    entry = ensure_oracle(None, "smollm2", "plural", progress=False)  # the target is loaded only to train
    assert entry.path.is_relative_to(SHIPPED_DIR) and entry.capability == "plural"


class StandInGenerator:
    """Writes, for a source's fingerprint, its capability's oracle at half strength (B halved) and, for
    any other fingerprint (the random control), the oracle of another capability; keeps a copy of every
    adapter it writes and the fingerprint it was given, so a test can measure them itself."""

    def __init__(self, oracles: dict[str, Path], fps: dict, keep: Path) -> None:
        self.oracles, self.known, self.keep = oracles, fps, keep
        self.training_report: dict = {}  # no end-to-end phase: the multi-task baseline gets the floor
        self.calls: list[tuple[str, Fingerprint]] = []

    def generate(self, fp: Fingerprint, generator: object, output: Path, min_competence: float | None = 0.5,
                 ) -> Path:
        from safetensors.torch import load_file, save_file

        assert generator is self and min_competence is None  # the bench applies the check in its figures
        real = any(torch.equal(fp.vector, v.vector) for v in self.known.values())
        cap = fp.meta["capability"]
        other = next(c for c in self.oracles if c != cap)
        source = cap if real and cap in self.oracles else other
        shutil.copytree(self.oracles[source], output)
        weights = output / "adapter_model.safetensors"
        scale = 0.5 if real else 1.0
        save_file({k: v * scale if "lora_B" in k else v for k, v in load_file(weights).items()}, weights)
        shutil.copytree(output, self.keep / output.name)
        self.calls.append((output.name, fp))
        return output


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A saved tiny LLaMA target with cached oracles, a saved tiny GPT-2 source and an extractor."""
    from umaf.extractor import CapabilityExtractor

    root = tmp_path_factory.mktemp("transfer")
    for family in ("llama", "gpt2"):
        loaded = build_tiny(family, "xs", seed=5)
        loaded.model.save_pretrained(root / family)
        loaded.tokenizer.save_pretrained(root / family)
    target, source = str(root / "llama"), str(root / "gpt2")
    config = OracleConfig(steps=3, batch_size=4, lr=2e-2, eval_examples=8)
    oracles = {cap: train_oracle(target, cap, config, progress=False) for cap in ("uppercase", "capital")}
    torch.manual_seed(0)
    return {"target": target, "source": source, "oracles": oracles, "extractor": CapabilityExtractor()}


def test_run_measures_what_each_adapter_does(setup: dict, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    import umaf.bench.transfer as transfer
    import umaf.evaluation
    from umaf.capabilities import Example, write_jsonl
    from umaf.evaluation import perplexity
    from umaf.models import load

    source = setup["source"]
    user = tmp_path / "files" / "mytask.jsonl"
    user.parent.mkdir()
    write_jsonl([Example(f"w{i}", f"w{i}w") for i in range(40)], user)
    plan = TransferPlan(setup["target"], ["uppercase"], [], ["capital"], [source], [],
                        ["uppercase", "reverse"], eval_limit=8, user=[str(user)])
    fps = transfer.read_fingerprints(plan, setup["extractor"])
    monkeypatch.setattr(transfer, "read_fingerprints", lambda p, e: fps)
    codes: dict[tuple[str, str | None], float] = {}
    real_evaluate = umaf.evaluation.evaluate

    def evaluate(loaded, cap, adapter=None, limit=None):  # noqa: ANN001, ANN202
        assert limit == 8 and 0.0 <= real_evaluate(loaded, cap, adapter, limit=limit) <= 1.0
        key = (cap, None if adapter is None else Path(adapter).name)
        return codes.setdefault(key, 0.02 + 0.11 * len(codes))  # a distinct figure per (capability, adapter)

    monkeypatch.setattr(umaf.evaluation, "evaluate", evaluate)
    stand_in = StandInGenerator(setup["oracles"], fps, tmp_path)
    generate = functools.partial(stand_in.generate, min_competence=None)  # as bench_transfer wires it
    out = run_transfer(plan, setup["extractor"], stand_in, generate, progress=False)
    rows = {r["capability"]: r for r in out["capabilities"]}
    assert rows["capital"]["group"] == "heldout" and rows["uppercase"]["group"] == "seen"
    assert rows[str(user)]["group"] == "user" and sorted(user.parent.iterdir()) == [user]  # nothing added
    target, given = load(setup["target"]), dict(stand_in.calls)
    for i, (cap, row) in enumerate(rows.items()):  # each figure comes from the adapter it names
        tag = adapter_tag(i, cap)
        reading, control = fps[source, cap], given[f"{tag}-random"]
        assert torch.equal(given[f"{tag}-0"].vector, reading.vector)  # the source's own reading
        assert control.meta == reading.meta and not torch.equal(control.vector, reading.vector)
        assert torch.equal(given[f"{tag}-wrong"].vector, fps[source, row["wrong_from"]].vector)
        assert row["wrong_from"] != cap and row["retrieved"] != cap and row["retrieved"] in plan.world
        assert torch.equal(given[f"{tag}-retrieval"].vector, fps[source, row["retrieved"]].vector)
        assert torch.equal(given[f"{tag}-untrained-0"].vector, fps["random-init", cap].vector)
        oracle_name = setup["oracles"][cap].name if cap in setup["oracles"] else None
        base = codes[cap, None]
        oracle = codes[cap, oracle_name] if oracle_name else row["oracle"]
        assert (row["base"], row["oracle"]) == (base, oracle)
        assert row["generated"] == {source: codes[cap, f"{tag}-0"]}
        assert row["random"] == codes[cap, f"{tag}-random"] and row["wrong"] == codes[cap, f"{tag}-wrong"]
        assert row["multitask"] == codes[cap, Path(out["multitask_path"]).name]
        assert row["recovery"][source] == pytest.approx((row["generated"][source] - base) / (oracle - base))
        # random models lack every capability: `umaf generate` would refuse them, the target stays at base
        assert row["competence"]["random-init"] == 0.0 and {"random-init", source} <= set(row["refused"])
        assert row["recovery_untrained"] == pytest.approx(0.0) and row["recovery_qualified"] == {}
        assert row["recovery_untrained_ungated"] == pytest.approx(
            (row["untrained"]["random-init"] - base) / (oracle - base))
        assert row["perplexity_generated"] == pytest.approx(perplexity(target, tmp_path / f"{tag}-0"))
        if oracle_name:
            assert row["perplexity_oracle"] == pytest.approx(perplexity(target, setup["oracles"][cap]))
    assert out["perplexity_base"] == pytest.approx(perplexity(target, None))
    assert out["recovery_seen"] == pytest.approx(rows["uppercase"]["recovery_out_of_sample"])
    assert out["recovery_heldout"] == pytest.approx(rows["capital"]["recovery_out_of_sample"])
    assert out["n_train_capabilities"] == 2 and out["multitask_train_seconds"] > 0
    json.dumps(out)


def test_suite_is_registered_and_asks_for_a_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    from umaf.bench.registry import SUITES
    from umaf.errors import UmafError

    assert SUITES.get("transfer") is bench_transfer
    with pytest.raises(UmafError, match="generator"):
        bench_transfer(quick=True, target="zoo:nothing-here")


def test_suite_wires_the_generator_api(setup: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import umaf.bench.transfer as transfer
    import umaf.extractor
    import umaf.generator

    plan = TransferPlan(setup["target"], ["uppercase"], [], [], [setup["source"]], [],
                        ["uppercase", "reverse"], eval_limit=4)
    fps = transfer.read_fingerprints(plan, setup["extractor"])
    stand_in = StandInGenerator(setup["oracles"], fps, tmp_path)
    monkeypatch.setattr(umaf.generator, "default_generator", lambda target: stand_in)
    monkeypatch.setattr(umaf.generator, "generate_adapter", stand_in.generate)
    monkeypatch.setattr(umaf.extractor, "default_extractor", lambda: setup["extractor"])
    monkeypatch.setattr(transfer, "plan_transfer", lambda target, quick, generator, tasks: plan)
    monkeypatch.setattr(transfer, "read_fingerprints", lambda p, e: fps)
    out = bench_transfer(quick=True, target=setup["target"])
    assert out["target"] == setup["target"]
    assert [r["capability"] for r in out["capabilities"]] == ["uppercase"]


def test_user_files_are_a_group_with_oracles_outside_the_library(setup: dict, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from umaf.adapters.oracles import library
    from umaf.bench.transfer import ensure_oracle
    from umaf.capabilities import Example, write_jsonl
    from umaf.models import load

    path = tmp_path / "capital.jsonl"  # named like a built-in, with other contents
    write_jsonl([Example(f"w{i}", f"x{i}") for i in range(40)], path)
    report = {"e2e_capabilities": ["uppercase"], "sources": ["m"], "val_sources": [setup["source"]]}
    plan = plan_transfer(setup["target"], True, SimpleNamespace(training_report=report), [str(path)])
    assert plan.user == [str(path)] and plan.group(str(path)) == "user" and str(path) in plan.capabilities
    loaded = load(setup["target"])
    before = {e.path for e in library(setup["target"])}
    entry = ensure_oracle(loaded, setup["target"], str(path), progress=False)
    assert entry.path != setup["oracles"]["capital"] and "baselines" in entry.path.parts
    assert {e.path for e in library(setup["target"])} == before  # no generator reads it as a library oracle
    assert ensure_oracle(loaded, setup["target"], str(path), progress=False).path == entry.path  # cached
