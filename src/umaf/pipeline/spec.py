"""Pipeline files: a YAML description of fingerprint -> compare -> interpolate -> fuse -> adapter -> eval.

Parsing checks every key and value and names the offending key (``adapter.from[1].capability: …``);
:func:`check_ready` then checks, without loading any model, that what the pipeline needs exists.

.. code-block:: yaml

    name: demo
    output: demo-out
    sources:                      # fingerprints to read: model x capabilities
      - {model: minilm, capabilities: [plural, sentiment]}
    compare: {metric: cosine}
    adapter:                      # optional: one PEFT LoRA for the target
      target: smollm2
      rank: 8
      from:                       # fingerprints to fuse (added to the sources when missing there)
        - {model: minilm, capability: plural, weight: 1}
      fusion: average             # any registered fusion mode; gated takes `query`
      interpolate: false          # true | false | auto (when a trained interpolator exists)
    evaluate: {capabilities: [plural], limit: 32, oracle: true, singles: true, perplexity: false}
    report: {metric: cosine}
    train_missing: false          # train missing oracles, generator and interpolator, then cache them
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umaf.errors import UmafError

TOP_KEYS = ("name", "output", "sources", "compare", "adapter", "evaluate", "report", "train_missing")
SOURCE_KEYS = ("model", "capabilities")
REF_KEYS = ("model", "capability", "weight")
ADAPTER_KEYS = ("target", "rank", "from", "fusion", "query", "interpolate", "library")
EVALUATE_KEYS = ("capabilities", "limit", "oracle", "singles", "perplexity")
COMPARE_KEYS = ("metric",)
REPORT_KEYS = ("metric",)
INTERPOLATE_CHOICES = (True, False, "auto")


@dataclass(frozen=True)
class FingerprintRef:
    """One fingerprint the pipeline reads: a capability as a model shows it, with a fusion weight."""

    model: str
    capability: str
    weight: float = 1.0

    @property
    def key(self) -> tuple[str, str]:
        return self.model, self.capability


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter stage: which fingerprints, fused how, make a LoRA for which target."""

    target: str
    sources: tuple[FingerprintRef, ...]
    rank: int | None = None
    fusion: str = "average"
    query: str | None = None
    interpolate: bool | str = False
    library: tuple[str, ...] = ()  # capabilities whose oracles train the generator (train_missing)


@dataclass(frozen=True)
class EvaluateSpec:
    """The evaluation stage on the target: base vs adapter (vs single-source adapters, vs oracles)."""

    capabilities: tuple[str, ...]
    limit: int | None = 32
    oracle: bool = True
    singles: bool = True
    perplexity: bool = False


@dataclass(frozen=True)
class PipelineSpec:
    """A parsed, validated pipeline file."""

    name: str
    output: Path
    fingerprints: tuple[FingerprintRef, ...]  # every (model, capability) to fingerprint, in order
    metric: str = "cosine"
    adapter: AdapterSpec | None = None
    evaluate: EvaluateSpec | None = None
    report_metric: str = "cosine"
    train_missing: bool = False
    origin: str = "pipeline"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------------------------- parsing


class _Reader:
    """Typed access to a nested mapping that names the key path in every error."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, message: str) -> UmafError:
        return UmafError(f"{self.origin}: {where}: {message}" if where else f"{self.origin}: {message}")

    def mapping(self, value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping with keys {', '.join(keys)}")
        unknown = [k for k in value if k not in keys]
        if unknown:
            key = f"{where}.{unknown[0]}" if where else str(unknown[0])
            raise self.fail(key, f"unknown key (expected one of {', '.join(keys)})")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "expected a non-empty string")
        return value.strip()

    def names(self, value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, list) or not value:
            raise self.fail(where, "expected a non-empty list of names")
        return tuple(self.text(v, f"{where}[{i}]") for i, v in enumerate(value))

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "expected true or false")
        return value

    def positive_int(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(where, "expected a positive integer")
        return value

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, "expected a number")
        return float(value)


def parse_pipeline(data: Any, origin: str = "pipeline") -> PipelineSpec:
    """Check the structure and values of a pipeline mapping (as read from YAML) and return the spec."""
    from umaf.capabilities import get_capability
    from umaf.fusion import FUSION_MODES
    from umaf.similarity import SIMILARITIES

    r = _Reader(origin)
    top = r.mapping(data, "", TOP_KEYS)
    for key in ("sources",):
        if key not in top:
            raise r.fail(key, "missing (list the models to fingerprint and their capabilities)")

    def capability(value: Any, where: str) -> str:
        name = r.text(value, where)
        try:
            return get_capability(name).name
        except UmafError as err:
            raise r.fail(where, str(err)) from None

    def metric(section: str) -> str:
        if section not in top or top[section] is None:
            return "cosine"
        keys = COMPARE_KEYS if section == "compare" else REPORT_KEYS
        value = r.text(r.mapping(top[section], section, keys).get("metric", "cosine"), f"{section}.metric")
        if value not in SIMILARITIES or SIMILARITIES.get(value).inputs != "vectors":
            raise r.fail(f"{section}.metric", f"unknown fingerprint metric {value!r}")
        return value

    refs: list[FingerprintRef] = []
    sources = top["sources"]
    if not isinstance(sources, list) or not sources:
        raise r.fail("sources", "expected a non-empty list of {model, capabilities}")
    for i, item in enumerate(sources):
        where = f"sources[{i}]"
        src = r.mapping(item, where, SOURCE_KEYS)
        for key in SOURCE_KEYS:
            if key not in src:
                raise r.fail(f"{where}.{key}", "missing")
        model = r.text(src["model"], f"{where}.model")
        caps = r.names(src["capabilities"], f"{where}.capabilities")
        refs += [
            FingerprintRef(model, capability(c, f"{where}.capabilities[{j}]")) for j, c in enumerate(caps)
        ]

    adapter = None
    if top.get("adapter") is not None:
        a = r.mapping(top["adapter"], "adapter", ADAPTER_KEYS)
        for key in ("target", "from"):
            if key not in a:
                raise r.fail(f"adapter.{key}", "missing")
        if not isinstance(a["from"], list) or not a["from"]:
            raise r.fail("adapter.from", "expected a non-empty list of {model, capability[, weight]}")
        picked = []
        for i, item in enumerate(a["from"]):
            where = f"adapter.from[{i}]"
            ref = r.mapping(item, where, REF_KEYS)
            for key in ("model", "capability"):
                if key not in ref:
                    raise r.fail(f"{where}.{key}", "missing")
            weight = r.number(ref.get("weight", 1.0), f"{where}.weight")
            picked.append(
                FingerprintRef(
                    r.text(ref["model"], f"{where}.model"),
                    capability(ref["capability"], f"{where}.capability"),
                    weight,
                )
            )
        fusion = r.text(a.get("fusion", "average"), "adapter.fusion")
        if fusion not in FUSION_MODES:
            raise r.fail(
                "adapter.fusion", f"unknown fusion mode {fusion!r} (known: {', '.join(FUSION_MODES)})"
            )
        query = capability(a["query"], "adapter.query") if a.get("query") is not None else None
        if (query is not None) != FUSION_MODES.get(fusion).uses_gate:
            raise r.fail(
                "adapter.query", "the gated fusion mode needs a query capability; other modes take none"
            )
        interp = a.get("interpolate", False)
        if interp not in INTERPOLATE_CHOICES:
            raise r.fail("adapter.interpolate", "expected true, false or auto")
        rank = r.positive_int(a["rank"], "adapter.rank") if a.get("rank") is not None else None
        library = a.get("library")
        library = (
            tuple(
                capability(c, f"adapter.library[{i}]")
                for i, c in enumerate(r.names(library, "adapter.library"))
            )
            if library is not None
            else ()
        )  # noqa: E501
        adapter = AdapterSpec(
            r.text(a["target"], "adapter.target"), tuple(picked), rank, fusion, query, interp, library
        )
        refs += [p for p in picked if p.key not in {x.key for x in refs}]

    evaluate = None
    if top.get("evaluate") is not None:
        if adapter is None:
            raise r.fail("evaluate", "evaluation needs an adapter section (there is nothing to evaluate)")
        e = r.mapping(top["evaluate"], "evaluate", EVALUATE_KEYS)
        caps = e.get("capabilities")
        caps = (
            tuple(
                capability(c, f"evaluate.capabilities[{i}]")
                for i, c in enumerate(r.names(caps, "evaluate.capabilities"))
            )  # noqa: E501
            if caps is not None
            else tuple(dict.fromkeys(p.capability for p in adapter.sources))
        )
        limit = r.positive_int(e["limit"], "evaluate.limit") if e.get("limit") is not None else None
        evaluate = EvaluateSpec(
            caps,
            limit,
            *(
                r.flag(e.get(k, d), f"evaluate.{k}")
                for k, d in (("oracle", True), ("singles", True), ("perplexity", False))
            ),
        )

    name = r.text(top.get("name", Path(origin).stem), "name")
    output = Path(r.text(top.get("output", f"{name}-out"), "output"))
    train_missing = r.flag(top.get("train_missing", False), "train_missing")
    unique = tuple(dict.fromkeys(FingerprintRef(x.model, x.capability) for x in refs))
    return PipelineSpec(
        name,
        output,
        unique,
        metric("compare"),
        adapter,
        evaluate,
        metric("report"),
        train_missing,
        origin,
        dict(top),
    )


def load_pipeline(path: str | os.PathLike) -> PipelineSpec:
    """Read and parse a pipeline YAML file (safe loader); every problem is one UmafError line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UmafError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise UmafError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
    return parse_pipeline(data, origin=str(path))


# ------------------------------------------------------------------------------------------- readiness


def quick_zoo_missing(names: Any) -> list[str]:
    """The quick-zoo models among ``names`` (``zoo:<name>``) that are not built yet."""
    from umaf.config import cache_dir
    from umaf.zoo.specs import zoo_specs

    quick = {f"zoo:{s.name}" for s in zoo_specs(quick=True)}
    return [n for n in names if n in quick and not (cache_dir() / "zoo" / n[4:] / "config.json").is_file()]


def check_model(name: str, where: str, origin: str, buildable: bool = False) -> None:
    """Fail if ``name`` cannot be a loadable model: unknown zoo model or missing local path.

    Aliases always resolve; Hugging Face ids are checked when loaded (no model is loaded here).
    ``buildable``: a quick-zoo model that is not built yet is fine (the pipeline builds the quick zoo).
    """
    from umaf.config import cache_dir
    from umaf.models import MODEL_ALIASES

    if name in MODEL_ALIASES or (buildable and quick_zoo_missing([name])):
        return
    if name.startswith("zoo:"):
        if not (cache_dir() / "zoo" / name[4:] / "config.json").is_file():
            raise UmafError(
                f"{origin}: {where}: zoo model {name!r} is not built; run `umaf zoo build` "
                "(or `umaf zoo list` to see what is)"
            )
    elif name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise UmafError(f"{origin}: {where}: model path {name} does not exist")


def check_ready(spec: PipelineSpec, overwrite: bool = False) -> None:
    """Everything the pipeline needs exists (or ``train_missing`` will make it); no model is loaded."""
    from umaf.generator.config import generator_dir
    from umaf.io import check_writable

    try:
        check_writable(spec.output, overwrite)
    except UmafError as err:
        raise UmafError(f"{spec.origin}: output: {err}") from None
    for ref in spec.fingerprints:
        check_model(ref.model, f"model {ref.model!r}", spec.origin, buildable=spec.train_missing)
    if spec.adapter is None:
        return
    check_model(spec.adapter.target, "adapter.target", spec.origin)
    target = spec.adapter.target
    if not (generator_dir(target) / "model.safetensors").is_file():
        if not spec.train_missing:
            raise UmafError(
                f"{spec.origin}: adapter.target: no trained generator for {target}; train one with "
                f"`umaf train generator --target {target}` (after its oracles: `umaf train lora --target "
                f"{target} -c CAPABILITY`), or set train_missing: true"
            )
        if not spec.adapter.library:
            raise UmafError(
                f"{spec.origin}: adapter.library: list the capabilities whose oracle LoRAs "
                f"train the generator of {target} (train_missing needs them)"
            )
    if spec.adapter.query is not None:
        from umaf.fusion import default_gate_dir

        if not (default_gate_dir() / "model.safetensors").is_file():
            raise UmafError(f"{spec.origin}: adapter.fusion: no trained fusion gate; run `umaf train fusion`")
    if spec.adapter.interpolate is True and not spec.train_missing:
        from umaf.interpolator import default_interpolator_dir
        from umaf.interpolator.model import WEIGHTS_NAME

        if not (default_interpolator_dir() / WEIGHTS_NAME).is_file():
            raise UmafError(
                f"{spec.origin}: adapter.interpolate: no trained interpolator; run "
                "`umaf train interpolator`, or use interpolate: auto"
            )
