"""Calibration of each likelihood family fitted by maximum likelihood to synthetic fields with known tails,
and of the clip: per-pixel coverage of the central 68% and 95% intervals, TARP ATC and KS p with uniform
and held-out-posterior references.

Run: ``python benchmarks/bench_likelihood.py [--maps 1500] [--steps 400] [--processes ...] [--families ...]``.
The processes and the fit are those of ``tests/synthetic_fields.py`` (10 x 10 maps, an 80-pixel disc,
rank 4, parameters shared by all maps). Also prints, for the ``quantised`` process (truth seen through
k = 32 particles), the results at the default clip 1e-3 and at 1 / (2k), the truth's own resolution.
The CPU, one thread; a few minutes per table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_fields import PARTICLES, P, calibration, disc, draw_truth, fit_family  # noqa: E402

from exsitu.likelihood import FAMILIES, LOGIT_EPS  # noqa: E402

PROCESSES = ("gaussian", "student_t", "pixel_mixture", "quantised")
COLUMNS = ("coverage_0.68", "coverage_0.95", "atc_uniform", "ks_p_uniform", "atc_posterior", "ks_p_posterior")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=1500, help="training maps per process (test: a quarter)")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps of each fit")
    parser.add_argument("--samples", type=int, default=100, help="draws per test map")
    parser.add_argument("--processes", nargs="+", default=list(PROCESSES), choices=PROCESSES)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mask = disc(P, 4.6)
    print(f"{'process':14s} {'family':24s} {'eps':>8s} " + " ".join(f"{c:>14s}" for c in COLUMNS) + "  fitted")
    for process in args.processes:
        train, test = draw_truth(process, args.maps, seed=1), draw_truth(process, args.maps // 4, seed=2)
        clips = (LOGIT_EPS, 1 / (2 * PARTICLES)) if process == "quantised" else (LOGIT_EPS,)
        for eps in clips:
            for family in args.families:
                start = time.perf_counter()
                fitted = fit_family(family, train, mask, eps=eps, steps=args.steps)
                scores = calibration(fitted, test, mask, args.samples, seed=3)
                tail = "" if fitted.tail is None else f" tau {float(fitted.tail[0][mask[0]].mean()):.2f}"
                nu = "" if fitted.nu is None else f" nu {fitted.nu:.1f}"
                print(
                    f"{process:14s} {family:24s} {eps:8.4f} " + " ".join(f"{scores[c]:14.3f}" for c in COLUMNS)
                    + f" {nu}{tail} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )  # fmt: skip


if __name__ == "__main__":
    main()
