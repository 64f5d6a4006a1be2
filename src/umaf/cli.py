"""The ``umaf`` command line: each command parses, validates and calls the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from umaf import __version__
from umaf.errors import UmafError

Handler = Callable[[argparse.Namespace], int | None]


def _cmd_fingerprint(args: argparse.Namespace) -> None:
    from umaf.capabilities import get_capability
    from umaf.extractor import CapabilityExtractor, default_extractor, fingerprint
    from umaf.io import check_writable
    from umaf.models import load

    check_writable(args.output, args.overwrite)
    capability = get_capability(args.capability)
    extractor = CapabilityExtractor.from_pretrained(args.extractor) if args.extractor else default_extractor()
    loaded = load(args.model, allow_download=args.allow_download)
    fp = fingerprint(loaded, capability, extractor, part=args.part, batch_size=args.batch_size)
    fp.save(args.output, overwrite=args.overwrite)
    print(f"wrote {args.output} ({loaded.info.name}, {capability.name})", file=sys.stderr)


def _cmd_compare(args: argparse.Namespace) -> None:
    from umaf.fingerprint import Fingerprint, check_compatible
    from umaf.similarity import SIMILARITIES, similarity_matrix

    metric = SIMILARITIES.get(args.metric)
    fps = [Fingerprint.load(p) for p in args.fingerprints]
    check_compatible(fps)
    matrix = similarity_matrix(args.metric, [fp.vector for fp in fps])
    labels = [f"{fp.meta['model']}:{fp.meta['capability']}" for fp in fps]
    if args.json:
        print(
            json.dumps(
                {
                    "metric": args.metric,
                    "higher_is_better": metric.higher_is_better,
                    "labels": labels,
                    "matrix": matrix.tolist(),
                },
                indent=2,
            )
        )
    else:
        print(format_matrix(labels, matrix.tolist()))


def format_matrix(labels: list[str], rows: list[list[float]]) -> str:
    """Render a square similarity matrix as an aligned plain-text table."""
    short = [f"[{i}]" for i in range(len(labels))]
    width = max(7, *(len(s) for s in short))
    lines = [" " * (width + 1) + " ".join(s.rjust(width) for s in short)]
    for tag, row in zip(short, rows, strict=True):
        lines.append(tag.rjust(width) + " " + " ".join(f"{v:{width}.3f}" for v in row))
    lines += [f"{tag} {label}" for tag, label in zip(short, labels, strict=True)]
    return "\n".join(lines)


def _cmd_capabilities(args: argparse.Namespace) -> None:
    from umaf.capabilities import get_capability, list_capabilities, list_families

    if args.action == "list":
        for name in list_capabilities(kind=args.kind):
            cap = get_capability(name)
            flag = " (held out)" if cap.held_out else ""
            print(f"{name:16} {cap.kind:15} {cap.description}{flag}")
        print(f"parametric families: {', '.join(list_families())}  (use as family:param, e.g. add_k:7)")
        return
    if not args.name:
        raise UmafError("capabilities show needs a capability name or a .jsonl file")
    cap = get_capability(args.name)
    print(f"{cap.name} [{cap.kind}] {cap.description}")
    print("splits: " + ", ".join(f"{s}={len(cap.split(s))}" for s in ("train", "probe", "eval")))
    for ex in cap.split("train")[:5]:
        print(f"  {ex.text()!r}")


def _cmd_zoo(args: argparse.Namespace) -> None:
    from umaf.zoo import build_zoo, list_zoo

    entries = build_zoo(quick=args.quick) if args.action == "build" else list_zoo()
    if not entries:
        print("the zoo is empty; run `umaf zoo build --quick` (5 min) or `umaf zoo build`", file=sys.stderr)
    for e in entries:
        trained = [e.accuracy[c] for c in e.trained if c in e.accuracy]
        other = [a for c, a in e.accuracy.items() if c not in e.trained]
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        print(
            f"{e.name:14} {e.family:8} {e.size:3} trained on {len(e.trained):2} capabilities  "
            f"acc trained {mean(trained):.2f}  untrained {mean(other):.2f}"
        )


def _cmd_interpolate(args: argparse.Namespace) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.interpolator import SizeInterpolator, default_interpolator, interpolate
    from umaf.io import check_writable

    check_writable(args.output, args.overwrite)
    explicit = (args.to_params, args.to_layers, args.to_width)
    if (args.to is None) == (args.to_params is None):
        raise UmafError("give either --to MODEL or --to-params N (with optional --to-layers/--to-width)")
    if args.to is not None and any(v is not None for v in explicit):
        raise UmafError("--to cannot be combined with --to-params, --to-layers or --to-width")
    fp = Fingerprint.load(args.fingerprint)
    interpolator = (
        SizeInterpolator.from_pretrained(args.interpolator) if args.interpolator else default_interpolator()
    )
    out = interpolate(fp, args.to, params=args.to_params, layers=args.to_layers, width=args.to_width,
                      interpolator=interpolator)  # fmt: skip
    out.save(args.output, overwrite=args.overwrite)
    src, dst = out.meta["source_scale"], out.meta["target_scale"]
    print(f"wrote {args.output} ({src['n_params']:,} -> {dst['n_params']:,} parameters, "
          f"{src['n_layers']} -> {dst['n_layers']} layers, {src['width']} -> {dst['width']} wide)",
          file=sys.stderr)  # fmt: skip


def _cmd_fuse(args: argparse.Namespace) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.fusion import FusionGate, fuse
    from umaf.io import check_writable

    check_writable(args.output, args.overwrite)
    if args.query is not None and args.capability is not None:
        raise UmafError("give --query FP or --capability NAME, not both")
    fps = [Fingerprint.load(p) for p in args.fingerprints]
    query = Fingerprint.load(args.query) if args.query is not None else args.capability
    gate = FusionGate.from_pretrained(args.gate) if args.gate else None
    fused = fuse(fps, weights=args.weights, mode=args.mode, query=query, gate=gate)
    fused.save(args.output, overwrite=args.overwrite)
    weights = ", ".join(f"{s['model']}:{s['capability']}={s['weight']:.3f}" for s in fused.meta["sources"])
    print(f"wrote {args.output} ({fused.meta['fusion_mode']}: {weights})", file=sys.stderr)


def _cmd_train_interpolator(args: argparse.Namespace) -> None:
    from umaf.interpolator import InterpolatorTrainConfig, default_interpolator_dir, train_interpolator

    config = InterpolatorTrainConfig(held_out_sizes=tuple(args.held_out_sizes))
    if args.steps:
        config.steps = args.steps
    output = args.output or default_interpolator_dir()
    model = train_interpolator(config, output=output, overwrite=args.overwrite)
    r = model.train_report
    print(f"saved {output}: cosine to the true fingerprint on held-out sizes {r['held_out_sizes']}: "
          f"identity {r['val_cosine_identity']:.3f} -> interpolated {r['val_cosine_interpolated']:.3f}",
          file=sys.stderr)  # fmt: skip


def _cmd_train_fusion(args: argparse.Namespace) -> None:
    from umaf.fusion import FusionTrainConfig, GateConfig, default_gate_dir, train_fusion

    config = FusionTrainConfig(gate=GateConfig(reference_model=args.reference_model))
    if args.steps:
        config.steps = args.steps
    output = args.output or default_gate_dir()
    gate = train_fusion(config, output=output, overwrite=args.overwrite)
    r = gate.train_report
    print(f"saved {output}: validation cosine to the asked capability: equal weights "
          f"{r['val_cosine_uniform']:.3f}, untrained gate {r['val_init_cosine_gate']:.3f}, "
          f"trained gate {r['val_cosine_gate']:.3f}", file=sys.stderr)  # fmt: skip


def _cmd_train_lora(args: argparse.Namespace) -> None:
    from umaf.capabilities import get_capability
    from umaf.lora import build_library, library_dir, train_oracle

    if not args.target or not args.capability:
        raise UmafError("train lora needs --target MODEL and --capability NAME [NAME ...]")
    config = {"steps": args.steps} if args.steps else None
    if len(args.capability) == 1:
        cap = args.capability[0]
        path = train_oracle(args.target, cap, config, output=args.output, overwrite=args.overwrite)
        print(f"wrote {path}", file=sys.stderr)
        return
    if args.output is not None:
        raise UmafError("--output takes one capability; a library goes to the oracle cache")
    names = [get_capability(c).name for c in args.capability]  # unknown names fail before any training
    entries = build_library(args.target, names, config, overwrite=args.overwrite)
    print(f"{len(entries)} oracles for {args.target} in {library_dir(args.target)}", file=sys.stderr)


def _cmd_train_generator(args: argparse.Namespace) -> None:
    from umaf.generator import GeneratorConfig, train_generator

    if not args.target:
        raise UmafError("train generator needs --target MODEL")
    config = GeneratorConfig(steps=args.steps) if args.steps else None
    train_generator(args.target, config, output=args.output, overwrite=args.overwrite)


def _cmd_generate(args: argparse.Namespace) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.generator import AdapterGenerator, default_generator, generate_adapter
    from umaf.io import check_writable

    check_writable(args.output, args.overwrite)
    fp = Fingerprint.load(args.fingerprint)
    generator = (
        AdapterGenerator.from_pretrained(args.generator) if args.generator else default_generator(args.target)
    )
    path = generate_adapter(
        fp, generator, args.output, rank=args.rank, overwrite=args.overwrite, target=args.target
    )
    print(f"wrote {path} (PEFT LoRA for {args.target})", file=sys.stderr)


def _cmd_eval(args: argparse.Namespace) -> None:
    from umaf.evaluation import evaluate, perplexity
    from umaf.models import load

    loaded = load(args.model, allow_download=args.allow_download)
    result = {"model": args.model, "adapter": str(args.adapter) if args.adapter else None}
    result["capability"] = args.capability
    result["accuracy"] = evaluate(loaded, args.capability, args.adapter)
    if args.perplexity:
        result["perplexity"] = perplexity(loaded, args.adapter)
    print(json.dumps(result, indent=2) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))


def _cmd_train(args: argparse.Namespace) -> None:
    if args.component == "interpolator":
        return _cmd_train_interpolator(args)
    if args.component == "fusion":
        return _cmd_train_fusion(args)
    if args.component == "lora":
        return _cmd_train_lora(args)
    if args.component == "generator":
        return _cmd_train_generator(args)
    from umaf.extractor import TrainConfig, train_extractor
    from umaf.extractor.fingerprinting import default_extractor_dir

    config = TrainConfig(steps=args.steps) if args.steps else TrainConfig()
    output = args.output or default_extractor_dir()
    train_extractor(config, models=args.models, output=output, overwrite=args.overwrite)
    print(f"saved the extractor to {output}", file=sys.stderr)


def _cmd_bench(args: argparse.Namespace) -> None:
    from umaf.bench import run_benchmark

    run_benchmark(args.suite, args.json, quick=args.quick, overwrite=args.overwrite, target=args.target)


def _cmd_report(args: argparse.Namespace) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.report import write_report

    fps = [Fingerprint.load(p) for p in args.fingerprints]
    bench = [_load_bench(p) for p in args.bench]
    path = write_report(fps, args.output, bench=bench, metric=args.metric, png_dir=args.png_dir,
                        overwrite=args.overwrite, title=args.title)  # fmt: skip
    print(f"wrote {path}" + (f" and PNGs in {args.png_dir}" if args.png_dir else ""), file=sys.stderr)


def _load_bench(path: Path) -> dict:
    """A benchmark result file as a dict; unreadable or malformed files are a UmafError."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise UmafError(f"cannot read {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UmafError(f"{path} is not a JSON file") from None
    if not isinstance(data, dict):
        raise UmafError(f"{path} is not a benchmark result (expected a JSON object)")
    data.setdefault("suite", path.stem)
    return data


def _cmd_run(args: argparse.Namespace) -> None:
    import dataclasses

    from umaf.pipeline import EXAMPLES_DIR, check_ready, load_pipeline, print_summary, run_pipeline

    spec = load_pipeline(args.pipeline if args.command == "run" else EXAMPLES_DIR / "demo.yaml")
    if args.output is not None:
        spec = dataclasses.replace(spec, output=args.output)
    if args.check:
        check_ready(spec, args.overwrite)
        adapter = f", an adapter for {spec.adapter.target}" if spec.adapter else ""
        print(f"{spec.origin}: valid; {len(spec.fingerprints)} fingerprints{adapter}", file=sys.stderr)
        return
    results = run_pipeline(spec, overwrite=args.overwrite)
    print_summary(results, spec.output)


def build_parser() -> argparse.ArgumentParser:
    """The full ``umaf`` argument parser."""
    parser = argparse.ArgumentParser(prog="umaf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"umaf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fingerprint", help="fingerprint a model on one capability")
    p.add_argument("model", help="alias (minilm, smollm2, zoo:<name>), local folder or Hugging Face id")
    p.add_argument("--capability", "-c", required=True, help="built-in name, family:param, or a .jsonl file")
    p.add_argument("--output", "-o", required=True, type=Path, help="fingerprint file (.safetensors)")
    p.add_argument("--extractor", type=Path, help="trained extractor folder (default: the cached one)")
    p.add_argument("--part", type=int, choices=(0, 1), help="use only one half of the probe set")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--allow-download", action="store_true", help="let a Hugging Face id be downloaded")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_fingerprint)

    p = sub.add_parser("compare", help="similarity table of fingerprints")
    p.add_argument("fingerprints", nargs="+", type=Path)
    p.add_argument("--metric", default="cosine", help="cosine, kl or pearson")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("capabilities", help="list or show capabilities")
    p.add_argument("action", choices=("list", "show"))
    p.add_argument("name", nargs="?", help="capability to show")
    p.add_argument("--kind", help="only list this kind")
    p.set_defaults(func=_cmd_capabilities)

    p = sub.add_parser("zoo", help="build or list the model zoo")
    p.add_argument("action", choices=("build", "list"))
    p.add_argument("--quick", action="store_true", help="a small zoo in about 5 minutes")
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("interpolate", help="move a fingerprint to another model size")
    p.add_argument("fingerprint", type=Path, help="fingerprint file (.safetensors)")
    p.add_argument("--to", metavar="MODEL", help="target model (alias, zoo:<name>, folder or HF id)")
    p.add_argument("--to-params", type=float, metavar="N", help="target parameter count (e.g. 1.35e8)")
    p.add_argument("--to-layers", type=int, metavar="L", help="target depth (default: estimated)")
    p.add_argument("--to-width", type=int, metavar="W", help="target width (default: estimated)")
    p.add_argument("--interpolator", type=Path, help="trained interpolator folder (default: the cached one)")
    p.add_argument("--output", "-o", required=True, type=Path, help="output fingerprint file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_interpolate)

    p = sub.add_parser("fuse", help="fuse several fingerprints into one")
    p.add_argument("fingerprints", nargs="+", type=Path, help="fingerprint files (same extractor)")
    p.add_argument("--weights", nargs="+", type=float, help="one weight per fingerprint (default: equal)")
    p.add_argument("--mode", default="average", help="average, slerp, task_arithmetic or gated")
    p.add_argument("--query", type=Path, metavar="FP", help="gated: fingerprint of the task to serve")
    p.add_argument("--capability", metavar="NAME", help="gated: capability to serve")
    p.add_argument("--gate", type=Path, help="trained fusion gate folder (default: the cached one)")
    p.add_argument("--output", "-o", required=True, type=Path, help="output fingerprint file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_fuse)

    p = sub.add_parser("generate", help="turn a fingerprint into a PEFT LoRA adapter for a target model")
    p.add_argument("fingerprint", type=Path, help="fingerprint file (.safetensors)")
    p.add_argument("--target", required=True, help="target model the generator was trained for")
    p.add_argument("--rank", type=int, help="LoRA rank (default: the generator's)")
    p.add_argument("--generator", type=Path, help="trained generator folder (default: the cached one)")
    p.add_argument("--output", "-o", required=True, type=Path, help="adapter folder to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("eval", help="accuracy of a model (optionally with an adapter) on a capability")
    p.add_argument("model", help="alias, zoo:<name>, local folder or Hugging Face id")
    p.add_argument("--adapter", type=Path, help="PEFT adapter folder")
    p.add_argument("--capability", "-c", required=True, help="built-in name, family:param or .jsonl file")
    p.add_argument("--perplexity", action="store_true", help="also perplexity on the shipped general text")
    p.add_argument("--json", action="store_true")
    p.add_argument("--allow-download", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", help="train a UMAF component")
    p.add_argument("component", choices=("extractor", "interpolator", "fusion", "lora", "generator"))
    p.add_argument("--target", help="lora, generator: target model")
    p.add_argument("--capability", "-c", nargs="+", help="lora: capabilities to train (several: a library)")
    p.add_argument("--output", "-o", type=Path, help="folder (default: the cached default extractor)")
    p.add_argument("--models", nargs="+", help="source models (default: zoo + minilm + smollm2)")
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--held-out-sizes", nargs="+", default=["s"], help="interpolator: sizes kept out")
    p.add_argument("--reference-model", default="zoo:llama-m-a", help="fusion: model reading --capability")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("bench", help="run a benchmark and write its JSON")
    p.add_argument("suite", choices=("fingerprints", "transfer", "fusion", "size"))
    p.add_argument("--target", help="transfer, fusion, size: target model (default zoo:llama-m-a)")
    p.add_argument("--json", required=True, type=Path, help="where to write the results")
    p.add_argument("--quick", action="store_true", help="quick zoo and fewer probes")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="write a self-contained HTML report of fingerprints and benchmarks")
    p.add_argument("fingerprints", nargs="+", type=Path, help="fingerprint files (.safetensors)")
    p.add_argument(
        "--bench",
        nargs="+",
        action="extend",
        type=Path,
        default=[],
        metavar="JSON",
        help="benchmark result files from `umaf bench` (repeatable)",
    )
    p.add_argument("--metric", default="cosine", help="similarity for the heatmap: cosine, kl or pearson")
    p.add_argument("--output", "-o", required=True, type=Path, help="report file (.html)")
    p.add_argument("--png-dir", type=Path, help="also save every chart there as a 200-dpi PNG")
    p.add_argument("--title", default="UMAF report", help="heading of the page")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report and PNGs")
    p.set_defaults(func=_cmd_report)

    for name, text in (
        ("run", "run a pipeline file (fingerprint, compare, fuse, generate, evaluate, report)"),
        ("demo", "run the demo pipeline (examples/demo.yaml) on the embedded models"),
    ):
        p = sub.add_parser(name, help=text)
        if name == "run":
            p.add_argument("pipeline", type=Path, help="pipeline file (.yaml); see examples/")
        p.add_argument("--output", "-o", type=Path, help="output folder (default: the file's `output`)")
        p.add_argument(
            "--check", action="store_true", help="validate the pipeline and what it needs, then stop"
        )
        p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
        p.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``umaf`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UmafError as err:
        print(f"umaf: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("umaf: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
