"""Pipeline files: every shipped example parses; bad files fail with one line naming the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from umaf.cli import main
from umaf.errors import UmafError
from umaf.pipeline import EXAMPLES_DIR, check_ready, format_results, load_pipeline, parse_pipeline
from umaf.pretrained.build import LIBRARY, SHIPPED_ORACLES

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))

GOOD = {
    "name": "t",
    "output": "t-out",
    "sources": [{"model": "minilm", "capabilities": ["plural", "sentiment"]}],
    "adapter": {
        "target": "smollm2",
        "from": [
            {"model": "minilm", "capability": "plural", "weight": 2},
            {"model": "smollm2", "capability": "antonym"},
        ],
    },
    "evaluate": {"limit": 8},
}


def test_the_repository_examples_folder_is_the_shipped_one() -> None:
    repo_examples = Path(__file__).resolve().parent.parent / "examples"
    assert repo_examples.resolve() == EXAMPLES_DIR
    assert {p.name for p in EXAMPLES} >= {"demo.yaml"} and len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_parses(path: Path) -> None:
    spec = load_pipeline(path)
    assert spec.fingerprints and spec.name == path.stem
    if spec.adapter is not None:
        keys = {ref.key for ref in spec.fingerprints}
        assert all(ref.key in keys for ref in spec.adapter.sources)


def test_demo_merges_two_architectures_for_smollm2() -> None:
    spec = load_pipeline(EXAMPLES_DIR / "demo.yaml")
    assert spec.adapter is not None and spec.adapter.target == "smollm2" and spec.adapter.merge == "distil"
    models = {ref.model for ref in spec.adapter.sources}
    assert len(models) == 2 and "smollm2" not in models
    assert spec.evaluate is not None and set(spec.evaluate.capabilities) == {"plural", "first_letter"}
    assert set(spec.adapter.library) == set(LIBRARY) and set(SHIPPED_ORACLES) == {"plural", "first_letter"}


def test_parse_fills_defaults_and_adds_fused_sources() -> None:
    spec = parse_pipeline(GOOD, "t.yaml")
    assert [r.key for r in spec.fingerprints] == [
        ("minilm", "plural"),
        ("minilm", "sentiment"),
        ("smollm2", "antonym"),
    ]
    assert [r.weight for r in spec.adapter.sources] == [2.0, 1.0]
    assert spec.adapter.fusion == "average" and spec.adapter.interpolate is False
    assert spec.evaluate.capabilities == ("plural", "antonym") and spec.evaluate.limit == 8
    assert spec.output == Path("t-out") and spec.metric == "cosine"


def _broken(path: str, value: object) -> dict:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("colour", "blue", "colour: unknown key"),
        ("sources", KeyError, "sources: missing"),
        ("sources", [], "sources: expected a non-empty list"),
        ("sources.0.capabilities", ["plural", "flying"], "sources[0].capabilities[1]: unknown capability"),
        ("sources.0.model", 3, "sources[0].model: expected a non-empty string"),
        ("sources.0.extra", 1, "sources[0].extra: unknown key"),
        ("adapter.target", KeyError, "adapter.target: missing"),
        ("adapter.fusion", "median", "adapter.fusion: unknown fusion mode"),
        ("adapter.rank", 0, "adapter.rank: expected a positive integer"),
        ("adapter.interpolate", "sometimes", "adapter.interpolate: expected true, false or auto"),
        ("adapter.query", "plural", "adapter.query: the gated fusion mode needs"),
        ("adapter.merge", "blend", "adapter.merge: expected distil, linear, cat, ties, dare_linear"),
        ("adapter.fusion", "slerp", None),  # with merge (below): the two exclude each other
        ("adapter.from.1.weight", "heavy", "adapter.from[1].weight: expected a number"),
        ("evaluate.oracle", "yes", "evaluate.oracle: expected true or false"),
        ("compare", {"metric": "cka"}, "compare.metric: unknown fingerprint metric"),
    ],
)
def test_bad_pipelines_name_the_key(path: str, value: object, message: str | None) -> None:
    data = _broken(path, value)
    if message is None:
        parse_pipeline(data, "t.yaml")  # valid alone
        data["adapter"]["merge"] = "distil"
        message = "adapter.merge: merge combines one adapter per source; give either fusion or merge"
    with pytest.raises(UmafError, match=r"^t\.yaml: ") as err:
        parse_pipeline(data, "t.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_evaluate_without_adapter_is_refused() -> None:
    data = {k: v for k, v in GOOD.items() if k != "adapter"}
    with pytest.raises(UmafError, match="evaluate: evaluation needs an adapter"):
        parse_pipeline(data, "t.yaml")


def test_check_ready_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_shipped: None
) -> None:
    monkeypatch.setenv("UMAF_CACHE", str(tmp_path / "cache"))
    spec = parse_pipeline({**GOOD, "output": str(tmp_path / "out")}, "t.yaml")
    with pytest.raises(
        UmafError, match=r"adapter.target: no trained generator for smollm2; .*umaf train generator"
    ):
        check_ready(spec)
    zoo = parse_pipeline({"sources": [{"model": "zoo:nope", "capabilities": ["plural"]}]}, "t.yaml")
    with pytest.raises(UmafError, match="zoo model 'zoo:nope' is not built"):
        check_ready(zoo)
    sources = {"sources": [{"model": "zoo:q-gpt2-xs-b", "capabilities": ["plural"]}], "train_missing": True}
    check_ready(parse_pipeline(sources, "t.yaml"))  # a quick-zoo model: the pipeline builds the quick zoo
    sources["sources"][0]["model"] = "zoo:gpt2-m-b"
    with pytest.raises(UmafError, match="zoo model 'zoo:gpt2-m-b' is not built; run `umaf zoo build`"):
        check_ready(parse_pipeline(sources, "t.yaml"))
    (tmp_path / "out").mkdir()
    with pytest.raises(UmafError, match="output: .* exists; pass --overwrite"):
        check_ready(spec)


def test_cli_run_reports_bad_files_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "surprise": 1}))
    assert main(["run", str(bad), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"umaf: error: {bad}: surprise: unknown key (expected one of " + err.split("one of ")[1]
    broken = tmp_path / "broken.yaml"
    broken.write_text("sources: [unclosed\n")
    assert main(["run", str(broken)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_cli_check_accepts_a_ready_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(
        yaml.safe_dump(
            {"sources": [{"model": "minilm", "capabilities": ["plural"]}], "output": str(tmp_path / "out")}
        )
    )
    assert main(["run", str(ok), "--check"]) == 0
    assert "valid; 1 fingerprints" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_nearest_other_model_skips_the_own_model() -> None:
    from umaf.pipeline.run import nearest_other_model

    sim = {"metric": "cosine", "labels": ["a:x", "a:y", "zoo:b:x"],
           "pairs": [["a", "x"], ["a", "y"], ["zoo:b", "x"]],
           "matrix": [[1.0, 0.9, 0.5], [0.9, 1.0, 0.2], [0.5, 0.2, 1.0]]}  # fmt: skip
    assert nearest_other_model(sim) == [(0, 2), (1, 2), (2, 0)]
    assert nearest_other_model({**sim, "metric": "kl"})[2] == (2, 1)  # lower is closer


def test_summary_keeps_family_instance_and_zoo_labels_whole(capsys: pytest.CaptureFixture[str]) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.pipeline.run import print_summary, similarity_table

    def fp(vector: list[float]) -> Fingerprint:
        return Fingerprint(torch.tensor(vector))

    # rsplit(":") would read minilm:add_k:7 as model "minilm:add_k" and capability "7"
    zoo = "zoo:llama-m-a"
    fps = {("minilm", "add_k:7"): fp([1.0, 0.0]), ("minilm", "add_k:8"): fp([0.0, 1.0]),
           (zoo, "add_k:7"): fp([0.9, 0.1]), (zoo, "add_k:8"): fp([0.1, 0.9])}  # fmt: skip
    sim = similarity_table(fps, "cosine")
    assert sim["labels"][0] == "minilm:add_k:7" and sim["pairs"][2] == ["zoo:llama-m-a", "add_k:7"]
    print_summary({"similarity": sim, "trained_this_run": [], "seconds": 1.0}, Path("out"))
    printed = capsys.readouterr().out
    assert "(4/4 the same capability;" in printed
    rows = {line.split()[0]: line.split()[2:] for line in printed.splitlines() if " -> " in line}
    assert rows["minilm:add_k:7"] == ["zoo:llama-m-a:add_k:7", "0.994"]
    assert rows["zoo:llama-m-a:add_k:8"] == ["minilm:add_k:8", "0.994"]


def test_format_results_aligns_missing_cells() -> None:
    text = format_results(
        {
            "capabilities": [
                {"capability": "plural", "base": 0.0, "adapter": 0.5, "oracle": 0.75},
                {"capability": "antonym", "base": 0.125, "adapter": 0.25},
            ]
        }
    )
    lines = text.splitlines()
    assert lines[0].split() == ["capability", "base", "adapter", "oracle"]
    assert lines[1].split() == ["plural", "0.000", "0.500", "0.750"]
    assert lines[2].split() == ["antonym", "0.125", "0.250", "-"]
    rows = [{"capability": "a", "base": 0.0, "single x": 0.5, "oracle": 1.0}]
    rows.append({"capability": "b", "single y": 0.25})
    assert format_results({"capabilities": rows}).splitlines()[0].split() == [
        "capability", "base", "single", "x", "single", "y", "oracle"
    ]


# ---------------------------------------------------------------------------------- end to end, tiny


@pytest.fixture(scope="module")
def tiny_world(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny source and target models saved as local folders, a small extractor, and a generator for the
    target (random output heads, so its adapters change the target) in the default generator folder."""
    import torch

    from umaf.extractor import CapabilityExtractor, ExtractorConfig
    from umaf.generator import AdapterGenerator, GeneratorConfig, target_module_specs
    from umaf.generator.config import generator_dir

    root = tmp_path_factory.mktemp("world")
    paths = {}
    for family in ("gpt2", "bert", "llama"):
        loaded = tiny_models[family]
        paths[family] = str(root / family)
        loaded.model.save_pretrained(paths[family])
        loaded.tokenizer.save_pretrained(paths[family])
    config = ExtractorConfig(n_anchors=16, d_model=32, n_layers=1, n_heads=2, ffn=64, head_hidden=64)
    extractor = CapabilityExtractor(config).eval()
    torch.manual_seed(0)
    gen_config = GeneratorConfig(
        target=paths["llama"], rank=2, gen_rank=4, task_dim=16, emb_dim=8, hidden=32, n_blocks=1, dropout=0.0
    )
    specs = target_module_specs(tiny_models["llama"].model, ("q_proj", "v_proj"))
    generator = AdapterGenerator(gen_config, specs, extractor.extractor_hash)
    for head in generator.head_b.values():
        torch.nn.init.normal_(head.weight, std=0.5)
    generator.eval().save_pretrained(generator_dir(paths["llama"]), overwrite=True)
    return {"paths": paths, "extractor": extractor}


def test_run_pipeline_end_to_end_on_tiny_models(
    tiny_world: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from peft import PeftModel

    from umaf.fingerprint import Fingerprint
    from umaf.models import load
    from umaf.pipeline import print_summary, run_pipeline

    paths = tiny_world["paths"]
    data = {
        "name": "tiny",
        "output": str(tmp_path / "out"),
        "sources": [
            {"model": paths["gpt2"], "capabilities": ["plural", "reverse"]},
            {"model": paths["bert"], "capabilities": ["plural"]},
        ],
        "adapter": {
            "target": paths["llama"],
            "rank": 2,
            "interpolate": False,
            "ignore_competence": True,  # random tiny models answer nothing right: generated anyway
            "from": [
                {"model": paths["gpt2"], "capability": "reverse", "weight": 3},
                {"model": paths["bert"], "capability": "plural", "weight": 1},
            ],
        },
        "evaluate": {"limit": 4, "perplexity": True},
    }
    spec = parse_pipeline(data, "tiny.yaml")
    results = run_pipeline(spec, extractor=tiny_world["extractor"])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter",
        "fingerprints",
        "pipeline.yaml",
        "report.html",
        "results.json",
    ]
    assert len(list((out / "fingerprints").glob("*.safetensors"))) == 4  # three sources and the fused one
    fused = Fingerprint.load(out / "fingerprints" / "fused.safetensors")
    assert [round(s["weight"], 3) for s in fused.meta["sources"]] == [0.75, 0.25]
    on_disk = json.loads((out / "results.json").read_text())
    assert (
        on_disk["similarity"]["labels"] == results["similarity"]["labels"]
        and len(on_disk["fingerprints"]) == 3
    )
    rows = {r["capability"]: r for r in on_disk["evaluation"]["capabilities"]}
    assert set(rows) == {"reverse", "plural"}
    assert {"base", "adapter", f"single {paths['gpt2']}"} <= set(rows["reverse"])
    assert all(0.0 <= v <= 1.0 for row in rows.values() for k, v in row.items() if k != "capability")
    assert on_disk["evaluation"]["perplexity"]["base"] > 1.0 and on_disk["adapter"]["interpolation"] == "off"
    assert "<svg" in (out / "report.html").read_text()
    warnings = on_disk["adapter"]["warnings"]  # random tiny models answer nothing right: both warned of
    assert [w.split(" reads ")[0] for w in warnings] == [paths["gpt2"], paths["bert"]]
    assert capsys.readouterr().err.count("umaf: warning: ") == 2
    print_summary(results, out)
    printed = capsys.readouterr().out
    assert "nearest fingerprint of another model" in printed
    assert "accuracy on the eval split (first 4" in printed
    assert f"{paths['gpt2']}:plural" in printed
    target = load(paths["llama"])
    ids = torch.tensor([[5, 6, 7, 8]])
    base_logits = target.model(ids).logits
    adapted = PeftModel.from_pretrained(target.model, str(out / "adapter"))
    assert not torch.allclose(adapted(ids).logits, base_logits)
    with pytest.raises(UmafError, match="output: .* exists; pass --overwrite"):
        run_pipeline(spec, extractor=tiny_world["extractor"])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_merge_pipelines_need_distinct_sources_and_positive_weights() -> None:
    merged = copy.deepcopy(GOOD)
    merged["adapter"]["merge"] = "distil"
    assert parse_pipeline(merged, "t.yaml").adapter.merge == "distil"
    for change, message in [
        (lambda a: a["from"].append(dict(a["from"][0])), "adapter.from: each source of a merge"),
        (lambda a: a["from"][1].update(weight=0), "adapter.from: merge weights must be positive"),
        (lambda a: a["from"].pop(), "adapter.merge: merging needs at least two sources"),
    ]:
        data = copy.deepcopy(merged)
        change(data["adapter"])
        with pytest.raises(UmafError, match=message):
            parse_pipeline(data, "t.yaml")


def test_pipeline_merges_one_adapter_per_source(tiny_world: dict, tmp_path: Path) -> None:
    from umaf.pipeline import run_pipeline

    paths = tiny_world["paths"]
    data = {
        "name": "tiny-merge",
        "output": str(tmp_path / "out"),
        "sources": [{"model": paths["gpt2"], "capabilities": ["uppercase"]}],
        "adapter": {
            "target": paths["llama"], "rank": 2, "merge": "distil", "ignore_competence": True,
            "from": [{"model": paths["gpt2"], "capability": "uppercase"},
                     {"model": paths["bert"], "capability": "sentiment"}],
        },
        "evaluate": {"limit": 2, "oracle": False},
    }  # fmt: skip
    results = run_pipeline(parse_pipeline(data, "m.yaml"), extractor=tiny_world["extractor"])
    out = tmp_path / "out"
    assert not (out / "fingerprints" / "fused.safetensors").exists() and not (out / "singles").exists()
    merged = json.loads((out / "adapter" / "merge.json").read_text())
    assert merged["method"] == "distil" and merged["capabilities"] == ["uppercase", "sentiment"]
    adapter = results["adapter"]
    assert adapter["merge"] == "distil" and adapter["fusion_mode"] is None and adapter["rank"] == 4
    assert 0.5 <= adapter["input_separability"] <= 1.0 and adapter["merge_seconds"] >= 0
    assert [s["capability"] for s in adapter["sources"]] == ["uppercase", "sentiment"]


def test_source_warnings_name_each_weak_source_once(capsys: pytest.CaptureFixture) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.pipeline.run import source_warnings

    def fp(model: str, competence: float) -> Fingerprint:
        meta = {"model": model, "capability": "plural", "competence": competence, "competence_method": "x"}
        return Fingerprint(torch.zeros(512), None, meta)

    weak = fp("weak", 0.1)
    warnings = source_warnings([fp("able", 0.9), weak, weak])
    assert warnings == [
        "weak reads plural with competence 0.10 (< 0.5): the adapter may not carry the capability"
    ]
    assert capsys.readouterr().err == f"umaf: warning: {warnings[0]}\n"
    assert source_warnings([fp("able", 0.9)]) == []


def test_a_source_that_lacks_its_capability_stops_the_adapter_stage(tmp_path: Path) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.pipeline.run import adapter_fingerprint

    meta = {"model": "tiny", "capability": "plural", "competence": 0.1, "competence_method": "agreement",
            "family": "gpt2", "architecture": "GPT2LMHeadModel", "n_params": 1, "n_layers": 2, "width": 32,
            "probe_hash": "0" * 16, "extractor_hash": "e" * 16, "umaf_version": "0.1.0"}
    fps = {("tiny", "plural"): Fingerprint(torch.nn.functional.normalize(torch.ones(512), dim=0), None, meta)}
    data = {"name": "x", "output": str(tmp_path / "out"),
            "sources": [{"model": "tiny", "capabilities": ["plural"]}],
            "adapter": {"target": "tiny", "from": [{"model": "tiny", "capability": "plural"}]}}
    with pytest.raises(UmafError, match=r"tiny reads plural with competence 0.10 \(< 0.5\): a source lacks"):
        adapter_fingerprint(parse_pipeline(data), fps, None, tmp_path)
    data["adapter"]["ignore_competence"] = True
    fused, _, summary = adapter_fingerprint(parse_pipeline(data), fps, None, tmp_path)
    assert fused is not None and summary["warnings"] == [
        "tiny reads plural with competence 0.10 (< 0.5): the adapter may not carry the capability"]
    data["adapter"]["ignore_competence"] = "yes"
    with pytest.raises(UmafError, match="adapter.ignore_competence"):
        parse_pipeline(data)


def test_format_matrix_names_each_row() -> None:
    from umaf.formatting import format_matrix

    lines = format_matrix(["minilm:add_k:7", "zoo:x:plural"], [[1.0, 0.25], [0.25, 1.0]],
                          {"competence": [None, 0.5]}).splitlines()  # fmt: skip
    assert lines[0].split() == ["[0]", "[1]"]
    assert lines[1].split() == ["[0]", "minilm:add_k:7", "1.000", "0.250"]
    assert lines[2].split() == ["[1]", "zoo:x:plural", "0.250", "1.000"]
    assert lines[3].split() == ["competence", "-", "0.500"]
