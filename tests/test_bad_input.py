"""Bad input to every CLI command: one ``umaf: error:`` line, a non-zero exit, no traceback, nothing written.

Each case runs ``umaf.cli.main`` in-process (a few run ``python -m umaf.cli`` in a fresh process, to see
exactly what a user sees) inside a fresh copy of a small workspace (fingerprints, files that are not what
they claim, an untrained extractor, a tiny LLaMA folder, pipeline files) with ``UMAF_CACHE`` inside it,
and checks that the workspace is byte-for-byte unchanged afterwards: no output file or folder, no
temporary sibling, existing files untouched. Every case must fail on a cheap check: an in-process case
that starts to train or to load an embedded real model fails at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from umaf.cli import main

# ------------------------------------------------------------------------------------------ workspace


def _fingerprint(path: Path, extractor_hash: str = "aaaa") -> None:
    from umaf.fingerprint import Fingerprint

    meta = {"model": "tiny", "family": "llama", "architecture": "LlamaForCausalLM", "n_params": 1000,
            "n_layers": 2, "width": 32, "capability": "sentiment", "probe_hash": "p",
            "extractor_hash": extractor_hash, "umaf_version": "0"}  # fmt: skip
    Fingerprint(torch.randn(512, generator=torch.Generator().manual_seed(0)), None, meta).save(path)


def _bad_component(source: Path, target: Path) -> None:
    """A copy of a component folder whose config.json holds a wrong-typed value."""
    shutil.copytree(source, target)
    doc = json.loads((target / "config.json").read_text())
    doc["config"]["depth_bins"] = "eight"
    (target / "config.json").write_text(json.dumps(doc))


def _yaml(path: Path, text: str) -> None:
    path.write_text(text)


_SOURCES = "sources:\n  - {model: minilm, capabilities: [sentiment]}\n"


def _write_assets(root: Path) -> None:
    from umaf.extractor import CapabilityExtractor, ExtractorConfig
    from umaf.models import build_tiny

    (root / "cache").mkdir()
    _fingerprint(root / "fp.safetensors")
    _fingerprint(root / "fp-other.safetensors", extractor_hash="bbbb")
    save_file({"weight": torch.zeros(3)}, str(root / "foreign.safetensors"))
    (root / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    save_file({"vector": torch.zeros(512)}, str(root / "badmeta.safetensors"),
              metadata={"format": "umaf-fingerprint", "umaf": "{not json"})  # fmt: skip
    save_file({"vector": torch.zeros(512)}, str(root / "fewmeta.safetensors"),
              metadata={"format": "umaf-fingerprint", "umaf": '{"model": "x"}'})  # fmt: skip
    (root / "empty.jsonl").write_text("")
    (root / "badline.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "a", "output": \n')
    (root / "nooutput.jsonl").write_text('{"input": "a"}\n')
    (root / "nonstring.jsonl").write_text('{"input": "a", "output": 3}\n')
    (root / "few.jsonl").write_text("".join(f'{{"input": "x{i}", "output": "y"}}\n' for i in range(5)))
    (root / "notjson.json").write_text("{oops")
    (root / "list.json").write_text("[1, 2]\n")
    (root / "keep.safetensors").write_bytes(b"keep me")
    (root / "keep.html").write_text("keep me")
    (root / "keep.json").write_text("keep me")
    (root / "keep-dir").mkdir()
    (root / "keep-dir" / "file.txt").write_text("keep me")
    (root / "not-an-adapter").mkdir()
    (root / "not-an-adapter" / "adapter_model.safetensors").write_bytes(b"x")
    torch.manual_seed(0)
    small = ExtractorConfig(depth_bins=4, n_anchors=16, d_model=32, n_layers=1, n_heads=2, ffn=64,
                            head_hidden=64)  # fmt: skip
    CapabilityExtractor(small).save_pretrained(root / "extractor")
    _bad_component(root / "extractor", root / "bad-extractor")
    tiny = build_tiny("llama", "xs", seed=1)
    tiny.model.save_pretrained(root / "tiny")
    tiny.tokenizer.save_pretrained(root / "tiny")
    _yaml(root / "notyaml.yaml", "sources: [unclosed\n")
    _yaml(root / "list.yaml", "- just\n- a list\n")
    _yaml(root / "unknown-key.yaml", _SOURCES + "colour: blue\n")
    _yaml(root / "wrong-type.yaml", "sources:\n  - {model: minilm, capabilities: sentiment}\n")
    _yaml(root / "rank.yaml", _SOURCES + "adapter:\n  target: smollm2\n  rank: eight\n"
          "  from: [{model: minilm, capability: sentiment}]\n")  # fmt: skip
    _yaml(root / "limit.yaml", _SOURCES + "adapter:\n  target: smollm2\n"
          "  from: [{model: minilm, capability: sentiment}]\nevaluate: {limit: 0}\n")  # fmt: skip
    _yaml(root / "fusion.yaml", _SOURCES + "adapter:\n  target: smollm2\n  fusion: blend\n"
          "  from: [{model: minilm, capability: sentiment}]\n")  # fmt: skip
    _yaml(root / "escape.yaml", "sources:\n  - {model: 'zoo:../x', capabilities: [sentiment]}\n")
    _yaml(root / "unknown-cap.yaml", "sources:\n  - {model: minilm, capabilities: [flying]}\n")
    _yaml(root / "good.yaml", _SOURCES + "output: keep-dir\n")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-input-assets")
    _write_assets(root)
    return root


def _malformed_zoo(ws: Path) -> None:
    entry = ws / "cache" / "zoo" / "llama-xs-a"
    entry.mkdir(parents=True)
    (entry / "zoo.json").write_text('{"name": "llama-xs-a", "family": ')


def _mistyped_zoo(ws: Path) -> None:
    entry = ws / "cache" / "zoo" / "llama-xs-a"
    entry.mkdir(parents=True)
    record = {"name": "llama-xs-a", "family": "llama", "size": "xs", "trained": "sentiment", "accuracy": {}}
    (entry / "zoo.json").write_text(json.dumps(record))


def _escaped_zoo(ws: Path) -> None:
    """A model folder just outside the zoo, so that ``zoo:../x`` would find one if it were followed."""
    (ws / "cache" / "zoo").mkdir()
    shutil.copytree(ws / "tiny", ws / "cache" / "x")


@pytest.fixture
def no_expensive_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the case at once if it starts to train (makes an optimiser) or to load an embedded real model."""

    def refuse(what: str) -> Callable[..., None]:
        def fail(*args, **kwargs) -> None:
            pytest.fail(f"a bad-input case must fail before it {what}")

        return fail

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", refuse("trains anything"))
    monkeypatch.setattr("umaf.models._package_dir", refuse("loads a real model"))


def snapshot(root: Path) -> dict[str, str]:
    """Every file (content hash) and folder under ``root``, hidden ones included."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            seen[os.path.relpath(os.path.join(folder, d), root)] = "dir"
        for f in files:
            path = os.path.join(folder, f)
            seen[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return seen


# ---------------------------------------------------------------------------------------------- cases

FP, OTHER, NEW, EX = "fp.safetensors", "fp-other.safetensors", "new.safetensors", ("--extractor", "extractor")
NO_MODEL = "no-such-model-xyz"  # eval cases: what needs no model must be refused before this one is tried


def C(argv: list[str], needle: str, setup: Callable[[Path], None] | None = None, *, id: str,  # noqa: A002
      fresh: bool = False):  # fmt: skip
    """One case: the arguments, text the error line must hold, what to add to the workspace first, and
    whether to run in a fresh ``python -m umaf.cli`` process (what the user sees, warnings included)."""
    return pytest.param(argv, needle, setup, fresh, id=id)


CASES = [
    # fingerprint
    C(["fingerprint", "./no/such/model", "-c", "sentiment", "-o", NEW, *EX], "no/such/model does not exist",
      id="fingerprint-missing-model-path"),
    C(["fingerprint", NO_MODEL, "-c", "sentiment", "-o", NEW, *EX], NO_MODEL, id="fingerprint-unknown-model"),
    C(["fingerprint", "zoo:../x", "-c", "sentiment", "-o", NEW, *EX], "bad zoo model 'zoo:../x'",
      _escaped_zoo, id="fingerprint-zoo-escape"),
    C(["fingerprint", "tiny", "-c", "no_such_capability", "-o", NEW, *EX], "no_such_capability",
      id="fingerprint-unknown-capability"),
    C(["fingerprint", "tiny", "-c", "empty.jsonl", "-o", NEW, *EX], "empty.jsonl: empty",
      id="fingerprint-empty-jsonl"),
    C(["fingerprint", "tiny", "-c", "badline.jsonl", "-o", NEW, *EX], "badline.jsonl:2: malformed",
      id="fingerprint-malformed-jsonl"),
    C(["fingerprint", "tiny", "-c", "nooutput.jsonl", "-o", NEW, *EX], "nooutput.jsonl:1: missing key",
      id="fingerprint-jsonl-missing-output"),
    C(["fingerprint", "tiny", "-c", "nonstring.jsonl", "-o", NEW, *EX], "nonstring.jsonl:1: 'output' must be",
      id="fingerprint-jsonl-non-string"),
    C(["fingerprint", "tiny", "-c", "few.jsonl", "-o", NEW, *EX], "at least 16",
      id="fingerprint-too-few-probes"),
    C(["fingerprint", "tiny", "-c", "missing.jsonl", "-o", NEW, *EX], "missing.jsonl",
      id="fingerprint-missing-jsonl"),
    C(["fingerprint", "tiny", "-c", "sentiment", "-o", "keep.safetensors", *EX], "keep.safetensors exists",
      id="fingerprint-output-exists"),
    C(["fingerprint", "tiny", "-c", "sentiment", "-o", NEW, "--extractor", "nowhere"], "nowhere",
      id="fingerprint-missing-extractor"),
    C(["fingerprint", "tiny", "-c", "sentiment", "-o", NEW, "--extractor", "bad-extractor"], "'depth_bins'",
      id="fingerprint-extractor-wrong-typed-config"),
    C(["fingerprint", "tiny", "-c", "sentiment", "-o", NEW, *EX, "--batch-size", "0"], "--batch-size",
      id="fingerprint-batch-size-0"),
    C(["fingerprint", "tiny", "-c", "sentiment", "-o", NEW, *EX, "--device", "tpu9"], "unknown device 'tpu9'",
      id="fingerprint-unknown-device"),
    C(["fingerprint", "tiny", "-c", "sentiment", "-o", NEW, *EX, "--dtype", "int3"], "unknown dtype 'int3'",
      id="fingerprint-unknown-dtype"),
    # compare
    C(["compare", "missing.safetensors"], "missing.safetensors does not exist", id="compare-missing-file"),
    C(["compare", "garbage.safetensors"], "garbage.safetensors is not", id="compare-not-safetensors"),
    C(["compare", "foreign.safetensors", FP], "foreign.safetensors is not", id="compare-foreign-safetensors"),
    C(["compare", "badmeta.safetensors"], "metadata is not valid JSON", id="compare-metadata-not-json"),
    C(["compare", "fewmeta.safetensors"], "metadata lacks family", id="compare-metadata-incomplete"),
    C(["compare", FP, OTHER], "different extractors", id="compare-mixed-extractors"),
    C(["compare", FP, FP, "--metric", "euclid"], "'euclid'", id="compare-unknown-metric"),
    # interpolate
    C(["interpolate", FP, "-o", NEW], "give either --to", id="interpolate-no-target"),
    C(["interpolate", FP, "--to", "tiny", "--to-params", "1e6", "-o", NEW], "give either --to",
      id="interpolate-both"),
    C(["interpolate", FP, "--to-params", "-5", "-o", NEW], "parameter count must be at least 1",
      id="interpolate-negative-params"),
    C(["interpolate", FP, "--to-params", "1e6", "--to-layers", "0", "-o", NEW], "number of layers must be",
      id="interpolate-zero-layers"),
    C(["interpolate", FP, "--to", "tiny", "-o", "keep.safetensors"], "--overwrite",
      id="interpolate-output-exists"),
    C(["interpolate", FP, "--to-params", "1e6", "-o", NEW], "umaf train interpolator",
      id="interpolate-no-interpolator"),
    C(["interpolate", FP, "--to-params", "1e6", "--interpolator", "extractor", "-o", NEW], "extractor",
      id="interpolate-not-an-interpolator"),
    C(["interpolate", "garbage.safetensors", "--to", "tiny", "-o", NEW], "garbage.safetensors",
      id="interpolate-not-a-fingerprint"),
    # fuse
    C(["fuse", FP, FP, "--mode", "blend", "-o", NEW], "'blend'", id="fuse-unknown-mode"),
    C(["fuse", FP, FP, "--weights", "1", "-o", NEW], "1 weights for 2", id="fuse-weight-count"),
    C(["fuse", FP, FP, "--query", FP, "--capability", "sentiment", "-o", NEW], "not both",
      id="fuse-query-and-capability"),
    C(["fuse", FP, FP, "--mode", "gated", "--capability", "sentiment", "-o", NEW], "umaf train fusion",
      id="fuse-gated-without-gate"),
    C(["fuse", FP, FP, "--mode", "gated", "--capability", "sentiment", "--gate", "nowhere", "-o", NEW],
      "nowhere", id="fuse-missing-gate-folder"),
    C(["fuse", FP, OTHER, "-o", NEW], "different extractors", id="fuse-mixed-extractors"),
    C(["fuse", FP, "missing.safetensors", "-o", NEW], "missing.safetensors", id="fuse-missing-file"),
    C(["fuse", FP, FP, "-o", "keep.safetensors"], "--overwrite", id="fuse-output-exists"),
    C(["fuse", FP, FP, "--device", "tpu9", "-o", NEW], "unknown device 'tpu9'", id="fuse-unknown-device"),
    # generate
    C(["generate", FP, "--target", "zoo:nothing", "-o", "adapter"], "train generator --target zoo:nothing",
      id="generate-no-generator"),
    C(["generate", FP, "--target", "tiny", "--rank", "0", "-o", "adapter"], "rank 0 is out of range",
      id="generate-rank-0"),
    C(["generate", FP, "--target", "tiny", "--rank", "-3", "-o", "adapter"], "rank -3 is out of range",
      id="generate-negative-rank"),
    C(["generate", "missing.safetensors", "--target", "tiny", "-o", "adapter"], "missing.safetensors",
      id="generate-missing-fingerprint"),
    C(["generate", FP, "--target", "tiny", "--generator", "nowhere", "-o", "adapter"], "nowhere",
      id="generate-missing-generator-folder"),
    C(["generate", FP, "--target", "tiny", "--generator", "extractor", "-o", "adapter"], "extractor",
      id="generate-not-a-generator"),
    C(["generate", FP, "--target", "tiny", "-o", "keep-dir"], "keep-dir exists", id="generate-output-exists"),
    # eval: the adapter, the capability and the limit are checked before the model is loaded
    C(["eval", NO_MODEL, "--adapter", "nowhere", "-c", "sentiment"], "adapter folder nowhere does not exist",
      id="eval-missing-adapter"),
    C(["eval", NO_MODEL, "--adapter", "not-an-adapter", "-c", "sentiment"], "missing adapter_config.json",
      id="eval-adapter-without-config"),
    C(["eval", NO_MODEL, "-c", "flying"], "'flying'", id="eval-unknown-capability"),
    C(["eval", NO_MODEL, "-c", "badline.jsonl"], "badline.jsonl:2", id="eval-malformed-jsonl"),
    C(["eval", NO_MODEL, "-c", "sentiment", "--limit", "0"], "limit must be", id="eval-limit-0"),
    C(["eval", NO_MODEL, "-c", "sentiment", "--limit", "-4"], "limit must be", id="eval-negative-limit"),
    C(["eval", NO_MODEL, "-c", "sentiment", "--device", "tpu9"], "unknown device 'tpu9'",
      id="eval-unknown-device"),
    C(["eval", NO_MODEL, "-c", "sentiment", "--dtype", "int3"], "unknown dtype 'int3'",
      id="eval-unknown-dtype"),
    C(["eval", "zoo:../x", "-c", "sentiment"], "bad zoo model", _escaped_zoo, id="eval-zoo-escape"),
    # train
    C(["train", "extractor", "--models", "tiny:foo", "-o", "ext"], "bad tiny model 'tiny:foo'",
      id="train-extractor-bad-tiny", fresh=True),
    C(["train", "extractor", "--models", "tiny:llama-xs-0", "zoo:nothing", "-o", "ext"], "'zoo:nothing'",
      id="train-extractor-unbuilt-zoo-model"),
    C(["train", "extractor", "--steps", "-1", "-o", "ext"], "steps must be",
      id="train-extractor-negative-steps"),
    C(["train", "extractor", "--steps", "0", "-o", "ext"], "--steps must be at least 1, got 0",
      id="train-extractor-zero-steps", fresh=True),
    C(["train", "extractor", "--extractor.d-model", "30", "-o", "ext"],
      "--extractor.d-model (30) must be divisible by --extractor.n-heads", id="train-extractor-nested-flag"),
    C(["train", "extractor", "--no-progress", "--min-probes", "9", "--max-probes", "8", "-o", "ext"],
      "1 <= --min-probes <= --max-probes", id="train-extractor-probe-range"),
    C(["train", "extractor", "-o", "keep-dir"], "--overwrite", id="train-extractor-output-exists"),
    C(["train", "interpolator", "--steps", "-1", "-o", "interp"], "--steps, --batch-size and --val-every",
      id="train-interpolator-negative-steps"),
    C(["train", "interpolator", "--held-out-sizes", "xl", "-o", "interp"], "unknown zoo size 'xl'",
      id="train-interpolator-unknown-size"),
    C(["train", "interpolator", "--interpolator.dropout", "1.5", "-o", "interp"],
      "--interpolator.dropout must be in [0, 1)", id="train-interpolator-nested-dropout"),
    C(["train", "interpolator", "-o", "keep-dir"], "--overwrite", id="train-interpolator-output-exists"),
    C(["train", "fusion", "--steps", "0", "-o", "gate"], "--steps and --batch-size",
      id="train-fusion-zero-steps"),
    C(["train", "fusion", "--reference-model", "tiny", "--min-sources", "1", "-o", "gate"],
      "2 <= --min-sources <= --max-sources", id="train-fusion-min-sources"),
    C(["train", "fusion", "-o", "keep-dir"], "--overwrite", id="train-fusion-output-exists"),
    C(["train", "lora", "-c", "parity"], "needs --target", id="train-lora-no-target"),
    C(["train", "lora", "--target", "tiny", "-c", "parity", "--steps", "-1", "-o", "oracle"], "steps must be",
      id="train-lora-negative-steps"),
    C(["train", "lora", "--target", "tiny", "-c", "parity", "flying"], "'flying'",
      id="train-lora-unknown-capability"),
    C(["train", "lora", "--target", "tiny", "-c", "parity", "reverse", "-o", "oracle"],
      "--output takes one capability", id="train-lora-library-with-output"),
    C(["train", "lora", "--target", "tiny", "-c", "parity", "-o", "keep-dir"], "--overwrite",
      id="train-lora-output-exists"),
    C(["train", "lora", "--target", "./no/such/model", "-c", "parity", "-o", "oracle"], "does not exist",
      id="train-lora-missing-target"),
    C(["train", "lora", "--target", "tiny", "-c", "parity", "--steps", "0", "-o", "oracle"],
      "--steps must be positive, got 0", id="train-lora-zero-steps"),
    C(["train", "lora", "--target", "tiny", "-c", "parity", "--target-modules", "q_proj", "--dtype", "int8"],
      "int8", id="train-lora-bad-dtype"),
    C(["train", "generator"], "needs --target", id="train-generator-no-target"),
    C(["train", "generator", "--target", "tiny", "--steps", "-1", "-o", "gen"], "steps must be",
      id="train-generator-negative-steps"),
    C(["train", "generator", "--target", "tiny", "--rank", "9", "--gen-rank", "4", "-o", "gen"],
      "--rank (9) cannot exceed --gen-rank (4)", id="train-generator-rank-above-gen-rank"),
    C(["train", "generator", "--target", "tiny", "-o", "keep-dir"], "not a generator folder",
      id="train-generator-output-exists"),
    C(["train", "generator", "--target", "tiny", "-o", "gen"], "no oracle library for tiny",
      id="train-generator-no-library"),
    # zoo and capabilities
    C(["zoo", "list"], "zoo.json is unreadable or not valid JSON", _malformed_zoo,
      id="zoo-list-malformed-json"),
    C(["zoo", "list"], "zoo.json is not a zoo model record", _mistyped_zoo, id="zoo-list-wrong-types"),
    C(["zoo", "build", "--device", "tpu9"], "unknown device 'tpu9'", id="zoo-build-unknown-device"),
    C(["capabilities", "show"], "needs a capability name", id="capabilities-show-no-name"),
    C(["capabilities", "show", "flying"], "'flying'", id="capabilities-show-unknown"),
    C(["capabilities", "show", "add_k:x"], "add_k:x", id="capabilities-show-bad-family-param"),
    C(["capabilities", "show", "nonstring.jsonl"], "nonstring.jsonl:1", id="capabilities-show-bad-jsonl"),
    C(["capabilities", "list", "--kind", "magic"], "'magic'", id="capabilities-list-unknown-kind"),
    # bench
    C(["bench", "fingerprints", "--json", "keep.json"], "keep.json exists", id="bench-output-exists"),
    C(["bench", "fingerprints", "--target", "tiny", "--json", "new.json"], "takes no --target",
      id="bench-target-not-taken"),
    C(["bench", "fingerprints", "--json", "new.json", "--dtype", "int3"], "unknown dtype 'int3'",
      id="bench-unknown-dtype"),
    C(["bench", "fingerprints", "--json", "new.json", "--tasks", "a.jsonl"], "takes no --tasks",
      id="bench-tasks-not-taken"),
    # report
    C(["report", "missing.safetensors", "-o", "r.html"], "missing.safetensors", id="report-missing-fp"),
    C(["report", FP, "--bench", "notjson.json", "-o", "r.html"], "not a JSON file",
      id="report-bench-not-json"),
    C(["report", FP, "--bench", "list.json", "-o", "r.html"], "JSON object", id="report-bench-not-object"),
    C(["report", FP, "--bench", "missing.json", "-o", "r.html"], "missing.json", id="report-bench-missing"),
    C(["report", FP, "--metric", "euclid", "-o", "r.html"], "'euclid'", id="report-unknown-metric"),
    C(["report", FP, "-o", "keep.html"], "keep.html exists", id="report-output-exists"),
    # run / demo
    C(["run", "missing.yaml", "--check"], "cannot read missing.yaml", id="run-missing-file"),
    C(["run", "notyaml.yaml", "--check"], "not valid YAML", id="run-not-yaml"),
    C(["run", "list.yaml", "--check"], "expected a mapping", id="run-not-a-mapping"),
    C(["run", "unknown-key.yaml", "--check"], "colour: unknown key", id="run-unknown-key"),
    C(["run", "wrong-type.yaml", "--check"], "sources[0].capabilities: expected", id="run-wrong-type"),
    C(["run", "rank.yaml", "--check"], "adapter.rank: expected", id="run-rank-not-int"),
    C(["run", "limit.yaml", "--check"], "evaluate.limit: expected", id="run-limit-0"),
    C(["run", "fusion.yaml", "--check"], "'blend'", id="run-unknown-fusion"),
    C(["run", "escape.yaml", "--check"], "bad zoo model 'zoo:../x'", _escaped_zoo, id="run-zoo-escape"),
    C(["run", "unknown-cap.yaml", "--check"], "'flying'", id="run-unknown-capability"),
    C(["run", "good.yaml", "--check"], "keep-dir exists", id="run-check-output-exists"),
    C(["run", "good.yaml"], "keep-dir exists", id="run-output-exists"),
    C(["run", "good.yaml", "--check", "--dtype", "int3"], "dtype: expected one of float32",
      id="run-unknown-dtype"),
    C(["demo", "--check", "--device", "tpu9"], "device: unknown device 'tpu9'", id="demo-unknown-device"),
    C(["demo", "--output", "keep-dir"], "keep-dir exists", id="demo-output-exists", fresh=True),
]


def run_case(argv: list[str], fresh: bool, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``umaf ARGV`` (in this process, or in a fresh one)."""
    if not fresh:
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err
    proc = subprocess.run([sys.executable, "-m", "umaf.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(("argv", "needle", "setup", "fresh"), CASES)
def test_bad_input(argv: list[str], needle: str, setup: Callable[[Path], None] | None, fresh: bool,
                   assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture, no_expensive_work: None,
                   no_shipped: None) -> None:  # fmt: skip
    ws = tmp_path / "ws"
    shutil.copytree(assets, ws, symlinks=True)
    if setup is not None:
        setup(ws)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("UMAF_CACHE", str(ws / "cache"))
    before = snapshot(ws)
    code, out, err = run_case(argv, fresh, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, out + err
    assert "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("umaf: error: "), err
    assert needle in lines[0].replace(str(tmp_path), "<tmp>"), lines[0]  # the path is named after the case
    assert snapshot(ws) == before, "the failed command changed files"
