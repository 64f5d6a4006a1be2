"""Fingerprint in, PEFT adapter directory out: the generator's raw factors, re-factorised by SVD.

Each module's ``ΔW = B @ A`` (rank <= ``gen_rank``) is written at exactly the requested rank ``r`` in
canonical form: ``ΔW ≈ U_r S_r V_r^T``, ``lora_B = U_r sqrt(S_r)``, ``lora_A = sqrt(S_r) V_r^T``
(singular values split evenly between the factors; each singular vector's sign fixed so that its largest
entry in ``U`` is positive), with ``lora_alpha = r`` so PEFT's scale is 1 and the adapter adds exactly
the truncated ΔW.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from umaf import pretrained
from umaf.adapters.peft_io import ADAPTER_WEIGHTS
from umaf.competence import COMPETENT, lacking_sources
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.generator.model import AdapterGenerator
from umaf.io import atomic_path, check_writable, slug


def _canonical(u: Tensor, s: Tensor, v: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``U [.., out, k], S [.., k], V [.., in, k]`` -> ``(A [.., r, in], B [.., out, r])``, signs fixed."""
    u, s, v = u[..., :rank], s[..., :rank], v[..., :rank]
    pivot = u.abs().argmax(dim=-2, keepdim=True)  # [.., 1, r]: largest entry of each left vector
    sign = torch.sign(torch.gather(u, -2, pivot))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    u, v = u * sign, v * sign
    root = s.clamp_min(0).sqrt()  # [.., r]
    b = u * root[..., None, :]  # [.., out, r]
    a = (v * root[..., None, :]).transpose(-1, -2)  # [.., r, in]
    return a, b


def _check_rank(rank: int, delta_shape: tuple[int, ...], available: int) -> None:
    if rank < 1:
        raise UmafError(f"rank {rank} is out of range: a LoRA rank is at least 1")
    if rank > min(delta_shape[-2:]):
        raise UmafError(
            f"rank {rank} is larger than the module allows (min(in, out) = {min(delta_shape[-2:])})"
        )
    if rank > available:
        raise UmafError(f"rank {rank} is larger than the {available} this ΔW has")


def svd_factors(delta: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-``rank`` factors of a dense ``delta [.., out, in]``: ``(A [.., r, in], B [.., out, r])``."""
    _check_rank(rank, tuple(delta.shape), min(delta.shape[-2:]))
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)  # [.., out, k], [.., k], [.., k, in]
    a, b = _canonical(u, s, vh.transpose(-1, -2), rank)
    return a.to(delta.dtype), b.to(delta.dtype)


def refactor(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Canonical rank-``rank`` factors of ``ΔW = b @ a`` without forming ΔW.

    ``a [.., g, in]``, ``b [.., out, g]`` -> ``(A [.., r, in], B [.., out, r])``: QR of both factors, then
    the SVD of the small ``[g, g]`` core (cheap for wide modules, identical to :func:`svd_factors`).
    """
    _check_rank(rank, (*b.shape[:-1], a.shape[-1]), min(a.shape[-2], b.shape[-1]))
    qb, rb = torch.linalg.qr(b.double())  # [.., out, k1], [.., k1, g]
    qa, ra = torch.linalg.qr(a.double().transpose(-1, -2))  # [.., in, k2], [.., k2, g]
    uc, s, vch = torch.linalg.svd(rb @ ra.transpose(-1, -2), full_matrices=False)  # core [.., k1, k2]
    u = qb @ uc  # [.., out, k]
    v = qa @ vch.transpose(-1, -2)  # [.., in, k]
    a_r, b_r = _canonical(u, s, v, rank)
    return a_r.to(a.dtype), b_r.to(b.dtype)


def check_fingerprint(fp: Fingerprint, generator: AdapterGenerator, target: str | None = None) -> None:
    """Refuse a fingerprint the generator cannot read, or a target it was not trained for."""
    fp.validate()
    if target is not None and slug(target) != slug(generator.target):
        raise UmafError(f"this generator writes adapters for {generator.target}, not {target}")
    fp_hash = str(fp.meta.get("extractor_hash"))
    if fp_hash != generator.extractor_hash:
        raise UmafError(
            f"fingerprint made by extractor {fp_hash}, but the generator was trained on extractor "
            f"{generator.extractor_hash}; recompute the fingerprint with that extractor"
        )


def adapter_tensors(generator: AdapterGenerator, vector: Tensor, rank: int) -> dict[str, Tensor]:
    """PEFT state dict (saved key names) of the rank-``rank`` adapter for ``vector [fp_dim]``."""
    if rank < 1 or rank > generator.max_rank:
        raise UmafError(
            f"rank {rank} is out of range: this generator writes ranks 1 to {generator.max_rank} "
            f"(gen_rank {generator.config.gen_rank}, smallest module side included)"
        )
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            factors = generator(vector.reshape(1, -1).to(generator.log_gain.device))
    finally:
        generator.train(was_training)
    tensors: dict[str, Tensor] = {}
    for kind, (a, b) in factors.items():
        a_r, b_r = refactor(a[0], b[0], rank)  # [L_k, r, in], [L_k, out, r]
        specs = [s for s in generator.module_specs if s.kind == kind]
        for j, spec in enumerate(specs):
            tensors[spec.lora_a_key] = a_r[j].float().cpu().contiguous()
            tensors[spec.lora_b_key] = b_r[j].float().cpu().contiguous()
    return tensors


def write_adapter(
    tensors: dict[str, Tensor],
    generator: AdapterGenerator,
    output: str | os.PathLike,
    rank: int,
    overwrite: bool = False,
) -> Path:
    """Write a plain PEFT LoRA directory (scale 1: ``lora_alpha = r``) atomically."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(generator.kinds),
        task_type=generator.task_type,
        base_model_name_or_path=generator.target,
        inference_mode=True,
    )
    with atomic_path(output, overwrite=overwrite, is_dir=True) as tmp:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return Path(output)


def generate_adapter(
    fp: Fingerprint,
    generator: AdapterGenerator | None,
    output: str | os.PathLike,
    rank: int | None = None,
    overwrite: bool = False,
    target: str | None = None,
    min_competence: float | None = COMPETENT,
) -> Path:
    """Write the PEFT adapter that ``generator`` makes of ``fp`` to ``output`` (exact ``rank``; default
    the generator's ``config.rank``). ``generator=None`` uses :func:`default_generator` of ``target``.

    Refuses (:class:`UmafError`, nothing written) a fingerprint from another extractor, a ``target``
    other than the generator's, a rank the modules or the generator cannot hold, an existing ``output``
    unless ``overwrite``, and a source whose measured competence is below ``min_competence``
    (:func:`umaf.competence.lacking_sources`; None writes the adapter whatever the source can do): the
    generator would write what it learnt of the capability, not what the source has.
    """
    check_writable(output, overwrite)
    if rank is not None and int(rank) < 1:  # before any generator is loaded
        raise UmafError(f"rank {rank} is out of range: a LoRA rank is at least 1")
    if generator is None:
        if target is None:
            raise UmafError("generate_adapter needs a generator or a target to find the default one of")
        generator = default_generator(target)
    check_fingerprint(fp, generator, target)
    if min_competence is not None and (lacking := lacking_sources(fp, min_competence)):
        raise UmafError(f"{'; '.join(lacking)} (< {min_competence}): the source lacks the capability, so no "
                        "adapter is generated from it (--ignore-competence generates one anyway)")
    rank = generator.config.rank if rank is None else int(rank)
    tensors = adapter_tensors(generator, fp.vector, rank)
    return write_adapter(tensors, generator, output, rank, overwrite)


def default_generator(target: str) -> AdapterGenerator:
    """The trained generator for ``target`` (the user's one in the cache, else the shipped one), cached
    in memory. Raises :class:`UmafError` with the command that trains one if there is none.
    """
    return pretrained.load_default(
        AdapterGenerator, pretrained.generator_path(target), f"generator for {target}",
        f"`umaf train lora --target {target} -c CAPABILITY ...` and then "
        f"`umaf train generator --target {target}` (about 25 min on 2 CPU cores for SmolLM2)",
    )  # fmt: skip
