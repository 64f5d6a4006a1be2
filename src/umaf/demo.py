"""``umaf demo``: fingerprint the two embedded real models on a few capabilities and compare them."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from umaf.config import HELD_OUT_CAPABILITIES
from umaf.fingerprint import Fingerprint
from umaf.io import atomic_path
from umaf.similarity import similarity_matrix

DEMO_MODELS = ("minilm", "smollm2")
DEMO_CAPABILITIES = ("sentiment", "add", "reverse", "antonym", "capital", "sort_letters")


def run_demo(output: str | Path = "demo-out", quick: bool = False, overwrite: bool = False) -> Path:
    """Fingerprint BERT (MiniLM) and LLaMA (SmolLM2) on capabilities, save them, print their similarities."""
    from umaf.cli import format_matrix
    from umaf.extractor import default_extractor, fingerprint
    from umaf.models import load

    caps = DEMO_CAPABILITIES[:3] if quick else DEMO_CAPABILITIES
    extractor = default_extractor()
    fps: list[Fingerprint] = []
    with atomic_path(output, overwrite=overwrite, is_dir=True) as tmp:
        for name in DEMO_MODELS:
            loaded = load(name)
            for cap in tqdm(caps, desc=f"fingerprinting {name}", unit="capability"):
                fp = fingerprint(loaded, cap, extractor, progress=False)
                fp.save(tmp / "fingerprints" / f"{name}-{cap}.safetensors")
                fps.append(fp)
    matrix = similarity_matrix("cosine", [fp.vector for fp in fps])  # [n, n]
    print(format_matrix([f"{fp.meta['model']}:{fp.capability}" for fp in fps], matrix.tolist()))
    print(cross_model_summary(fps, matrix.tolist()))
    print(f"fingerprints written to {output}/fingerprints/", file=sys.stderr)
    return Path(output)


def cross_model_summary(fps: list[Fingerprint], matrix: list[list[float]]) -> str:
    """For each MiniLM fingerprint: the nearest SmolLM2 fingerprint, i.e. retrieval across architectures."""
    lines, hits = ["", "nearest across architectures (minilm -> smollm2):"], 0
    others = [j for j, fp in enumerate(fps) if fp.meta["model"] == DEMO_MODELS[1]]
    for i, fp in enumerate(fps):
        if fp.meta["model"] != DEMO_MODELS[0]:
            continue
        j = max(others, key=lambda k: matrix[i][k])
        hit = fps[j].capability == fp.capability
        hits += hit
        held = " (held out of training)" if fp.capability in HELD_OUT_CAPABILITIES else ""
        lines.append(f"  {fp.capability:14} -> {fps[j].capability:14} {'ok' if hit else 'miss'}{held}")
    lines.append(f"  {hits}/{len(others)} capabilities matched")
    return "\n".join(lines)
