"""Adapter Generator: a hypernetwork per target model that turns a capability fingerprint into a PEFT LoRA.

``model`` (the hypernetwork and the target's module layout) -> ``generate`` (SVD to the requested rank,
PEFT directory) ; ``train`` fits it on the target's oracle-LoRA library (ΔW reconstruction) and optionally
end to end through the frozen target.
"""

from umaf.generator.config import GeneratorConfig, generator_dir
from umaf.generator.generate import default_generator, generate_adapter, refactor, svd_factors
from umaf.generator.model import AdapterGenerator, ModuleSpec, target_module_specs
from umaf.generator.train import train_generator

__all__ = [
    "AdapterGenerator",
    "GeneratorConfig",
    "ModuleSpec",
    "default_generator",
    "generate_adapter",
    "generator_dir",
    "refactor",
    "svd_factors",
    "target_module_specs",
    "train_generator",
]
