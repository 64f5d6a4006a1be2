"""The shared save/load mechanism of trained components: round trips in float32 and float16, folders in
the format written before dtypes were recorded, hash invariance, rounding, and every bad folder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import umaf
from umaf import components
from umaf.components import TrainedComponent, config_from_dict
from umaf.errors import UmafError
from umaf.extractor import CapabilityExtractor, ExtractorConfig
from umaf.fusion import FusionGate, GateConfig
from umaf.generator import AdapterGenerator, GeneratorConfig
from umaf.generator.model import ModuleSpec
from umaf.interpolator import InterpolatorConfig, SizeInterpolator


def _specs() -> list[ModuleSpec]:
    prefix = "base_model.model.model.layers"
    return [
        ModuleSpec(f"model.layers.{i}.q_proj", "q_proj", i, 8, 8, f"{prefix}.{i}.q_proj.lora_A.weight",
                   f"{prefix}.{i}.q_proj.lora_B.weight")
        for i in range(2)
    ]  # fmt: skip


def _extractor() -> CapabilityExtractor:
    config = ExtractorConfig(depth_bins=2, n_anchors=4, d_model=8, n_layers=1, n_heads=2, ffn=16,
                             head_hidden=16, fp_dim=8)  # fmt: skip
    return CapabilityExtractor(config)


def _interpolator() -> SizeInterpolator:
    return SizeInterpolator(InterpolatorConfig(fp_dim=8, hidden=8, extractor_hash="abc"))


def _gate() -> FusionGate:
    return FusionGate(GateConfig(fp_dim=8, key_dim=4, extractor_hash="abc"))


def _generator() -> AdapterGenerator:
    config = GeneratorConfig(target="tiny", target_modules=("q_proj",), rank=2, gen_rank=2, fp_dim=8,
                             task_dim=8, emb_dim=4, hidden=8, n_blocks=1, dropout=0.0)  # fmt: skip
    return AdapterGenerator(config, _specs(), "e" * 16, "CAUSAL_LM")


#: name -> (factory, an int field and a float field of its config)
BUILDERS: dict[str, tuple[Callable[[], TrainedComponent], str, str]] = {
    "extractor": (_extractor, "d_model", "dropout"),
    "interpolator": (_interpolator, "hidden", "dropout"),
    "gate": (_gate, "key_dim", "temperature"),
    "generator": (_generator, "hidden", "dropout"),
}


def make(name: str, seed: int = 0) -> TrainedComponent:
    """A component with random weights everywhere (zero-initialised heads too) and a training report."""
    torch.manual_seed(seed)
    model = BUILDERS[name][0]()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()
    model.train_report = {"final_loss": 0.25, "seed": seed}
    return model


def read_doc(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def write_doc(folder: Path, doc: object) -> None:
    (folder / "config.json").write_text(json.dumps(doc))


def same_state(a: TrainedComponent, b: TrainedComponent) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def legacy_hash(model: TrainedComponent) -> str:
    """The hash formula used before storage dtypes existed."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("name", BUILDERS)
def test_float32_round_trip(name: str, tmp_path: Path) -> None:
    model = make(name).train()
    folder = model.save_pretrained(tmp_path / name)
    doc = read_doc(folder)
    assert doc["format"] == type(model).FORMAT and doc["umaf_version"] == umaf.__version__
    assert doc["dtype"] == "float32"
    assert (folder / "config.json").read_text() == json.dumps(doc, sort_keys=True, indent=2) + "\n"
    back = type(model).from_pretrained(folder)
    assert type(back) is type(model) and not back.training
    assert same_state(back, model) and back.weights_hash == model.weights_hash
    assert back._config_dict() == model._config_dict()
    report_saved = type(model).REPORT_FIELD is not None
    assert back.train_report == (model.train_report if report_saved else {})
    assert all(t.dtype == torch.float32 for t in load_file(str(folder / "model.safetensors")).values())


@pytest.mark.parametrize("name", BUILDERS)
def test_float16_round_trip_stores_half_and_loads_float32(name: str, tmp_path: Path) -> None:
    model = make(name)
    folder = model.save_pretrained(tmp_path / name, dtype=torch.float16)
    assert read_doc(folder)["dtype"] == "float16"
    stored = load_file(str(folder / "model.safetensors"))
    assert stored and all(t.dtype == torch.float16 for t in stored.values())
    back = type(model).from_pretrained(folder)
    assert not back.training
    assert all(t.dtype == torch.float32 for t in back.state_dict().values())
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value.half().float()), key
    assert not same_state(back, model)  # random float32 weights do lose bits in half precision


@pytest.mark.parametrize("name", BUILDERS)
def test_rounded_model_hashes_the_same_after_a_float16_round_trip(name: str, tmp_path: Path) -> None:
    model = make(name)
    before = model.weights_hash
    assert model.round_to_dtype(torch.float16) is model
    assert model.weights_hash != before  # rounding did change the weights
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    for value in model.state_dict().values():
        assert torch.equal(value, value.half().float())
    back = type(model).from_pretrained(model.save_pretrained(tmp_path / name, dtype="float16"))
    assert back.weights_hash == model.weights_hash and same_state(back, model)


def test_extractor_hash_ignores_the_storage_dtype(tmp_path: Path) -> None:
    extractor = make("extractor").round_to_dtype(torch.float16)
    back = CapabilityExtractor.from_pretrained(
        extractor.save_pretrained(tmp_path / "ext", dtype=torch.float16)
    )
    assert back.extractor_hash == extractor.extractor_hash
    assert len(extractor.extractor_hash) == 16 and int(extractor.extractor_hash, 16) >= 0
    assert make("extractor", seed=1).extractor_hash != extractor.extractor_hash
    half = make("extractor").round_to_dtype(torch.float16).half()  # a float16 module hashes as float32
    assert half.extractor_hash == extractor.extractor_hash


@pytest.mark.parametrize("name", BUILDERS)
def test_float32_hash_is_unchanged_from_the_legacy_formula(name: str) -> None:
    model = make(name)
    assert model.weights_hash == legacy_hash(model)


def test_component_hash_aliases() -> None:
    assert make("interpolator").interpolator_hash == make("interpolator").weights_hash
    assert make("gate").gate_hash == make("gate").weights_hash
    assert make("gate", seed=1).gate_hash != make("gate").gate_hash


@pytest.mark.parametrize("name", BUILDERS)
def test_folder_written_before_dtypes_loads(name: str, tmp_path: Path) -> None:
    """The exact layout the per-component savers wrote: no ``dtype`` in config.json or metadata."""
    model = make(name)
    folder = tmp_path / name
    folder.mkdir()
    doc = {"format": model.FORMAT, "umaf_version": "0.1.0", "config": model._config_dict(),
           **model._extra_fields()}  # fmt: skip
    if model.REPORT_FIELD:
        doc[model.REPORT_FIELD] = model.train_report
    (folder / "config.json").write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(
        state, str(folder / "model.safetensors"), metadata={"format": model.FORMAT, "umaf_version": "0.1.0"}
    )
    back = type(model).from_pretrained(folder)
    assert same_state(back, model) and back.weights_hash == model.weights_hash


def test_generator_keeps_its_own_fields(tmp_path: Path) -> None:
    generator = make("generator")
    generator.training_report = {"capabilities": ["reverse"]}
    folder = generator.save_pretrained(tmp_path / "gen")
    doc = read_doc(folder)
    assert doc["training"] == {"capabilities": ["reverse"]} and doc["task_type"] == "CAUSAL_LM"
    assert set(doc["config"]) == set(GeneratorConfig().architecture())
    back = AdapterGenerator.from_pretrained(folder)
    assert back.module_specs == generator.module_specs and back.extractor_hash == "e" * 16
    assert back.training_report == {"capabilities": ["reverse"]} and back.config.target_modules == ("q_proj",)


# ------------------------------------------------------------------------------------------ writing


def test_existing_folder_is_not_clobbered(tmp_path: Path) -> None:
    first, second = make("gate"), make("gate", seed=1)
    folder = first.save_pretrained(tmp_path / "gate")
    with pytest.raises(UmafError, match="exists"):
        second.save_pretrained(folder)
    assert FusionGate.from_pretrained(folder).gate_hash == first.gate_hash
    second.save_pretrained(folder, overwrite=True)
    assert FusionGate.from_pretrained(folder).gate_hash == second.gate_hash


def test_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UmafError, match="int8"):
        make("gate").save_pretrained(tmp_path / "gate", dtype=torch.int8)
    assert list(tmp_path.iterdir()) == []

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    folder = make("gate").save_pretrained(tmp_path / "gate")
    monkeypatch.setattr(components, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        make("gate", seed=1).save_pretrained(folder, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["gate"]  # no temporary folder left
    assert FusionGate.from_pretrained(folder).gate_hash == make("gate").gate_hash  # the old one survives


# ------------------------------------------------------------------------------------------ bad folders


def _set(key: str, value: object) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        doc = read_doc(folder)
        doc[key] = value
        write_doc(folder, doc)

    return edit


def _set_config(key: str, value: object) -> Callable[[Path, str, str], None]:
    """Set config key ``key`` (``"int"`` / ``"float"``: the component's int or float field)."""

    def edit(folder: Path, int_field: str, float_field: str) -> None:
        doc = read_doc(folder)
        doc["config"][{"int": int_field, "float": float_field}.get(key, key)] = value
        write_doc(folder, doc)

    return edit


def _truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _halve_weights(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v.half() for k, v in state.items()}, str(folder / "model.safetensors"))


FOLDER_BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "no-config": (lambda f: (f / "config.json").unlink(), "missing or not valid JSON"),
    "bad-json": (lambda f: (f / "config.json").write_text("{not json"), "missing or not valid JSON"),
    "binary-json": (lambda f: (f / "config.json").write_bytes(b"\xff\xfe\x00"), "missing or not valid JSON"),
    "json-list": (lambda f: write_doc(f, [1, 2]), "not a UMAF"),
    "foreign-format": (_set("format", "umaf-something-else"), "not a UMAF"),
    "config-not-dict": (_set("config", [1, 2]), "config must be a JSON object"),
    "config-null": (_set("config", None), "config must be a JSON object"),
    "unknown-dtype": (_set("dtype", "int3"), "unknown dtype"),
    "report-not-dict": (_set("train_report", [1]), "train_report must be dict"),
    "no-weights": (lambda f: (f / "model.safetensors").unlink(), "not a safetensors file"),
    "garbage-weights": (
        lambda f: (f / "model.safetensors").write_bytes(b"garbage"),
        "not a safetensors file",
    ),
    "truncated-weights": (_truncate, "not a safetensors file"),
    "dtype-mismatch": (_halve_weights, "holds float16 weights but its config.json says float32"),
}

CONFIG_BREAKS: dict[str, tuple[Callable[[Path, str, str], None], str]] = {
    "unknown-key": (_set_config("colour", "red"), "unknown .* config keys: colour"),
    "str-for-int": (_set_config("int", "abc"), "must be int, got 'abc'"),
    "float-for-int": (_set_config("int", 2.5), "must be int, got 2.5"),
    "list-for-int": (_set_config("int", [8]), r"must be int, got \[8\]"),
    "bool-for-int": (_set_config("int", True), "must be int, got True"),
    "null-for-int": (_set_config("int", None), "must be int, got None"),
    "str-for-float": (_set_config("float", "0.1"), "must be float, got '0.1'"),
    "value-check": (_set_config("int", 0), "must be positive"),
    "shape-mismatch": (_set_config("int", 12), "does not match its config.json"),
}


def _saved(name: str, tmp_path: Path) -> tuple[TrainedComponent, Path]:
    model = make(name)
    return model, model.save_pretrained(tmp_path / name)


@pytest.mark.parametrize("name", BUILDERS)
def test_missing_folder_is_a_umaf_error(name: str, tmp_path: Path) -> None:
    cls = type(make(name))
    with pytest.raises(UmafError, match=f"no {cls.NAME} folder at"):
        cls.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UmafError, match=f"no {cls.NAME} folder at"):
        cls.from_pretrained(tmp_path / "file")


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("case", FOLDER_BREAKS)
def test_broken_folder_is_a_umaf_error(name: str, case: str, tmp_path: Path) -> None:
    model, folder = _saved(name, tmp_path)
    break_it, message = FOLDER_BREAKS[case]
    if case == "report-not-dict":
        break_it = _set(model.REPORT_FIELD, [1])
        message = f"{model.REPORT_FIELD} must be dict"
    break_it(folder)
    with pytest.raises(UmafError, match=message):
        type(model).from_pretrained(folder)


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("case", CONFIG_BREAKS)
def test_bad_config_value_is_a_umaf_error(name: str, case: str, tmp_path: Path) -> None:
    model, folder = _saved(name, tmp_path)
    break_it, message = CONFIG_BREAKS[case]
    break_it(folder, *BUILDERS[name][1:])
    with pytest.raises(UmafError, match=message):
        type(model).from_pretrained(folder)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("modules", {"a": 1}, "modules must be list of dict"),
        ("modules", [], "at least one module"),
        ("modules", [{"name": "x"}], "module spec lacks keys: in_features"),
        ("extractor_hash", 7, "extractor_hash must be str, got 7"),
        ("task_type", ["CAUSAL_LM"], "task_type must be str or null"),
    ],
)
def test_bad_generator_fields_are_umaf_errors(key: str, value: object, message: str, tmp_path: Path) -> None:
    _, folder = _saved("generator", tmp_path)
    _set(key, value)(folder)
    with pytest.raises(UmafError, match=message):
        AdapterGenerator.from_pretrained(folder)


def test_generator_module_spec_types_are_checked(tmp_path: Path) -> None:
    _, folder = _saved("generator", tmp_path)
    doc = read_doc(folder)
    doc["modules"][0]["layer"] = "0"
    write_doc(folder, doc)
    with pytest.raises(UmafError, match="module spec key 'layer' must be int"):
        AdapterGenerator.from_pretrained(folder)
    doc["modules"][0]["layer"] = 0
    doc["config"]["steps"] = 10  # a training field, not part of a saved generator
    write_doc(folder, doc)
    with pytest.raises(UmafError, match="unknown generator config keys: steps"):
        AdapterGenerator.from_pretrained(folder)


# ------------------------------------------------------------------------------------------ configs


def test_config_from_dict_converts_json_values() -> None:
    config = GeneratorConfig.from_dict(
        {"target_modules": ["q_proj", "v_proj"], "dropout": 0, "sources": None}
    )
    assert config.target_modules == ("q_proj", "v_proj") and isinstance(config.dropout, float)
    with pytest.raises(UmafError, match="'target_modules' must be list of str or null, got \\['q', 3\\]"):
        GeneratorConfig.from_dict({"target_modules": ["q", 3]})
    assert InterpolatorConfig.from_dict({"extractor_hash": None}).extractor_hash is None
    with pytest.raises(UmafError, match="'extractor_hash' must be str or null, got 5"):
        InterpolatorConfig.from_dict({"extractor_hash": 5})
    with pytest.raises(UmafError, match="'centre' must be bool, got 'yes'"):
        ExtractorConfig.from_dict({"centre": "yes"})
    with pytest.raises(UmafError, match="gate config must be a JSON object, got list"):
        GateConfig.from_dict([1])  # type: ignore[arg-type]
    with pytest.raises(UmafError, match="module spec lacks keys: in_features, kind"):
        config_from_dict(ModuleSpec, {"name": "x", "layer": 0, "out_features": 1, "lora_a_key": "a",
                                      "lora_b_key": "b"}, "module spec")  # fmt: skip
