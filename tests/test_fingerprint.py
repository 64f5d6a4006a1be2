"""Fingerprint files: round trip, and every kind of bad file is a UmafError that leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from umaf.errors import UmafError
from umaf.fingerprint import REQUIRED_META, Fingerprint, check_compatible, stack


def make_fp(extractor_hash: str = "abc", **meta_overrides: object) -> Fingerprint:
    meta = {
        "model": "tiny-llama", "family": "llama", "architecture": "LlamaForCausalLM", "n_params": 1234,
        "n_layers": 2, "width": 32, "capability": "sentiment", "probe_hash": "0123456789abcdef",
        "extractor_hash": extractor_hash, "umaf_version": "0.1.0",
    }  # fmt: skip
    meta.update(meta_overrides)
    vector = torch.nn.functional.normalize(
        torch.randn(512, generator=torch.Generator().manual_seed(0)), dim=0
    )
    return Fingerprint(vector, torch.linspace(0, 1, 8), meta)


def test_round_trip(tmp_path: Path) -> None:
    fp = make_fp(competence=0.5)
    path = fp.save(tmp_path / "a.fp.safetensors")
    back = Fingerprint.load(path)
    assert torch.equal(back.vector, fp.vector) and back.vector.dtype == torch.float32
    assert torch.equal(back.layer_profile, fp.layer_profile)
    assert back.meta == fp.meta
    assert back.capability == "sentiment" and back.model == "tiny-llama"


def test_round_trip_without_layer_profile(tmp_path: Path) -> None:
    fp = make_fp()
    fp.layer_profile = None
    back = Fingerprint.load(fp.save(tmp_path / "b.safetensors"))
    assert back.layer_profile is None


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = make_fp().save(tmp_path / "a.safetensors")
    with pytest.raises(UmafError, match="exists"):
        make_fp().save(path)
    make_fp(extractor_hash="new").save(path, overwrite=True)
    assert Fingerprint.load(path).meta["extractor_hash"] == "new"


def _only(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "break_it",
    [
        lambda fp: setattr(fp, "vector", torch.zeros(100)),
        lambda fp: fp.vector.__setitem__(3, float("nan")),
        lambda fp: fp.meta.pop("probe_hash"),
        lambda fp: fp.meta.__setitem__("bad", object()),
    ],
    ids=["wrong-shape", "nan", "missing-meta", "unserialisable-meta"],
)
def test_bad_fingerprint_is_not_written(tmp_path: Path, break_it) -> None:
    fp = make_fp()
    break_it(fp)
    with pytest.raises(UmafError):
        fp.save(tmp_path / "x.safetensors")
    assert _only(tmp_path) == []


def _write_raw(path: Path, tensors: dict, metadata: dict | None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_load_rejects_foreign_safetensors(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "w.safetensors", {"weight": torch.zeros(3)}, {"format": "pt"})
    with pytest.raises(UmafError, match="is not a UMAF fingerprint file"):
        Fingerprint.load(path)


def test_load_rejects_corrupt_and_missing_files(tmp_path: Path) -> None:
    good = make_fp().save(tmp_path / "good.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:50])
    with pytest.raises(UmafError, match="is not a UMAF fingerprint file"):
        Fingerprint.load(corrupt)
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(UmafError, match="is not a UMAF fingerprint file"):
        Fingerprint.load(tmp_path / "text.safetensors")
    with pytest.raises(UmafError, match="does not exist"):
        Fingerprint.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("tensors", "meta", "message"),
    [
        ({"vector": torch.zeros(100)}, None, "shape"),
        ({"vector": torch.full((512,), float("nan"))}, None, "NaN"),
        ({"vector": torch.zeros(512)}, {"model": "m"}, "metadata lacks"),
        ({"vector": torch.zeros(512)}, "not json", "not valid JSON"),
    ],
    ids=["wrong-shape", "nan", "missing-meta", "bad-json"],
)
def test_load_validates_contents(tmp_path: Path, tensors: dict, meta: object, message: str) -> None:
    full_meta = make_fp().meta if meta is None else meta
    umaf_meta = full_meta if isinstance(full_meta, str) else json.dumps(full_meta)
    path = _write_raw(tmp_path / "f.safetensors", tensors, {"format": "umaf-fingerprint", "umaf": umaf_meta})
    with pytest.raises(UmafError, match=message):
        Fingerprint.load(path)


@pytest.mark.parametrize("key", REQUIRED_META)
def test_every_required_key_is_needed_to_save_and_to_load(key: str, tmp_path: Path) -> None:
    fp = make_fp()
    del fp.meta[key]
    with pytest.raises(UmafError, match=f"metadata lacks {key}"):
        fp.save(tmp_path / "x.safetensors")
    assert _only(tmp_path) == []
    meta = {"format": "umaf-fingerprint", "umaf": json.dumps(fp.meta)}
    path = _write_raw(tmp_path / "raw.safetensors", {"vector": fp.vector}, meta)
    with pytest.raises(UmafError, match=f"metadata lacks {key}"):
        Fingerprint.load(path)


def test_check_compatible() -> None:
    check_compatible([make_fp("abc"), make_fp("abc")])
    assert stack([make_fp("abc"), make_fp("abc")]).shape == (2, 512)
    with pytest.raises(
        UmafError, match=r"different extractors \(abc vs def\); recompute them with one extractor"
    ):
        check_compatible([make_fp("abc"), make_fp("def")])
