"""The UMAF report: one self-contained HTML page (inline SVG charts, no network at view time) showing
fingerprint similarity, a 2-D map, per-layer profiles, fusion weights and benchmark results, with each
chart also exportable as a PNG for papers.

Example::

    from umaf.fingerprint import Fingerprint
    from umaf.report import write_report

    fps = [Fingerprint.load(p) for p in paths]
    write_report(fps, "report.html", bench=[json.load(open("bench.json"))], png_dir="figures")

matplotlib (the ``plots`` extra) is imported only when a report is drawn.
"""

from umaf.report.build import write_report

__all__ = ["write_report"]
