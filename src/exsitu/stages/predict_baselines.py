"""Predict the test maps with every baseline -> results/evaluation/baseline_maps.h5 (``exsitu.baseline_maps``).

The deterministic U-net (train_baseline) and the fitted radial profile, k-NN lookup and gradient-boosted trees
(fit_baselines) need neither the cVAE nor the flow, so this stage runs while the cVAE trains, and evaluate
scores the maps it writes.
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.baseline_maps import predict_test_maps
from exsitu.checkpoint import load_models
from exsitu.dataset import DatasetFiles
from exsitu.device import resolve_device
from exsitu.fitted_baselines import load_baselines
from exsitu.sample import sampling_layout
from exsitu.settings import ConditionSettings, section_of
from exsitu.stages import add_dataset_arguments, add_device_argument, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    add_dataset_arguments(parser)
    parser.add_argument("--baseline", required=True, help="trained deterministic U-net (results/models/baseline.pt)")
    parser.add_argument("--baselines", required=True, help="fitted baselines (results/models/baselines.joblib)")
    parser.add_argument("--workers", type=int, default=1, help="threads of the lookup's tree query (default 1)")
    add_device_argument(parser)
    parser.add_argument("--out", required=True, help="baseline_maps.h5 to write")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    conditions = section_of(args.settings, ConditionSettings, required=False)
    baseline = sampling_layout(load_models({"baseline": args.baseline}, resolve_device(args.device))["baseline"])
    predict_test_maps(
        DatasetFiles(args.maps, args.split, args.stats, conditions.channels),
        baseline,
        load_baselines(args.baselines),
        conditions.scalars,
        args.out,
        workers=args.workers,
    )


if __name__ == "__main__":
    run_stage(main)
