"""Training the fusion gate on episodes built from zoo fingerprints of training capabilities.

An episode: a query capability ``c``; 1-2 readings of ``c`` from random zoo models among
``min_sources..max_sources`` sources whose other members read other capabilities; the query is ``c``
read by yet another model. The fused vector should point at ``c``'s prototype, the mean reading of the
models that were trained on ``c`` (so the gate learns to pick the asked capability and to prefer its
competent readings). Loss: ``1 - cos(fused, prototype)``. Held-out capabilities and model families
never enter; a share of the training capabilities is held apart for validation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from umaf.capabilities import is_held_out, is_held_out_model_family
from umaf.errors import UmafError
from umaf.fusion.config import FusionTrainConfig
from umaf.fusion.gate import FusionGate
from umaf.interpolator.data import default_capabilities
from umaf.io import check_writable
from umaf.zoo.fingerprints import ZooFingerprint, require_zoo, zoo_fingerprints


@dataclass
class EpisodeBank:
    """Fingerprints grouped by capability, with each capability's prototype."""

    vectors: Tensor  # [M, D]
    by_capability: dict[str, list[int]]
    prototypes: dict[str, Tensor]  # capability -> [D], unit

    @classmethod
    def build(cls, samples: Sequence[ZooFingerprint]) -> EpisodeBank:
        """Group ``samples`` by capability; prototypes average the readings of models trained on it."""
        vectors = torch.stack([s.fingerprint.vector for s in samples])
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(s.capability, []).append(i)
        protos = {}
        for cap, idx in groups.items():
            competent = [i for i in idx if samples[i].trained] or idx
            protos[cap] = F.normalize(vectors[competent].mean(0), dim=-1)
        return cls(vectors, groups, protos)


def sample_batch(
    bank: EpisodeBank, capabilities: Sequence[str], n_sources: int, batch_size: int, rng: random.Random
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(query [B, D], sources [B, N, D], prototype [B, D], positive [B, N])`` for random episodes."""
    usable = [c for c in capabilities if len(bank.by_capability[c]) >= 2]
    others = sorted(bank.by_capability)
    if not usable or len(others) < 2:
        raise UmafError("episodes need two capabilities and two readings of the asked one")
    rows = []
    for _ in range(batch_size):
        cap = rng.choice(usable)
        readings = rng.sample(bank.by_capability[cap], len(bank.by_capability[cap]))
        query, positives = readings[0], readings[1 : 1 + rng.randint(1, min(2, n_sources - 1))]
        pool = [c for c in others if c != cap]
        negatives = [
            rng.choice(bank.by_capability[rng.choice(pool)]) for _ in range(n_sources - len(positives))
        ]
        order = rng.sample(positives + negatives, n_sources)
        rows.append((query, order, cap, [i in positives for i in order]))
    query = bank.vectors[[r[0] for r in rows]]  # [B, D]
    sources = bank.vectors[torch.tensor([r[1] for r in rows])]  # [B, N, D]
    proto = torch.stack([bank.prototypes[r[2]] for r in rows])  # [B, D]
    return query, sources, proto, torch.tensor([r[3] for r in rows])


def fused_cosine(weights: Tensor, sources: Tensor, prototype: Tensor) -> Tensor:
    """``cos(Σ_i w_i v_i, prototype)`` per episode: ``[B, N]``, ``[B, N, D]``, ``[B, D]`` -> ``[B]``."""
    fused = (weights.unsqueeze(-1) * sources).sum(1)  # [B, D]
    return F.cosine_similarity(fused, prototype, dim=-1)


@torch.no_grad()
def evaluate_gate(
    gate: FusionGate,
    samples: Sequence[ZooFingerprint],
    capabilities: Sequence[str],
    n_episodes: int = 512,
    n_sources: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Cosine of the fused vector to the asked capability's prototype: gate vs equal weights vs only the
    readings of the asked capability (equal weights, an oracle selection); and the gate's weight mass
    on those readings. Distractors come from every capability in ``samples``."""
    bank = EpisodeBank.build(samples)
    query, sources, proto, positive = sample_batch(
        bank, capabilities, n_sources, n_episodes, random.Random(seed)
    )
    gate.eval()
    w = gate(query, sources)  # [B, N]
    uniform = torch.full_like(w, 1.0 / n_sources)
    oracle = positive.float() / positive.float().sum(-1, keepdim=True)
    return {
        "cosine_gate": float(fused_cosine(w, sources, proto).mean()),
        "cosine_uniform": float(fused_cosine(uniform, sources, proto).mean()),
        "cosine_oracle_selection": float(fused_cosine(oracle, sources, proto).mean()),
        "gate_mass_on_asked": float((w * positive).sum(-1).mean()),
        "n_episodes": n_episodes,
    }


def fit(
    gate: FusionGate, bank: EpisodeBank, capabilities: Sequence[str], config: FusionTrainConfig
) -> list[float]:
    """The training loop (under Accelerate); returns the loss of every step."""
    from accelerate import Accelerator

    accelerator = Accelerator()
    optimizer = torch.optim.AdamW(gate.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(gate, optimizer)
    rng = random.Random(config.seed)
    losses: list[float] = []
    model.train()
    for _ in tqdm(range(config.steps), desc="fusion gate", disable=not config.progress):
        n = rng.randint(config.min_sources, config.max_sources)
        batch = sample_batch(bank, capabilities, n, config.batch_size, rng)
        query, sources, proto, _ = (t.to(accelerator.device) for t in batch)
        loss = (1 - fused_cosine(model(query, sources), sources, proto)).mean()
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def collect(config: FusionTrainConfig) -> list[ZooFingerprint]:
    """Cached zoo fingerprints of every non-held-out family on the training capabilities."""
    entries = [e for e in require_zoo() if not is_held_out_model_family(e.family)]
    return zoo_fingerprints(
        entries, default_capabilities(config.n_family_instances), progress=config.progress
    )


def split_capabilities(
    capabilities: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """``(train, validation)``: a reproducible ``fraction`` of the capabilities held apart."""
    caps = sorted(set(capabilities))
    random.Random(seed).shuffle(caps)
    n_val = int(round(len(caps) * fraction))
    return sorted(caps[n_val:]), sorted(caps[:n_val])


def _loss_summary(losses: Sequence[float]) -> dict[str, float]:
    """Mean loss of the first and of the last ten steps."""
    return {
        "first_loss": sum(losses[:10]) / len(losses[:10]),
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
    }


def train_fusion(
    config: FusionTrainConfig | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    samples: Sequence[ZooFingerprint] | None = None,
) -> FusionGate:
    """Train the fusion gate; ``samples`` defaults to cached zoo fingerprints (:func:`collect`).

    Held-out capabilities and families are dropped. With ``output`` the gate is saved there.
    """
    config = config or FusionTrainConfig()
    if output is not None:
        check_writable(output, overwrite)
    torch.manual_seed(config.seed)
    samples = [
        s for s in (collect(config) if samples is None else samples)
        if not is_held_out(s.capability) and not is_held_out_model_family(s.family)
    ]  # fmt: skip
    hashes = {s.fingerprint.meta.get("extractor_hash") for s in samples}
    if len(hashes) != 1:
        raise UmafError("fusion training needs fingerprints from exactly one extractor")
    train_caps, val_caps = split_capabilities(
        [s.capability for s in samples], config.val_fraction, config.seed
    )
    train_samples = [s for s in samples if s.capability in set(train_caps)]
    config.gate.extractor_hash = hashes.pop()
    gate = FusionGate(config.gate)
    before = evaluate_gate(gate, samples, val_caps, seed=config.seed + 1) if val_caps else {}
    losses = fit(gate, EpisodeBank.build(train_samples), train_caps, config)
    after = evaluate_gate(gate, samples, val_caps, seed=config.seed + 1) if val_caps else {}
    gate.train_report = {
        "train_capabilities": train_caps,
        "val_capabilities": val_caps,
        "models": sorted({s.model for s in samples}),
        **_loss_summary(losses),
        **{f"val_init_{k}": v for k, v in before.items()},
        **{f"val_{k}": v for k, v in after.items()},
    }
    if output is not None:
        gate.save_pretrained(output, overwrite=overwrite)  # the report goes into its config.json
    return gate
