"""Fusion (M4) and size (M5) suites: planning, figures and missing-dependency errors, with stand-ins for
the generator, the oracle library and the target; and the PEFT merges on a real tiny target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import umaf
from umaf.bench import fusion as fusion_bench
from umaf.bench import size as size_bench
from umaf.bench.registry import SUITES
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.fusion import FUSION_MODES
from umaf.interpolator import InterpolatorConfig, Scale, SizeInterpolator, ZooFingerprint
from umaf.models import TINY_SIZES
from umaf.zoo import ZooEntry

CAPS = ("reverse", "uppercase", "add", "plural")
PARAMS = {"xs": 30_000, "s": 170_000, "m": 460_000}
BASE, SINGLE, FUSED, ORACLE, MERGED = 0.1, 0.9, 0.8, 0.95, 0.5


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

    def merge(adapters, method: str, weight: float, out: Path) -> Path:
        assert method in fusion_bench.MERGES
        out.mkdir(parents=True)
        (out / "made.json").write_text(json.dumps({"caps": [p.name for p in adapters], "merge": method}))
        return out

    def evaluate(cap: str, adapter: Path | None) -> float:
        if adapter is None:
            return BASE
        made = json.loads((adapter / "made.json").read_text())
        if cap not in made["caps"]:
            return BASE
        if "oracle" in made:
            return ORACLE
        if "merge" in made:
            return MERGED
        return (SINGLE if len(made["caps"]) == 1 else FUSED) - (0.0 if made.get("moved") else 0.2)

    oracles = {}
    for cap in (*CAPS, "subtract"):
        oracles[cap] = tmp_path / "oracles" / cap
        oracles[cap].mkdir(parents=True)
        (oracles[cap] / "made.json").write_text(json.dumps({"caps": [cap], "oracle": True}))
    return fusion_bench.Toolkit(
        target="zoo:llama-m-a", generate=generate, evaluate=evaluate, fingerprint=stand_in_fp,
        oracles=oracles, zoo=zoo_entries(tmp_path), merge=merge, target_family="llama",
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ M4


def test_suites_pass_the_target_on_and_default_to_the_zoo_llama(monkeypatch: pytest.MonkeyPatch,
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
    assert asked == ["zoo:llama-m-a", "zoo:other"] * 2 and not list(tmp_path.iterdir())
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
    assert fusion_bench.kept_fraction(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert fusion_bench.kept_fraction(0.5, 0.1, 0.12) is None


def test_fusion_suite_figures_with_stand_ins(tmp_path: Path) -> None:
    results = fusion_bench.run_fusion(stand_in_toolkit(tmp_path), quick=True)
    assert results["m4_capabilities"] == sorted(CAPS), "held-out capabilities are not fused"
    fused_keep = (FUSED - 0.2 - BASE) / (SINGLE - 0.2 - BASE)
    assert results["m4_keep_fraction"] == pytest.approx(fused_keep)
    assert results["m4_best_peft_merge_keep_fraction"] == pytest.approx((MERGED - BASE) / (ORACLE - BASE))
    query_free = [f"fused_{m}" for m in FUSION_MODES.names() if not FUSION_MODES.get(m).uses_gate]
    assert results["m4_mode"] in query_free and "fused_gated" not in query_free
    assert results["m4_best_peft_merge"].removeprefix("peft_") in fusion_bench.MERGES
    record = results["combinations"][0]
    assert set(record["accuracy"]) == {*query_free, "peft_linear", "peft_ties", "peft_dare_linear"}
    assert len({s.split("-")[0] for s in record["sources"]}) == len(record["capabilities"])
    assert 0 < record["fused_norm"]["fused_average"] < record["fused_norm"]["fused_slerp"] + 1e-6


def test_recorded_gains_preselect_capabilities(tmp_path: Path) -> None:
    kit = stand_in_toolkit(tmp_path)
    measured = []
    evaluate = kit.evaluate
    kit.evaluate = lambda cap, adapter: measured.append(cap) or evaluate(cap, adapter)
    kit.oracles["add_k:7"] = kit.oracles["add"]  # no zoo model learnt it: no source can be read
    kit.recorded_gain = {"reverse": 0.0, "uppercase": 0.9, "add": 0.5, "plural": 0.7, "add_k:7": 1.0}
    caps, base, oracle = fusion_bench.reference_accuracies(kit, quick=True)
    assert caps == ["uppercase", "plural", "add"] and set(measured) == set(caps)
    assert base == dict.fromkeys(caps, BASE) and oracle == dict.fromkeys(caps, ORACLE)


def test_fusion_suite_needs_learnable_capabilities(tmp_path: Path) -> None:
    kit = stand_in_toolkit(tmp_path)
    kit.evaluate = lambda cap, adapter: BASE
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


@pytest.mark.parametrize("method", fusion_bench.MERGES)
def test_peft_merge_on_a_tiny_target(method: str, tiny_llama, tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    from umaf.models import build_tiny

    target = tmp_path / "target"
    tiny_llama.model.save_pretrained(target)
    tiny_llama.tokenizer.save_pretrained(target)
    adapters = []
    for i in range(2):
        fresh = build_tiny("llama", "xs", seed=0).model
        peft = get_peft_model(fresh, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(i))
        peft.save_pretrained(tmp_path / f"lora{i}")
        adapters.append(tmp_path / f"lora{i}")
    merged = fusion_bench.peft_merge(str(target), adapters, method, 1.0, tmp_path / "merged")
    assert (merged / "adapter_config.json").is_file()
    loaded = PeftModel.from_pretrained(build_tiny("llama", "xs", seed=0).model, str(merged))
    b = [p for n, p in loaded.named_parameters() if "lora_B" in n]
    assert b and any(p.abs().sum() > 0 for p in b)


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
    gain = ORACLE - BASE
    assert results["m5_recovery_with"] == pytest.approx((SINGLE - BASE) / gain)
    assert results["m5_recovery_without"] == pytest.approx((SINGLE - 0.2 - BASE) / gain)
    rows = results["m5_transfer_rows"]
    assert rows and all(r["size"] != "m" for r in rows) and rows[0]["size"] == "s"
