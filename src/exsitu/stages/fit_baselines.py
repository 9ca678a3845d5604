"""Fit the non-spatial baselines on the training maps -> results/models/baselines.joblib.

The radial profile, the per-pixel k-NN lookup and the gradient-boosted trees (median and 16-84%
quantile models), fitted once on a random subsample of the training galaxy pixels; the file holds
one ``exsitu.fitted_baselines.FittedBaselines`` (see that module). ``--weighting`` is the training
prior: ``natural`` weights each map 1 / n_los of its galaxy (every galaxy counts once, as evaluation
scores it), ``balanced`` weights every map 1 (the plan's prior, tilted towards high ex-situ fractions).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from exsitu.dataset import DatasetFiles
from exsitu.fitted_baselines import MAX_PIXELS, fit_baselines, save_baselines
from exsitu.priors import WEIGHTINGS
from exsitu.settings import ConditionSettings, section_of
from exsitu.stages import add_dataset_arguments, run_stage, stage_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    add_dataset_arguments(parser)
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="natural", help="training prior (default natural)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="training pixels used, at most")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pixel subsample and the trees")
    parser.add_argument("--out", required=True, help="fitted baselines (joblib)")
    args = parser.parse_args(argv)
    if args.max_pixels < 1:
        parser.error("--max-pixels must be at least 1")
    conditions = section_of(args.settings, ConditionSettings, required=False)
    start = time.perf_counter()
    baselines = fit_baselines(
        DatasetFiles(args.maps, args.split, args.stats, conditions.channels),
        conditions.scalars,
        args.weighting,
        max_pixels=args.max_pixels,
        seed=args.seed,
    )
    save_baselines(baselines, args.out)
    log.info(
        "fitted on %d pixels of %d maps (%d galaxies) in %.1f s; trees: %d, %d, %d boosting iterations",
        baselines.n_pixels, baselines.n_maps, baselines.n_galaxies, time.perf_counter() - start,
        baselines.trees.median.n_iter_, baselines.trees.lower.n_iter_, baselines.trees.upper.n_iter_,
    )  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
