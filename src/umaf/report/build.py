"""Assemble the report: validate the inputs, draw every chart, write the page (and PNGs) atomically."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import torch

from umaf import __version__
from umaf.competence import COMPETENT, fingerprint_competence
from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint, check_compatible
from umaf.io import atomic_path, check_writable
from umaf.report.charts import (
    bench_metrics_figure,
    bench_table_figure,
    competence_figure,
    fusion_figure,
    heatmap_figure,
    map_figure,
    profiles_figure,
    render,
)
from umaf.report.data import (
    Bench,
    Styles,
    competence_grid,
    fp_family,
    fp_label,
    fusion_sources,
    human_count,
    parse_bench,
    pca_2d,
    sort_fingerprints,
)
from umaf.report.html import Chart, Section, number, page, swatch, table
from umaf.similarity import SIMILARITIES, Similarity, similarity_matrix

#: How to read each built-in metric's heatmap; other metrics get a generic line.
METRIC_READING = {
    "cosine": "cosine: 1 = same direction, 0 = unrelated, −1 = opposite",
    "pearson": "Pearson correlation of the entries: 1 = they rise and fall together, 0 = unrelated",
    "kl": "symmetric KL divergence of the softmaxed vectors: 0 = identical, larger = further apart",
}


def write_report(
    fingerprints: Sequence[Fingerprint],
    output: str | Path,
    *,
    bench: Sequence[dict[str, Any]] | None = None,
    metric: str = "cosine",
    png_dir: str | Path | None = None,
    overwrite: bool = False,
    title: str = "UMAF report",
) -> Path:
    """Write a self-contained HTML report of ``fingerprints`` (and benchmark results) to ``output``.

    The page holds a similarity heatmap under ``metric`` (any vector metric of
    :data:`umaf.similarity.SIMILARITIES`), a 2-D PCA map, per-layer profiles, fusion weights of fused
    fingerprints (``meta["sources"]``), one chart and table per benchmark dict in ``bench`` and a metadata
    table. With ``png_dir``, every chart is also saved there as a 200-dpi PNG (``NN-<chart>.png``).
    Nothing is written unless everything succeeds; existing files need ``overwrite``.
    """
    output = Path(output)
    fps = sort_fingerprints(_checked(fingerprints))
    similarity = _vector_metric(metric)
    benches = [parse_bench(b, i) for i, b in enumerate(bench or [])]
    check_writable(output, overwrite)
    styles = Styles.for_fingerprints(fps)
    sections = [_similarity_section(fps, similarity, styles), _map_section(fps, styles)]
    sections += [s for s in (_competence_section(fps, styles),) if s]
    sections += [s for s in (_profiles_section(fps, styles), _fusion_section(fps, styles)) if s]
    sections += [s for s in (_bench_section(benches),) if s]
    sections.append(_fingerprint_section(fps, styles))
    lede, facts = _header(fps, benches, similarity)
    footer = f"Made with UMAF {escape(__version__)}. Charts are inline SVG; this file needs no network."
    chart_list = [block for s in sections for block in s.blocks if isinstance(block, Chart)]
    _render(chart_list, png=png_dir is not None)
    html = page(title, lede, facts, sections, footer)
    if png_dir is not None:
        _write_pngs(chart_list, Path(png_dir), overwrite)
    with atomic_path(output, overwrite=overwrite) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return output


def _checked(fingerprints: Sequence[Fingerprint]) -> list[Fingerprint]:
    fps = list(fingerprints)
    if not fps:
        raise UmafError("a report needs at least one fingerprint")
    for i, fp in enumerate(fps):
        if not isinstance(fp, Fingerprint):
            raise UmafError(f"item {i + 1} of the report's fingerprints is not a Fingerprint")
        fp.validate(f"fingerprint {i + 1} ({fp_label(fp)})")
    check_compatible(fps)
    return fps


def _vector_metric(name: str) -> Similarity:
    metric = SIMILARITIES.get(name)
    if metric.inputs != "vectors":
        choices = ", ".join(n for n in SIMILARITIES.names() if SIMILARITIES.get(n).inputs == "vectors")
        raise UmafError(f"metric {name!r} compares raw activations, not fingerprints; choose from: {choices}")
    return metric


def _chart(slug: str, caption: str, build: Callable[[], Any]) -> Chart:
    return Chart(slug, caption, build)


def _render(chart_list: Sequence[Chart], png: bool) -> None:
    """Draw every chart (matplotlib runs here and only here)."""
    for chart in chart_list:
        chart.svg, chart.png = render(chart.build, uid=chart.slug, png=png)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "chart"


def _similarity_section(fps: list[Fingerprint], metric: Similarity, styles: Styles) -> Section:
    matrix = similarity_matrix(metric.name, torch.stack([fp.vector for fp in fps]))  # [N, N]
    better = "higher" if metric.higher_is_better else "lower"
    reading = METRIC_READING.get(metric.name, f"{metric.name}: {better} values mean more alike")
    caption = (f"{escape(reading)}. Brighter cells are more alike. Rows and columns are grouped by "
               "capability (label colour); a good extractor gives bright blocks on the diagonal: one "
               "capability read from different models lands close.")  # fmt: skip
    chart = _chart("similarity", caption, lambda: heatmap_figure(matrix, fps, metric, styles))
    how = f"Every pair of fingerprints compared with <code>{escape(metric.name)}</code>."
    return Section("similarity", "Similarity", how, [chart])


def _map_section(fps: list[Fingerprint], styles: Styles) -> Section:
    coords, explained = pca_2d(torch.stack([fp.vector for fp in fps]))  # [N, 2]
    caption = ("Each point is one fingerprint, projected on the first two principal components of the "
               f"{len(fps)} fingerprints in this report. Colour = capability, shape = model family: "
               "points of one colour should cluster whatever their shape. The axis labels say how much "
               "of the spread each axis shows.")  # fmt: skip
    chart = _chart("map", caption, lambda: map_figure(coords, explained, fps, styles))
    how = "Where the fingerprints sit relative to one another, flattened to two dimensions."
    return Section("map", "Fingerprint map", how, [chart])


def _competence_section(fps: list[Fingerprint], styles: Styles) -> Section | None:
    grid = competence_grid(fps)
    if grid is None:
        return None
    caption = (f"How well each model <i>does</i> each capability, read from the model itself (see "
               f"<code>umaf.competence</code>): 1 = it answers every probe example right, 0 = none (or "
               f"no better than guessing the commonest answer). The line on the colour bar marks "
               f"{COMPETENT}, from which a source counts as having the capability; <b>?</b> = read but not "
               "measurable (no LM head and open answers), blank = not in this report.")  # fmt: skip
    chart = _chart("competence", caption, lambda: competence_figure(grid, styles))
    how = "The fingerprint's vector says <i>what</i> capability; its competence says <i>how well</i>."
    return Section("competence", "Competence", how, [chart])


def _profiles_section(fps: list[Fingerprint], styles: Styles) -> Section | None:
    with_profile = [fp for fp in fps if fp.layer_profile is not None]
    if not with_profile:
        return None
    skipped = len(fps) - len(with_profile)
    caption = ("How distinct each capability's probe texts are from generic text at each relative depth "
               "of the source model (0 = first block, 1 = last), in units of generic text's spread. A peak "
               "marks the depth where the model represents the capability most distinctly. Colour = "
               "capability; line style and marker = family.")  # fmt: skip
    if skipped:
        plural = "s" if skipped > 1 else ""
        caption += f" {skipped} fingerprint{plural} without a profile not shown."
    chart = _chart("profiles", caption, lambda: profiles_figure(with_profile, styles))
    how = "Which depth of each source model carries the capability."
    return Section("profiles", "Per-layer profiles", how, [chart])


def _fusion_section(fps: list[Fingerprint], styles: Styles) -> Section | None:
    blocks: list[str | Chart] = []
    for i, fp in enumerate(fps):
        sources = fusion_sources(fp)
        if sources is None:
            continue
        mode = fp.meta.get("fusion_mode") or fp.meta.get("mode")
        caption = (f"Weight of each source in the fused fingerprint <b>{escape(fp_label(fp))}</b>"
                   + (f" (mode <code>{escape(str(mode))}</code>)" if mode else "")
                   + ". Bar colour = the source's capability.")  # fmt: skip
        slug = f"fusion-{i + 1}-{_slug(fp_label(fp))}"
        blocks.append(_chart(slug, caption, lambda fp=fp, s=sources: fusion_figure(fp, s, styles)))
    if not blocks:
        return None
    how = "Fused fingerprints combine several sources; these are the weights each source received."
    return Section("fusion", "Fusion weights", how, blocks)


def _bench_section(benches: list[Bench]) -> Section | None:
    blocks: list[str | Chart] = []
    for i, bench in enumerate(benches):
        blocks += _bench_blocks(bench, i)
    if not blocks:
        return None
    how = ("Results of benchmark runs, every number measured in that run. Green bars meet their target, "
           "red ones miss it, grey ones have none; the black tick marks the target.")  # fmt: skip
    return Section("benchmarks", "Benchmarks", how, blocks)


def _bench_blocks(bench: Bench, index: int) -> list[str | Chart]:
    info = ", ".join(f"{k} = {v}" for k, v in bench.info.items())
    blocks: list[str | Chart] = [f"<h3>{escape(bench.title)}</h3>"]
    if info:
        blocks.append(f'<p class="how">{escape(info)}</p>')
    prefix = f"bench-{index + 1}-{_slug(bench.title)}"
    if bench.charted:
        caption = ("Each bar is a number measured in this run; fractions and correlations share the top "
                   "axis, other magnitudes (ratios, throughputs) get one axis each.")  # fmt: skip
        blocks.append(_chart(f"{prefix}-metrics", caption, lambda: bench_metrics_figure(bench)))
    if bench.metrics:
        blocks.append(_metric_table(bench))
    for table_data in bench.tables:
        caption = f"<code>{escape(table_data.name)}</code>: one group of bars per row, one colour per column."
        slug = f"{prefix}-{_slug(table_data.name)}"
        blocks.append(_chart(slug, caption, lambda t=table_data: bench_table_figure(t, bench.title)))
        pairs = zip(table_data.rows, table_data.values, strict=True)
        rows = [[escape(row)] + [number(v) for v in values] for row, values in pairs]
        numeric = [False] + [True] * len(table_data.columns)
        blocks.append(table([table_data.name, *table_data.columns], rows, numeric))
    return blocks


_VERDICT = {None: "", True: '<span class="ok">met</span>', False: '<span class="bad">missed</span>'}


def _metric_table(bench: Bench) -> str:
    rows = []
    for m in bench.metrics:
        value = f"{int(m.value)}" if m.is_count else number(m.value)
        verdict = _VERDICT[m.met]
        rows.append([f"<code>{escape(m.name)}</code>", value, escape(m.target_text), verdict])
    return table(["metric", "measured", "target", ""], rows, [False, True, True, False])


def _fingerprint_section(fps: list[Fingerprint], styles: Styles) -> Section:
    rows = []
    for fp in fps:
        m = fp.meta
        cells = [fp.model, fp_family(fp), human_count(m.get("n_params")), m.get("n_layers"), m.get("width")]
        rows.append([escape(str(c)) for c in cells] + [
            swatch(styles.capability_colour[fp.capability], fp.capability),
            number(score) if (score := fingerprint_competence(fp)) is not None else "unknown",
            f"<code>{escape(str(m.get('extractor_hash')))}</code>",
        ])  # fmt: skip
    headers = ["model", "family", "params", "layers", "width", "capability", "competence", "extractor"]
    how = "Every fingerprint in this report, with the model it was read from."
    numeric = [False, False, True, True, True]
    return Section("fingerprints", "Fingerprints", how, [table(headers, rows, numeric)])


def _header(fps: list[Fingerprint], benches: list[Bench], metric: Similarity) -> tuple[str, dict[str, str]]:
    models = sorted({fp.model for fp in fps})
    caps = sorted({fp.capability for fp in fps})
    families = sorted({fp_family(fp) for fp in fps})
    parts = [f"how similar they are ({escape(metric.name)})", "where they sit on a 2-D map"]
    if any(fp.layer_profile is not None for fp in fps):
        parts.append("where in each model the capability lives")
    if competence_grid(fps) is not None:
        parts.append("how well each model does each capability")
    if any(fusion_sources(fp) is not None for fp in fps):
        parts.append("how fused fingerprints weigh their sources")
    if benches:
        parts.append(f"the results of {len(benches)} benchmark run{'s' if len(benches) > 1 else ''}")
    lede = (f"{len(fps)} capability fingerprint{'s' if len(fps) > 1 else ''} of {len(caps)} "
            f"capabilit{'ies' if len(caps) > 1 else 'y'} read from {len(models)} "
            f"model{'s' if len(models) > 1 else ''}: " + ", ".join(parts[:-1])
            + (" and " if len(parts) > 1 else "") + parts[-1] + ".")  # fmt: skip
    facts = {
        "fingerprints": str(len(fps)), "models": str(len(models)), "families": ", ".join(families),
        "capabilities": str(len(caps)), "metric": metric.name,
        "extractor": str(fps[0].meta.get("extractor_hash")),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }  # fmt: skip
    return lede, facts


def _write_pngs(chart_list: list[Chart], png_dir: Path, overwrite: bool) -> list[Path]:
    """Each chart as ``NN-<slug>.png``; every path is checked before the first is written."""
    if png_dir.exists() and not png_dir.is_dir():
        raise UmafError(f"{png_dir} is not a folder")
    paths = [png_dir / f"{i + 1:02d}-{chart.slug}.png" for i, chart in enumerate(chart_list)]
    for path in paths:
        check_writable(path, overwrite)
    for path, chart in zip(paths, chart_list, strict=True):
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_bytes(chart.png or b"")
    return paths


