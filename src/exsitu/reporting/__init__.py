"""The run report (stage ``report``): one self-contained HTML file (figures embedded as base64 PNG, no
external URLs or scripts) and every figure as a PNG and SVG file of its own.

Three steps: :func:`read_report_inputs` reads the run's files into one :class:`ReportData`
(``exsitu.reporting.read``), :func:`compute_report` makes the tables (DataFrames,
``exsitu.reporting.tables``), the figures (matplotlib, ``exsitu.figures``) and the sentences written from
the numbers (``exsitu.reporting.compute``), and :func:`render_report` writes the HTML
(``exsitu.reporting.render``). Sections: the data and the simulation against TNG100-1, training, example
posteriors (the paper's Fig. 2), residuals (Fig. 3), accuracy against the baselines, the integrated
fraction by stellar mass, calibration (coverage, TARP, strata, functionals, scores, the likelihood), the
residual diagnostics of the validation maps, cost, the model directory and the configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exsitu.reporting.compute import FIGURES, ReportContent, compute_report
from exsitu.reporting.read import ReportData, ReportPaths, read_benchmarks, read_report_inputs
from exsitu.reporting.render import FIGURE_FORMATS, figure_paths, render_report, save_figure

__all__ = [
    "FIGURES", "FIGURE_FORMATS", "ReportContent", "ReportData", "ReportPaths", "build_report", "compute_report",
    "figure_paths", "read_benchmarks", "read_report_inputs", "render_report",
]  # fmt: skip


def build_report(
    paths: ReportPaths, figure_files: Mapping[str, Sequence[str | os.PathLike]], run_config: Mapping[str, Any]
) -> str:
    """Read, compute and render the report: write every figure to its files (``figure_files``: name of
    :data:`FIGURES` -> its PNG and SVG paths) and return the HTML text."""
    content = compute_report(read_report_inputs(paths))
    images = {name: save_figure(fig, [Path(p) for p in figure_files[name]]) for name, fig in content.figures.items()}
    return render_report(content, images, run_config)
