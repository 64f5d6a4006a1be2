"""Adapter Generator: SVD step, PEFT output, file round trip, training smoke run and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from umaf.capabilities import check_trainable
from umaf.config import HELD_OUT_CAPABILITIES
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.generator import (
    AdapterGenerator,
    GeneratorConfig,
    default_generator,
    generate_adapter,
    refactor,
    svd_factors,
    target_module_specs,
)
from umaf.generator import data as generator_data
from umaf.generator.data import low_rank_factors
from umaf.models import build_tiny

EXTRACTOR_HASH = "e" * 16
TARGET = "tiny-llama-xs"


def make_fp(extractor_hash: str = EXTRACTOR_HASH, seed: int = 0) -> Fingerprint:
    meta = {
        "model": "tiny-gpt2-xs",
        "family": "gpt2",
        "architecture": "GPT2LMHeadModel",
        "n_params": 1,
        "n_layers": 2,
        "width": 32,
        "capability": "reverse",
        "probe_hash": "0" * 16,
        "extractor_hash": extractor_hash,
        "umaf_version": "0.1.0",
    }
    vector = torch.nn.functional.normalize(
        torch.randn(512, generator=torch.Generator().manual_seed(seed)), dim=0
    )
    return Fingerprint(vector, None, meta)


def small_config(**overrides: object) -> GeneratorConfig:
    base = dict(target=TARGET, rank=2, gen_rank=4, task_dim=16, emb_dim=8, hidden=32, n_blocks=1, dropout=0.0,
                e2e_steps=0)
    return GeneratorConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def generator(tiny_llama) -> AdapterGenerator:
    """A small generator for the tiny LLaMA with non-zero (random) B heads, so its adapters do something."""
    torch.manual_seed(0)
    gen = AdapterGenerator(
        small_config(), target_module_specs(tiny_llama.model, ("q_proj", "v_proj")), EXTRACTOR_HASH
    )
    for head in gen.head_b.values():
        torch.nn.init.normal_(head.weight, std=0.5)
    return gen.eval()


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------- SVD step


def test_svd_step_reproduces_a_rank_r_delta_at_exactly_rank_r() -> None:
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(20, 3, generator=gen) @ torch.randn(3, 12, generator=gen)  # rank 3, [out, in]
    a, b = svd_factors(delta, 3)
    assert a.shape == (3, 12) and b.shape == (20, 3)
    assert torch.allclose(b @ a, delta, atol=1e-4)
    assert int(torch.linalg.matrix_rank(b @ a)) == 3
    assert torch.allclose(a.norm(dim=1), b.norm(dim=0), atol=1e-5)  # singular values split evenly
    a_qr, b_qr = refactor(torch.randn(3, 12), torch.randn(20, 3), 2)  # a rank-2 truncation of a rank-3 ΔW
    assert a_qr.shape == (2, 12) and int(torch.linalg.matrix_rank(b_qr @ a_qr)) == 2


def test_refactor_is_the_best_rank_r_approximation_in_canonical_form() -> None:
    gen = torch.Generator().manual_seed(1)
    a_raw, b_raw = (
        torch.randn(2, 6, 10, generator=gen),
        torch.randn(2, 14, 6, generator=gen),
    )  # 2 modules, g=6
    a, b = refactor(a_raw, b_raw, 4)  # [2, 4, 10], [2, 14, 4]
    a_ref, b_ref = svd_factors(b_raw @ a_raw, 4)
    assert torch.allclose(a, a_ref, atol=1e-4) and torch.allclose(b, b_ref, atol=1e-4)  # same signs too
    u, s, vh = torch.linalg.svd(b_raw @ a_raw)
    best = u[..., :4] @ torch.diag_embed(s[..., :4]) @ vh[..., :4, :]
    assert torch.allclose(b @ a, best, atol=1e-4)
    a_lr, b_lr = low_rank_factors(b_raw @ a_raw, 6)  # exact factors of a rank-6 ΔW
    assert torch.allclose(b_lr @ a_lr, b_raw @ a_raw, atol=1e-3)


# ------------------------------------------------------------------------------------- PEFT directory


def test_generated_adapter_is_plain_peft(generator: AdapterGenerator, tiny_llama, tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict

    out = generate_adapter(make_fp(), generator, tmp_path / "adapter", rank=3, target=TARGET)
    assert _listing(out) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["task_type"]) == (3, 3, "CAUSAL_LM")
    assert (
        sorted(config["target_modules"]) == ["q_proj", "v_proj"]
        and config["base_model_name_or_path"] == TARGET
    )
    reference = get_peft_model(
        build_tiny("llama", "xs").model, LoraConfig(r=3, target_modules=["q_proj", "v_proj"])
    )
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(reference).items()}
    assert {k: tuple(v.shape) for k, v in load_file(out / "adapter_model.safetensors").items()} == expected

    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15]])
    base_logits = tiny_llama.model(ids).logits
    peft_model = PeftModel.from_pretrained(build_tiny("llama", "xs").model, str(out))
    with torch.no_grad():
        adapted = peft_model(ids).logits
        assert (adapted - base_logits).abs().max() > 1e-3  # the adapter changes the target's outputs
        merged = peft_model.merge_and_unload()
        assert torch.allclose(merged(ids).logits, adapted, atol=1e-4)


def test_adapter_adds_the_truncated_delta(generator: AdapterGenerator, tmp_path: Path) -> None:
    fp = make_fp(seed=3)
    out = generate_adapter(fp, generator, tmp_path / "adapter", rank=2)
    tensors = load_file(out / "adapter_model.safetensors")
    deltas = generator.delta_weights(fp.vector)
    for spec in generator.module_specs:
        a, b = tensors[spec.lora_a_key], tensors[spec.lora_b_key]
        assert a.shape == (2, spec.in_features) and b.shape == (spec.out_features, 2)
        u, s, vh = torch.linalg.svd(deltas[spec.name])
        assert torch.allclose(b @ a, u[:, :2] @ torch.diag(s[:2]) @ vh[:2], atol=1e-5)


def test_generation_is_deterministic_and_untrained_generator_is_a_no_op(tiny_llama, tmp_path: Path) -> None:
    fresh = AdapterGenerator(
        small_config(), target_module_specs(tiny_llama.model, ["q_proj"]), EXTRACTOR_HASH
    )
    out = generate_adapter(make_fp(), fresh, tmp_path / "zero")
    assert all(float(t.abs().max()) == 0 for t in load_file(out / "adapter_model.safetensors").values())
    torch.manual_seed(0)
    fresh.head_b["q_proj"].weight.data.normal_()  # now it writes something: the same thing every time
    first = load_file(generate_adapter(make_fp(), fresh, tmp_path / "a") / "adapter_model.safetensors")
    again = load_file(generate_adapter(make_fp(), fresh, tmp_path / "b") / "adapter_model.safetensors")
    assert any(t.abs().max() > 0 for t in first.values())
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


# -------------------------------------------------------------------------------------------- files


def test_save_and_from_pretrained_round_trip(generator: AdapterGenerator, tmp_path: Path) -> None:
    generator.training_report = {"capabilities": ["reverse"]}
    path = generator.save_pretrained(tmp_path / "gen")
    back = AdapterGenerator.from_pretrained(path)
    assert back.config.architecture() == generator.config.architecture()
    assert back.module_specs == generator.module_specs and back.extractor_hash == EXTRACTOR_HASH
    assert back.training_report == {"capabilities": ["reverse"]} and back.target == TARGET
    for key, value in generator.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    doc = json.loads((path / "config.json").read_text())
    assert doc["umaf_version"] and doc["modules"][0]["lora_a_key"].startswith("base_model.model.")
    first = load_file(generate_adapter(make_fp(), generator, tmp_path / "a") / "adapter_model.safetensors")
    second = load_file(generate_adapter(make_fp(), back, tmp_path / "b") / "adapter_model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


def _truncate_weights(path: Path) -> None:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _wrong_shapes(path: Path) -> None:
    doc = json.loads((path / "config.json").read_text())
    doc["config"]["hidden"] = 64
    (path / "config.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "break_it",
    [
        lambda p: (p / "config.json").unlink(),
        lambda p: (p / "config.json").write_text("{not json"),
        lambda p: (p / "config.json").write_text(json.dumps({"format": "something-else", "config": {}})),
        lambda p: (p / "model.safetensors").unlink(),
        _truncate_weights,
        _wrong_shapes,
    ],
    ids=["no-config", "bad-json", "foreign", "no-weights", "truncated", "mismatch"],
)
def test_corrupt_generator_folder_is_a_umaf_error(
    generator: AdapterGenerator, tmp_path: Path, break_it
) -> None:
    path = generator.save_pretrained(tmp_path / "gen")
    break_it(path)
    with pytest.raises(UmafError):
        AdapterGenerator.from_pretrained(path)


def test_missing_default_generator_names_the_command() -> None:
    with pytest.raises(UmafError, match="umaf train generator --target zoo:nothing"):
        default_generator("zoo:nothing")


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fp": make_fp(extractor_hash="f" * 16)}, "extractor"),
        ({"target": "smollm2"}, "writes adapters for tiny-llama-xs"),
        ({"rank": 5}, "rank 5 is out of range"),  # gen_rank is 4
        ({"rank": 0}, "rank 0 is out of range"),
    ],
    ids=["extractor-mismatch", "wrong-target", "rank-too-large", "rank-zero"],
)
def test_bad_generation_requests_leave_nothing(generator, tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"fp": make_fp(), "generator": generator, "output": tmp_path / "adapter", **kwargs}
    with pytest.raises(UmafError, match=match):
        generate_adapter(**args)
    assert _listing(tmp_path) == []


def test_a_source_that_lacks_the_capability_is_refused_unless_asked(generator, tmp_path: Path) -> None:
    lacking = make_fp()
    lacking.meta.update(competence=0.12, competence_method="agreement")
    with pytest.raises(UmafError, match=r"tiny-gpt2-xs reads reverse with competence 0.12 \(< 0.5\)"):
        generate_adapter(lacking, generator, tmp_path / "adapter")
    assert _listing(tmp_path) == []
    generate_adapter(lacking, generator, tmp_path / "adapter", min_competence=None)  # asked for anyway
    able, unknown = make_fp(), make_fp()
    able.meta.update(competence=0.5, competence_method="agreement")
    unknown.meta.update(competence=None, competence_method="none: no LM head and open answers")
    generate_adapter(able, generator, tmp_path / "able")  # at the threshold: competent
    generate_adapter(unknown, generator, tmp_path / "unknown")  # nothing to read: not refused
    assert _listing(tmp_path) == ["able", "adapter", "unknown"]


def test_rank_larger_than_a_module_allows(tiny_llama, tmp_path: Path) -> None:
    gen = AdapterGenerator(
        small_config(gen_rank=48, rank=8), target_module_specs(tiny_llama.model, ["q_proj"]), EXTRACTOR_HASH
    )  # the modules are 32 x 32
    assert gen.max_rank == 32
    with pytest.raises(UmafError, match="out of range"):
        generate_adapter(make_fp(), gen, tmp_path / "adapter", rank=40)
    with pytest.raises(UmafError, match="module allows"):
        svd_factors(torch.randn(4, 6), 5)
    assert _listing(tmp_path) == []


def test_unknown_target_modules(tiny_llama) -> None:
    with pytest.raises(UmafError, match="zz_proj"):
        target_module_specs(tiny_llama.model, ["zz_proj"])


def test_existing_output_needs_overwrite(generator, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UmafError, match="exists"):
        generate_adapter(make_fp(), generator, out)
    assert _listing(out) == ["keep.txt"] and _listing(tmp_path) == ["adapter"]
    generate_adapter(make_fp(), generator, out, overwrite=True)
    assert _listing(out) == ["adapter_config.json", "adapter_model.safetensors"]


def test_bad_configs() -> None:
    with pytest.raises(UmafError, match="gen_rank"):
        GeneratorConfig(rank=32, gen_rank=16)
    with pytest.raises(UmafError, match="unknown generator config keys: bogus"):
        GeneratorConfig.from_dict({"bogus": 1})


# -------------------------------------------------------------------------------------------- training


def test_check_trainable_refuses_held_out() -> None:
    check_trainable(["reverse", "add"], ["gpt2", "bert"])
    for capability in HELD_OUT_CAPABILITIES:
        with pytest.raises(UmafError, match="held out"):
            check_trainable(["reverse", capability])
    with pytest.raises(UmafError, match="model family t5"):
        check_trainable(["reverse"], ["t5"])


def write_synthetic_oracle(target, capability: str, seed: int) -> None:
    """A random PEFT LoRA saved as the oracle of ``capability`` (oracle.json as the oracles write it)."""
    from peft import LoraConfig, get_peft_model

    from umaf.adapters.oracles import ORACLE_FILE, OracleConfig, oracle_dir

    config = OracleConfig(rank=4, alpha=8, steps=1)
    fresh = build_tiny("llama", "xs", seed=7)
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        fresh.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    path = oracle_dir(target.info.name, capability)
    peft_model.save_pretrained(str(path))
    meta = {
        "target": target.info.name,
        "capability": capability,
        "config": config.to_dict(),
        "base_accuracy": 0.0,
        "oracle_accuracy": 0.5,
        "train_seconds": 1.0,
    }
    (path / ORACLE_FILE).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def tiny_library(umaf_cache: Path):
    """A fresh tiny LLaMA target with a synthetic 3-oracle library; ``capital`` is a held-out capability."""
    target = build_tiny("llama", "xs", seed=7)
    for seed, capability in enumerate(("reverse", "uppercase", "capital")):
        write_synthetic_oracle(target, capability, seed)
    return target


@pytest.fixture(scope="module")
def small_extractor():
    """A small untrained extractor (fast fingerprints; the generator only needs a consistent one)."""
    from umaf.extractor import CapabilityExtractor, ExtractorConfig

    config = ExtractorConfig(n_anchors=16, d_model=32, n_layers=1, n_heads=2, ffn=64, head_hidden=64)
    return CapabilityExtractor(config).eval()


@pytest.fixture(scope="module")
def trained(tiny_library, tiny_models: dict, small_extractor, tmp_path_factory) -> tuple:
    """A short training run (reconstruction + a few end-to-end steps), spying on what the loop sees."""
    import umaf.generator.train as train_mod

    seen: list[str] = []
    original = train_mod.fit_reconstruction

    def spy(generator, lib, splits, config, accelerator):  # noqa: ANN001, ANN202
        seen.extend(lib.names[i] for i in splits["train"].labels.tolist())
        return original(generator, lib, splits, config, accelerator)

    output = tmp_path_factory.mktemp("trained") / "gen"
    config = small_config(
        target="ignored",
        steps=40,
        val_every=20,
        lr=3e-3,
        warmup=5,
        progress=False,
        e2e_steps=3,
        e2e_caps_per_step=2,
        e2e_examples_per_cap=2,
        capabilities=("reverse", "uppercase", "first_letter"),
    )
    kwargs = dict(
        extractor=small_extractor,
        sources=[tiny_models["gpt2"], tiny_models["bert"]],
        val_sources=[tiny_models["t5"]],
    )
    flags = [p.requires_grad for p in tiny_library.model.parameters()]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "fit_reconstruction", spy)
        gen = train_mod.train_generator(tiny_library, config, output=output, **kwargs)
    assert [p.requires_grad for p in tiny_library.model.parameters()] == flags  # the target is left as it was
    return gen, seen, output, kwargs


def test_training_smoke_run(trained) -> None:
    gen, seen, output, _ = trained
    report = gen.training_report
    assert seen and set(seen) == {"reverse", "uppercase"} and not set(seen) & set(HELD_OUT_CAPABILITIES)
    assert report["capabilities"] == ["reverse", "uppercase"] and report["heldout_capabilities"] == [
        "capital"
    ]
    assert report["loss_curve"][-1] < report["loss_curve"][0]
    assert report["recon_error"]["train"] < 1.0 and report["n_fingerprints"]["heldout"] == 6
    assert report["e2e_lm_loss"]["last"] > 0 and "recon_error_after_e2e" in report
    assert gen.target == "tiny-llama-xs" and gen.extractor_hash
    assert _listing(output) == ["config.json", "fingerprints.safetensors", "model.safetensors"]
    assert AdapterGenerator.from_pretrained(output).training_report == json.loads(json.dumps(report))


def test_adapters_of_two_capabilities_differ(trained, tiny_models, small_extractor, tmp_path) -> None:
    from umaf.adapters.peft_io import delta_weights
    from umaf.extractor import fingerprint

    gen = trained[0]
    deltas = {}
    for cap in ("reverse", "uppercase"):  # both in its library, read from a training source
        fp = fingerprint(tiny_models["gpt2"], cap, small_extractor, progress=False)
        # a random tiny source lacks both: generated anyway, to look at the generator alone
        deltas[cap] = delta_weights(generate_adapter(fp, gen, tmp_path / cap, rank=2, min_competence=None))
    assert deltas["reverse"].keys() == deltas["uppercase"].keys()
    for name, a in deltas["reverse"].items():
        b = deltas["uppercase"][name]
        assert (a - b).norm() > 0.1 * max(a.norm(), b.norm()), name  # relative Frobenius difference


def test_training_resumes_from_the_fingerprint_cache(trained, tiny_library, monkeypatch) -> None:
    from umaf.generator.train import train_generator

    gen, _, output, kwargs = trained
    with pytest.raises(UmafError, match="already holds"):
        train_generator(tiny_library, small_config(steps=1), output=output, **kwargs)
    monkeypatch.setattr("umaf.extractor.fingerprint", lambda *a, **k: pytest.fail("fingerprint cache unused"))
    again = train_generator(
        tiny_library, small_config(steps=2, progress=False), output=output, overwrite=True, **kwargs
    )
    assert again.training_report["n_fingerprints"] == gen.training_report["n_fingerprints"]


def test_training_refuses_a_held_out_source_family(
    tiny_library, tiny_models, small_extractor, tmp_path
) -> None:
    from umaf.generator.train import train_generator

    with pytest.raises(UmafError, match="model family t5"):
        train_generator(
            tiny_library,
            small_config(steps=1, progress=False),
            output=tmp_path / "gen",
            extractor=small_extractor,
            sources=[tiny_models["t5"]],
            val_sources=[],
        )
    assert not (tmp_path / "gen").exists()  # refused before anything was computed or cached


def test_training_without_a_library_is_a_umaf_error(small_extractor, tmp_path: Path) -> None:
    from umaf.generator.train import train_generator

    with pytest.raises(UmafError, match="no oracle library"):
        train_generator(
            build_tiny("gpt2", "xs", seed=3),
            small_config(target_modules=("c_attn",)),
            output=tmp_path / "gen",
            extractor=small_extractor,
            sources=["x"],
            val_sources=[],
        )
    assert not (tmp_path / "gen").exists()


def test_relative_errors_match_the_dense_computation() -> None:
    from umaf.generator.data import LibraryTargets
    from umaf.generator.losses import relative_errors

    gen = torch.Generator().manual_seed(5)
    ta, tb = (
        torch.randn(3, 2, 4, 10, generator=gen),
        torch.randn(3, 2, 12, 4, generator=gen),
    )  # 2 capabilities + null
    ta[2], tb[2] = 0, 0
    sq = (tb @ ta).square().sum((-1, -2))  # [3, 2]
    lib = LibraryTargets(["reverse", "add"], 2, {"q_proj": (ta, tb)}, {"q_proj": sq}, {})
    a, b = (
        torch.randn(3, 2, 6, 10, generator=gen),
        torch.randn(3, 2, 12, 6, generator=gen),
    )  # predictions, g = 6
    labels = torch.tensor([0, 1, 2])
    errors = relative_errors({"q_proj": (a, b)}, lib, labels)  # [3, 2]
    dense = (b @ a - tb[labels] @ ta[labels]).square().sum((-1, -2))
    expected = dense / torch.stack([sq[0], sq[1], sq[:2].mean(0)])
    assert torch.allclose(errors, expected, rtol=1e-4)


def test_default_sources_read_every_built_zoo_model_and_hold_apart_validation_families(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    import umaf.zoo

    full = [("llama-m-a", "llama"), ("smollm2", "llama"), ("mixtral-xs-a", "mixtral"), ("t5-xs-a", "t5")]
    built = {True: [("q-gpt2-xs-a", "gpt2"), ("q-t5-xs-a", "t5")], False: full}

    def zoo(quick: bool = False) -> list[SimpleNamespace]:
        return [SimpleNamespace(model_id=f"zoo:{n}", family=f) for n, f in built[quick]]

    monkeypatch.setattr(umaf.zoo, "list_zoo", zoo)
    assert generator_data.default_sources("zoo:smollm2") == (
        ["zoo:llama-m-a", "zoo:q-gpt2-xs-a", "minilm"], ["zoo:mixtral-xs-a", "zoo:t5-xs-a", "zoo:q-t5-xs-a"]
    )
    built[False] = []  # no full zoo: the quick one
    assert generator_data.default_sources("smollm2") == (["zoo:q-gpt2-xs-a", "minilm"], ["zoo:q-t5-xs-a"])
