"""The task-conditioned fusion gate: a query fingerprint and N source fingerprints -> N weights.

``logit_i = cos(q, v_i) / T + <P q, K v_i> + b(v_i)``; the weights are their softmax. At initialisation
``P``/``K`` are near zero and ``b`` is zero, so an untrained gate weighs sources by their cosine to the
query (a retrieval prior); training learns which sources serve a query best (e.g. the more competent
reading of the asked capability) and how sharp to be.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import umaf
from umaf.config import cache_dir
from umaf.errors import UmafError
from umaf.fusion.config import GateConfig
from umaf.io import WEIGHTS_NAME, atomic_path, is_trained

CONFIG_NAME = "config.json"
FORMAT = "umaf-fusion-gate"

_DEFAULT: dict[tuple[Path, int], FusionGate] = {}  # keyed by folder and weights mtime


class FusionGate(nn.Module):
    """Weights per source given a query; see the module docstring."""

    def __init__(self, config: GateConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GateConfig()
        self.query_proj = nn.Linear(config.fp_dim, config.key_dim, bias=False)
        self.key_proj = nn.Linear(config.fp_dim, config.key_dim, bias=False)
        nn.init.normal_(self.query_proj.weight, std=0.01)
        nn.init.normal_(self.key_proj.weight, std=0.01)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        self.source_bias = nn.Linear(config.fp_dim, 1)
        nn.init.zeros_(self.source_bias.weight)
        nn.init.zeros_(self.source_bias.bias)
        self.train_report: dict = {}

    def forward(self, query: Tensor, sources: Tensor, mask: Tensor | None = None) -> Tensor:
        """``query [B, D]``, ``sources [B, N, D]``, ``mask [B, N]`` (True = real) -> weights ``[B, N]``."""
        cos = F.cosine_similarity(query[:, None, :], sources, dim=-1)  # [B, N]
        bilinear = (self.query_proj(query)[:, None, :] * self.key_proj(sources)).sum(-1)  # [B, N]
        logits = cos * self.log_inv_temperature.exp() + bilinear + self.source_bias(sources).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask.bool(), float("-inf"))
        return logits.softmax(dim=-1)

    @torch.no_grad()
    def weigh(self, query: Tensor, sources: Tensor) -> Tensor:
        """Inference: ``query [D]``, ``sources [N, D]`` -> weights ``[N]`` summing to one."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            return self(query[None].to(device), sources[None].to(device))[0].cpu()
        finally:
            self.train(was_training)

    @property
    def gate_hash(self) -> str:
        """sha256[:16] over the weights' names, shapes and bytes: identifies the exact gate."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``config.json`` (sorted, versioned, with the training report) and ``model.safetensors``."""
        doc = {
            "format": FORMAT,
            "umaf_version": umaf.__version__,
            "config": self.config.to_dict(),
            "train_report": self.train_report,
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": FORMAT, "umaf_version": umaf.__version__}
        with atomic_path(directory, overwrite=overwrite, is_dir=True) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
            save_file(state, str(tmp / WEIGHTS_NAME), metadata=meta)
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> FusionGate:
        """Load a folder written by :meth:`save_pretrained`; anything missing or corrupt is a UmafError."""
        directory = Path(directory)
        doc = _read_doc(directory)
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except (OSError, SafetensorError, ValueError):
            raise UmafError(f"{directory / WEIGHTS_NAME} is missing or not a safetensors file") from None
        gate = cls(GateConfig.from_dict(doc["config"]))
        try:
            gate.load_state_dict(state, strict=True)
        except RuntimeError:
            raise UmafError(f"{directory / WEIGHTS_NAME} does not match its config.json") from None
        gate.train_report = doc.get("train_report") or {}
        return gate.eval()


def _read_doc(directory: Path) -> dict:
    if not directory.is_dir():
        raise UmafError(f"{directory} is not a fusion gate folder")
    try:
        doc = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        raise UmafError(f"{directory / CONFIG_NAME} is missing or not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("config"), dict):
        raise UmafError(f"{directory} is not a UMAF fusion gate folder")
    return doc


def default_gate_dir() -> Path:
    """Where the default gate lives: ``cache_dir()/fusion/default``."""
    return cache_dir() / "fusion" / "default"


def default_gate() -> FusionGate:
    """The trained default gate; a UmafError naming the command to train it if it is missing."""
    path = default_gate_dir()
    if not is_trained(path):
        raise UmafError(f"no trained fusion gate in {path}; run `umaf train fusion` first")
    key = (path, (path / WEIGHTS_NAME).stat().st_mtime_ns)
    if key not in _DEFAULT:
        _DEFAULT[key] = FusionGate.from_pretrained(path)
    return _DEFAULT[key]
