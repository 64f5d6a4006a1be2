"""The Adapter Generator: a hypernetwork from a 512-D fingerprint to LoRA factors for every target module.

In the spirit of Text-to-LoRA (Charakorn et al., 2025, https://arxiv.org/abs/2506.06105): the fingerprint
becomes a task embedding; for every adapted module (layer ``l``, module type ``m``) the task embedding is
joined to learned embeddings of ``l`` and ``m`` and sent through one shared residual MLP trunk; a head per
module type turns the trunk's output into raw factors ``A [g, in]`` and ``B [out, g]`` (``g = gen_rank``),
so ``ΔW = B @ A``. The ``B`` heads start at zero (as LoRA's ``B`` does), so an untrained generator
changes nothing. :mod:`umaf.generator.generate` turns ΔW into a PEFT adapter of any rank ``<= g``.

Which modules exist, their shapes and their PEFT key names come from the real target model
(:func:`target_module_specs`), never from hard-coded patterns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from umaf.components import TrainedComponent, check_type, config_from_dict
from umaf.errors import UmafError
from umaf.generator.config import ARCHITECTURE_FIELDS, GeneratorConfig

#: PEFT task type per model kind (see :class:`umaf.models.ModelInfo`).
TASK_TYPES: dict[str, str | None] = {
    "decoder": "CAUSAL_LM",
    "encoder-decoder": "SEQ_2_SEQ_LM",
    "encoder": None,
}

_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class ModuleSpec:
    """One adapted module of the target: where it is, its type, its shape and its PEFT weight keys."""

    name: str  # dotted path in the target model, e.g. "model.layers.0.self_attn.q_proj"
    kind: str  # the target_modules entry it matches, e.g. "q_proj"
    layer: int  # block index (first integer in the path)
    in_features: int
    out_features: int
    lora_a_key: str  # e.g. "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    lora_b_key: str


def module_name(key: str) -> str:
    """Module path of a PEFT weight key or a module path with PEFT's prefix (prefix and suffix dropped)."""
    name = key.removeprefix(_PEFT_PREFIX)
    return re.sub(r"\.lora_[AB](\.[A-Za-z0-9_]+)?\.weight$", "", name)


def _layer_index(name: str) -> int:
    match = re.search(r"\.(\d+)(\.|$)", name)
    return int(match.group(1)) if match else 0


def _kind_of(name: str, target_modules: Sequence[str]) -> str:
    matches = [m for m in target_modules if name == m or name.endswith("." + m)]
    if not matches:
        raise UmafError(f"module {name} matches none of the target modules {', '.join(target_modules)}")
    return max(matches, key=len)


def target_module_specs(model: nn.Module, target_modules: Sequence[str]) -> list[ModuleSpec]:
    """Modules that PEFT adapts in ``model`` for ``target_modules``, read from a PEFT copy of it.

    The copy is built on the ``meta`` device from the model's config (no weights are touched or copied);
    its PEFT state-dict keys are exactly the ones ``PeftModel.save_pretrained`` writes.
    Unknown module names, or modules PEFT cannot adapt, raise :class:`UmafError`.
    """
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    with torch.device("meta"):
        meta = type(model)._from_config(model.config)
    try:
        peft_model = get_peft_model(meta, LoraConfig(r=1, lora_alpha=1, target_modules=list(target_modules)))
    except (ValueError, TypeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UmafError(f"cannot adapt target modules {', '.join(target_modules)}: {first}") from None
    state = get_peft_model_state_dict(peft_model)
    specs = []
    for key_a in sorted(k for k in state if ".lora_A." in k):
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        name = module_name(key_a)
        in_features, out_features = state[key_a].shape[1], state[key_b].shape[0]
        specs.append(
            ModuleSpec(
                name,
                _kind_of(name, target_modules),
                _layer_index(name),
                int(in_features),
                int(out_features),
                key_a,
                key_b,
            )
        )
    if not specs:
        raise UmafError(f"the target has no modules named {', '.join(target_modules)}")
    return sorted(specs, key=lambda s: (s.layer, list(target_modules).index(s.kind), s.name))


class ResidualMLP(nn.Module):
    """Pre-norm residual block ``x + W2 gelu(W1 norm(x))``."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(self.fc2(nn.functional.gelu(self.fc1(self.norm(x)))))


class AdapterGenerator(TrainedComponent):
    """Fingerprint -> raw LoRA factors per target module; see the module docstring.

    ``modules`` (from :func:`target_module_specs`) fixes the target's layout; ``extractor_hash`` is the
    hash of the extractor whose fingerprints it was trained on; ``task_type`` is PEFT's task type;
    ``training`` holds the training report (sources, capabilities, validation figures), saved in
    config.json as ``training`` next to ``modules``, ``extractor_hash`` and ``task_type``.
    """

    FORMAT = "umaf-generator"
    config_class = GeneratorConfig
    NAME = "generator"
    REPORT_FIELD = "training"

    def __init__(
        self,
        config: GeneratorConfig,
        modules: Sequence[ModuleSpec],
        extractor_hash: str = "",
        task_type: str | None = "CAUSAL_LM",
        training: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.config, self.module_specs = config, list(modules)
        self.extractor_hash, self.task_type = extractor_hash, task_type
        self.train_report = dict(training or {})
        self.kinds = sorted({s.kind for s in self.module_specs})  # fixes the module-type embedding rows
        self.shapes = {k: self._kind_shape(k) for k in self.kinds}  # kind -> (in, out)
        for i, kind in enumerate(self.kinds):
            layers = [s.layer for s in self.module_specs if s.kind == kind]
            self.register_buffer(f"layers_{i}", torch.tensor(layers, dtype=torch.long), persistent=False)
        n_layers = max(s.layer for s in self.module_specs) + 1
        c, g = config, config.gen_rank
        self.task = nn.Sequential(
            nn.Linear(c.fp_dim, c.task_dim), nn.GELU(), nn.Linear(c.task_dim, c.task_dim)
        )
        self.layer_emb = nn.Embedding(n_layers, c.emb_dim)
        self.kind_emb = nn.Embedding(len(self.kinds), c.emb_dim)
        self.trunk_in = nn.Linear(c.task_dim + 2 * c.emb_dim, c.hidden)
        self.blocks = nn.ModuleList(ResidualMLP(c.hidden, c.dropout) for _ in range(c.n_blocks))
        self.norm = nn.LayerNorm(c.hidden)
        self.head_a = nn.ModuleDict({k: nn.Linear(c.hidden, g * self.shapes[k][0]) for k in self.kinds})
        self.head_b = nn.ModuleDict({k: nn.Linear(c.hidden, g * self.shapes[k][1]) for k in self.kinds})
        for head in self.head_b.values():  # ΔW starts at exactly zero, as in LoRA
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.log_gain = nn.Parameter(torch.zeros(len(self.kinds)))  # learned ΔW scale per module type

    def _kind_shape(self, kind: str) -> tuple[int, int]:
        shapes = {(s.in_features, s.out_features) for s in self.module_specs if s.kind == kind}
        if len(shapes) != 1:
            raise UmafError(
                f"modules of type {kind} differ in shape ({sorted(shapes)}); adapt them separately"
            )
        return shapes.pop()

    @property
    def training_report(self) -> dict[str, Any]:
        """The training report (:attr:`train_report` under the name the generator has always used)."""
        return self.train_report

    @training_report.setter
    def training_report(self, report: dict[str, Any]) -> None:
        self.train_report = report

    @property
    def target(self) -> str:
        return self.config.target

    @property
    def max_rank(self) -> int:
        """The largest adapter rank this generator can write."""
        return min([self.config.gen_rank] + [min(s.in_features, s.out_features) for s in self.module_specs])

    def layers_of(self, kind: str) -> Tensor:
        """Block indices of the modules of type ``kind``, in ``module_specs`` order: ``[L_k]``."""
        return getattr(self, f"layers_{self.kinds.index(kind)}")

    def forward(self, fingerprints: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``fingerprints [B, fp_dim]`` -> per module type ``(A [B, L_k, g, in], B [B, L_k, out, g])``.

        ``ΔW = B @ A`` for the ``L_k`` modules of that type, in ``module_specs`` order.
        """
        task = self.task(
            fingerprints * math.sqrt(self.config.fp_dim)
        )  # [B, task_dim] (unit fp -> O(1) entries)
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for i, kind in enumerate(self.kinds):
            layers = self.layers_of(kind)  # [L_k]
            b, n = task.shape[0], layers.shape[0]
            cond = torch.cat(
                [
                    task[:, None].expand(b, n, -1),
                    self.layer_emb(layers)[None].expand(b, n, -1),
                    self.kind_emb.weight[i].expand(b, n, -1),
                ],
                dim=-1,
            )  # [B, L_k, task_dim + 2 * emb_dim]
            h = self.trunk_in(cond)  # [B, L_k, hidden]
            for block in self.blocks:
                h = block(h)
            h = self.norm(h)
            d_in, d_out = self.shapes[kind]
            g, gain = self.config.gen_rank, torch.exp(self.log_gain[i] / 2)
            a = self.head_a[kind](h).view(b, n, g, d_in) * (gain / math.sqrt(d_in))  # [B, L_k, g, in]
            bf = self.head_b[kind](h).view(b, n, d_out, g) * gain  # [B, L_k, out, g]
            out[kind] = (a, bf)
        return out

    @torch.no_grad()
    def delta_weights(self, fingerprint: Tensor) -> dict[str, Tensor]:
        """Inference: one ``fingerprint [fp_dim]`` -> module name -> ``ΔW [out, in]`` (eval mode)."""
        was_training = self.training
        self.eval()
        try:
            factors = self(fingerprint.reshape(1, -1).to(self.log_gain.device))
        finally:
            self.train(was_training)
        deltas: dict[str, Tensor] = {}
        for kind, (a, b) in factors.items():
            specs = [s for s in self.module_specs if s.kind == kind]
            for j, spec in enumerate(specs):
                deltas[spec.name] = (b[0, j] @ a[0, j]).cpu()  # [out, in]
        return deltas

    # ------------------------------------------------------------------------------------------ files

    def _config_dict(self) -> dict[str, Any]:
        return self.config.architecture()

    def _extra_fields(self) -> dict[str, Any]:
        modules = [asdict(s) for s in self.module_specs]
        return {"modules": modules, "extractor_hash": self.extractor_hash, "task_type": self.task_type}

    @classmethod
    def _from_document(cls, doc: dict[str, Any]) -> AdapterGenerator:
        unknown = sorted(set(doc["config"]) - set(ARCHITECTURE_FIELDS))
        if unknown:
            raise UmafError(f"unknown generator config keys: {', '.join(unknown)}")
        modules = check_type(doc.get("modules"), tuple[dict, ...], "modules")
        if not modules:
            raise UmafError("modules must list at least one module")
        return cls(
            GeneratorConfig.from_dict(doc["config"]),
            [config_from_dict(ModuleSpec, m, "module spec") for m in modules],
            check_type(doc.get("extractor_hash"), str, "extractor_hash"),
            check_type(doc.get("task_type"), str | None, "task_type"),
        )
