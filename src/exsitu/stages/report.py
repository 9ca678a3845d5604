"""Write the run report -> results/report.html (self-contained) and results/figures/*.png|svg.

Each figure is a file of its own (PNG for the HTML and ``snakemake --report``, SVG for papers);
the HTML embeds the same PNGs (see ``exsitu.reporting``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from exsitu.io import atomic_output
from exsitu.reporting import ReportPaths, build_report, figure_paths
from exsitu.stages import run_stage, stage_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--catalog", required=True, help="subhalos.csv")
    parser.add_argument("--plan", required=True, help="projections.csv")
    parser.add_argument("--split", required=True, help="split.csv")
    parser.add_argument("--histories", nargs="+", required=True, help="training history CSVs")
    parser.add_argument("--metrics", required=True, help="metrics.json")
    parser.add_argument("--summaries", required=True, help="summaries.h5")
    parser.add_argument("--relations", required=True, help="relations.json of the relations stage")
    parser.add_argument("--model-card", required=True, help="results/models/model.json")
    parser.add_argument("--noise-scale", required=True, help="results/models/noise_scale.json (with diagnostics)")
    parser.add_argument("--benchmarks", required=True, help="directory of Snakemake benchmark TSVs")
    parser.add_argument("--run-config", default="{}", help="the full config as JSON, shown in the report")
    parser.add_argument("--figures", nargs="+", required=True, help="figure files to write (<name>.png and .svg)")
    parser.add_argument("--report", required=True, help="report.html to write")
    args = parser.parse_args(argv)
    paths = ReportPaths(
        catalog=args.catalog, plan=args.plan, split=args.split, histories=tuple(args.histories), metrics=args.metrics,
        summaries=args.summaries, benchmarks=args.benchmarks, relations=args.relations, model_card=args.model_card,
        noise_scale=args.noise_scale,
    )  # fmt: skip
    text = build_report(paths, figure_paths(args.figures), json.loads(args.run_config))
    with atomic_output(args.report) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("wrote %s (%.1f kB)", args.report, len(text) / 1024)


if __name__ == "__main__":
    run_stage(main)
