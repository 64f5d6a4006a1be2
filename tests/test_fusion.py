"""Latent Fusion: every registered mode, weights, provenance, bad input, the gate and its training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import umaf
from umaf.capabilities import is_held_out
from umaf.config import HELD_OUT_CAPABILITIES, HELD_OUT_FAMILIES
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.fusion import (
    FUSION_MODES,
    FusionGate,
    FusionTrainConfig,
    GateConfig,
    default_gate,
    evaluate_gate,
    fuse,
    train_fusion,
)
from umaf.fusion import fusing as fuse_module
from umaf.fusion import train as fusion_train
from umaf.interpolator import ZooFingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


def make_fp(seed: int, capability: str = "reverse", family: str = "gpt2", extractor_hash: str = "synthetic",
            n_params: int = 30_000, layers: int = 2, width: int = 32) -> Fingerprint:  # fmt: skip
    vector = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(seed)), dim=0)
    meta = {
        "model": f"zoo:{family}-xs-{seed}", "family": family, "architecture": f"{family}Model",
        "n_params": n_params, "n_layers": layers, "width": width, "capability": capability,
        "probe_hash": f"{seed:016d}", "extractor_hash": extractor_hash, "umaf_version": umaf.__version__,
    }  # fmt: skip
    return Fingerprint(vector, torch.rand(8), meta)


def sources() -> list[Fingerprint]:
    return [make_fp(1, "reverse", "gpt2"), make_fp(2, "uppercase", "llama"), make_fp(3, "add", "bert")]


def query_for(fp: Fingerprint) -> Fingerprint:
    noisy = F.normalize(fp.vector + 0.1 * torch.randn(512, generator=torch.Generator().manual_seed(9)), dim=0)
    return Fingerprint(noisy, None, {**fp.meta, "model": "zoo:reference"})


# ---------------------------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", FUSION_MODES.names())
def test_every_mode_fuses_with_provenance(mode: str, tmp_path: Path) -> None:
    fps = sources()
    spec = FUSION_MODES.get(mode)
    query = query_for(fps[0]) if spec.uses_gate else None
    fused = fuse(fps, weights=[1, 2, 1], mode=mode, query=query, gate=FusionGate())
    assert fused.meta["fusion_mode"] == mode
    assert [s["model"] for s in fused.meta["sources"]] == [fp.meta["model"] for fp in fps]
    assert [s["capability"] for s in fused.meta["sources"]] == ["reverse", "uppercase", "add"]
    assert [s["family"] for s in fused.meta["sources"]] == ["gpt2", "llama", "bert"]
    weights = [s["weight"] for s in fused.meta["sources"]]
    assert all(w >= 0 for w in weights)
    assert sum(weights) == pytest.approx(1.0) if spec.normalise else weights == [1, 2, 1]
    assert fused.meta["capability"] == "reverse+uppercase+add" and fused.meta["family"] == "mixed"
    assert spec.description and (spec.reference or "").startswith("https://")
    fused.save(tmp_path / "fused.safetensors")
    again = Fingerprint.load(tmp_path / "fused.safetensors")
    assert again.meta["sources"] == fused.meta["sources"] and torch.allclose(again.vector, fused.vector)


@pytest.mark.parametrize("mode", [m for m in FUSION_MODES.names() if not FUSION_MODES.get(m).uses_gate])
def test_one_source_fuses_to_itself(mode: str) -> None:
    fp = make_fp(4)
    assert torch.allclose(fuse([fp], mode=mode).vector, fp.vector, atol=1e-5)


def test_average_normalises_weights() -> None:
    fps = sources()[:2]
    fused = fuse(fps, weights=[2, 6])
    assert [s["weight"] for s in fused.meta["sources"]] == pytest.approx([0.25, 0.75])
    assert torch.allclose(fused.vector, 0.25 * fps[0].vector + 0.75 * fps[1].vector, atol=1e-6)
    assert torch.allclose(fuse(fps).vector, (fps[0].vector + fps[1].vector) / 2, atol=1e-6)
    assert torch.allclose(fused.layer_profile, 0.25 * fps[0].layer_profile + 0.75 * fps[1].layer_profile)


def test_slerp_stays_on_the_sphere_and_matches_two_point_slerp() -> None:
    a, b = make_fp(5), make_fp(6)
    fused = fuse([a, b], weights=[0.3, 0.7], mode="slerp").vector
    assert fused.norm() == pytest.approx(1.0, abs=1e-5)
    angle = torch.arccos((a.vector @ b.vector).clamp(-1, 1))
    expected = (torch.sin(0.3 * angle) * a.vector + torch.sin(0.7 * angle) * b.vector) / torch.sin(angle)
    assert torch.allclose(fused, expected, atol=1e-4)
    assert fuse([a, b], mode="average").vector.norm() < 0.9  # the linear mean shrinks


def test_task_arithmetic_sums_and_subtracts() -> None:
    a, b = make_fp(5), make_fp(6)
    assert torch.allclose(fuse([a, b], mode="task_arithmetic").vector, a.vector + b.vector)
    fused = fuse([a, b], weights=[1, -1], mode="task_arithmetic")
    assert torch.allclose(fused.vector, a.vector - b.vector)
    assert [s["weight"] for s in fused.meta["sources"]] == [1, -1]
    with pytest.raises(UmafError, match="all weights are zero"):
        fuse([a, b], weights=[0, 0], mode="task_arithmetic")


def test_fused_scale_is_a_weighted_mean() -> None:
    small, big = (
        make_fp(1, n_params=10_000, layers=2, width=32),
        make_fp(2, n_params=1_000_000, layers=4, width=96),
    )
    meta = fuse([small, big]).meta
    assert meta["n_params"] == 100_000 and meta["n_layers"] == 3 and meta["width"] == 64


# -------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [1.0, 2.0]}, "2 weights for 3"),
        ({"weights": [0, 0, 0]}, "sum to zero"),
        ({"weights": [1, -1, 1]}, "negative"),
        ({"weights": [1, float("nan"), 1]}, "finite"),
        ({"weights": ["a", 1, 1]}, "numbers"),
        ({"mode": "median"}, "unknown fusion mode"),
        ({"mode": "average", "query": "reverse"}, "takes no query"),
        ({"mode": "gated"}, "needs a query"),
        ({"mode": "gated", "query": "no_such_capability"}, "no_such_capability"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(kwargs: dict, message: str, tmp_path: Path) -> None:
    out = tmp_path / "fused.safetensors"
    with pytest.raises(UmafError, match=message):
        fuse(sources(), **kwargs).save(out)
    assert not list(tmp_path.iterdir())


def test_different_extractors_are_refused() -> None:
    with pytest.raises(UmafError, match="different extractors"):
        fuse([make_fp(1), make_fp(2, extractor_hash="other")])
    with pytest.raises(UmafError, match="different extractors"):
        fuse(sources(), mode="gated", query=make_fp(7, extractor_hash="other"), gate=FusionGate())


def test_nothing_to_fuse() -> None:
    with pytest.raises(UmafError, match="nothing to fuse"):
        fuse([])


def test_gate_trained_on_another_extractor_is_refused() -> None:
    gate = FusionGate(GateConfig(extractor_hash="not-synthetic"))
    with pytest.raises(UmafError, match="trained on fingerprints of extractor"):
        fuse(sources(), mode="gated", query=query_for(sources()[0]), gate=gate)


# ----------------------------------------------------------------------------------------------- gate


def test_untrained_gate_prefers_the_source_like_the_query() -> None:
    fps = sources()
    fused = fuse(fps, mode="gated", query=query_for(fps[1]), gate=FusionGate())
    weights = [s["weight"] for s in fused.meta["sources"]]
    assert max(range(3), key=weights.__getitem__) == 1
    assert fused.meta["query"] == {"model": "zoo:reference", "capability": "uppercase"}


def test_user_weights_are_a_prior_for_the_gate() -> None:
    fps = sources()
    fused = fuse(fps, weights=[1, 0, 1], mode="gated", query=query_for(fps[1]), gate=FusionGate())
    assert fused.meta["sources"][1]["weight"] == 0.0


def test_gate_by_capability_name_reads_the_reference_model(monkeypatch: pytest.MonkeyPatch) -> None:
    fps = sources()
    asked = []

    def stand_in(capability: str, gate: FusionGate, extractor=None) -> Fingerprint:
        asked.append((capability, gate.config.reference_model))
        return query_for(fps[2])

    monkeypatch.setattr(fuse_module, "query_fingerprint", stand_in)
    fused = fuse(fps, mode="gated", query="add", gate=FusionGate(GateConfig(reference_model="zoo:ref")))
    assert asked == [("add", "zoo:ref")]
    assert max(fused.meta["sources"], key=lambda s: s["weight"])["capability"] == "add"


def test_gate_capability_query_with_a_real_tiny_reference(tiny_llama, tmp_path: Path) -> None:
    from umaf.extractor import CapabilityExtractor, ExtractorConfig, fingerprint

    small = ExtractorConfig(
        depth_bins=2, n_anchors=8, d_model=16, n_layers=1, n_heads=2, ffn=32, head_hidden=32
    )
    extractor = CapabilityExtractor(small).eval()
    tiny_llama.model.save_pretrained(tmp_path / "ref")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "ref")
    fps = [fingerprint(tiny_llama, c, extractor, progress=False, n_probes=8) for c in ("reverse", "add")]
    gate = FusionGate(GateConfig(fp_dim=small.fp_dim, reference_model=str(tmp_path / "ref")))
    fused = fuse(fps, mode="gated", query="reverse", gate=gate, extractor=extractor)
    assert fused.meta["query"]["capability"] == "reverse"
    assert sum(s["weight"] for s in fused.meta["sources"]) == pytest.approx(1.0)


def test_gate_save_load_round_trip(tmp_path: Path) -> None:
    gate = FusionGate(GateConfig(key_dim=8, extractor_hash="abc"))
    gate.train_report = {"final_loss": 0.2}
    gate.save_pretrained(tmp_path / "gate")
    again = FusionGate.from_pretrained(tmp_path / "gate")
    assert again.gate_hash == gate.gate_hash and again.config == gate.config
    assert json.loads((tmp_path / "gate" / "config.json").read_text())["format"] == "umaf-fusion-gate"
    with pytest.raises(UmafError, match="exists"):
        gate.save_pretrained(tmp_path / "gate")
    with pytest.raises(UmafError):
        FusionGate.from_pretrained(tmp_path / "nowhere")


def test_default_gate_missing_names_the_command(no_shipped: None) -> None:
    with pytest.raises(UmafError, match="umaf train fusion"):
        default_gate()


# ------------------------------------------------------------------------------------------- training


def synthetic_zoo(capabilities: list[str], seed: int = 0) -> list[ZooFingerprint]:
    """Readings of each capability by several models: competent readings lie near the capability's
    centre along a shared 'competence' direction, incompetent ones elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    competence = F.normalize(torch.randn(512, generator=gen), dim=0)
    samples = []
    for cap in capabilities:
        centre = F.normalize(torch.randn(512, generator=gen), dim=0)
        for m, family in enumerate(("gpt2", "llama", "bert", "mixtral", "t5", "gpt2", "llama")):
            trained = m % 2 == 0
            vec = centre + (0.6 if trained else -0.6) * competence + 0.03 * torch.randn(512, generator=gen)
            fp = make_fp(0, cap, family)
            fp = Fingerprint(F.normalize(vec, dim=0), None, {**fp.meta, "model": f"zoo:{family}-{m}"})
            samples.append(
                ZooFingerprint(fp, fp.meta["model"], family, "xs", "a", trained, 1.0 if trained else 0.0)
            )
    return samples


def test_fusion_training_smoke_lowers_loss_and_never_sees_held_out(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    seen: set[str] = set()
    families: set[str] = set()
    original = fusion_train.EpisodeBank.build

    def spy(samples):
        seen.update(s.capability for s in samples)
        families.update(s.family for s in samples)
        return original(samples)

    monkeypatch.setattr(fusion_train.EpisodeBank, "build", staticmethod(spy))
    caps = ["reverse", "uppercase", "add", "plural", "length", "parity", *HELD_OUT_CAPABILITIES]
    config = FusionTrainConfig(GateConfig(key_dim=16), steps=60, batch_size=32, lr=1e-2, val_fraction=0.3,
                               progress=False)  # fmt: skip
    gate = train_fusion(config, output=tmp_path / "gate", samples=synthetic_zoo(caps))
    report = gate.train_report
    assert seen and not [c for c in seen if is_held_out(c)]
    assert not families & set(HELD_OUT_FAMILIES)
    assert not set(report["train_capabilities"] + report["val_capabilities"]) & set(HELD_OUT_CAPABILITIES)
    assert report["final_loss"] < report["first_loss"]
    assert report["val_cosine_gate"] > report["val_init_cosine_gate"]
    again = FusionGate.from_pretrained(tmp_path / "gate")
    assert again.config.extractor_hash == "synthetic" and again.train_report == report


def test_evaluate_gate_figures() -> None:
    samples = synthetic_zoo(["reverse", "uppercase", "add"])
    figures = evaluate_gate(FusionGate(), samples, ["reverse"], n_episodes=32)
    assert figures["cosine_oracle_selection"] > figures["cosine_uniform"]
    assert 0.0 <= figures["gate_mass_on_asked"] <= 1.0 and figures["n_episodes"] == 32
