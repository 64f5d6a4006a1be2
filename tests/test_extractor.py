"""Capability Extractor: processor shapes and invariances, network files, fingerprint(), training."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from umaf.capabilities import get_capability
from umaf.config import HELD_OUT_CAPABILITIES, HELD_OUT_FAMILIES
from umaf.errors import UmafError
from umaf.extractor import (
    CapabilityExtractor,
    ExtractorConfig,
    anchor_texts,
    fingerprint,
    layer_plan,
    model_features,
    process,
)
from umaf.extractor import fingerprinting as fingerprinting_module
from umaf.extractor import train as train_module
from umaf.extractor.processor import pool_features, prompt_of, relative_features
from umaf.fingerprint import REQUIRED_META, Fingerprint
from umaf.models import build_tiny

SMALL = ExtractorConfig(depth_bins=4, n_anchors=16, d_model=32, n_layers=1, n_heads=2, ffn=64, head_hidden=64)
WIDTH = SMALL.n_channels * SMALL.n_anchors  # feature columns per depth bin: (text, delta) x anchors


def small_extractor(seed: int = 0) -> CapabilityExtractor:
    torch.manual_seed(seed)
    return CapabilityExtractor(SMALL).eval()


# ------------------------------------------------------------------------------------------- processor


def test_anchor_file_is_shipped_and_clean() -> None:
    texts = anchor_texts()
    assert len(texts) == ExtractorConfig().n_anchors and len(set(texts)) == len(texts)
    first = hashlib.sha256("\n".join(anchor_texts(64)).encode()).hexdigest()[:16]
    assert first == "01f056ed629188e1", "the first 64 anchors (read by cosine-basis extractors) changed"
    held_out_probes = {t for name in HELD_OUT_CAPABILITIES for t in get_capability(name).probe_texts()}
    assert not held_out_probes & set(texts)


def test_ridge_basis_is_unchanged_by_an_invertible_linear_map() -> None:
    """The ridge basis describes a text by how the anchors rebuild it, so a model whose activations are a
    linear map of another's (here a random invertible one, which changes every cosine) gives the same
    features, up to the small penalty; the cosine basis does not."""
    torch.manual_seed(0)
    width, n_anchors = 24, 48  # more anchors than width: every text lies in their span
    probes, anchors = torch.randn(2, 5, width), torch.randn(2, n_anchors, width)
    rotation, _ = torch.linalg.qr(torch.randn(width, width))
    mixing = rotation * torch.linspace(0.5, 2.0, width)  # rotate, then stretch each axis differently
    ridge = ExtractorConfig(anchor_basis="ridge", ridge=1e-4, activation_norm="none")
    cosine = dataclasses.replace(ridge, anchor_basis="cosine")
    for config, close in ((ridge, True), (cosine, False)):
        a, _ = relative_features(probes, anchors, config)
        b, _ = relative_features(probes @ mixing, anchors @ mixing, config)
        assert torch.allclose(a, b, atol=1e-3) is close, config.anchor_basis


def test_an_extractor_folder_without_anchor_basis_reads_cosines() -> None:
    data = {k: v for k, v in ExtractorConfig().to_dict().items() if k != "anchor_basis"}
    assert ExtractorConfig.from_dict(data).anchor_basis == "cosine"
    with pytest.raises(UmafError, match="anchor_basis"):
        ExtractorConfig(anchor_basis="dot")


@pytest.mark.parametrize("n_layers", [1, 2, 3, 6, 30])
@pytest.mark.parametrize("depth_bins", [1, 4, 8])
def test_layer_plan(n_layers: int, depth_bins: int) -> None:
    layers, weights = layer_plan(n_layers, depth_bins)
    assert weights.shape == (depth_bins, len(layers))
    assert torch.allclose(weights.sum(1), torch.ones(depth_bins))
    assert layers == sorted(set(layers)) and layers[0] >= 0 and layers[-1] <= n_layers - 1
    assert (weights > 0).any(0).all(), "only layers that some bin uses are captured"
    if depth_bins > 1:
        assert layers[0] == 0 and layers[-1] == n_layers - 1 and weights[-1, -1] == 1.0


def test_processor_features_are_invariant_to_rotation_and_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    acts = [torch.randn(3, n, 24, generator=gen) for n in (10, 16, 10, 16)]  # probes, anchors, their prompts
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=gen))
    _, weights = layer_plan(3, 4)
    for norm in ("none", "l2"):
        config = dataclasses.replace(SMALL, activation_norm=norm)
        base = process(*acts[:2], weights, config, *acts[2:])
        moved = process(*[5.0 * a @ q for a in acts[:2]], weights, config, *[5.0 * a @ q for a in acts[2:]])
        assert base.features.shape == (4, 10, 2 * 16) and base.layer_profile.shape == (4,)
        assert torch.allclose(base.features, moved.features, atol=1e-4)
        assert torch.allclose(base.layer_profile, moved.layer_profile, atol=1e-4)
    plain = dataclasses.replace(SMALL, delta=False, anchor_norm=False)
    zscored = process(*acts[:2], weights, plain).features
    assert zscored.shape == (4, 10, 16)
    assert torch.allclose(zscored.mean(-1), torch.zeros(4, 10), atol=1e-5)
    with pytest.raises(UmafError, match="prompt activations"):
        process(*acts[:2], weights, SMALL)


def test_prompt_of() -> None:
    assert prompt_of("owl -> owls") == "owl ->"
    assert prompt_of("a -> b -> c") == "a -> b ->"
    assert prompt_of("The cat sat.") == "The cat"


def test_processor_rejects_mismatched_activations() -> None:
    _, weights = layer_plan(2, 4)
    with pytest.raises(UmafError, match="equal layers and width"):
        process(torch.randn(2, 5, 8), torch.randn(2, 16, 9), weights, dataclasses.replace(SMALL, delta=False))


def test_processor_output_shape_independent_of_width_and_depth(tiny_llama) -> None:
    bigger = build_tiny("gpt2", "m", seed=1)  # 4 blocks of width 96 vs 2 blocks of width 32
    texts = get_capability("reverse").probe_texts(n=6)
    a = model_features(tiny_llama, texts, SMALL, progress=False)
    b = model_features(bigger, texts, SMALL, progress=False)
    assert tiny_llama.info.width != bigger.info.width and tiny_llama.info.n_layers != bigger.info.n_layers
    assert a.features.shape == b.features.shape == (SMALL.depth_bins, 6, WIDTH)
    assert a.layer_profile.shape == b.layer_profile.shape == (SMALL.depth_bins,)
    assert torch.isfinite(a.features).all() and (a.layer_profile >= 0).all()


# ---------------------------------------------------------------------------------------------- network


def test_extractor_output_is_unit_and_probe_order_free() -> None:
    extractor = small_extractor()
    feats = torch.randn(3, SMALL.depth_bins, 7, WIDTH)
    out = extractor.encode(feats)
    assert out.shape == (3, 512)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(extractor.encode(feats[:, :, torch.randperm(7)]), out, atol=1e-5)
    assert torch.allclose(extractor.encode(feats[0]), out[0], atol=1e-5)
    scores = extractor.competence(out)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()


def test_padding_mask_matches_unpadded() -> None:
    extractor = small_extractor()
    feats = torch.randn(1, SMALL.depth_bins, 5, WIDTH)
    padded = torch.cat([feats, torch.zeros(1, SMALL.depth_bins, 3, WIDTH)], dim=2)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    with torch.no_grad():
        assert torch.allclose(extractor(padded, mask), extractor(feats), atol=1e-5)


def test_untrained_extractor_is_the_projected_raw_baseline() -> None:
    feats = torch.randn(4, SMALL.depth_bins, 9, WIDTH)
    extractor = small_extractor()
    expected = torch.nn.functional.normalize(pool_features(feats) @ extractor.raw_projection.T, dim=-1)
    assert extractor.config.correction == 0.0  # the default keeps none of the network's correction
    with torch.no_grad():  # so the network is not run at all: a broken one changes nothing
        extractor.embed.weight.fill_(float("nan"))
    assert torch.allclose(extractor.encode(feats), expected, atol=1e-5)
    extractor = small_extractor()
    with torch.no_grad():  # a trained head
        extractor.head[-1].weight.normal_()
    before = extractor.extractor_hash
    extractor.config.correction = 0.1  # the share of the network's correction a fingerprint keeps
    some = extractor.encode(feats)
    assert not torch.allclose(some, expected, atol=1e-3)
    assert extractor.extractor_hash != before  # fingerprints differ, so downstream components must tell
    extractor.config.correction = 1.0
    assert not torch.allclose(extractor.encode(feats), some, atol=1e-3)
    plain = CapabilityExtractor(dataclasses.replace(SMALL, raw_skip=0.0))
    assert "raw_projection" not in plain.state_dict()
    assert plain.encode(feats).shape == (4, 512)


def test_extractor_rejects_features_of_another_shape() -> None:
    with pytest.raises(UmafError, match="this extractor expects"):
        small_extractor().encode(torch.randn(8, 5, 64))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    extractor = small_extractor()
    extractor.save_pretrained(tmp_path / "ext")
    doc = json.loads((tmp_path / "ext" / "config.json").read_text())
    assert doc["config"]["d_model"] == 32 and "umaf_version" in doc
    back = CapabilityExtractor.from_pretrained(tmp_path / "ext")
    feats = torch.randn(2, SMALL.depth_bins, 6, WIDTH)
    assert torch.equal(back.encode(feats), extractor.encode(feats))
    assert back.extractor_hash == extractor.extractor_hash
    assert small_extractor(seed=1).extractor_hash != extractor.extractor_hash
    with pytest.raises(UmafError, match="exists"):
        extractor.save_pretrained(tmp_path / "ext")


def test_a_folder_written_before_the_untrained_path_loads_without_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = CapabilityExtractor(dataclasses.replace(SMALL, raw_skip=0.0))
    folder = old.save_pretrained(tmp_path / "ext")
    doc = json.loads((folder / "config.json").read_text())
    del doc["config"]["raw_skip"]
    (folder / "config.json").write_text(json.dumps(doc))
    back = CapabilityExtractor.from_pretrained(folder)
    assert back.config.raw_skip == 0.0 and back.extractor_hash == old.extractor_hash


def test_from_pretrained_rejects_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(UmafError):
        CapabilityExtractor.from_pretrained(tmp_path / "missing")
    folder = small_extractor().save_pretrained(tmp_path / "ext")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UmafError, match="not a safetensors file"):
        CapabilityExtractor.from_pretrained(folder)
    folder = small_extractor().save_pretrained(tmp_path / "ext2")
    doc = json.loads((folder / "config.json").read_text())
    doc["config"]["bogus"] = 1
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(UmafError, match="unknown extractor config keys: bogus"):
        CapabilityExtractor.from_pretrained(folder)
    doc["config"].pop("bogus")
    doc["config"]["d_model"] = 64
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(UmafError, match="does not match"):
        CapabilityExtractor.from_pretrained(folder)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(UmafError, match="activation_norm"):
        ExtractorConfig(activation_norm="bogus")
    with pytest.raises(UmafError, match="divisible"):
        ExtractorConfig(d_model=30, n_heads=8)
    with pytest.raises(UmafError, match="raw_skip"):
        ExtractorConfig(raw_skip=-1.0)
    with pytest.raises(UmafError, match="correction"):
        ExtractorConfig(correction=1.5)


# ---------------------------------------------------------------------------------------- fingerprint()


def test_fingerprint_end_to_end(tiny, tmp_path: Path) -> None:
    extractor = small_extractor()
    cap = get_capability("plural")
    fp = fingerprint(tiny, cap, extractor, part=0, n_probes=8, progress=False)
    assert fp.vector.shape == (512,) and abs(float(fp.vector.norm()) - 1) < 1e-4
    assert fp.layer_profile.shape == (SMALL.depth_bins,)
    assert set(REQUIRED_META) <= set(fp.meta)
    assert fp.meta["capability"] == "plural" and fp.meta["family"] == tiny.info.family
    assert fp.meta["extractor_hash"] == extractor.extractor_hash and fp.meta["n_probes"] == 8
    assert 0 <= fp.meta["competence"] <= 1
    back = Fingerprint.load(fp.save(tmp_path / "fp.safetensors"))
    assert torch.equal(back.vector, fp.vector)
    again = fingerprint(tiny, "plural", extractor, part=0, n_probes=8, progress=False)
    assert torch.allclose(again.vector, fp.vector, atol=1e-6), "deterministic"


def test_anchor_activations_are_cached_per_model(tiny_gpt2, monkeypatch: pytest.MonkeyPatch) -> None:
    extractor = small_extractor()
    fingerprint(tiny_gpt2, "reverse", extractor, n_probes=4, progress=False)
    calls: list[int] = []
    real = fingerprinting_module.capture_activations

    def counting(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(fingerprinting_module, "capture_activations", counting)
    fingerprint(tiny_gpt2, "uppercase", extractor, n_probes=4, progress=False)
    assert calls == [8], "only the probes (and their prompts) are captured; anchors come from the cache"


# -------------------------------------------------------------------------------------------- training


def test_check_trainable_refuses_held_out() -> None:
    with pytest.raises(UmafError, match="held out"):
        train_module.check_trainable([get_capability(HELD_OUT_CAPABILITIES[0])], [])
    with pytest.raises(UmafError, match="held out"):
        train_module.check_trainable([], [HELD_OUT_FAMILIES[0]])
    config = train_module.TrainConfig(capabilities=(HELD_OUT_CAPABILITIES[0],))
    with pytest.raises(UmafError, match="held out"):
        train_module.training_classes(config)


def test_supcon_loss_prefers_clustered_embeddings() -> None:
    from umaf.extractor.losses import supcon_loss

    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.1], [0, 1], [0.1, 1]]), dim=-1)
    mixed = clustered[[0, 2, 1, 3]]
    assert supcon_loss(clustered, labels, 0.1) < supcon_loss(mixed, labels, 0.1)


@pytest.fixture
def fake_zoo(umaf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """Untrained tiny gpt2 x2, llama and the held-out t5 saved as zoo models, with made-up accuracies."""
    from umaf import zoo
    from umaf.zoo import ZooEntry

    entries = []
    for i, (family, seed) in enumerate([("gpt2", 0), ("gpt2", 1), ("llama", 0), ("t5", 0)]):
        name = f"fake-{family}-xs-{'ab'[seed]}"
        path = umaf_cache / "zoo" / name
        if not path.exists():
            loaded = build_tiny(family, "xs", seed=seed)
            loaded.model.save_pretrained(path)
            loaded.tokenizer.save_pretrained(path)
        accuracy = {"add": 0.1 * i, "reverse": 0.9 - 0.2 * i, "sentiment": 0.5}
        entries.append(ZooEntry(name, family, "xs", ("add",), accuracy, path))
    monkeypatch.setattr(zoo, "list_zoo", lambda quick=False: [] if quick else entries)
    return entries


def test_training_smoke_run(
    fake_zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umaf_cache: Path
) -> None:
    seen_texts: list[str] = []
    real = train_module.model_features

    def spy(loaded, texts, config, **kwargs):
        assert loaded.info.family not in HELD_OUT_FAMILIES
        seen_texts.extend(texts)
        return real(loaded, texts, config, **kwargs)

    monkeypatch.setattr(train_module, "model_features", spy)
    config = train_module.TrainConfig(
        extractor=SMALL, real_models=(), random_tiny=0, capabilities=("add", "reverse", "sentiment"),
        families=("add_k", "caesar"), n_family_instances=1, n_val_instances=1, steps=20,
        classes_per_batch=5, views_per_class=3, lr=3e-3, warmup=3, val_every=10, progress=False,
    )  # fmt: skip
    extractor = train_module.train_extractor(config, output=tmp_path / "ext")
    report = extractor.train_report
    assert report["models"] == ["zoo:fake-gpt2-xs-a", "zoo:fake-gpt2-xs-b", "zoo:fake-llama-xs-a"]
    assert report["val_models"] == ["zoo:fake-gpt2-xs-b"]
    losses = report["losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    classes = report["train_classes"] + report["val_classes"]
    assert not any(get_capability(c).held_out for c in classes)
    held_out_texts = {t for name in HELD_OUT_CAPABILITIES for t in get_capability(name).probe_texts()}
    assert seen_texts and not held_out_texts & set(seen_texts)
    cached = {p.parent.name for p in (umaf_cache / "features").rglob("*.safetensors")}
    assert not any("t5" in name for name in cached)
    back = CapabilityExtractor.from_pretrained(tmp_path / "ext")
    assert back.extractor_hash == extractor.extractor_hash
    assert back.train_report["val_models"] == report["val_models"]


def test_feature_cache_is_read_again_when_the_model_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "local-llama"
    for part in (build_tiny("llama", "xs", seed=0).model, build_tiny("llama", "xs").tokenizer):
        part.save_pretrained(folder)
    loads: list[str] = []
    real = train_module.load_model
    monkeypatch.setattr(train_module, "load_model", lambda name: loads.append(name) or real(name))
    model, classes = train_module.TrainModel(str(folder), "?"), [get_capability("reverse")]
    config = train_module.TrainConfig(extractor=SMALL, progress=False)
    _, (first,) = train_module.model_class_features(model, classes, config)
    _, (cached,) = train_module.model_class_features(model, classes, config)
    assert len(loads) == 1 and torch.equal(first, cached)
    build_tiny("llama", "xs", seed=5).model.save_pretrained(folder)  # the folder now holds another model
    _, (fresh,) = train_module.model_class_features(model, classes, config)
    assert len(loads) == 2 and not torch.allclose(fresh, first)


def test_view_sampler_draws_distinct_architectures_per_class() -> None:
    families = ["gpt2", "gpt2", "llama", "bert", "minilm"]
    models = [train_module.TrainModel(f"m{i}", f, None, f) for i, f in enumerate(families)]
    bank = train_module.FeatureBank(models, [], [], [32] * 6)
    config = train_module.TrainConfig(steps=5, classes_per_batch=3, views_per_class=4, max_probes=16)
    batches = list(train_module.ViewBatchSampler(bank, list(range(5)), list(range(6)), config))
    assert len(batches) == 5 and batches == list(
        train_module.ViewBatchSampler(bank, [0, 1, 2, 3, 4], list(range(6)), config)
    )
    for batch in batches:
        assert len(batch) == 12 and len({k for _, _, k, _ in batch}) == 1
        for c in {c for _, c, _, _ in batch}:
            assert len({families[m] for m, cc, _, _ in batch if cc == c}) == 4


def test_train_refuses_existing_output_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "ext").mkdir()
    with pytest.raises(UmafError, match="exists"):
        train_module.train_extractor(train_module.TrainConfig(progress=False), output=tmp_path / "ext")


def test_model_features_keeps_the_activations(tiny_bert) -> None:
    processed = model_features(tiny_bert, get_capability("plural").probe_texts(n=5), SMALL, progress=False)
    layers, _ = layer_plan(tiny_bert.info.n_layers, SMALL.depth_bins)
    assert processed.activations.shape == (len(layers), 5, tiny_bert.info.width)


def test_random_tiny_models_skip_held_out_families() -> None:
    models = train_module.random_tiny_models(2)
    assert len(models) == 2 * 6 and not any(m.family in HELD_OUT_FAMILIES for m in models)
    loaded = train_module.load_model(models[0].name)
    assert loaded.info.family == models[0].family and models[0].group == f"tiny-{models[0].family}"
