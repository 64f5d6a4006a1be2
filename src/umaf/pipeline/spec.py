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
      # merge: distil             # instead of fusion: one adapter per source, merged on the target
      #                           # (distil, linear, cat, ties, dare_linear; see `umaf merge`); each
      #                           # weight then scales its adapter's ΔW as given (not normalised), and
      #                           # distil's rank is the sum of the sources' ranks
      interpolate: false          # true | false | auto (when a trained interpolator exists)
      ignore_competence: false    # true: generate even from a source whose measured competence on its
      #                           # capability is below umaf.competence.COMPETENT (refused by default)
    evaluate: {capabilities: [plural], limit: 32, oracle: true, singles: true, perplexity: false}
    report: {metric: cosine}
    train_missing: false          # train missing oracles, generator and interpolator, then cache them
    device: auto                  # where models run: auto (CUDA when available, else cpu), cpu, cuda, cuda:N
    dtype: float32                # what they run in: float32, bfloat16 or float16 (fingerprints stay float32)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umaf.errors import UmafError

TOP_KEYS = (
    "name", "output", "sources", "compare", "adapter", "evaluate", "report", "train_missing", "device",
    "dtype",
)  # fmt: skip
SOURCE_KEYS = ("model", "capabilities")
REF_KEYS = ("model", "capability", "weight")
ADAPTER_KEYS = (
    "target", "rank", "from", "fusion", "merge", "query", "interpolate", "library", "ignore_competence",
)
EVALUATE_KEYS = ("capabilities", "limit", "oracle", "singles", "perplexity")
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
    merge: str | None = None  # set: one adapter per source, merged with this method (no fingerprint fusion)
    query: str | None = None
    interpolate: bool | str = False
    library: tuple[str, ...] = ()  # capabilities whose oracles train the generator (train_missing)
    ignore_competence: bool = False  # generate even from sources that lack their capability


@dataclass(frozen=True)
class EvaluateSpec:
    """The evaluation stage on the target: base vs adapter (vs single-source adapters, vs oracles)."""

    capabilities: tuple[str, ...]
    limit: int | None = None  # first examples of the eval split; None: all of them
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
    device: str | None = None  # None: CUDA when available, else the CPU
    dtype: str = "float32"
    origin: str = "pipeline"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------------------------- parsing


class _Reader:
    """Typed access to a nested mapping that names the key path in every error."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, message: str) -> UmafError:
        return UmafError(f"{self.origin}: {where}: {message}" if where else f"{self.origin}: {message}")

    def mapping(
        self, value: Any, where: str, keys: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """``value`` as a mapping with only ``keys``, all of ``required`` among them."""
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping with keys {', '.join(keys)}")
        path = (lambda key: f"{where}.{key}") if where else str
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise self.fail(path(unknown[0]), f"unknown key (expected one of {', '.join(keys)})")
        missing = [k for k in required if k not in value]
        if missing:
            raise self.fail(path(missing[0]), "missing")
        return value

    def items(self, value: Any, where: str, what: str) -> list[Any]:
        if isinstance(value, str) or not isinstance(value, list) or not value:
            raise self.fail(where, f"expected a non-empty list of {what}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "expected a non-empty string")
        return value.strip()

    def capability(self, value: Any, where: str) -> str:
        from umaf.capabilities import get_capability

        try:
            return get_capability(self.text(value, where)).name
        except UmafError as err:
            raise self.fail(where, str(err)) from None

    def capabilities(self, value: Any, where: str) -> tuple[str, ...]:
        names = self.items(value, where, "names")
        return tuple(self.capability(v, f"{where}[{i}]") for i, v in enumerate(names))

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

    def choice(self, value: Any, where: str, choices: tuple[Any, ...], said: str) -> Any:
        if value not in choices:
            raise self.fail(where, f"expected {said}")
        return value

    def device(self, value: Any, where: str) -> str | None:
        """A device name (checked, not yet looked for on this machine: :func:`check_ready` does that)."""
        from umaf.models import parse_device

        try:
            parsed = parse_device(self.text(value, where))
        except UmafError as err:
            raise self.fail(where, str(err)) from None
        return None if parsed is None else str(parsed)

    def dtype(self, value: Any, where: str) -> str:
        from umaf.models import DTYPES

        return self.choice(self.text(value, where), where, tuple(DTYPES), f"one of {', '.join(DTYPES)}")

    def metric(self, section: Any, where: str) -> str | None:
        """The fingerprint metric a ``{metric: NAME}`` section names (None if it names none)."""
        from umaf.similarity import SIMILARITIES

        given = self.mapping(section, where, ("metric",))
        if "metric" not in given:
            return None
        value = self.text(given["metric"], f"{where}.metric")
        if value not in SIMILARITIES or SIMILARITIES.get(value).inputs != "vectors":
            raise self.fail(f"{where}.metric", f"unknown fingerprint metric {value!r}")
        return value


def _optional(given: dict[str, Any], where: str, readers: dict[str, Any]) -> dict[str, Any]:
    """Each key of ``given`` that has a reader and a value, read; absent keys keep the spec's defaults."""
    return {k: read(given[k], f"{where}.{k}") for k, read in readers.items() if given.get(k) is not None}


def _parse_adapter(r: _Reader, section: Any) -> AdapterSpec:
    from umaf.adapters.merge import MERGE_METHODS
    from umaf.fusion import FUSION_MODES

    a = r.mapping(section, "adapter", ADAPTER_KEYS, required=("target", "from"))
    sources = []
    for i, item in enumerate(r.items(a["from"], "adapter.from", "{model, capability[, weight]}")):
        where = f"adapter.from[{i}]"
        ref = r.mapping(item, where, REF_KEYS, required=("model", "capability"))
        weight = r.number(ref.get("weight", 1.0), f"{where}.weight")
        model = r.text(ref["model"], f"{where}.model")
        sources.append(FingerprintRef(model, r.capability(ref["capability"], f"{where}.capability"), weight))
    spec = AdapterSpec(
        r.text(a["target"], "adapter.target"),
        tuple(sources),
        **_optional(a, "adapter", {
            "rank": r.positive_int, "fusion": r.text, "query": r.capability, "library": r.capabilities,
            "merge": lambda v, where: r.choice(v, where, MERGE_METHODS, ", ".join(MERGE_METHODS)),
            "interpolate": lambda v, where: r.choice(v, where, INTERPOLATE_CHOICES, "true, false or auto"),
            "ignore_competence": r.flag,
        }),
    )  # fmt: skip
    if spec.fusion not in FUSION_MODES:
        raise r.fail(
            "adapter.fusion", f"unknown fusion mode {spec.fusion!r} (known: {', '.join(FUSION_MODES)})"
        )
    if spec.merge is not None and ("fusion" in a or "query" in a):
        raise r.fail("adapter.merge", "merge combines one adapter per source; give either fusion or merge")
    if spec.merge is not None and len({ref.key for ref in spec.sources}) < len(spec.sources):
        raise r.fail("adapter.from", "each source of a merge must be a different model or capability")
    if spec.merge is not None and len(spec.sources) < 2:
        raise r.fail("adapter.merge", "merging needs at least two sources in adapter.from")
    if spec.merge is not None and any(ref.weight <= 0 for ref in spec.sources):
        raise r.fail("adapter.from", "merge weights must be positive")
    if spec.merge is None and (spec.query is not None) != FUSION_MODES.get(spec.fusion).uses_gate:
        raise r.fail("adapter.query", "the gated fusion mode needs a query capability; other modes take none")
    return spec


def _parse_evaluate(r: _Reader, section: Any, adapter: AdapterSpec) -> EvaluateSpec:
    e = r.mapping(section, "evaluate", EVALUATE_KEYS)
    flags = dict.fromkeys(("oracle", "singles", "perplexity"), r.flag)
    given = _optional(e, "evaluate", {"capabilities": r.capabilities, "limit": r.positive_int, **flags})
    given.setdefault("capabilities", tuple(dict.fromkeys(p.capability for p in adapter.sources)))
    return EvaluateSpec(**given)


def parse_pipeline(data: Any, origin: str = "pipeline") -> PipelineSpec:
    """Check the structure and values of a pipeline mapping (as read from YAML) and return the spec."""
    r = _Reader(origin)
    top = r.mapping(data, "", TOP_KEYS)
    if "sources" not in top:
        raise r.fail("sources", "missing (list the models to fingerprint and their capabilities)")
    refs: list[FingerprintRef] = []
    for i, item in enumerate(r.items(top["sources"], "sources", "{model, capabilities}")):
        where = f"sources[{i}]"
        src = r.mapping(item, where, SOURCE_KEYS, required=SOURCE_KEYS)
        model = r.text(src["model"], f"{where}.model")
        caps = r.capabilities(src["capabilities"], f"{where}.capabilities")
        refs += [FingerprintRef(model, c) for c in caps]
    adapter = _parse_adapter(r, top["adapter"]) if top.get("adapter") is not None else None
    evaluate = None
    if top.get("evaluate") is not None:
        if adapter is None:
            raise r.fail("evaluate", "evaluation needs an adapter section (there is nothing to evaluate)")
        evaluate = _parse_evaluate(r, top["evaluate"], adapter)
    name = r.text(top.get("name", Path(origin).stem), "name")
    metrics = {
        key: metric
        for key, section in (("metric", "compare"), ("report_metric", "report"))
        if top.get(section) is not None and (metric := r.metric(top[section], section)) is not None
    }
    every = refs + list(adapter.sources if adapter else ())  # fused sources are fingerprinted too
    return PipelineSpec(
        name=name,
        output=Path(r.text(top.get("output", f"{name}-out"), "output")),
        fingerprints=tuple(dict.fromkeys(FingerprintRef(x.model, x.capability) for x in every)),
        adapter=adapter,
        evaluate=evaluate,
        train_missing=r.flag(top.get("train_missing", False), "train_missing"),
        device=r.device(top["device"], "device") if top.get("device") is not None else None,
        dtype=r.dtype(top.get("dtype", "float32"), "dtype"),
        origin=origin,
        raw=dict(top),
        **metrics,
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
    """The quick-zoo models among ``names`` (``zoo:<name>``) that are neither built nor shipped."""
    from umaf.zoo.build import missing_models

    missing = {f"zoo:{spec.name}" for spec in missing_models(quick=True)}
    return [n for n in names if n in missing]


def check_model(name: str, where: str, origin: str, buildable: bool = False) -> None:
    """Fail if ``name`` cannot be a loadable model: unknown zoo model or missing local path.

    Aliases always resolve; Hugging Face ids are checked when loaded (no model is loaded here).
    ``buildable``: a quick-zoo model that is not built yet is fine (the pipeline builds the quick zoo).
    """
    from umaf.models import MODEL_ALIASES, zoo_name
    from umaf.pretrained import zoo_model_dir

    if name in MODEL_ALIASES or (buildable and quick_zoo_missing([name])):
        return
    if name.startswith("zoo:"):
        try:
            folder = zoo_model_dir(zoo_name(name))
        except UmafError as err:
            raise UmafError(f"{origin}: {where}: {err}") from None
        if not (folder / "config.json").is_file():
            raise UmafError(
                f"{origin}: {where}: zoo model {name!r} is not built; run `umaf zoo build` "
                "(or `umaf zoo list` to see what is)"
            )
    elif name.startswith((".", "/", "~")) and not Path(name).expanduser().exists():
        raise UmafError(f"{origin}: {where}: model path {name} does not exist")


def check_ready(spec: PipelineSpec, overwrite: bool = False) -> None:
    """Everything the pipeline needs exists (or ``train_missing`` will make it); no model is loaded."""
    from umaf.generator.config import generator_dir
    from umaf.io import check_writable, is_trained
    from umaf.models import resolve_device

    for key, check in (("output", lambda: check_writable(spec.output, overwrite)),
                       ("device", lambda: resolve_device(spec.device))):  # fmt: skip
        try:
            check()
        except UmafError as err:
            raise UmafError(f"{spec.origin}: {key}: {err}") from None
    for ref in spec.fingerprints:
        check_model(ref.model, f"model {ref.model!r}", spec.origin, buildable=spec.train_missing)
    if spec.adapter is None:
        return
    check_model(spec.adapter.target, "adapter.target", spec.origin)
    target = spec.adapter.target
    if not is_trained(generator_dir(target)):
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

        if not is_trained(default_gate_dir()):
            raise UmafError(f"{spec.origin}: adapter.fusion: no trained fusion gate; run `umaf train fusion`")
    if spec.adapter.interpolate is True and not spec.train_missing:
        from umaf.interpolator import default_interpolator_dir

        if not is_trained(default_interpolator_dir()):
            raise UmafError(
                f"{spec.origin}: adapter.interpolate: no trained interpolator; run "
                "`umaf train interpolator`, or use interpolate: auto"
            )
