"""The HTML report: built from synthetic fingerprints (no models), checked for content, bad input, atomic
writes and PNG export, and opened once in headless Chromium to check that every chart renders."""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from umaf.config import FINGERPRINT_DIM
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.report import write_report
from umaf.report.data import palette, parse_bench, parse_target, pca_2d
from umaf.similarity import SIMILARITIES

MODELS = (("zoo:llama-s-a", "llama", 3), ("zoo:bert-s-a", "bert", 3), ("minilm", "bert", 6),
          ("zoo:gpt2-m-b", "gpt2", 4))  # fmt: skip
CAPABILITIES = ("sentiment", "add_k:3", "reverse")
VECTOR_METRICS = [n for n in SIMILARITIES.names() if SIMILARITIES.get(n).inputs == "vectors"]


def make_fp(model: str, family: str, layers: int, capability: str, seed: int, **meta: object) -> Fingerprint:
    """A fingerprint near its capability's direction, with every required metadata key."""
    cap = CAPABILITIES.index(capability)
    base = torch.randn(FINGERPRINT_DIM, generator=torch.Generator().manual_seed(cap))
    noise = torch.randn(FINGERPRINT_DIM, generator=torch.Generator().manual_seed(100 + seed))
    vector = torch.nn.functional.normalize(base + 0.6 * noise, dim=0)  # [512]
    depth = torch.linspace(0, 1, 8)
    profile = 1 + torch.exp(-((depth - 0.3 - 0.2 * cap) ** 2) / 0.05)  # [8]
    full = {"model": model, "family": family, "architecture": f"{family.title()}Model",
            "n_params": 10**5 * layers, "n_layers": layers, "width": 64, "capability": capability,
            "probe_hash": f"p{seed:015d}",
            "extractor_hash": "e0123456789abcde", "umaf_version": "0.1.0", **meta}  # fmt: skip
    return Fingerprint(vector, profile, full)


def make_fused(seed: int = 99) -> Fingerprint:
    """Shaped like :func:`umaf.fusion.fuse`'s output: joined model / capability names, ``sources``, mode."""
    sources = [
        {"model": "minilm", "family": "bert", "capability": "sentiment", "weight": 0.62},
        {"model": "zoo:gpt2-m-b", "family": "gpt2", "capability": "reverse", "weight": 0.38},
    ]
    fp = make_fp("minilm+zoo:gpt2-m-b", "mixed", 5, "reverse", seed, sources=sources, fusion_mode="average")
    fp.meta["capability"] = "sentiment+reverse"
    return fp


def synthetic_fingerprints() -> list[Fingerprint]:
    """Every model on every capability, one without a layer profile, plus one fused fingerprint."""
    fps = [
        make_fp(model, family, layers, cap, i * 10 + j)
        for i, (model, family, layers) in enumerate(MODELS)
        for j, cap in enumerate(CAPABILITIES)
    ]
    fps[-1] = Fingerprint(fps[-1].vector, None, fps[-1].meta)
    return [*fps, make_fused()]


def synthetic_benches() -> list[dict]:
    """A fingerprint-suite-like run (scalars, counts, targets) and a transfer-like one with nested dicts."""
    fingerprints = {"suite": "fingerprints", "umaf_version": "0.1.0", "quick": True, "n_sources": 12,
                    "m1_top1_heldout_family": 0.81, "m1_cka_baseline": 0.42, "m2_spearman": -0.1,
                    "m2_pairs": 40, "extract_overhead": 0.03, "capture_vs_forward_all": 1.4,
                    "bare_forward_probes_per_s": 57.5, "m2_auc": float("nan"),
                    "targets": {"m1_top1_heldout_family": ">= 0.95", "m2_spearman": ">= 0.8",
                                "m2_auc": ">= 0.9", "extract_overhead": "<= 0.05",
                                "capture_vs_forward_all": ">= 1.0", "m1_cka_baseline": "n/a"}}  # fmt: skip
    transfer = {"suite": "transfer", "recovery_seen": 0.55, "recovery_heldout": 0.21,
                "targets": {"recovery_seen": ">= 0.6"},
                "accuracy": {"sentiment": {"base": 0.5, "generated": 0.8, "oracle": 0.95, "random": 0.52},
                             "add_k:3": {"base": 0.1, "generated": 0.3, "oracle": 0.9, "random": 0.1}},
                "wall_seconds": {"generate": 0.8, "oracle": {"train": 120.0}},
                "notes": ["lists are ignored"]}  # fmt: skip
    return [fingerprints, transfer]


def with_competence(fps: list[Fingerprint]) -> list[Fingerprint]:
    """The plain fingerprints with a measured competence (MiniLM's reverse unknown, as it has no LM head)."""
    for i, fp in enumerate(fps):
        if fp.meta.get("sources") is None:
            unknown = fp.model == "minilm" and fp.capability == "reverse"
            fp.meta.update(competence=None if unknown else (i % 5) / 4,
                           competence_method="none: no LM head and open answers" if unknown else "agreement")
    return fps


#: Charts the synthetic report has: similarity, map, competence, profiles, 1 fusion, fingerprints-suite
#: metrics, transfer metrics + its two nested tables (accuracy, wall_seconds).
EXPECTED_CHARTS = 9


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("report")
    path = write_report(with_competence(synthetic_fingerprints()), out / "report.html",
                        bench=synthetic_benches(), png_dir=out / "png")  # fmt: skip
    return path, out / "png"


def test_report_renders_every_chart_in_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    """The one browser test: Debian's Chromium (installed by `make test`) runs the page's chart check."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium)")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           report[0].resolve().as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    match = re.search(r'data-charts-rendered="(\d+)/(\d+)"', dom)
    assert match, "the page's chart check did not run in Chromium"
    assert match.groups() == (str(EXPECTED_CHARTS), str(EXPECTED_CHARTS))
    assert f"All {EXPECTED_CHARTS} charts rendered." in dom


def test_report_is_self_contained_and_complete(report: tuple[Path, Path]) -> None:
    html = report[0].read_text()
    assert html.count('class="umaf-chart"') == EXPECTED_CHARTS
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must not fetch anything"
    assert "@import" not in html and "url(http" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "element ids must be unique across inline SVGs"
    for text in ("zoo:llama-s-a:sentiment", "<b>minilm+zoo:gpt2-m-b:sentiment+reverse</b>", "recovery_seen",
                 "m1_top1_heldout_family", "e0123456789abcde", "cosine: 1 = same direction", "missed",
                 "1 fingerprint without", "(mode <code>average</code>)", 'id="competence"',
                 "Competence per model and capability", "how well each model does each capability"):
        assert text in html, text  # fmt: skip


def test_png_export_one_per_chart_at_200_dpi(report: tuple[Path, Path]) -> None:
    from PIL import Image

    pngs = sorted(report[1].glob("*.png"))
    assert len(pngs) == EXPECTED_CHARTS
    assert pngs[0].name == "01-similarity.png"
    with Image.open(pngs[0]) as image:
        assert [round(d) for d in image.info["dpi"]] == [200, 200]
    assert not list(report[1].glob(".*")), "no temporary files left behind"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(report[0].stat().st_mode) == 0o666 & ~mask, "the report gets the usual permissions"


@pytest.mark.parametrize("metric", VECTOR_METRICS)
def test_every_vector_metric_and_optional_sections(metric: str, tmp_path: Path) -> None:
    """Plain fingerprints only: no profiles, no fusion, no benchmarks -> those sections are left out."""
    fps = [Fingerprint(fp.vector, None, fp.meta) for fp in synthetic_fingerprints()[:4]]
    html = write_report(fps, tmp_path / "r.html", metric=metric, title="Mini").read_text()
    assert html.count('class="umaf-chart"') == 2
    assert 'id="fusion"' not in html and 'id="profiles"' not in html and 'id="benchmarks"' not in html
    assert f"Fingerprint similarity ({metric})" in html  # matplotlib keeps SVG text as comments
    assert "<title>Mini</title>" in html


def test_single_fingerprint(tmp_path: Path) -> None:
    html = write_report(synthetic_fingerprints()[:1], tmp_path / "one.html").read_text()
    assert html.count('class="umaf-chart"') == 3


def test_bad_input_fails_cleanly(tmp_path: Path) -> None:
    fps = synthetic_fingerprints()[:3]
    out = tmp_path / "r.html"
    with pytest.raises(UmafError, match="at least one fingerprint"):
        write_report([], out)
    other = make_fp("minilm", "bert", 6, "sentiment", 7, extractor_hash="ffffffffffffffff")
    with pytest.raises(UmafError, match="different extractors"):
        write_report([*fps, other], out)
    with pytest.raises(UmafError, match="raw activations"):
        write_report(fps, out, metric="cka")
    with pytest.raises(UmafError, match="unknown similarity"):
        write_report(fps, out, metric="nope")
    broken = make_fp("a+b", "mixed", 2, "reverse", 5, sources=[{"model": "x"}])
    with pytest.raises(UmafError, match="numeric 'weight'"):
        write_report([broken], out)
    with pytest.raises(UmafError, match="not a JSON object"):
        write_report(fps, out, bench=[[1, 2]])  # type: ignore[list-item]
    assert list(tmp_path.iterdir()) == []


def test_existing_files_need_overwrite(tmp_path: Path) -> None:
    fps = synthetic_fingerprints()[:1]
    out, png = tmp_path / "r.html", tmp_path / "png"
    out.write_text("keep me")
    with pytest.raises(UmafError, match="exists"):
        write_report(fps, out)
    png.mkdir()
    (png / "02-map.png").write_text("old")
    with pytest.raises(UmafError, match="exists"):
        write_report(fps, tmp_path / "r2.html", png_dir=png)
    assert not (tmp_path / "r2.html").exists() and not (png / "01-similarity.png").exists()
    assert out.read_text() == "keep me" and (png / "02-map.png").read_text() == "old"
    write_report(fps, out, png_dir=png, overwrite=True)
    assert "umaf-chart" in out.read_text()
    assert (png / "02-map.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["png", "r.html"], "no temporary files left behind"


def test_parse_target_and_bench() -> None:
    assert parse_target(">= 0.95").met(0.96) and not parse_target(">= 0.95").met(0.9)
    assert parse_target("<=0.05").met(0.01) and parse_target("≤ 1e-2").value == 0.01
    assert parse_target("0.5").op == ">=" and parse_target("about half") is None
    assert parse_target(">= 1").met(math.nan) is None
    bench = parse_bench(synthetic_benches()[1])
    assert bench.title == "transfer"
    assert [m.name for m in bench.metrics] == ["recovery_seen", "recovery_heldout"]
    accuracy, wall = bench.tables
    assert accuracy.rows == ["sentiment", "add_k:3"]
    assert accuracy.columns == ["base", "generated", "oracle", "random"]
    assert wall.columns == ["value", "train"] and math.isnan(wall.values[0][1])
    counts = {m.name: m.is_count for m in parse_bench(synthetic_benches()[0]).metrics}
    assert counts["n_sources"] and not counts["m2_spearman"]


def test_pca_and_palette() -> None:
    coords, explained = pca_2d(torch.randn(5, FINGERPRINT_DIM))
    assert coords.shape == (5, 2) and sum(explained) <= 1.0 + 1e-6
    assert pca_2d(torch.randn(1, FINGERPRINT_DIM))[0].abs().max() == 0
    colours = palette(30)
    assert len(set(colours)) == 30 and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)


def test_import_stays_light() -> None:
    code = "import umaf.report, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
