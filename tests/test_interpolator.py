"""Size Interpolator: scales, identity at init, files, interpolate() metadata, training smoke run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import umaf
from umaf.capabilities import is_held_out
from umaf.config import HELD_OUT_CAPABILITIES
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.interpolator import (
    InterpolatorConfig,
    InterpolatorTrainConfig,
    Scale,
    SizeInterpolator,
    ZooFingerprint,
    default_interpolator,
    estimate_scale,
    interpolate,
    make_pairs,
    train_interpolator,
)
from umaf.interpolator import train as train_module
from umaf.interpolator.data import default_capabilities
from umaf.interpolator.train import split_pairs
from umaf.models import TINY_SIZES

SIZES = {"xs": 30_000, "s": 170_000, "m": 460_000}  # roughly the tiny zoo's parameter counts


pytestmark = pytest.mark.usefixtures("one_thread")


def make_fp(vector: torch.Tensor, capability: str = "reverse", size: str = "xs", family: str = "llama",
            extractor_hash: str = "synthetic") -> Fingerprint:  # fmt: skip
    layers, width = TINY_SIZES[size]
    meta = {
        "model": f"zoo:{family}-{size}-a", "family": family, "architecture": "LlamaForCausalLM",
        "n_params": SIZES[size], "n_layers": layers, "width": width, "capability": capability,
        "probe_hash": "0" * 16, "extractor_hash": extractor_hash, "umaf_version": umaf.__version__,
    }  # fmt: skip
    return Fingerprint(F.normalize(vector, dim=0), None, meta)


def synthetic_samples(capabilities: list[str], seed: int = 0) -> list[ZooFingerprint]:
    """Fingerprints whose position moves along one fixed direction with log model size."""
    gen = torch.Generator().manual_seed(seed)
    drift = F.normalize(torch.randn(512, generator=gen), dim=0)
    samples = []
    for family in ("gpt2", "llama"):
        for subset in ("a", "b"):
            for cap in capabilities:
                base = F.normalize(torch.randn(512, generator=gen), dim=0)
                for size in SIZES:
                    t = math.log10(SIZES[size]) - math.log10(SIZES["xs"])
                    vec = base + 0.8 * t * drift + 0.02 * torch.randn(512, generator=gen)
                    fp = make_fp(vec, cap, size, family)
                    samples.append(ZooFingerprint(fp, fp.meta["model"], family, size, subset, True, 1.0))
    return samples


# ------------------------------------------------------------------------------------------------ scale


def test_scale_features_and_round_trip() -> None:
    scale = Scale(1e6, 8, 128)
    assert torch.allclose(scale.features(), torch.zeros(3))
    assert Scale.from_meta(make_fp(torch.randn(512)).meta) == Scale(SIZES["xs"], 2, 32)
    assert scale.to_dict() == {"n_params": 1_000_000, "n_layers": 8, "width": 128, "estimated": []}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"params": 0}, {"params": -5}, {"params": float("nan")}, {"params": float("inf")}, {"params": 1e20},
        {"params": 1e6, "layers": 0}, {"params": 1e6, "width": 0}, {"layers": -1}, {"width": float("nan")},
        {"params": 1e6, "layers": 100_000, "width": 64}, {"params": "many"}, {},
    ],
)  # fmt: skip
def test_impossible_target_scales_are_refused(kwargs: dict) -> None:
    with pytest.raises(UmafError):
        estimate_scale(Scale(1e5, 2, 32), **kwargs)
    fp = make_fp(torch.randn(512))
    with pytest.raises(UmafError):
        interpolate(fp, interpolator=SizeInterpolator(), **kwargs)


def test_estimate_scale_keeps_the_source_shape() -> None:
    source = Scale(1e6, 4, 100)
    bigger = estimate_scale(source, params=8e6)
    assert (bigger.n_layers, bigger.width, bigger.estimated) == (8, 200, ("n_layers", "width"))
    deeper = estimate_scale(source, params=2e6, width=100)
    assert deeper.n_layers == 8 and deeper.estimated == ("n_layers",)
    wider = estimate_scale(source, layers=4, width=200)
    assert wider.n_params == pytest.approx(4e6) and wider.estimated == ("n_params",)


# ------------------------------------------------------------------------------------------- network


def test_untrained_interpolator_is_the_identity() -> None:
    model = SizeInterpolator(InterpolatorConfig())
    fp = make_fp(torch.randn(512))
    out = interpolate(fp, params=5e8, interpolator=model)
    assert torch.allclose(out.vector, fp.vector, atol=1e-6)


def test_same_scale_is_identity_even_when_trained() -> None:
    model = SizeInterpolator(InterpolatorConfig(hidden=32))
    torch.nn.init.normal_(model.velocity.weight, std=0.5)
    fp = make_fp(torch.randn(512), size="s")
    same = interpolate(fp, Scale.from_meta(fp.meta), interpolator=model)
    moved = interpolate(fp, Scale(1e8, 12, 768), interpolator=model)
    assert torch.allclose(same.vector, fp.vector, atol=1e-6)
    assert not torch.allclose(moved.vector, fp.vector, atol=1e-3)
    assert moved.vector.norm() == pytest.approx(1.0, abs=1e-5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = SizeInterpolator(InterpolatorConfig(hidden=16, extractor_hash="abc"))
    torch.nn.init.normal_(model.velocity.weight, std=0.1)
    model.train_report = {"final_loss": 0.1}
    model.save_pretrained(tmp_path / "interp")
    again = SizeInterpolator.from_pretrained(tmp_path / "interp")
    assert again.interpolator_hash == model.interpolator_hash
    assert again.config == model.config and again.train_report == {"final_loss": 0.1}
    doc = json.loads((tmp_path / "interp" / "config.json").read_text())
    assert doc["format"] == "umaf-interpolator" and doc["umaf_version"] == umaf.__version__
    with pytest.raises(UmafError, match="exists"):
        model.save_pretrained(tmp_path / "interp")


def test_bad_config_values() -> None:
    with pytest.raises(UmafError, match="hidden must be positive"):
        InterpolatorConfig(hidden=0)
    with pytest.raises(UmafError, match="unknown interpolator config keys: colour"):
        InterpolatorConfig.from_dict({"colour": 1})
    with pytest.raises(UmafError):
        InterpolatorTrainConfig(select_fraction=1.5)


def test_bad_interpolator_folders(tmp_path: Path) -> None:
    with pytest.raises(UmafError):
        SizeInterpolator.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(UmafError):
        SizeInterpolator.from_pretrained(tmp_path / "bad")


def test_default_interpolator_missing_names_the_command(no_shipped: None) -> None:
    with pytest.raises(UmafError, match="umaf train interpolator"):
        default_interpolator()


# ---------------------------------------------------------------------------------------- interpolate


def test_interpolate_records_source_and_target_scale(tmp_path: Path) -> None:
    model = SizeInterpolator()
    fp = make_fp(torch.randn(512), size="xs")
    out = interpolate(fp, Scale(4.6e5, 4, 96), interpolator=model)
    assert out.meta["source_scale"] == {"n_params": SIZES["xs"], "n_layers": 2, "width": 32, "estimated": []}
    assert out.meta["target_scale"]["n_layers"] == 4 and out.meta["target_scale"]["width"] == 96
    assert out.meta["interpolator"] == model.interpolator_hash
    assert out.meta["model"] == fp.meta["model"] and out.meta["capability"] == "reverse"
    out.save(tmp_path / "moved.safetensors")
    again = Fingerprint.load(tmp_path / "moved.safetensors")
    assert Scale.from_meta(again.meta) == Scale(4.6e5, 4, 96)  # a second move starts from the target
    assert "target_scale" not in fp.meta, "the input is left untouched"


def test_interpolate_to_a_model(tiny_llama) -> None:
    fp = make_fp(torch.randn(512), size="m")
    out = interpolate(fp, tiny_llama, interpolator=SizeInterpolator())
    assert out.meta["target_scale"]["n_params"] == tiny_llama.info.n_params
    assert out.meta["target_scale"]["n_layers"] == 2
    with pytest.raises(UmafError, match="not both"):
        interpolate(fp, tiny_llama, params=1e6, interpolator=SizeInterpolator())


def test_interpolate_refuses_another_extractor() -> None:
    model = SizeInterpolator(InterpolatorConfig(extractor_hash="trained-on-this"))
    with pytest.raises(UmafError, match="extractor"):
        interpolate(make_fp(torch.randn(512)), params=1e6, interpolator=model)


def test_interpolate_leaves_no_file_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    with pytest.raises(UmafError):
        interpolate(make_fp(torch.randn(512)), params=-1, interpolator=SizeInterpolator()).save(out)
    assert not out.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- training


def test_make_pairs_respects_sizes() -> None:
    samples = synthetic_samples(["reverse"])
    train = make_pairs(samples, sizes={"xs", "m"})
    assert train and all({samples[i].size, samples[j].size} == {"xs", "m"} for i, j in train)
    held = make_pairs(samples, one_end={"s"})
    assert held and all((samples[i].size == "s") != (samples[j].size == "s") for i, j in held)
    assert all(
        samples[i].subset == samples[j].subset and samples[i].family == samples[j].family for i, j in held
    )


def test_default_capabilities_hold_nothing_out() -> None:
    caps = default_capabilities(2)
    assert not [c for c in caps if is_held_out(c)] and any(":" in c for c in caps)
    assert is_held_out("subtract") and is_held_out("capital") and not is_held_out("reverse")


def test_training_smoke_lowers_loss_and_never_sees_held_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []
    original = train_module.stack_samples

    def spy(samples):
        seen.extend(s.capability for s in samples)
        return original(samples)

    monkeypatch.setattr(train_module, "stack_samples", spy)
    samples = synthetic_samples(["reverse", "uppercase", "add", *HELD_OUT_CAPABILITIES[:2]])
    network = InterpolatorConfig(hidden=32, dropout=0.0)
    config = InterpolatorTrainConfig(network, steps=60, batch_size=16, lr=3e-3, progress=False)
    model = train_interpolator(config, output=tmp_path / "interp", samples=samples)
    report = model.train_report
    assert seen and not [c for c in seen if is_held_out(c)]
    assert not set(report["capabilities"]) & set(HELD_OUT_CAPABILITIES)
    assert report["train_sizes"] == ["m", "xs"] and report["held_out_sizes"] == ["s"]
    assert report["final_loss"] < report["first_loss"]
    assert report["val_cosine_interpolated"] > report["val_cosine_identity"]
    again = SizeInterpolator.from_pretrained(tmp_path / "interp")
    assert again.config.extractor_hash == "synthetic"
    train_pairs, select_pairs = split_pairs([s for s in samples if not is_held_out(s.capability)], config)
    assert again.train_report["n_train_pairs"] == len(train_pairs)
    assert select_pairs and report["select_n_pairs"] == len(select_pairs)
    assert 0 < report["kept_step"] <= config.steps


def test_moves_are_made_only_within_the_trained_sizes() -> None:
    samples = synthetic_samples(["reverse", "uppercase", "add"])
    config = InterpolatorTrainConfig(InterpolatorConfig(hidden=32, dropout=0.0), steps=40, batch_size=16,
                                     lr=3e-3, select_fraction=0.0, progress=False)
    model = train_interpolator(config, samples=samples)
    trained = [Scale.from_meta(s.fingerprint.meta).features() for s in samples if s.size != "s"]
    assert list(model.config.scale_low) == pytest.approx(torch.stack(trained).min(0).values.tolist())
    fp = make_fp(torch.randn(512), size="m")
    beyond = interpolate(fp, Scale(1e8, 12, 768), interpolator=model)  # larger than every trained size
    assert torch.allclose(beyond.vector, fp.vector, atol=1e-6) and beyond.meta["move_within_trained"] == 0
    small = make_fp(torch.randn(512), size="xs")
    inside = interpolate(small, params=SIZES["m"], layers=TINY_SIZES["m"][0], width=TINY_SIZES["m"][1],
                         interpolator=model)  # fmt: skip
    past = interpolate(small, Scale(1e8, 12, 768), interpolator=model)
    assert inside.meta["move_within_trained"] == 1 and 0 < past.meta["move_within_trained"] < 1
    assert torch.allclose(past.vector, inside.vector, atol=1e-5)  # the part beyond m is not made
    assert not torch.allclose(inside.vector, small.vector, atol=1e-3)


def test_split_pairs_keep_held_out_sizes_and_selection_capabilities_apart() -> None:
    samples = synthetic_samples(["reverse", "uppercase", "add", "plural", "length"])
    config = InterpolatorTrainConfig(select_fraction=0.4)
    train, select = split_pairs(samples, config)
    train_caps = {samples[i].capability for i, _ in train}
    select_caps = {samples[i].capability for i, _ in select}
    assert len(select_caps) == 2 and not train_caps & select_caps
    assert all(samples[i].size != "s" and samples[j].size != "s" for i, j in train + select)


def test_identity_is_kept_when_training_does_not_help() -> None:
    samples = synthetic_samples(["reverse", "uppercase", "add", "plural"])
    for s in samples:  # no size effect at all: every size reads the same vector
        s.fingerprint.vector.copy_(next(t for t in samples if t.family == s.family and t.subset == s.subset
                                        and t.capability == s.capability).fingerprint.vector)  # fmt: skip
    config = InterpolatorTrainConfig(
        InterpolatorConfig(hidden=16), steps=20, val_every=5, lr=0.1, progress=False
    )
    model = train_interpolator(config, samples=samples)
    assert model.train_report["val_cosine_interpolated"] == pytest.approx(1.0, abs=1e-3)


def test_training_without_pairs_fails_clearly() -> None:
    samples = [s for s in synthetic_samples(["reverse"]) if s.size in ("xs", "s")]
    with pytest.raises(UmafError, match="no training pairs"):
        train_interpolator(InterpolatorTrainConfig(steps=1, progress=False), samples=samples)
