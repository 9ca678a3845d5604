"""Evaluate the posterior sampling modes and the baselines on the test set
-> results/evaluation/metrics.json, summaries.h5 and samples.h5 (schemas in ``exsitu.evaluation``).

Every test galaxy counts once and every headline number has a 95% galaxy-bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.checkpoint import load_model
from exsitu.dataset import DatasetFiles
from exsitu.device import resolve_device
from exsitu.evaluation import evaluate, write_outputs
from exsitu.recalibration import read_noise_scale
from exsitu.settings import ConditionSettings, EvaluateSettings, MapSettings, section_of
from exsitu.stages import add_device_argument, run_stage, stage_parser

MODELS = ("cvae", "flow", "baseline")


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--maps", nargs="+", required=True, help="map shard files (HDF5)")
    parser.add_argument("--split", required=True, help="split.csv")
    parser.add_argument("--stats", required=True, help="normalisation.json")
    for name in MODELS:
        parser.add_argument(f"--{name}", required=True, help=f"trained {name} model file")
    parser.add_argument("--noise-scale", required=True, help="noise_scale.json of the recalibrate stage")
    add_device_argument(parser)
    parser.add_argument("--metrics", required=True, help="metrics.json to write")
    parser.add_argument("--summaries", required=True, help="summaries.h5 to write")
    parser.add_argument("--samples", help="samples.h5 to write (with evaluate.n_saved_samples > 0)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    settings = section_of(args.settings, EvaluateSettings)
    if settings.n_saved_samples > 0 and args.samples is None:
        parser.error("evaluate.n_saved_samples > 0 needs --samples (the samples.h5 to write)")
    metrics, arrays = evaluate(
        DatasetFiles(
            args.maps, args.split, args.stats, section_of(args.settings, ConditionSettings, required=False).channels
        ),
        {name: load_model(getattr(args, name), device) for name in MODELS},
        settings,
        section_of(args.settings, MapSettings).fov_rhalf,
        noise_scale=read_noise_scale(args.noise_scale),
        samples_path=args.samples,
    )
    write_outputs(metrics, arrays, args.metrics, args.summaries)


if __name__ == "__main__":
    run_stage(main)
