"""Transfer suite: recovery arithmetic, the oracle-gain exclusion, a whole run with a stand-in generator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from umaf.adapters.oracles import OracleConfig, train_oracle
from umaf.bench.transfer import (
    MIN_ORACLE_GAIN,
    TransferPlan,
    aggregate,
    bench_transfer,
    pick_source,
    random_fingerprint,
    recovery,
    run_transfer,
    transfer_capabilities,
)
from umaf.config import FINGERPRINT_DIM, HELD_OUT_CAPABILITIES
from umaf.fingerprint import Fingerprint
from umaf.models import build_tiny


def _row(cap: str, base: float, oracle: float, generated: dict[str, float], random: float,
         held_out: bool = False, seconds: float = 10.0) -> dict:
    """A measured row as :func:`measure_capability` makes it (perplexities included)."""
    mean = sum(generated.values()) / len(generated)
    return {"capability": cap, "held_out": held_out, "base": base, "oracle": oracle, "random": random,
            "oracle_gain": oracle - base, "included": oracle - base >= MIN_ORACLE_GAIN,
            "generated": generated, "generated_mean": mean, "oracle_train_seconds": seconds,
            "recovery": {s: recovery(a, base, oracle) for s, a in generated.items()},
            "recovery_mean": recovery(mean, base, oracle), "recovery_random": recovery(random, base, oracle),
            "gen_seconds": [0.2, 0.4], "perplexity_generated": 11.0, "perplexity_oracle": 10.5}


def test_recovery_arithmetic() -> None:
    assert recovery(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert recovery(0.9, 0.1, 0.9) == pytest.approx(1.0)
    assert recovery(0.0, 0.1, 0.9) == pytest.approx(-0.125)
    assert recovery(0.3, 0.5, 0.5) is None and recovery(0.3, 0.5, 0.4) is None


def test_aggregate_leaves_out_weak_oracles() -> None:
    families = {"zoo:gpt2-m-b": "gpt2", "zoo:t5-s-b": "t5", "minilm": "minilm"}
    rows = [
        _row("plural", 0.0, 1.0, {"zoo:gpt2-m-b": 0.8, "minilm": 0.6}, 0.1, seconds=30.0),
        _row("reverse", 0.2, 0.6, {"zoo:gpt2-m-b": 0.4, "minilm": 0.4}, 0.2),
        _row("capital", 0.1, 0.9, {"zoo:t5-s-b": 0.5, "minilm": 0.3}, 0.1, held_out=True),
        _row("parity", 0.5, 0.55, {"zoo:gpt2-m-b": 0.0, "minilm": 0.0}, 0.0),  # oracle gains 0.05: excluded
    ]
    out = aggregate(rows, families, base_perplexity=10.0)
    assert out["excluded"] == ["parity"] and out["n_included_seen"] == 2 and out["n_included_heldout"] == 1
    assert out["recovery_seen"] == pytest.approx((0.7 + 0.5) / 2)  # plural: mean 0.7; reverse: 0.2 / 0.4
    assert out["recovery_heldout"] == pytest.approx(0.3 / 0.8)  # capital: mean 0.4
    assert out["recovery_random_control"] == pytest.approx((0.1 + 0.0 + 0.0) / 3)
    assert out["recovery_heldout_family"] == pytest.approx(0.5)  # t5 on capital: 0.4 / 0.8
    by_family = out["recovery_by_source_family"]
    assert by_family["gpt2"] == {"seen": pytest.approx(0.65), "heldout": None}
    assert by_family["minilm"]["heldout"] == pytest.approx(0.25)
    assert out["gen_seconds"] == pytest.approx(0.3) and out["oracle_train_seconds"] == pytest.approx(10.0)
    assert out["perplexity_rise"] == pytest.approx(0.1)
    assert out["perplexity_rise_oracle"] == pytest.approx(0.05)
    assert out["accuracy_oracle"] == pytest.approx((1.0 + 0.6 + 0.9) / 3)


def test_aggregate_with_nothing_included() -> None:
    out = aggregate([_row("parity", 0.5, 0.55, {"minilm": 0.5}, 0.5)], {})
    assert out["recovery_seen"] is None and out["recovery_random_control"] is None
    assert out["perplexity_base"] is None and out["excluded"] == ["parity"]
    json.dumps(out)  # no NaN in the JSON


def test_random_fingerprint_keeps_the_metadata() -> None:
    fp = Fingerprint(torch.ones(FINGERPRINT_DIM), torch.ones(8), {"capability": "plural", "family": "gpt2"})
    control = random_fingerprint(fp, seed=3)
    assert control.meta == fp.meta and control.meta is not fp.meta
    assert control.vector.norm() == pytest.approx(1.0)
    assert torch.equal(control.vector, random_fingerprint(fp, seed=3).vector)
    assert not torch.equal(control.vector, random_fingerprint(fp, seed=4).vector)


def test_planning_helpers() -> None:
    from types import SimpleNamespace

    entries = [SimpleNamespace(name="gpt2-xs-a", size="xs", trained=("plural",)),
               SimpleNamespace(name="gpt2-m-b", size="m", trained=("reverse",)),
               SimpleNamespace(name="gpt2-s-c", size="s", trained=("reverse",))]
    assert pick_source(entries, "plural").name == "gpt2-xs-a"  # trained on it beats size
    assert pick_source(entries, "reverse").name == "gpt2-m-b"
    caps = transfer_capabilities(("plural", "capital"), quick=False)
    assert "plural" not in caps and "capital" in caps and "reverse" in caps
    real = transfer_capabilities((), quick=False)
    assert len(real) >= 6 and sum(c in HELD_OUT_CAPABILITIES for c in real) >= 2


class StandInGenerator:
    """Writes, for a source's fingerprint, its capability's oracle at half strength (B halved) and, for
    any other fingerprint (the random control), the oracle of another capability; keeps a copy of every
    adapter it writes and the fingerprint it was given, so a test can measure them itself."""

    def __init__(self, oracles: dict[str, Path], fps: dict, keep: Path) -> None:
        self.oracles, self.known, self.keep = oracles, fps, keep
        self.calls: list[tuple[str, Fingerprint]] = []

    def generate(self, fp: Fingerprint, generator: object, output: Path) -> Path:
        from safetensors.torch import load_file, save_file

        assert generator is self
        real = any(torch.equal(fp.vector, v.vector) for v in self.known.values())
        cap = fp.meta["capability"]
        source = cap if real else next(c for c in self.oracles if c != cap)
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
    from umaf.evaluation import perplexity
    from umaf.models import load

    source = setup["source"]
    caps = ["uppercase", "capital"]
    plan = TransferPlan(setup["target"], caps, {c: [source] for c in caps}, {source: "gpt2"}, eval_limit=8)
    fps = transfer.read_fingerprints(plan, setup["extractor"])
    monkeypatch.setattr(transfer, "read_fingerprints", lambda p, e: fps)
    codes: dict[tuple[str, str | None], float] = {}
    real_evaluate = umaf.evaluation.evaluate

    def evaluate(loaded, cap, adapter=None, limit=None):  # noqa: ANN001, ANN202
        assert limit == 8 and 0.0 <= real_evaluate(loaded, cap, adapter, limit=limit) <= 1.0
        key = (cap, None if adapter is None else Path(adapter).name)
        return codes.setdefault(key, 0.05 + 0.1 * len(codes))  # a distinct accuracy per (capability, adapter)

    monkeypatch.setattr(umaf.evaluation, "evaluate", evaluate)
    stand_in = StandInGenerator(setup["oracles"], fps, tmp_path)
    out = run_transfer(plan, setup["extractor"], stand_in, stand_in.generate, progress=False)
    rows = {r["capability"]: r for r in out["capabilities"]}
    assert rows["capital"]["held_out"] and not rows["uppercase"]["held_out"]
    target, given = load(setup["target"]), dict(stand_in.calls)
    for cap, row in rows.items():  # each figure comes from the adapter it names
        reading, control = fps[source, cap], given[f"{cap}-random"]
        assert torch.equal(given[f"{cap}-0"].vector, reading.vector)  # the source's own reading
        assert control.meta == reading.meta and not torch.equal(control.vector, reading.vector)
        base, oracle = codes[cap, None], codes[cap, setup["oracles"][cap].name]
        assert (row["base"], row["oracle"]) == (base, oracle)
        assert row["oracle_gain"] == pytest.approx(oracle - base)
        assert row["generated"] == {source: codes[cap, f"{cap}-0"]}
        assert row["random"] == codes[cap, f"{cap}-random"]
        assert row["recovery"][source] == pytest.approx((row["generated"][source] - base) / (oracle - base))
        assert row["perplexity_generated"] == pytest.approx(perplexity(target, tmp_path / f"{cap}-0"))
        assert row["perplexity_oracle"] == pytest.approx(perplexity(target, setup["oracles"][cap]))
        assert row["oracle_train_seconds"] > 0 and len(row["gen_seconds"]) == 2
    assert len(codes) == 4 * len(caps)  # base, oracle, generated and control, once each
    assert out["perplexity_base"] == pytest.approx(perplexity(target, None))
    seen, held = rows["uppercase"], rows["capital"]
    assert out["recovery_seen"] == pytest.approx(seen["recovery_mean"])
    assert out["recovery_heldout"] == pytest.approx(held["recovery_mean"])
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

    plan = TransferPlan(setup["target"], ["uppercase"], {"uppercase": [setup["source"]]}, eval_limit=4)
    fps = transfer.read_fingerprints(plan, setup["extractor"])
    stand_in = StandInGenerator(setup["oracles"], fps, tmp_path)
    monkeypatch.setattr(umaf.generator, "default_generator", lambda target: stand_in)
    monkeypatch.setattr(umaf.generator, "generate_adapter", stand_in.generate)
    monkeypatch.setattr(umaf.extractor, "default_extractor", lambda: setup["extractor"])
    monkeypatch.setattr(transfer, "plan_transfer", lambda target, quick: plan)
    monkeypatch.setattr(transfer, "read_fingerprints", lambda p, e: fps)
    out = bench_transfer(quick=True, target=setup["target"])
    assert out["target"] == setup["target"]
    assert [r["capability"] for r in out["capabilities"]] == ["uppercase"]
