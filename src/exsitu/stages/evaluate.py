"""Evaluate the three posterior sampling modes and the baselines on the test set
-> results/evaluation/metrics.json + summaries.h5 (schema in ``exsitu.evaluation``).
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.checkpoint import load_model
from exsitu.dataset import DatasetFiles
from exsitu.device import resolve_device
from exsitu.evaluation import evaluate, write_outputs
from exsitu.settings import EvaluateSettings, MapSettings, section_of
from exsitu.stages import add_device_argument, run_stage, stage_parser

MODELS = ("cvae", "flow", "baseline")


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--maps", nargs="+", required=True, help="map shard files (HDF5)")
    parser.add_argument("--split", required=True, help="split.csv")
    parser.add_argument("--stats", required=True, help="normalisation.json")
    for name in MODELS:
        parser.add_argument(f"--{name}", required=True, help=f"trained {name} model file")
    add_device_argument(parser)
    parser.add_argument("--metrics", required=True, help="metrics.json to write")
    parser.add_argument("--summaries", required=True, help="summaries.h5 to write")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    metrics, arrays = evaluate(
        DatasetFiles(args.maps, args.split, args.stats),
        {name: load_model(getattr(args, name), device) for name in MODELS},
        section_of(args.settings, EvaluateSettings),
        section_of(args.settings, MapSettings).fov_rhalf,
    )
    write_outputs(metrics, arrays, args.metrics, args.summaries)


if __name__ == "__main__":
    run_stage(main)
