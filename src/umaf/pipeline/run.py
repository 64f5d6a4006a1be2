"""Running a pipeline: fingerprint -> compare -> interpolate -> fuse -> generate -> evaluate -> report.

Everything goes to a temporary sibling of the output folder, which replaces it only when every stage
succeeded: ``fingerprints/``, ``adapter/`` (PEFT), ``results.json``, ``report.html`` and the
``pipeline.yaml`` that was run.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.formatting import format_results
from umaf.io import atomic_path, is_trained, slug
from umaf.pipeline.spec import FingerprintRef, PipelineSpec, check_ready, quick_zoo_missing

Fingerprints = dict[tuple[str, str], Fingerprint]


def _say(message: str) -> None:
    tqdm.write(f"umaf: {message}", file=sys.stderr)


def fp_file(*parts: str) -> str:
    """File name of a pipeline fingerprint: its slugged parts joined (model, capability[, "at", target])."""
    return "-".join(slug(p) for p in parts) + ".safetensors"


def fingerprint_all(
    spec: PipelineSpec, extractor: Any, folder: Path, keep: str | None = None
) -> tuple[Fingerprints, Any]:
    """Fingerprint every (model, capability) of ``spec`` (on ``spec.device`` in ``spec.dtype``), from the
    fingerprint cache where it holds them (:mod:`umaf.extractor.cache`); save them in ``folder``.

    Returns the fingerprints and the loaded model named ``keep`` (the target, when it is also a source,
    and it had to be loaded), so that it is not loaded twice.
    """
    from umaf.extractor.cache import cached_fingerprints

    by_model: dict[str, list[str]] = {}
    for ref in spec.fingerprints:
        by_model.setdefault(ref.model, []).append(ref.capability)
    fps: Fingerprints = {}
    kept = None
    bar = tqdm(total=len(spec.fingerprints), desc="fingerprints", unit="fp")
    for model, caps in by_model.items():
        bar.set_postfix_str(model)
        found, loaded = cached_fingerprints(model, caps, extractor, dtype=spec.dtype, device=spec.device)
        for cap, fp in zip(caps, found, strict=True):
            fp.save(folder / fp_file(model, cap))
            fps[model, cap] = fp
        bar.update(len(caps))
        if model == keep:
            kept = loaded
    bar.close()
    return fps, kept


def similarity_table(fps: Fingerprints, metric: str) -> dict[str, Any]:
    """The ``metric`` matrix between all fingerprints, with their labels (``model:capability``, for
    reading) and their ``[model, capability]`` pairs (for code: a label cannot be split back, as model
    and capability names may hold colons, e.g. ``zoo:llama-m-a`` and ``add_k:7``)."""
    from umaf.similarity import similarity_matrix

    matrix = similarity_matrix(metric, [fp.vector for fp in fps.values()])
    return {
        "metric": metric,
        "labels": [f"{model}:{cap}" for model, cap in fps],
        "pairs": [[model, cap] for model, cap in fps],
        "matrix": [[round(v, 4) for v in row] for row in matrix.tolist()],
    }


def prepare_target(spec: PipelineSpec) -> list[str]:
    """With ``train_missing``: train the target's oracle library and generator, and the interpolator,
    where they are missing (each is cached). Returns what was trained, for the results."""
    from umaf.generator.config import generator_dir

    adapter = spec.adapter
    trained: list[str] = []
    if adapter is None or not spec.train_missing:
        return trained
    if not is_trained(generator_dir(adapter.target)):
        from umaf.adapters.oracles import build_library
        from umaf.generator import train_generator

        _say(
            f"no generator for {adapter.target} yet: training oracle LoRAs on {', '.join(adapter.library)} "
            "and then the generator; both are cached, so this happens once"
        )
        build_library(adapter.target, adapter.library)
        train_generator(adapter.target)
        trained.append(f"generator for {adapter.target} (oracles: {', '.join(adapter.library)})")
    if adapter.interpolate is True:
        from umaf.interpolator import default_interpolator_dir, train_interpolator

        if not is_trained(default_interpolator_dir()):
            _say("no size interpolator yet: training it on the zoo (cached)")
            train_interpolator(output=default_interpolator_dir())
            trained.append("size interpolator")
    return trained


def _interpolator_for(spec: PipelineSpec, extractor_hash: str) -> tuple[Any, str]:
    """The interpolator the adapter stage uses (or None) and why."""
    from umaf.interpolator import default_interpolator, default_interpolator_dir

    mode = spec.adapter.interpolate if spec.adapter else False
    if mode is False:
        return None, "off"
    if mode == "auto" and not is_trained(default_interpolator_dir()):
        return None, "skipped: no trained interpolator (`umaf train interpolator`)"
    interpolator = default_interpolator()
    trained_on = interpolator.config.extractor_hash
    if mode == "auto" and trained_on not in (None, extractor_hash):
        return None, f"skipped: the interpolator was trained on another extractor ({trained_on})"
    return interpolator, "on"


def source_warnings(sources: list[Fingerprint]) -> list[str]:
    """What ``umaf generate`` warns of (:func:`umaf.competence.competence_warning`), once per source
    fingerprint that is not competent: printed on stderr as it warns, and returned for the results."""
    from umaf.competence import competence_warning

    warnings = list(dict.fromkeys(w for fp in sources if (w := competence_warning(fp)) is not None))
    for warning in warnings:
        _say(f"warning: {warning}")
    return warnings


def adapter_fingerprint(
    spec: PipelineSpec, fps: Fingerprints, target: Any, folder: Path
) -> tuple[Fingerprint | None, dict[tuple[str, str], Fingerprint], dict[str, Any]]:
    """The fingerprint the adapter is generated from: each source moved to the target's scale (when
    interpolation is on), then fused (None with ``merge``: each source gets its own adapter). Returns
    it, the per-source fingerprints used, and a summary (with ``warnings``: :func:`source_warnings`).

    Refuses a source whose measured competence is below :data:`umaf.competence.COMPETENT` unless
    ``adapter.ignore_competence`` (checked here, once, so the adapters below are generated unchecked)."""
    from umaf.competence import COMPETENT, lacking_sources
    from umaf.fusion import fuse
    from umaf.interpolator import interpolate

    adapter = spec.adapter
    assert adapter is not None
    lacking = [] if adapter.ignore_competence else [
        phrase for ref in adapter.sources for phrase in lacking_sources(fps[ref.key])]
    if lacking:
        raise UmafError(f"{'; '.join(lacking)} (< {COMPETENT}): a source lacks its capability, so no adapter "
                        "is generated from it (adapter.ignore_competence: true generates one anyway)")
    first = fps[adapter.sources[0].key]
    interpolator, status = _interpolator_for(spec, first.meta.get("extractor_hash", ""))
    warnings = source_warnings([fps[ref.key] for ref in adapter.sources])
    used: dict[tuple[str, str], Fingerprint] = {}
    for ref in adapter.sources:
        fp = fps[ref.key]
        if interpolator is not None:
            fp = interpolate(fp, target, interpolator=interpolator)
            fp.save(folder / fp_file(ref.model, ref.capability, "at", target.info.name))
        used[ref.key] = fp
    summary = {"interpolation": status, "query": adapter.query, "warnings": warnings}
    if interpolator is not None:
        summary["target_scale"] = next(iter(used.values())).meta.get("target_scale")
    if adapter.merge is not None:  # one adapter per source, merged later: nothing to fuse
        sources = [{"model": r.model, "capability": r.capability, "weight": r.weight}
                   for r in adapter.sources]
        summary.update(fusion_mode=None, merge=adapter.merge, sources=sources)
        return None, used, summary
    fused = fuse(list(used.values()), weights=[ref.weight for ref in adapter.sources], mode=adapter.fusion,
                 query=adapter.query)
    fused.save(folder / "fused.safetensors")
    summary.update(fusion_mode=adapter.fusion, sources=fused.meta["sources"])
    return fused, used, summary


def make_adapter(spec: PipelineSpec, target: Any, fused: Fingerprint | None,
                 used: dict[tuple[str, str], Fingerprint], generator: Any, output: Path) -> dict[str, Any]:
    """Write the pipeline's adapter to ``output``: generated from the fused fingerprint, or (``merge``)
    one generated per source and merged on the target. Returns what the summary records of it."""
    from umaf.adapters.merge import input_separability, left_out_note, merge_adapters, separability_warning
    from umaf.capabilities import get_capability
    from umaf.generator import generate_adapter

    adapter = spec.adapter
    assert adapter is not None
    start = time.perf_counter()
    if fused is not None:
        generate_adapter(fused, generator, output, rank=adapter.rank, min_competence=None)
        return {"gen_seconds": round(time.perf_counter() - start, 3)}
    singles = [generate_adapter(fp, generator, output.parent / "singles" / f"{i}", rank=adapter.rank,
                                min_competence=None) for i, fp in enumerate(used.values())]
    gen_seconds = time.perf_counter() - start
    caps = [get_capability(ref.capability) for ref in adapter.sources]
    separability = input_separability(target, caps)
    _say(f"{target.info.name} tells the inputs of {' / '.join(c.name for c in caps)} apart at "
         f"{separability:.2f}; merging {len(singles)} adapters ({adapter.merge})")
    if warning := separability_warning(separability):
        _say(f"warning: {warning}")
    assert adapter.merge is not None
    merge_adapters(target, singles, output, method=adapter.merge, capabilities=caps,
                   weights=[ref.weight for ref in adapter.sources])
    if note := left_out_note(output):
        _say(f"warning: {note}")
    shutil.rmtree(output.parent / "singles")
    merge_seconds = time.perf_counter() - start - gen_seconds
    return {"gen_seconds": round(gen_seconds, 3), "merge_seconds": round(merge_seconds, 1),
            "input_separability": round(separability, 3), "left_out": note}


def evaluate_stage(
    spec: PipelineSpec,
    target: Any,
    adapter_dir: Path,
    used: dict[tuple[str, str], Fingerprint],
    generator: Any,
) -> dict[str, Any]:
    """Accuracy of the target on each capability: base, with the pipeline's adapter, with an adapter from
    each single source of that capability (``singles``), and with the cached oracle (``oracle``)."""
    from umaf.adapters import find_oracle
    from umaf.evaluation import evaluate, perplexity
    from umaf.generator import generate_adapter

    ev = spec.evaluate
    assert ev is not None and spec.adapter is not None
    name = target.info.name
    rows, no_oracle = [], []
    with tempfile.TemporaryDirectory(prefix="umaf-pipeline-") as tmp:
        for cap in tqdm(ev.capabilities, desc="evaluating", unit="capability"):
            row: dict[str, Any] = {
                "capability": cap,
                "base": evaluate(target, cap, limit=ev.limit),
                "adapter": evaluate(target, cap, adapter_dir, limit=ev.limit),
            }
            if ev.singles and len(spec.adapter.sources) > 1:
                for i, ((model, source_cap), fp) in enumerate(used.items()):
                    if source_cap == cap:
                        single = generate_adapter(fp, generator, Path(tmp) / f"{cap}-{i}",
                                                  rank=spec.adapter.rank, min_competence=None)
                        row[f"single {model}"] = evaluate(target, cap, single, limit=ev.limit)
            oracle = find_oracle(name, cap) if ev.oracle else None
            if oracle is not None:
                row["oracle"] = evaluate(target, cap, oracle, limit=ev.limit)
            elif ev.oracle:
                no_oracle.append(cap)
            rows.append(row)
    out: dict[str, Any] = {"limit": ev.limit, "split": "eval", "capabilities": rows, "no_oracle": no_oracle}
    if ev.perplexity:
        base, adapted = perplexity(target), perplexity(target, adapter_dir)
        out["perplexity"] = {"base": base, "adapter": adapted, "rise": adapted / base - 1}
    return out


def report_bench(results: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's evaluation as a benchmark dict the report charts (accuracy per capability)."""
    bench: dict[str, Any] = {
        "suite": "pipeline",
        "title": f"{results['name']}: accuracy on {results['target']}",
    }
    for row in results.get("evaluation", {}).get("capabilities", []):
        bench[row["capability"]] = {k: v for k, v in row.items() if k != "capability"}
    return bench


def run_pipeline(spec: PipelineSpec, overwrite: bool = False, extractor: Any = None) -> dict[str, Any]:
    """Run ``spec`` and write its output folder; returns the results (also in ``results.json``).

    Every model it loads, here or in the stages it calls, goes on ``spec.device`` in ``spec.dtype``.
    """
    from umaf.models import load_defaults

    check_ready(spec, overwrite)
    with load_defaults(spec.device, spec.dtype):
        return _run(spec, overwrite, extractor)


def _run(spec: PipelineSpec, overwrite: bool, extractor: Any) -> dict[str, Any]:
    """:func:`run_pipeline` once its checks passed, inside its device and dtype defaults."""
    import yaml

    from umaf.generator import default_generator
    from umaf.models import load, resolve_device
    from umaf.report import write_report

    start = time.perf_counter()
    missing = quick_zoo_missing(dict.fromkeys(ref.model for ref in spec.fingerprints))
    if missing:  # only with train_missing (check_ready refuses them otherwise)
        from umaf.zoo import build_zoo

        _say(f"building the quick zoo for {', '.join(missing)} (about 5 minutes, cached)")
        build_zoo(quick=True)
    if extractor is None:
        from umaf.extractor import default_extractor

        extractor = default_extractor()
    trained = prepare_target(spec)
    target_name = spec.adapter.target if spec.adapter else None
    results: dict[str, Any] = {"name": spec.name, "target": target_name, "trained_this_run": trained,
                               "device": str(resolve_device(spec.device)), "dtype": spec.dtype}
    with atomic_path(spec.output, overwrite=overwrite, is_dir=True) as tmp:
        fps, target = fingerprint_all(spec, extractor, tmp / "fingerprints", keep=target_name)
        results["fingerprints"] = [f"fingerprints/{fp_file(m, c)}" for m, c in fps]
        results["similarity"] = similarity_table(fps, spec.metric)
        report_fps = list(fps.values())
        if spec.adapter is not None:
            if target is None:
                target = load(spec.adapter.target, dtype=spec.dtype, device=spec.device)
            fused, used, results["adapter"] = adapter_fingerprint(spec, fps, target, tmp / "fingerprints")
            if fused is not None:
                report_fps.append(fused)
            generator = default_generator(spec.adapter.target)
            made = make_adapter(spec, target, fused, used, generator, tmp / "adapter")
            rank = json.loads((tmp / "adapter" / "adapter_config.json").read_text())["r"]
            results["adapter"].update(path="adapter", rank=rank, **made)
            if spec.evaluate is not None:
                results["evaluation"] = evaluate_stage(spec, target, tmp / "adapter", used, generator)
        results["seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "pipeline.yaml").write_text(yaml.safe_dump(spec.raw, sort_keys=False))
        bench = [report_bench(results)] if "evaluation" in results else []
        write_report(
            report_fps,
            tmp / "report.html",
            bench=bench,
            metric=spec.report_metric,
            title=f"UMAF pipeline: {spec.name}",
        )
    return results


def nearest_other_model(sim: dict[str, Any]) -> list[tuple[int, int]]:
    """``(i, j)`` for each fingerprint ``i`` of a :func:`similarity_table`: ``j`` is the most similar
    fingerprint read from another model (models from ``sim["pairs"]``, never parsed out of labels)."""
    from umaf.similarity import SIMILARITIES

    sign = 1.0 if SIMILARITIES.get(sim["metric"]).higher_is_better else -1.0
    models, matrix = [model for model, _ in sim["pairs"]], sim["matrix"]
    out = []
    for i, model in enumerate(models):
        others = [j for j, other in enumerate(models) if other != model]
        if others:
            out.append((i, max(others, key=lambda j: sign * matrix[i][j])))
    return out


def print_summary(results: dict[str, Any], output: Path) -> None:
    """The short table a user reads after a run."""
    sim = results["similarity"]
    labels, pairs, matrix = sim["labels"], sim["pairs"], sim["matrix"]
    matches = nearest_other_model(sim)
    if matches:
        hits = sum(pairs[i][1] == pairs[j][1] for i, j in matches)
        print(f"nearest fingerprint of another model ({hits}/{len(matches)} the same capability; "
              f"{sim['metric']}; the whole matrix is in {output}/report.html):")  # fmt: skip
        for i, j in matches:
            mark = "" if pairs[i][1] == pairs[j][1] else "   (another capability)"
            print(f"  {labels[i]:32} -> {labels[j]:32} {matrix[i][j]:6.3f}{mark}")
    if "adapter" in results:
        a = results["adapter"]
        weights = ", ".join(f"{s['model']}:{s['capability']}={s['weight']:.2f}" for s in a["sources"])
        how = a["fusion_mode"] or f"{a['merge']} merge (input separability {a['input_separability']:.2f})"
        merged = f", merged in {a['merge_seconds']:.0f} s" if "merge_seconds" in a else ""
        print(
            f"\nadapter for {results['target']}: {how} of {weights}; interpolation "
            f"{a['interpolation']}; rank {a['rank']}; generated in {a['gen_seconds']:.2f} s{merged}"
        )
    if "evaluation" in results:
        ev = results["evaluation"]
        print(
            f"\naccuracy on the eval split (first {ev['limit']} examples per capability):"
            if ev["limit"]
            else "\naccuracy on the eval split:"
        )
        print(format_results(ev))
        if ev.get("no_oracle"):
            caps, target = ev["no_oracle"], results["target"]
            print(f"no oracle LoRA of {', '.join(caps)} for {target}: oracle column left out "
                  f"(`umaf train lora --target {target} -c {' '.join(caps)}` fills it)")  # fmt: skip
    for item in results["trained_this_run"]:
        print(f"trained and cached this run: {item}", file=sys.stderr)
    print(
        f"\nwrote {output}/ (fingerprints, adapter, results.json, report.html) in {results['seconds']:.0f} s",
        file=sys.stderr,
    )


__all__ = ["FingerprintRef", "print_summary", "run_pipeline", "similarity_table"]
