"""The report page: one HTML file with inline CSS, inline SVG charts and a small inline script that
checks every chart rendered. Nothing is fetched at view time."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f5f7fa; --card: #ffffff;
        --accent: #4e79a7; --ok: #2f8132; --bad: #c0392b; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); line-height: 1.5;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1f2933; color: #f5f7fa; padding: 2.2rem 0 1.6rem; }
header .wrap, main, footer { max-width: 1080px; margin: 0 auto; padding: 0 1.5rem; }
header h1 { margin: 0 0 .4rem; font-size: 1.9rem; font-weight: 650; letter-spacing: -.01em; }
header p { margin: .2rem 0; color: #cbd2d9; max-width: 60em; }
.facts { display: flex; flex-wrap: wrap; gap: .5rem 1.6rem; margin: 1rem 0 0; padding: 0; }
.facts div { display: flex; flex-direction: column; }
.facts dt { font-size: .72rem; text-transform: uppercase; letter-spacing: .06em; color: #9aa5b1; }
.facts dd { margin: 0; font-weight: 600; }
nav { margin-top: 1.2rem; display: flex; flex-wrap: wrap; gap: .4rem; }
nav a { color: #f5f7fa; text-decoration: none; border: 1px solid #52606d; border-radius: 999px;
        padding: .15rem .75rem; font-size: .85rem; }
nav a:hover { background: #323f4b; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
          margin: 1.6rem 0; padding: 1.4rem 1.6rem; box-shadow: 0 1px 2px rgba(31, 41, 51, .05); }
section h2 { margin: 0 0 .3rem; font-size: 1.3rem; }
section h3 { margin: 1.4rem 0 .3rem; font-size: 1.05rem; }
.how { color: var(--muted); margin: 0 0 1rem; max-width: 62em; }
figure.umaf-chart { margin: 1rem 0; }
figure.umaf-chart svg { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .4rem; max-width: 62em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; min-width: 60%; font-size: .86rem; margin: .6rem 0 1rem; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-size: .75rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #f8fafc; }
.swatch { display: inline-block; width: .75em; height: .75em; border-radius: 2px; margin-right: .45em;
          vertical-align: -.05em; }
.ok { color: var(--ok); font-weight: 600; } .bad { color: var(--bad); font-weight: 600; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .85em; }
footer { color: var(--muted); font-size: .85rem; padding-bottom: 2.5rem; }
#umaf-render-status.ok { color: var(--ok); } #umaf-render-status.bad { color: var(--bad); }
"""

#: Runs after load: a chart counts as rendered if its <img> decoded or its <svg> has a non-empty box.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var charts = document.querySelectorAll(".umaf-chart"), ok = 0;
  charts.forEach(function (chart) {
    var img = chart.querySelector("img"), svg = chart.querySelector("svg"), done = false;
    try {
      if (img) { done = img.complete && img.naturalWidth > 0; }
      else if (svg) { var box = svg.getBBox(); done = box.width > 0 && box.height > 0; }
    } catch (err) { done = false; }
    chart.dataset.rendered = done ? "yes" : "no";
    if (done) { ok += 1; }
  });
  document.body.dataset.chartsRendered = ok + "/" + charts.length;
  var line = document.getElementById("umaf-render-status");
  var all = ok === charts.length;
  line.textContent = all ? "All " + charts.length + " charts rendered."
                         : "Only " + ok + " of " + charts.length + " charts rendered.";
  line.className = all ? "ok" : "bad";
});
"""


@dataclass
class Chart:
    """One chart: how to draw it, then (once rendered) its inline SVG and, for ``png_dir``, PNG bytes."""

    slug: str
    caption: str  # HTML
    build: Callable[[], Any]  # () -> matplotlib Figure
    svg: str = ""
    png: bytes | None = None  # only drawn when a PNG folder is asked for


@dataclass
class Section:
    """One card of the page: heading, how to read it, then charts and tables in order."""

    id: str
    title: str
    how: str  # HTML
    blocks: list[str | Chart] = field(default_factory=list)


def figure(chart: Chart) -> str:
    return (f'<figure class="umaf-chart" id="chart-{escape(chart.slug)}">{chart.svg}'
            f"<figcaption>{chart.caption}</figcaption></figure>")  # fmt: skip


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """An HTML table; cells are HTML already (escape text with :func:`html.escape` first)."""
    numeric = list(numeric) + [False] * (len(headers) - len(numeric))
    align = ['class="num"' if n else "" for n in numeric]
    head = "".join(f"<th {a}>{escape(h)}</th>" for h, a in zip(headers, align, strict=True))
    cells = ("".join(f"<td {a}>{c}</td>" for c, a in zip(row, align, strict=True)) for row in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def number(x: float) -> str:
    """A number for a table cell: 4 significant digits, ``n/a`` for NaN."""
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.4g}"


def swatch(colour: str, text: str) -> str:
    return f'<span class="swatch" style="background:{escape(colour)}"></span>{escape(text)}'


def page(title: str, lede: str, facts: dict[str, str], sections: Sequence[Section], footer: str) -> str:
    """The whole document."""
    fact_html = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts.items())
    nav = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(_section(s) for s in sections)
    n_charts = sum(isinstance(b, Chart) for s in sections for b in s.blocks)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body data-charts-total="{n_charts}">
<header><div class="wrap">
<h1>{escape(title)}</h1>
<p>{lede}</p>
<dl class="facts">{fact_html}</dl>
<nav>{nav}</nav>
</div></header>
<main>
{body}
</main>
<footer>
<p id="umaf-render-status">Chart check needs JavaScript.</p>
<p>{footer}</p>
</footer>
<script>{CHECK_SCRIPT}</script>
</body>
</html>
"""


def _section(section: Section) -> str:
    blocks = "\n".join(figure(b) if isinstance(b, Chart) else b for b in section.blocks)
    return (f'<section id="{escape(section.id)}"><h2>{escape(section.title)}</h2>'
            f'<p class="how">{section.how}</p>\n{blocks}</section>')  # fmt: skip
