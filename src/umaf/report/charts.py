"""The report's charts, drawn with matplotlib (imported lazily, never through pyplot, so no global backend
state is touched; PNGs go through Agg) and returned as SVG text and PNG bytes.

Each ``*_figure`` function takes prepared data (see :mod:`umaf.report.data`) and returns a ``Figure``;
:func:`render` turns one into the two outputs under the report's shared style.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from umaf.errors import UmafError
from umaf.fingerprint import Fingerprint
from umaf.report.data import Bench, CompetenceGrid, Metric, Styles, Table, fp_family, fp_label
from umaf.similarity import Similarity

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PNG_DPI = 200
PASS, FAIL, NEUTRAL, INK, MUTED = "#59a14f", "#e15759", "#9aa5b1", "#1f2933", "#616e7c"
#: Series colours for benchmark tables, muted so they do not read as capability colours.
SERIES = ("#355070", "#e09f3e", "#6d9773", "#b56576", "#6d597a", "#8d99ae", "#9e2a2b", "#33658a")
LINESTYLES = ("-", "--", ":", "-.")

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same text everywhere
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelcolor": MUTED,
    "axes.edgecolor": "#cbd2d9",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "grid.color": "#e4e7eb",
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "svg.fonttype": "path",  # glyphs as paths: no font needed at view time
    "svg.hashsalt": "umaf",  # stable ids, reproducible files
}


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UmafError("the report needs matplotlib: pip install 'umaf[plots]'") from None
    return matplotlib


def render(build: Callable[[], Figure], uid: str, png: bool = False) -> tuple[str, bytes | None]:
    """Build a figure under the report style; return the inline SVG (ids prefixed by ``uid``) and, if
    ``png``, the PNG bytes at :data:`PNG_DPI`."""
    matplotlib = _matplotlib()
    with matplotlib.rc_context(RC):
        fig = build()
        svg = io.StringIO()
        fig.savefig(svg, format="svg", metadata={"Date": None})
        png_bytes = None
        if png:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=PNG_DPI)
            png_bytes = buf.getvalue()
    return _inline_svg(svg.getvalue(), uid), png_bytes


def _inline_svg(text: str, uid: str) -> str:
    """Drop the XML prologue and make the SVG's ids unique within the page."""
    text = text[text.index("<svg") :]
    text = re.sub(r'\bid="([^"]+)"', rf'id="{uid}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{uid}-\1"', text)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{uid}-\1)", text)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def heatmap_figure(matrix: Tensor, fps: Sequence[Fingerprint], metric: Similarity, styles: Styles) -> Figure:
    """Pairwise ``matrix [N, N]`` of ``metric``; tick labels coloured by capability."""
    n = len(fps)
    side = min(max(4.8, 0.38 * n + 2.8), 16.0)
    fig = _figure(side + 1.4, side)
    ax = fig.add_subplot()
    values = matrix.numpy()
    im = ax.imshow(values, cmap="viridis" if metric.higher_is_better else "viridis_r")
    labels = [fp_label(fp) for fp in fps]
    ax.set_xticks(range(n), labels, rotation=55, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, fp in zip(ticks, fps, strict=True):
            tick.set_color(styles.capability_colour[fp.capability])
    _group_lines(ax, [fp.capability for fp in fps])
    if n <= 12:  # beyond that the numbers are unreadable (and slow to draw)
        _annotate_cells(ax, im, values)
    ax.spines[:].set_visible(False)
    better = "higher" if metric.higher_is_better else "lower"
    fig.colorbar(im, ax=ax, shrink=0.75, label=f"{metric.name} ({better} = more alike)")
    ax.set_title(f"Fingerprint similarity ({metric.name})")
    return fig


def competence_figure(grid: CompetenceGrid, styles: Styles) -> Figure:
    """Model x capability competence on a fixed [0, 1] scale; ``?`` = read but unknown, blank = not read.
    The colour bar marks :data:`umaf.competence.COMPETENT`."""
    import numpy as np

    from umaf.competence import COMPETENT

    n_models, n_caps = grid.values.shape
    fig = _figure(min(max(4.8, 0.5 * n_caps + 3.4), 16.0), min(max(2.4, 0.36 * n_models + 1.8), 14.0))
    ax = fig.add_subplot()
    values = np.ma.masked_invalid(grid.values.numpy())
    cmap = _matplotlib().colormaps["viridis"].with_extremes(bad="#f0f2f5")
    im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n_caps), grid.capabilities, rotation=55, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n_models), grid.models)
    for tick, cap in zip(ax.get_xticklabels(), grid.capabilities, strict=True):
        tick.set_color(styles.capability_colour.get(cap, INK))
    if n_models * n_caps <= 400:  # beyond that the numbers are unreadable
        for i in range(n_models):
            for j in range(n_caps):
                value = float(grid.values[i, j])
                if not math.isnan(value):
                    colour = "white" if value < 0.55 else INK
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
                elif grid.read[i, j]:
                    ax.text(j, i, "?", ha="center", va="center", fontsize=8, color=MUTED)
    ax.spines[:].set_visible(False)
    bar = fig.colorbar(im, ax=ax, shrink=0.85, label="competence (0 = cannot, 1 = always right)")
    bar.ax.axhline(COMPETENT, color=INK, linewidth=1.5)
    ax.set_title("Competence per model and capability")
    return fig


def _group_lines(ax: Axes, groups: Sequence[str]) -> None:
    """White lines between runs of equal capability, so the blocks on the diagonal stand out."""
    for i in range(1, len(groups)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i - 0.5, color="white", linewidth=1.5)
            ax.axvline(i - 0.5, color="white", linewidth=1.5)


def _annotate_cells(ax: Axes, im: Any, values: Any) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            shade = im.norm(values[i, j])
            colour = "white" if (shade < 0.55) == (im.cmap.name == "viridis") else INK
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)


def map_figure(
    coords: Tensor, explained: Sequence[float], fps: Sequence[Fingerprint], styles: Styles
) -> Figure:
    """Scatter of the fingerprints' first two principal components: colour = capability, shape = family."""
    fig = _figure(8.0, 5.4)
    ax = fig.add_subplot()
    ax.grid(True)
    for (x, y), fp in zip(coords.tolist(), fps, strict=True):
        ax.scatter(x, y, s=80, color=styles.capability_colour[fp.capability],
                   marker=styles.family_marker[fp_family(fp)], edgecolors="white", linewidths=0.9, zorder=3)
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({explained[1]:.0%} of variance)")
    _map_legends(ax, fps, styles)
    ax.set_title("Fingerprint map (PCA)")
    return fig


def _map_legends(ax: Axes, fps: Sequence[Fingerprint], styles: Styles) -> None:
    from matplotlib.lines import Line2D

    caps = sorted({fp.capability for fp in fps})
    fams = sorted({fp_family(fp) for fp in fps})
    cap_handles = [Line2D([], [], marker="o", linestyle="", markersize=8,
                          color=styles.capability_colour[c], label=c) for c in caps]  # fmt: skip
    fam_handles = [Line2D([], [], marker=styles.family_marker[f], linestyle="", markersize=8,
                          color=MUTED, label=f) for f in fams]  # fmt: skip
    first = ax.legend(handles=cap_handles, title="capability", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      alignment="left")  # fmt: skip
    ax.add_artist(first)
    ax.legend(handles=fam_handles, title="family", loc="lower left", bbox_to_anchor=(1.01, 0.0),
              alignment="left")  # fmt: skip


def profiles_figure(fps: Sequence[Fingerprint], styles: Styles) -> Figure:
    """``layer_profile [depth_bins]`` against relative depth, one line per fingerprint."""
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    ax.grid(True)
    families = sorted({fp_family(fp) for fp in fps})
    for fp in fps:
        profile = fp.layer_profile.tolist()  # [depth_bins]
        depth = [k / max(len(profile) - 1, 1) for k in range(len(profile))]
        family = fp_family(fp)
        ax.plot(depth, profile, color=styles.capability_colour[fp.capability], linewidth=1.8,
                linestyle=LINESTYLES[families.index(family) % len(LINESTYLES)],
                marker=styles.family_marker[family], markersize=4, label=fp_label(fp))  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_xlabel("relative depth (0 = first block, 1 = last block)")
    ax.set_ylabel("separation from generic text")
    ncol = 1 if len(fps) <= 14 else 2
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, ncol=ncol)
    ax.set_title("Per-layer capability profiles")
    return fig


def fusion_figure(fp: Fingerprint, sources: Sequence[dict[str, Any]], styles: Styles) -> Figure:
    """Horizontal bars of the weight each source got in one fused fingerprint."""
    labels = [f"{s.get('model', '?')}:{s.get('capability', '?')}" for s in sources]
    weights = [float(s["weight"]) for s in sources]
    colours = [styles.capability_colour.get(str(s.get("capability", "?")), NEUTRAL) for s in sources]
    fig = _figure(7.0, 1.2 + 0.42 * len(sources))
    ax = fig.add_subplot()
    ax.grid(True, axis="x")
    bars = ax.barh(range(len(sources)), weights, color=colours, height=0.6)
    ax.bar_label(bars, labels=[f"{w:.3f}" for w in weights], padding=3, fontsize=8, color=INK)
    ax.set_yticks(range(len(sources)), labels)
    ax.invert_yaxis()
    low, high = min(0.0, *weights), max(0.0, *weights)
    ax.set_xlim(low * 1.2, high * 1.2 or 1.0)
    ax.axvline(0, color="#9aa5b1", linewidth=0.8)
    ax.set_xlabel("weight")
    ax.set_title(f"Fusion weights of {fp_label(fp)}")
    return fig


def _unit_scale(m: Metric) -> bool:
    """Fractions, correlations and accuracies share one axis; other magnitudes get their own."""
    values = [m.value] + ([m.target.value] if m.target else [])
    return all(math.isnan(v) or -1.0 <= v <= 1.05 for v in values)


def bench_metrics_figure(bench: Bench) -> Figure:
    """Top-level numbers of one benchmark run: unit-scale ones on a shared axis, others one panel each."""
    unit = [m for m in bench.charted if _unit_scale(m)]
    other = [m for m in bench.charted if not _unit_scale(m)]
    heights = ([0.6 + 0.34 * len(unit)] if unit else []) + [0.95] * len(other)
    fig = _figure(8.0, 0.9 + sum(heights))
    axes = fig.subplots(len(heights), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    groups = ([unit] if unit else []) + [[m] for m in other]
    for ax, metrics in zip(axes, groups, strict=True):
        _metric_bars(ax, metrics, unit_axis=metrics is unit)
    _metric_legend(fig, bench)
    axes[0].set_title(f"{bench.title}: measured vs target")
    return fig


def _metric_bars(ax: Axes, metrics: Sequence[Metric], unit_axis: bool) -> None:
    values = [0.0 if math.isnan(m.value) else m.value for m in metrics]
    colours = [NEUTRAL if m.met is None else PASS if m.met else FAIL for m in metrics]
    bars = ax.barh(range(len(metrics)), values, color=colours, height=0.62)
    texts = ["n/a" if math.isnan(m.value) else f"{m.value:.3g}" for m in metrics]
    ax.bar_label(bars, labels=texts, padding=3, fontsize=8, color=INK)
    for i, m in enumerate(metrics):
        if m.target is not None:
            ax.plot([m.target.value] * 2, [i - 0.42, i + 0.42], color=INK, linewidth=2.2, zorder=4)
    ax.set_yticks(range(len(metrics)), [m.name for m in metrics])
    ax.invert_yaxis()
    ax.grid(True, axis="x")
    ax.axvline(0, color="#9aa5b1", linewidth=0.8)
    points = values + [m.target.value for m in metrics if m.target]
    low, high = min(0.0, *points), max(0.0, *points)
    if unit_axis:
        low, high = min(low, 0.0), max(high, 1.0)
    span = (high - low) or 1.0
    ax.set_xlim(low - (0.12 * span if low < 0 else 0), high + 0.14 * span)


def _metric_legend(fig: Figure, bench: Bench) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=PASS, label="meets target"), Patch(color=FAIL, label="misses target"),
               Patch(color=NEUTRAL, label="no target / n/a"),
               Line2D([], [], color=INK, linewidth=2.2, label="target")]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)


def bench_table_figure(table: Table, bench_title: str) -> Figure:
    """Grouped horizontal bars: one group per row of the table, one colour per column."""
    n_rows, n_cols = len(table.rows), len(table.columns)
    fig = _figure(8.0, 1.3 + n_rows * (0.22 + 0.16 * n_cols))
    ax = fig.add_subplot()
    ax.grid(True, axis="x")
    height = 0.8 / n_cols
    for j, column in enumerate(table.columns):
        values = [row[j] for row in table.values]
        positions = [i - 0.4 + height * (j + 0.5) for i in range(n_rows)]
        shown = [0.0 if math.isnan(v) else v for v in values]
        ax.barh(positions, shown, height=height * 0.92, color=SERIES[j % len(SERIES)], label=column)
    ax.set_yticks(range(n_rows), table.rows)
    ax.invert_yaxis()
    ax.axvline(0, color="#9aa5b1", linewidth=0.8)
    if n_cols > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(f"{bench_title}: {table.name}")
    return fig
