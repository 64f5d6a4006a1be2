"""The model zoo: tiny models of several families and sizes, each trained from scratch on a different
subset of the named capabilities, so that their competence is known and varies.

``build_zoo()`` trains what is missing under ``cache_dir()/zoo/<name>/`` (weights, tokenizer and a
``zoo.json`` with the trained capabilities and the measured accuracy on every named capability);
``list_zoo()`` reads it back; ``umaf.models.load("zoo:<name>")`` loads a model. Zoo models are trained
with :mod:`umaf.encoding` and answer through :mod:`umaf.answers`, as oracle LoRAs and evaluation do.

Zoo models learn many look-alike tasks at once, so they are asked with the capability's name in front
of the prompt (:func:`tag_prompt`, e.g. ``first letter. push ->``); ``ZooEntry.accuracy`` is measured
that way, ``meta["accuracy_untagged"]`` with the plain prompt.
"""

from umaf.zoo.build import (
    PROMPT_FORMAT,
    ZooEntry,
    build_model,
    build_zoo,
    is_built,
    list_zoo,
    qualification_summary,
    zoo_dir,
)
from umaf.zoo.specs import SUBSETS, TrainConfig, ZooSpec, zoo_specs
from umaf.zoo.train import train_model

__all__ = [
    "PROMPT_FORMAT", "SUBSETS", "TrainConfig", "ZooEntry", "ZooSpec", "build_model", "build_zoo", "is_built",
    "list_zoo", "qualification_summary", "train_model", "zoo_dir", "zoo_specs",
]
