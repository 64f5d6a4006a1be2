"""The ``umaf`` command line: each command parses, validates and calls the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from umaf import __version__, pretrained
from umaf.errors import UmafError
from umaf.formatting import format_matrix

Handler = Callable[[argparse.Namespace], int | None]


def _add_placement(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    """``--device`` (and ``--dtype``) of a command that loads models; checked where the models load."""
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: CUDA when available, else cpu)")
    if dtype:
        p.add_argument("--dtype", help="float32 (default), bfloat16 or float16; fingerprints stay float32")


def _cmd_fingerprint(args: argparse.Namespace) -> None:
    from umaf.capabilities import get_capability
    from umaf.competence import describe_competence
    from umaf.extractor import CapabilityExtractor, default_extractor, fingerprint
    from umaf.io import check_writable
    from umaf.models import load

    check_writable(args.output, args.overwrite)
    if args.batch_size < 1:
        raise UmafError(f"--batch-size must be at least 1, got {args.batch_size}")
    capability = get_capability(args.capability)
    capability.probe_examples(split=args.split)  # an unknown split fails before the model loads
    if args.extractor:
        extractor = CapabilityExtractor.from_pretrained(args.extractor)
    elif not args.train:
        extractor = default_extractor()  # a missing one fails here, before the model loads
    loaded = load(args.model, allow_download=args.allow_download, dtype=args.dtype, device=args.device)
    if args.train and not args.extractor:
        extractor = default_extractor(train_missing=True)  # may train: only once the model has loaded
    fp = fingerprint(loaded, capability, extractor, part=args.part, split=args.split,
                     batch_size=args.batch_size)  # fmt: skip
    fp.save(args.output, overwrite=args.overwrite)
    print(f"wrote {args.output} ({loaded.info.name}, {capability.name}, {describe_competence(fp)})",
          file=sys.stderr)  # fmt: skip


def _cmd_compare(args: argparse.Namespace) -> None:
    from umaf.competence import fingerprint_competence
    from umaf.fingerprint import Fingerprint, check_compatible
    from umaf.similarity import SIMILARITIES, similarity_matrix

    metric = SIMILARITIES.get(args.metric)
    fps = [Fingerprint.load(p) for p in args.fingerprints]
    check_compatible(fps)
    matrix = similarity_matrix(args.metric, [fp.vector for fp in fps])
    labels = [f"{fp.meta['model']}:{fp.meta['capability']}" for fp in fps]
    competence = [fingerprint_competence(fp) for fp in fps]  # None: unknown
    if args.json:
        print(
            json.dumps(
                {
                    "metric": args.metric,
                    "higher_is_better": metric.higher_is_better,
                    "labels": labels,
                    "matrix": matrix.tolist(),
                    "competence": competence,
                },
                indent=2,
            )
        )
    else:
        print(format_matrix(labels, matrix.tolist(), {"competence": competence}))


def _cmd_capabilities(args: argparse.Namespace) -> None:
    from umaf.capabilities import get_capability, list_capabilities, list_families

    if args.action == "list":
        names = list_capabilities(kind=args.kind, extended=args.all)
        width = max((len(n) for n in names), default=0)
        for name in names:
            cap = get_capability(name)
            flag = " (held out)" if cap.held_out else ""
            print(f"{name:{width}} {cap.kind:15} {cap.description}{flag}")
        print(f"parametric families: {', '.join(list_families())}  (use as family:param, e.g. add_k:7)")
        if not args.all:
            print("more named capabilities (the adapter generator's training world): --all")
        return
    if not args.name:
        raise UmafError("capabilities show needs a capability name or a .jsonl file")
    cap = get_capability(args.name)
    print(f"{cap.name} [{cap.kind}] {cap.description}")
    print("splits: " + ", ".join(f"{s}={len(cap.split(s))}" for s in ("train", "probe", "eval")))
    for ex in cap.split("train")[:5]:
        print(f"  {ex.text()!r}")


def _cmd_zoo(args: argparse.Namespace) -> None:
    from umaf.pretrained import is_shipped
    from umaf.zoo import build_zoo, list_zoo, qualification_summary

    if args.action == "build":
        entries = build_zoo(quick=args.quick, device=args.device)
    else:
        entries = list_zoo() + list_zoo(quick=True)
    if not entries:
        print("the zoo is empty; run `umaf zoo build --quick` (5 min) or `umaf zoo build`", file=sys.stderr)
    for e in entries:
        trained = [e.accuracy[c] for c in e.trained if c in e.accuracy]
        other = [a for c, a in e.accuracy.items() if c not in e.trained]
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        print(
            f"{e.name:14} {'quick' if e.quick else 'full':5} {e.family:8} {e.size:3} trained on "
            f"{len(e.trained):2} capabilities  acc trained {mean(trained):.2f}  untrained {mean(other):.2f}"
            + ("  (shipped)" if is_shipped(e.path) else "")
        )
    if entries:
        print(qualification_summary(entries))


def _cmd_interpolate(args: argparse.Namespace) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.interpolator import SizeInterpolator, interpolate
    from umaf.io import check_writable

    check_writable(args.output, args.overwrite)
    explicit = (args.to_params, args.to_layers, args.to_width)
    if (args.to is None) == (args.to_params is None):
        raise UmafError("give either --to MODEL or --to-params N (with optional --to-layers/--to-width)")
    if args.to is not None and any(v is not None for v in explicit):
        raise UmafError("--to cannot be combined with --to-params, --to-layers or --to-width")
    fp = Fingerprint.load(args.fingerprint)
    interpolator = SizeInterpolator.from_pretrained(args.interpolator) if args.interpolator else None
    out = interpolate(fp, args.to, params=args.to_params, layers=args.to_layers, width=args.to_width,
                      interpolator=interpolator)  # fmt: skip
    out.save(args.output, overwrite=args.overwrite)
    src, dst = out.meta["source_scale"], out.meta["target_scale"]
    print(f"wrote {args.output} ({src['n_params']:,} -> {dst['n_params']:,} parameters, "
          f"{src['n_layers']} -> {dst['n_layers']} layers, {src['width']} -> {dst['width']} wide)",
          file=sys.stderr)  # fmt: skip
    if out.meta["move_within_trained"] < 1:
        print(f"note: only {out.meta['move_within_trained']:.0%} of this move lies within the sizes the "
              "interpolator was trained on; the rest is not made", file=sys.stderr)  # fmt: skip


def _cmd_fuse(args: argparse.Namespace) -> None:
    from umaf.fingerprint import Fingerprint
    from umaf.fusion import FusionGate, fuse
    from umaf.io import check_writable
    from umaf.models import load_defaults

    check_writable(args.output, args.overwrite)
    if args.query is not None and args.capability is not None:
        raise UmafError("give --query FP or --capability NAME, not both")
    fps = [Fingerprint.load(p) for p in args.fingerprints]
    query = Fingerprint.load(args.query) if args.query is not None else args.capability
    gate = FusionGate.from_pretrained(args.gate) if args.gate else None
    with load_defaults(args.device, args.dtype):  # gated with --capability reads the gate's reference model
        fused = fuse(fps, weights=args.weights, mode=args.mode, query=query, gate=gate)
    fused.save(args.output, overwrite=args.overwrite)
    weights = ", ".join(f"{s['model']}:{s['capability']}={s['weight']:.3f}" for s in fused.meta["sources"])
    print(f"wrote {args.output} ({fused.meta['fusion_mode']}: {weights})", file=sys.stderr)


def _cmd_train_all(args: argparse.Namespace) -> None:
    from umaf.pretrained.build import train_all

    train_all(ship_to=pretrained.SHIPPED_DIR if args.ship else None)


def _cmd_train_extractor(args: argparse.Namespace) -> None:
    from umaf.config_args import build_config, config_overrides
    from umaf.extractor import TrainConfig, train_extractor

    config = build_config(TrainConfig, config_overrides(args))
    output = args.output or pretrained.user_dir(pretrained.EXTRACTOR)
    train_extractor(config, models=args.models, output=output, overwrite=args.overwrite)
    print(f"saved the extractor to {output}", file=sys.stderr)


def _cmd_train_interpolator(args: argparse.Namespace) -> None:
    from umaf.config_args import build_config, config_overrides
    from umaf.interpolator import InterpolatorTrainConfig, train_interpolator

    config = build_config(InterpolatorTrainConfig, config_overrides(args))
    output = args.output or pretrained.user_dir(pretrained.INTERPOLATOR)
    model = train_interpolator(config, output=output, overwrite=args.overwrite)
    r = model.train_report
    print(f"saved {output}: cosine to the true fingerprint on held-out sizes {r['held_out_sizes']}: "
          f"identity {r['val_cosine_identity']:.3f} -> interpolated {r['val_cosine_interpolated']:.3f}",
          file=sys.stderr)  # fmt: skip


def _cmd_train_fusion(args: argparse.Namespace) -> None:
    from umaf.config_args import build_config, config_overrides
    from umaf.fusion import FusionTrainConfig, train_fusion

    config = build_config(FusionTrainConfig, config_overrides(args))
    output = args.output or pretrained.user_dir(pretrained.GATE)
    gate = train_fusion(config, output=output, overwrite=args.overwrite)
    r = gate.train_report
    print(f"saved {output}: validation cosine to the asked capability: equal weights "
          f"{r['val_cosine_uniform']:.3f}, untrained gate {r['val_init_cosine_gate']:.3f}, "
          f"trained gate {r['val_cosine_gate']:.3f}", file=sys.stderr)  # fmt: skip


def _cmd_train_lora(args: argparse.Namespace) -> None:
    from umaf.adapters.oracles import OracleConfig, build_library, library_dir, train_oracle
    from umaf.capabilities import get_capability
    from umaf.config_args import build_config, config_overrides

    if not args.target or not args.capability:
        raise UmafError("train lora needs --target MODEL and --capability NAME [NAME ...]")
    config = config_overrides(args)  # overrides of the target's defaults (default_config)
    build_config(OracleConfig, config)  # a bad value is named by its flag before the target loads
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
    from umaf.config_args import build_config, config_overrides
    from umaf.generator import GeneratorConfig, train_generator

    overrides = config_overrides(args)
    if "target" not in overrides:
        raise UmafError("train generator needs --target MODEL")
    config = build_config(GeneratorConfig, overrides)
    train_generator(config.target, config, output=args.output, overwrite=args.overwrite)


def _cmd_generate(args: argparse.Namespace) -> None:
    from umaf.competence import COMPETENT, competence_warning
    from umaf.fingerprint import Fingerprint
    from umaf.generator import AdapterGenerator, generate_adapter
    from umaf.io import check_writable

    check_writable(args.output, args.overwrite)
    fp = Fingerprint.load(args.fingerprint)
    generator = AdapterGenerator.from_pretrained(args.generator) if args.generator else None  # None: default
    path = generate_adapter(fp, generator, args.output, rank=args.rank, overwrite=args.overwrite,
                            target=args.target, min_competence=None if args.ignore_competence else COMPETENT)
    print(f"wrote {path} (PEFT LoRA for {args.target})", file=sys.stderr)
    warning = competence_warning(fp)
    if warning:
        print(f"umaf: warning: {warning}", file=sys.stderr)


def _cmd_merge(args: argparse.Namespace) -> None:
    from umaf.adapters.merge import (
        DistilConfig,
        check_merge,
        input_separability,
        left_out_note,
        merge_adapters,
        separability_warning,
    )
    from umaf.capabilities import get_capability
    from umaf.io import check_writable
    from umaf.models import load

    check_writable(args.output, args.overwrite)
    caps = [get_capability(c) for c in args.capabilities or ()]
    if caps and len(caps) != len(args.adapters):
        raise UmafError(f"got {len(caps)} capabilities for {len(args.adapters)} adapters; give one each")
    if args.steps is not None and args.method != "distil":
        raise UmafError(f"--steps is a setting of the distil method, not of {args.method}")
    config = DistilConfig(steps=args.steps) if args.steps is not None else None
    check_merge(args.adapters, args.method, args.weights, caps or None)  # before the target is loaded
    loaded = load(args.target, allow_download=args.allow_download, dtype=args.dtype, device=args.device)
    if caps:
        separability = input_separability(loaded, caps)
        names = " / ".join(c.name for c in caps)
        print(f"{args.target} tells the inputs of {names} apart at {separability:.2f}", file=sys.stderr)
        if warning := separability_warning(separability):
            print(f"umaf: warning: {warning}", file=sys.stderr)
    path = merge_adapters(loaded, args.adapters, args.output, method=args.method, weights=args.weights,
                          capabilities=caps or None, config=config, overwrite=args.overwrite)
    print(f"wrote {path} ({args.method} of {len(args.adapters)} adapters, PEFT LoRA for {args.target})",
          file=sys.stderr)
    if note := left_out_note(path):
        print(f"umaf: warning: {note}", file=sys.stderr)


def _cmd_eval(args: argparse.Namespace) -> None:
    from umaf.evaluation import check_evaluation, evaluate, perplexity
    from umaf.models import load

    capability = check_evaluation(args.capability, args.adapter, args.limit)  # before loading the model
    loaded = load(args.model, allow_download=args.allow_download, dtype=args.dtype, device=args.device)
    result = {"model": args.model, "adapter": str(args.adapter) if args.adapter else None}
    result["capability"] = args.capability
    result["accuracy"] = evaluate(loaded, capability, args.adapter, limit=args.limit)
    if args.perplexity:
        result["perplexity"] = perplexity(loaded, args.adapter)
    print(json.dumps(result, indent=2) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))


def _cmd_bench(args: argparse.Namespace) -> None:
    from umaf.bench import run_benchmark

    run_benchmark(args.suite, args.json, quick=args.quick, overwrite=args.overwrite, target=args.target,
                  device=args.device, dtype=args.dtype, tasks=args.tasks)  # fmt: skip


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

    from umaf.pipeline import (
        EXAMPLES_DIR,
        check_ready,
        load_pipeline,
        parse_pipeline,
        print_summary,
        run_pipeline,
    )

    spec = load_pipeline(args.pipeline if args.command == "run" else EXAMPLES_DIR / "demo.yaml")
    placement = {k: v for k in ("device", "dtype") if (v := getattr(args, k)) is not None}
    if placement:  # as if the file said so: checked as its keys, and recorded in the pipeline.yaml written
        spec = parse_pipeline({**spec.raw, **placement}, spec.origin)
    if args.output is not None:
        spec = dataclasses.replace(spec, output=args.output)
    if args.check:
        check_ready(spec, args.overwrite)
        adapter = f", an adapter for {spec.adapter.target}" if spec.adapter else ""
        print(f"{spec.origin}: valid; {len(spec.fingerprints)} fingerprints{adapter}", file=sys.stderr)
        return
    results = run_pipeline(spec, overwrite=args.overwrite)
    print_summary(results, spec.output)


TRAIN_FLAGS = """\
Every setting of the component's config dataclass is a flag with the field's help: --<field> with
dashes for underscores, a nested config's fields as --<config>.<field> (umaf train extractor
--extractor.d-model 128); booleans as --x / --no-x; lists take one or more values; optional settings
also take `none`. A setting not given keeps its default; a given one (--steps 0 too) is checked by the
config, and a bad value is one `umaf: error:` line."""


def _add_train_parsers(sub: argparse._SubParsersAction) -> None:
    """``umaf train COMPONENT``: the flags of each component's config (:mod:`umaf.config_args`, added when
    that component is parsed) plus what its training call takes besides the config."""
    from umaf.config_args import DeferredFlagsParser

    p = sub.add_parser("train", help="train a UMAF component", description=TRAIN_FLAGS,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    components = p.add_subparsers(dest="component", required=True, metavar="COMPONENT",
                                  parser_class=DeferredFlagsParser)  # fmt: skip

    def component(name: str, text: str, func: Handler, config: str | None = None, output: str | None = None,
                  **flag_options: object) -> argparse.ArgumentParser:  # fmt: skip
        about = f"{text}.\n\n{TRAIN_FLAGS}" if config else f"{text}."
        c = components.add_parser(name, help=text, description=about, config=config,
                                  flag_options=flag_options, allow_abbrev=False, usage="%(prog)s [options]",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        if output is not None:
            c.add_argument("--output", "-o", type=Path, help=output)
            c.add_argument("--overwrite", action="store_true", help="replace an existing output")
        c.set_defaults(func=func)
        return c

    c = component("all", "train every component in order, as the shipped set is made", _cmd_train_all)
    c.add_argument("--ship", action="store_true", help="then write the result into the package")
    c = component("extractor", "train the Capability Extractor", _cmd_train_extractor,
                  "umaf.extractor:TrainConfig", "folder (default: the cached default extractor)")
    c.add_argument("--models", nargs="+", help="source models (default: zoo + the config's real models)")
    component("interpolator", "train the Size Interpolator on zoo fingerprints", _cmd_train_interpolator,
              "umaf.interpolator:InterpolatorTrainConfig", "folder (default: the cached interpolator)",
              exclude={"interpolator.extractor_hash"})
    component("fusion", "train the fusion gate on zoo fingerprints", _cmd_train_fusion,
              "umaf.fusion:FusionTrainConfig", "folder (default: the cached default gate)",
              exclude={"gate.extractor_hash"}, aliases={"gate.reference_model": ["--reference-model"]})
    c = component("lora", "train oracle LoRAs of capabilities on a target", _cmd_train_lora,
                  "umaf.adapters.oracles:OracleConfig", "folder of one capability's adapter (default: cache)",
                  show_defaults=False)  # the defaults depend on the target's size (default_config)
    c.add_argument("--target", help="target model")
    c.add_argument("--capability", "-c", nargs="+", help="capabilities to train (several: a library)")
    component("generator", "train the Adapter Generator of --target on its oracle library",
              _cmd_train_generator, "umaf.generator:GeneratorConfig",
              "folder (default: the cached generator of the target)", required={"target"})


def build_parser() -> argparse.ArgumentParser:
    """The full ``umaf`` argument parser."""
    parser = argparse.ArgumentParser(prog="umaf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"umaf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fingerprint", help="fingerprint a model on one capability")
    p.add_argument("model", help="alias (minilm, smollm2, zoo:<name>), local folder or Hugging Face id")
    p.add_argument("--capability", "-c", required=True, help="built-in name, family:param, or a .jsonl file")
    p.add_argument("--output", "-o", required=True, type=Path, help="fingerprint file (.safetensors)")
    p.add_argument("--extractor", type=Path, help="extractor folder (default: yours, else the shipped one)")
    p.add_argument("--train", action="store_true", help="train the default extractor first if there is none")
    p.add_argument("--part", type=int, choices=(0, 1), help="use only one half of the probe set")
    p.add_argument("--split", help="read this split (train, probe, eval) instead of the probe set "
                   "(of a .jsonl file: all its examples)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--allow-download", action="store_true", help="let a Hugging Face id be downloaded")
    _add_placement(p)
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
    p.add_argument("--all", action="store_true",
                   help="also list the named capabilities of the adapter generator's wider training world")
    p.set_defaults(func=_cmd_capabilities)

    p = sub.add_parser("zoo", help="build or list the model zoo")
    p.add_argument("action", choices=("build", "list"))
    p.add_argument("--quick", action="store_true", help="a small zoo in about 5 minutes")
    _add_placement(p, dtype=False)  # zoo models train in float32
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
    _add_placement(p)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_fuse)

    p = sub.add_parser("generate", help="turn a fingerprint into a PEFT LoRA adapter for a target model")
    p.add_argument("fingerprint", type=Path, help="fingerprint file (.safetensors)")
    p.add_argument("--target", required=True, help="target model the generator was trained for")
    p.add_argument("--rank", type=int, help="LoRA rank (default: the generator's)")
    p.add_argument("--generator", type=Path, help="trained generator folder (default: the cached one)")
    p.add_argument("--output", "-o", required=True, type=Path, help="adapter folder to write")
    p.add_argument("--ignore-competence", action="store_true",
                   help="generate even from a source whose measured competence on the capability is below "
                        "the threshold (refused by default: the adapter would not be the source's)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("merge", help="merge LoRA adapters of one target into one that does what each does")
    p.add_argument("adapters", nargs="+", type=Path, help="PEFT LoRA folders of the same target and modules")
    p.add_argument("--target", required=True, help="the model the adapters are for")
    p.add_argument("--capabilities", "-c", nargs="+", metavar="CAP",
                   help="distil: the capability of each adapter (its inputs are distilled)")
    p.add_argument("--method", default="distil", choices=("distil", "linear", "cat", "ties", "dare_linear"),
                   help="distil (default): fit the summed adapters to each one's answers on its inputs; "
                        "the others are PEFT's add_weighted_adapter")
    p.add_argument("--weights", nargs="+", type=float, help="one weight per adapter (default: 1 each)")
    p.add_argument("--steps", type=int, help="distil: optimiser steps (default: 60)")
    p.add_argument("--output", "-o", required=True, type=Path, help="adapter folder to write")
    p.add_argument("--allow-download", action="store_true")
    _add_placement(p)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("eval", help="accuracy of a model (optionally with an adapter) on a capability")
    p.add_argument("model", help="alias, zoo:<name>, local folder or Hugging Face id")
    p.add_argument("--adapter", type=Path, help="PEFT adapter folder")
    p.add_argument("--capability", "-c", required=True, help="built-in name, family:param or .jsonl file")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N eval examples (default: all)")
    p.add_argument("--perplexity", action="store_true", help="also perplexity on the shipped general text")
    p.add_argument("--json", action="store_true")
    p.add_argument("--allow-download", action="store_true")
    _add_placement(p)
    p.set_defaults(func=_cmd_eval)

    _add_train_parsers(sub)

    p = sub.add_parser("bench", help="run a benchmark and write its JSON")
    p.add_argument("suite", choices=("fingerprints", "transfer", "fusion", "size"))
    p.add_argument("--target", help="transfer, fusion, size: target model "
                   "(default: smollm2 for transfer and fusion, zoo:llama-m-a for size)")
    p.add_argument("--json", required=True, type=Path, help="where to write the results")
    p.add_argument("--quick", action="store_true", help="quick zoo and fewer probes")
    p.add_argument("--tasks", nargs="+", metavar="JSONL",
                   help="transfer: also measure these capability files (a user's tasks, never trained on)")
    _add_placement(p)
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
        _add_placement(p)  # override the file's device / dtype keys
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
