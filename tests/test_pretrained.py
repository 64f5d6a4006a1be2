"""The shipped set: every component loads, the pieces agree with each other, and nothing has drifted."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from umaf import pretrained
from umaf.pretrained import build

SHIPPED = pretrained.SHIPPED_DIR


def test_manifest_lists_every_file_with_its_hash_within_the_budget():
    doc = pretrained.manifest()
    files = {str(p.relative_to(SHIPPED)) for p in SHIPPED.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(doc["files"]) == files
    for name, digest in doc["files"].items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name
    assert sum((SHIPPED / name).stat().st_size for name in files) <= 20 * 2**20


@pytest.mark.parametrize("relative, cls_name", [
    (pretrained.EXTRACTOR, "umaf.extractor.CapabilityExtractor"),
    (pretrained.generator_path(build.TARGET), "umaf.generator.AdapterGenerator"),
    (pretrained.INTERPOLATOR, "umaf.interpolator.SizeInterpolator"),
    (pretrained.GATE, "umaf.fusion.FusionGate"),
])  # fmt: skip
def test_each_shipped_network_loads_in_float32(relative, cls_name):
    import importlib

    module, name = cls_name.rsplit(".", 1)
    model = getattr(importlib.import_module(module), name).from_pretrained(SHIPPED / relative)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert json.loads((SHIPPED / relative / "config.json").read_text())["dtype"] == "float16"


def test_downstream_components_were_trained_on_the_shipped_extractor():
    from umaf.extractor import CapabilityExtractor
    from umaf.fusion import FusionGate
    from umaf.generator import AdapterGenerator
    from umaf.interpolator import SizeInterpolator

    shipped_hash = CapabilityExtractor.from_pretrained(SHIPPED / pretrained.EXTRACTOR).extractor_hash
    generator = AdapterGenerator.from_pretrained(SHIPPED / pretrained.generator_path(build.TARGET))
    assert generator.extractor_hash == shipped_hash
    interpolator = SizeInterpolator.from_pretrained(SHIPPED / pretrained.INTERPOLATOR)
    assert interpolator.config.extractor_hash == shipped_hash
    assert FusionGate.from_pretrained(SHIPPED / pretrained.GATE).config.extractor_hash == shipped_hash


def test_defaults_resolve_to_the_shipped_set_in_an_empty_cache():
    from umaf.extractor import default_extractor_dir
    from umaf.generator.config import generator_dir

    assert default_extractor_dir() == SHIPPED / pretrained.EXTRACTOR
    assert generator_dir(build.TARGET) == SHIPPED / pretrained.generator_path(build.TARGET)


def test_a_fingerprint_computed_now_matches_the_shipped_reference(one_thread):
    from umaf.extractor import default_extractor, fingerprint
    from umaf.fingerprint import Fingerprint
    from umaf.io import slug
    from umaf.models import load

    name = f"{slug(build.REFERENCE_MODEL)}-{build.REFERENCE_CAPABILITY}.safetensors"
    ref = Fingerprint.load(SHIPPED / pretrained.REFERENCE / name)
    now = fingerprint(load(build.REFERENCE_MODEL), build.REFERENCE_CAPABILITY, default_extractor())
    assert torch.nn.functional.cosine_similarity(now.vector, ref.vector, dim=0) > 0.999
    assert now.meta["extractor_hash"] == ref.meta["extractor_hash"]
    assert now.meta["probe_hash"] == ref.meta["probe_hash"]
    assert abs(now.meta["competence"] - ref.meta["competence"]) < 1e-3


def test_the_quick_zoo_and_the_demo_oracles_ship():
    from umaf.zoo import list_zoo, zoo_specs

    assert {e.name for e in list_zoo(quick=True)} >= {s.name for s in zoo_specs(quick=True)}
    for cap in build.SHIPPED_ORACLES:
        assert (SHIPPED / pretrained.ORACLES / build.TARGET / cap / "adapter_model.safetensors").is_file()


def test_a_missing_component_fails_with_the_command_that_builds_it(no_shipped, tmp_path, capsys):
    from umaf.cli import main

    code = main(["fingerprint", "zoo:q-gpt2-xs-b", "-c", "plural", "-o", str(tmp_path / "fp.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "umaf train extractor" in err[0] and "min" in err[0]
    assert not (tmp_path / "fp.safetensors").exists()


def test_train_all_builds_only_what_is_missing_and_records_times(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("UMAF_CACHE", str(tmp_path))
    built: list[str] = []
    parts = [build.Part("first", lambda: "first" in built, lambda: built.append("first")),
             build.Part("second", lambda: True, lambda: built.append("second"))]  # fmt: skip
    monkeypatch.setattr(build, "parts", lambda: parts)
    times = build.train_all()
    assert built == ["first"] and set(times) == {"first"}
    assert json.loads((tmp_path / build.TIMES_FILE).read_text()) == times
    build.train_all()  # resumable: nothing left to build
    assert built == ["first"]
    err = capsys.readouterr().err
    assert "umaf: first: built in" in err and "umaf: second: built" in err


def test_ship_refuses_a_folder_it_cannot_write_before_any_training(monkeypatch, tmp_path):
    from umaf.errors import UmafError

    monkeypatch.setattr(build, "parts", lambda: pytest.fail("nothing may be built"))
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(UmafError, match="editable install"):
        build.train_all(ship_to=tmp_path / "components")


def _write_safetensors(path, tensors, metadata, reverse_metadata=False):
    """A safetensors file whose metadata keys are written in the given (or the reverse) order."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    meta = header.pop("__metadata__")
    keys = sorted(meta, reverse=reverse_metadata)
    text = json.dumps({"__metadata__": {k: meta[k] for k in keys}, **header}).encode()
    text += b" " * (-len(text) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])


def test_reshipping_keeps_the_bytes_of_unchanged_files_and_replaces_changed_ones(tmp_path):
    meta = {"a": "1", "b": "2"}
    same, changed = {"w": torch.ones(2, 3)}, {"w": torch.zeros(2, 3)}
    _write_safetensors(tmp_path / "old/x/model.safetensors", same, meta)
    _write_safetensors(tmp_path / "old/y/model.safetensors", same, meta)
    _write_safetensors(tmp_path / "new/x/model.safetensors", same, meta, reverse_metadata=True)
    _write_safetensors(tmp_path / "new/y/model.safetensors", changed, meta)
    read = lambda rel: (tmp_path / rel / "model.safetensors").read_bytes()  # noqa: E731
    assert read("new/x") != read("old/x")
    build._keep_unchanged(tmp_path / "new", tmp_path / "old")
    assert read("new/x") == read("old/x")
    assert read("new/y") != read("old/y")
