"""Fusion (M4) and size (M5) suites: planning, figures and missing-dependency errors, with stand-ins for
the generator, the oracle library and the target; and the PEFT merges on a real tiny target."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import umaf
from umaf.adapters.merge import PEFT_MERGES
from umaf.bench import fusion as fusion_bench
from umaf.bench import size as size_bench
from umaf.bench.registry import SUITES
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.interpolator import InterpolatorConfig, Scale, SizeInterpolator, ZooFingerprint
from umaf.models import TINY_SIZES
from umaf.zoo import ZooEntry

CAPS = ("reverse", "uppercase", "add", "plural")
PARAMS = {"xs": 30_000, "s": 170_000, "m": 460_000}
BASE, SINGLE, FUSED, ORACLE, MERGED, DISTILLED = 0.1, 0.9, 0.8, 0.95, 0.5, 0.65
INSEPARABLE = {"reverse", "uppercase"}  # the stand-in target cannot tell these inputs apart


def zoo_entries(tmp_path: Path) -> list[ZooEntry]:
    """Stand-in zoo: four families at size s (gpt2 and llama also xs and m), all trained on CAPS."""
    entries = []
    for family, sizes in (("gpt2", "xs s m"), ("llama", "xs s m"), ("bert", "s"), ("mixtral", "s")):
        for size in sizes.split():
            name = f"{family}-{size}-a"
            acc = dict.fromkeys(CAPS, 0.9)
            entries.append(ZooEntry(name, family, size, CAPS, acc, tmp_path / name, subset="a"))
    return entries


def stand_in_fp(entry: ZooEntry, cap: str) -> Fingerprint:
    layers, width = TINY_SIZES[entry.size]
    seed = sum(map(ord, cap + entry.family)) * 10 + len(entry.size)
    vector = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(seed)), dim=0)
    meta = {
        "model": entry.model_id, "family": entry.family, "architecture": entry.family,
        "n_params": PARAMS[entry.size], "n_layers": layers, "width": width, "capability": cap,
        "probe_hash": "0" * 16, "extractor_hash": "x", "umaf_version": umaf.__version__,
    }  # fmt: skip
    return Fingerprint(vector, None, meta)


def stand_in_toolkit(tmp_path: Path) -> fusion_bench.Toolkit:
    """Adapters are folders with a JSON of what they hold; accuracy follows from that."""

    def generate(fp: Fingerprint, out: Path) -> Path:
        out.mkdir(parents=True)
        caps = fp.meta["capability"].split("+")
        (out / "made.json").write_text(json.dumps({"caps": caps, "moved": "target_scale" in fp.meta}))
        return out

    def merge(adapters, method: str, caps, out: Path, weight: float, steps: int) -> Path:
        assert method == "distil" or method in PEFT_MERGES
        out.mkdir(parents=True)
        (out / "made.json").write_text(json.dumps({"caps": list(caps), "merge": method, "weight": weight}))
        return out

    def multitask(caps) -> Path:
        out = tmp_path / "multitask" / "+".join(caps)
        out.mkdir(parents=True)
        (out / "made.json").write_text(json.dumps({"caps": list(caps), "oracle": True}))
        return out

    def evaluate(cap: str, adapter: Path | None, split: str = "eval") -> float:
        if adapter is None:
            return BASE
        made = json.loads((adapter / "made.json").read_text())
        if cap not in made["caps"]:
            return BASE
        if "oracle" in made:
            return ORACLE
        if made.get("merge") == "distil":  # best on validation, below the fused adapters on eval
            return DISTILLED if split == "probe" else DISTILLED - 0.1
        if "merge" in made:  # validation prefers weight 0.5, eval weight 1: the choice must follow validation
            return MERGED + (0.05 if (made["weight"] == 0.5) == (split == "probe") else 0.0)
        return (SINGLE if len(made["caps"]) == 1 else FUSED) - (0.0 if made.get("moved") else 0.2)

    oracles = {}
    for cap in (*CAPS, "subtract"):
        oracles[cap] = tmp_path / "oracles" / cap
        oracles[cap].mkdir(parents=True)
        (oracles[cap] / "made.json").write_text(json.dumps({"caps": [cap], "oracle": True}))
    return fusion_bench.Toolkit(
        target="zoo:llama-m-a", generate=generate, evaluate=evaluate, fingerprint=stand_in_fp,
        oracles=oracles, zoo=zoo_entries(tmp_path), merge=merge, target_family="llama", multitask=multitask,
        separability=lambda caps: 0.5 if set(caps) >= INSEPARABLE else 1.0,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ M4


def test_suites_pass_the_target_on_and_have_their_defaults(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    from umaf.bench import run_benchmark

    asked = []

    def stop(target: str, **_: object) -> None:
        asked.append(target)
        raise UmafError("stop here")

    monkeypatch.setattr(fusion_bench, "resolve_toolkit", stop)
    monkeypatch.setattr(size_bench, "resolve_toolkit", stop)
    monkeypatch.setattr(size_bench, "default_interpolator", lambda: None)
    for suite in ("fusion", "size"):
        assert suite in SUITES
        for target in (None, "zoo:other"):
            with pytest.raises(UmafError, match="stop here"):
                run_benchmark(suite, tmp_path / f"{suite}.json", quick=True, target=target)
    assert asked == ["smollm2", "zoo:other", "zoo:llama-m-a", "zoo:other"] and not list(tmp_path.iterdir())
    with pytest.raises(UmafError, match="takes no --target"):
        run_benchmark("fingerprints", tmp_path / "f.json", quick=True, target="zoo:other")


def test_plan_and_sources() -> None:
    quick = fusion_bench.plan_combinations(CAPS, quick=True)
    assert [len(c) for c in quick] == [2, 2, 3]
    full = fusion_bench.plan_combinations(CAPS, quick=False)
    assert len(full) == 6 + 4 and len(set(full)) == len(full)
    sources = fusion_bench.pick_sources(("reverse", "add", "plural"), zoo_entries(Path("/z")), "llama")
    assert sources is not None and len({s.family for s in sources}) == 3
    assert "llama" not in {s.family for s in sources}, "the target's family comes last"
    assert fusion_bench.pick_sources(CAPS[:1] * 5, zoo_entries(Path("/z")), "llama") is None
    trained = {s.model_id for s in sources}  # the generator's training sources are never picked
    others = fusion_bench.pick_sources(("reverse", "add"), zoo_entries(Path("/z")), "llama", trained)
    assert others is not None and not {s.model_id for s in others} & trained
    assert fusion_bench.kept_fraction(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert fusion_bench.kept_fraction(0.5, 0.1, 0.12) is None


def test_fusion_suite_figures_with_stand_ins(tmp_path: Path) -> None:
    kit = stand_in_toolkit(tmp_path)
    asked, evaluate = [], kit.evaluate
    kit.evaluate = lambda cap, adapter, split="eval": asked.append((cap, str(adapter), split)) or evaluate(
        cap, adapter, split)
    results = fusion_bench.run_fusion(kit, quick=False)
    assert asked and len(asked) == len(set(asked)), "every accuracy is measured once"
    assert results["m4_combinations_without_sources"] == 0
    assert results["m4_capabilities"] == sorted(CAPS), "held-out capabilities are not fused"
    single = SINGLE - 0.2 - BASE  # generated single adapters (not moved to the target's scale)
    assert results["m4_mode"] == "distil", "the headline method is chosen on validation"
    assert results["m4_keep_fraction"] == pytest.approx((DISTILLED - 0.1 - BASE) / single)
    assert results["m4_keep_fraction_fused_average"] == pytest.approx((FUSED - 0.2 - BASE) / single)
    assert results["m4_keep_fraction_fused_average"] > results["m4_keep_fraction"]
    assert results["m4_best_peft_merge"].removeprefix("peft_") in PEFT_MERGES
    assert results["m4_best_peft_merge_keep_fraction"] == pytest.approx((MERGED - BASE) / single)
    assert results["m4_oracle_multitask_keep_fraction"] == pytest.approx(1.0)
    assert results["m4_keep_fraction_margin"] == pytest.approx((DISTILLED - 0.1 - MERGED) / single)
    records = results["combinations"]
    apart = [r for r in records if set(r["capabilities"]) >= INSEPARABLE]
    assert apart and results["m4_combinations_inseparable"] == len(apart)
    assert results["m4_combinations"] + len(apart) == len(records)
    record = records[0]
    assert set(record["accuracy"]) == {"fused_average", "fused_slerp", "distil", "oracle_multitask",
                                       *(f"peft_{m}" for m in PEFT_MERGES)}  # fmt: skip
    assert record["setting"]["peft_linear"] == "weight 0.5", "settings are chosen on validation"
    assert record["accuracy"]["peft_linear"] == dict.fromkeys(record["capabilities"], MERGED)
    assert len({s.split("-")[0] for s in record["sources"]}) == len(record["capabilities"])


def test_recorded_gains_preselect_capabilities(tmp_path: Path) -> None:
    kit = stand_in_toolkit(tmp_path)
    measured = []
    evaluate = kit.evaluate
    kit.evaluate = lambda cap, adapter, split="eval": measured.append(cap) or evaluate(cap, adapter, split)
    kit.oracles["add_k:7"] = kit.oracles["add"]  # no zoo model learnt it: no source can be read
    kit.recorded_gain = {"reverse": 0.0, "uppercase": 0.9, "add": 0.5, "plural": 0.7, "add_k:7": 1.0}
    caps, base, oracle = fusion_bench.reference_accuracies(kit, quick=True)
    assert caps == ["uppercase", "plural", "add"] and set(measured) == set(caps)
    assert base == dict.fromkeys(caps, BASE) and oracle == dict.fromkeys(caps, ORACLE)


def test_fusion_suite_needs_learnable_capabilities(tmp_path: Path) -> None:
    kit = stand_in_toolkit(tmp_path)
    kit.evaluate = lambda cap, adapter, split="eval": BASE
    with pytest.raises(UmafError, match="gain"):
        fusion_bench.run_fusion(kit, quick=True)


def test_missing_dependencies_name_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_shipped: None
) -> None:
    import umaf.extractor
    import umaf.zoo
    from umaf.zoo import fingerprints as zoo_fps

    monkeypatch.setattr(umaf.zoo, "list_zoo", lambda quick=False: [])
    monkeypatch.setattr(umaf.extractor, "default_extractor_dir", lambda: tmp_path / "no-extractor")
    with pytest.raises(UmafError, match="umaf zoo build"):
        fusion_bench.bench_fusion(quick=True)
    monkeypatch.setattr(zoo_fps, "require_zoo", lambda *a, **k: zoo_entries(tmp_path))
    with pytest.raises(UmafError, match="umaf train extractor"):
        fusion_bench.resolve_toolkit("zoo:llama-m-a")
    monkeypatch.setattr(zoo_fps, "require_default_extractor", lambda: object())
    with pytest.raises(UmafError, match="umaf train lora --target zoo:llama-m-a"):
        fusion_bench.resolve_toolkit("zoo:llama-m-a")
    import umaf.adapters.oracles

    entry = umaf.adapters.oracles.OracleEntry("reverse", tmp_path, 0.1, 0.9, 1.0)
    monkeypatch.setattr(umaf.adapters.oracles, "library", lambda target: [entry])
    with pytest.raises(UmafError, match="umaf train generator --target zoo:llama-m-a"):
        fusion_bench.resolve_toolkit("zoo:llama-m-a")
    with pytest.raises(UmafError, match="umaf train interpolator"):
        size_bench.bench_size(quick=True)


# ------------------------------------------------------------------------------------------------ M5


def size_samples() -> list[ZooFingerprint]:
    gen = torch.Generator().manual_seed(0)
    drift = F.normalize(torch.randn(512, generator=gen), dim=0)
    samples = []
    for family in ("gpt2", "llama"):
        for subset in ("a", "b"):
            for cap in (*CAPS, "subtract"):
                base = F.normalize(torch.randn(512, generator=gen), dim=0)
                for size in ("xs", "s", "m"):
                    entry = ZooEntry(
                        f"{family}-{size}-{subset}", family, size, CAPS, {}, Path("/z"), subset=subset
                    )
                    fp = stand_in_fp(entry, cap)
                    t = math.log10(PARAMS[size] / PARAMS["xs"])
                    fp = Fingerprint(F.normalize(base + t * drift, dim=0), None, fp.meta)
                    samples.append(ZooFingerprint(fp, entry.model_id, family, size, subset, True, 1.0))
    return samples


def test_size_suite_figures_with_stand_ins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    interpolator = SizeInterpolator(InterpolatorConfig(hidden=8, extractor_hash="x"))
    interpolator.train_report = {"families": ["gpt2", "llama"], "held_out_sizes": ["s"], "capabilities": []}
    monkeypatch.setattr(size_bench, "default_interpolator", lambda: interpolator)
    monkeypatch.setattr(size_bench, "resolve_toolkit", lambda target, **_: stand_in_toolkit(tmp_path))
    monkeypatch.setattr(size_bench, "size_samples", lambda interp, quick: size_samples())
    monkeypatch.setattr(size_bench, "_target_scale", lambda kit: Scale(PARAMS["m"], 4, 96))
    results = size_bench.bench_size(quick=True)
    assert results["m5_cosine_interpolated"] == pytest.approx(results["m5_cosine_identity"]), (
        "untrained = identity"
    )
    assert results["m5_pairs_heldout_capability"] > 0 and results["m5_pairs_seen_capability"] > 0
    assert results["m5_pairs_to_heldout_size"] == results["m5_pairs_from_heldout_size"]
    assert results["m5_cosine_same_size_other_subset"] < results["m5_cosine_identity"]
    assert results["m5_cosine_other_size_other_subset"] < results["m5_cosine_identity"]
    assert results["m5_cosine_hindsight_offset"] > results["m5_cosine_identity"] + 0.05  # drift is a shift
    gain = ORACLE - BASE
    assert results["m5_recovery_with"] == pytest.approx((SINGLE - BASE) / gain)
    assert results["m5_recovery_without"] == pytest.approx((SINGLE - 0.2 - BASE) / gain)
    rows = results["m5_transfer_rows"]
    assert rows and all(r["size"] != "m" for r in rows) and rows[0]["size"] == "s"


def test_size_transfer_never_reads_the_generators_training_sources(tmp_path: Path) -> None:
    kit = stand_in_toolkit(tmp_path)
    every = size_bench.transfer_sources(kit, CAPS[0], "m", ["gpt2", "llama"], quick=False)
    trained = {every[0].model_id}
    kit = dataclasses.replace(kit, trained_sources=trained)
    rest = size_bench.transfer_sources(kit, CAPS[0], "m", ["gpt2", "llama"], quick=False)
    assert rest and not {e.model_id for e in rest} & trained
