"""From a loaded model and a capability to a :class:`~umaf.fingerprint.Fingerprint`."""

from __future__ import annotations

import sys
from pathlib import Path
from weakref import WeakKeyDictionary

from torch import Tensor, nn

import umaf
from umaf import pretrained
from umaf.capabilities import Capability, get_capability
from umaf.capture import capture_activations
from umaf.extractor.config import ExtractorConfig
from umaf.extractor.model import CapabilityExtractor
from umaf.extractor.processor import ProcessedFeatures, anchor_texts, layer_plan, process, prompt_of
from umaf.fingerprint import Fingerprint
from umaf.io import is_trained
from umaf.models import LoadedModel

# Anchor activations per model object: anchors are run once per (model, layers, settings), not once per
# capability. Keyed weakly so that a dropped model frees its entry; a model whose weights are changed in
# place must not be fingerprinted again through this cache.
_ANCHOR_CACHE: WeakKeyDictionary[nn.Module, dict[tuple, Tensor]] = WeakKeyDictionary()


def default_extractor_dir() -> Path:
    """Where the default extractor is read from: the user's one in the cache, else the shipped one."""
    return pretrained.component_dir(pretrained.EXTRACTOR)


def capture_channels(
    loaded: LoadedModel, texts: list[str], layers: list[int], config: ExtractorConfig, **kwargs
) -> Tensor:
    """``[channels, layers, texts, width]``: activations of ``texts`` and (``config.delta``) their prompts."""
    batch = texts + [prompt_of(t) for t in texts] if config.delta else texts
    acts = capture_activations(
        loaded.model, loaded.tokenizer, batch, layers=layers, pooling=config.pooling,
        max_length=config.max_length, **kwargs,
    )  # fmt: skip
    return acts.view(acts.shape[0], config.n_channels, len(texts), acts.shape[-1]).transpose(0, 1)


def anchor_activations(
    loaded: LoadedModel, layers: list[int], config: ExtractorConfig, batch_size: int = 16
) -> Tensor:
    """Anchor activations ``[channels, len(layers), anchors, width]`` (text, prompt), cached per model."""
    texts = anchor_texts(config.n_anchors)
    key = (tuple(layers), tuple(texts), config.pooling, config.max_length, config.delta)
    per_model = _ANCHOR_CACHE.setdefault(loaded.model, {})
    if key not in per_model:
        per_model[key] = capture_channels(
            loaded, texts, layers, config, batch_size=batch_size, progress=False
        )
    return per_model[key]


def model_features(
    loaded: LoadedModel,
    texts: list[str],
    config: ExtractorConfig,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> ProcessedFeatures:
    """Capture ``texts`` (only the blocks the depth bins need) and process them against the anchors."""
    layers, weights = layer_plan(loaded.info.n_layers, config.depth_bins)
    probes = capture_channels(loaded, texts, layers, config, batch_size=batch_size, progress=progress)
    anchors = anchor_activations(loaded, layers, config, batch_size)  # [channels, layers, anchors, width]
    prompts = (probes[1], anchors[1]) if config.delta else (None, None)
    processed = process(probes[0], anchors[0], weights, config, *prompts)
    processed.activations = probes[0]  # [captured, probes, width]
    processed.prompt_activations = probes[1] if config.delta else None
    return processed


def fingerprint(
    loaded: LoadedModel,
    capability: Capability | str,
    extractor: CapabilityExtractor | None = None,
    *,
    part: int | None = None,
    n_probes: int | None = None,
    split: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> Fingerprint:
    """Fingerprint ``capability`` as read from ``loaded``, with its competence measured on the same examples.

    The examples are :meth:`~umaf.capabilities.Capability.probe_examples`: the probe split of a built-in,
    all of a user's JSONL file, or ``split`` when given. ``part`` 0 / 1 uses one of their two disjoint
    halves (query vs gallery); ``n_probes`` caps their number; ``extractor=None`` uses
    :func:`default_extractor`. ``competence``, ``competence_method`` and ``answer_likelihood`` in the
    metadata come from :func:`umaf.competence.measure_competence` (a zoo model's with the capability's
    name before each prompt, as zoo models are trained and evaluated).
    """
    from umaf.competence import measure_competence

    cap = get_capability(capability) if isinstance(capability, str) else capability
    extractor = extractor if extractor is not None else default_extractor()
    examples = cap.probe_examples(part=part, n=n_probes, split=split)
    texts = [ex.text() for ex in examples]
    processed = model_features(loaded, texts, extractor.config, batch_size=batch_size, progress=progress)
    vector = extractor.encode(processed.features)  # [fp_dim]
    competence = measure_competence(loaded, cap, examples, limit=None, batch_size=batch_size)
    info = loaded.info.to_dict()
    meta = {
        "model": info.pop("name"),
        **info,
        "capability": cap.name,
        "probe_hash": cap.probe_hash(split),
        "probe_part": part,
        "n_probes": len(texts),
        "extractor_hash": extractor.extractor_hash,
        **competence.to_meta(),
        "umaf_version": umaf.__version__,
    }
    if split is not None:
        meta["probe_split"] = split
    return Fingerprint(vector, processed.layer_profile, meta)


def default_extractor(train_missing: bool = False) -> CapabilityExtractor:
    """The default extractor (the user's trained one, else the shipped one), loaded once.

    With neither, a UmafError names the command that builds it, unless ``train_missing`` asks to train
    it here (on the quick zoo, into the cache).
    """
    path = default_extractor_dir()
    if train_missing and not is_trained(path):
        from umaf.extractor.train import TrainConfig, train_extractor  # training pulls in the zoo
        from umaf.zoo import build_zoo, list_zoo

        print(f"umaf: no trained extractor; training the default one into {path} (once)", file=sys.stderr)
        if not (list_zoo() or list_zoo(quick=True)):
            build_zoo(quick=True)
        train_extractor(TrainConfig(), output=path)
    return pretrained.load_default(CapabilityExtractor, pretrained.EXTRACTOR, "extractor")
