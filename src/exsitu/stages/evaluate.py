"""Evaluate the posteriors and every baseline on the test set
-> results/evaluation/metrics.json, summaries.h5 and samples.h5 (schemas in ``exsitu.evaluation``).

Every test galaxy counts once and every headline number has a 95% galaxy-bootstrap interval. The
test maps are streamed in chunks: memory is bounded by a chunk, not by the test set.
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.checkpoint import load_models
from exsitu.dataset import DatasetFiles
from exsitu.device import resolve_device
from exsitu.evaluation import EvaluationInputs, compute, summarise, write_metrics
from exsitu.recalibration import read_noise_scales
from exsitu.sample import sampling_layout
from exsitu.settings import ConditionSettings, EvaluateSettings, MapSettings, PlanSettings, section_of
from exsitu.stages import add_dataset_arguments, add_device_argument, run_stage, stage_parser

MODELS = ("cvae", "flow")


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    add_dataset_arguments(parser)
    for name in MODELS:
        parser.add_argument(f"--{name}", required=True, help=f"trained {name} model file")
    parser.add_argument(
        "--baseline-maps", required=True, help="every baseline's test maps (results/evaluation/baseline_maps.h5)"
    )
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
    conditions = section_of(args.settings, ConditionSettings, required=False)
    models = load_models({n: getattr(args, n) for n in MODELS}, device)
    sampling_layout(models["cvae"])  # the convolutional one; the flow's MLPs have no layout
    inputs = EvaluationInputs(
        data=DatasetFiles(args.maps, args.split, args.stats, conditions.channels),
        cvae=models["cvae"],
        flow=models["flow"],
        baseline_maps=args.baseline_maps,
        settings=settings,
        fov_rhalf=section_of(args.settings, MapSettings).fov_rhalf,
        noise=read_noise_scales(args.noise_scale),
        scalars=conditions.scalars,
        training_prior=section_of(args.settings, PlanSettings, required=False).weighting,
    )
    result = compute(inputs, args.summaries, args.samples if settings.n_saved_samples > 0 else None)
    write_metrics(summarise(result, inputs), args.metrics)


if __name__ == "__main__":
    run_stage(main)
