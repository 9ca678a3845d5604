"""Would a recalibration per posterior-median stratum mend the strata the evaluation misses? An ablation on a run.

Issue 15 asks for 68% coverage in [0.62, 0.74] in every posterior-median stratum. This fits, on the run's
VALIDATION maps, a quantile recalibration per stratum (Kuleshov, Fenner & Ermon 2018, ICML, "Accurate
uncertainties for deep learning using calibrated regression", with one map per stratum of
``exsitu.calibration.MEDIAN_STRATUM_EDGES``): G_b, the distribution of the validation pixels' randomized PITs
(``exsitu.calibration.randomized_pit``) under the flow's full predictive at the run's noise scales, map i
drawn with seed ``--seed + i`` (not the test's seeds). It then applies G_b to the run's saved TEST samples
(``results/evaluation/samples.h5``) by quantile mapping: a pixel's sample of rank k takes the pixel's empirical
quantile at G_b^-1((k + 0.5) / K), so each pixel's ranks, hence the samples' joint structure, are kept.

Prints, before and after, per stratum the shares of test pixels below and above their 68% interval, the 68%
and 95% coverage per stratum and pooled, the coverage of the integrated fraction (field of view, mass
weighted) and the per-pixel MAE of the median. Every pixel and map counts once (the evaluation weighs galaxies
by 1/n_los, so its figures differ slightly).

    python benchmarks/bench_stratum_recalibration.py --run . [--n-samples 100] [--seed 10000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import torch

from exsitu.calibration import MEDIAN_STRATUM_EDGES, median_bins, randomized_pit
from exsitu.dataset import DatasetFiles
from exsitu.modelcard import load_model_dir
from exsitu.sample import sample_in_chunks

LEVELS = (0.68, 0.95)


def pixel_rows(samples: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, K, P, P) samples -> (n_pixels, K): the galaxy pixels of ``mask`` (N, P, P), in mask order."""
    maps, y, x = np.nonzero(mask)
    return samples[maps, :, y, x]


def strata(samples: np.ndarray) -> list[np.ndarray]:
    """(n, K) samples -> one (n,) bool selector per posterior-median stratum (``exsitu.calibration.median_bins``)."""
    return [rows for _, rows in median_bins(np.median(samples, axis=1), MEDIAN_STRATUM_EDGES)]


def quantile_mapped(samples: np.ndarray, stratum: list[np.ndarray], pit_levels: list[np.ndarray]) -> np.ndarray:
    """(n, K) samples remapped per stratum: the sample of rank k takes its pixel's quantile at pit_levels[b][k]."""
    out = samples.copy()
    ranks = np.argsort(np.argsort(samples, axis=1, kind="stable"), axis=1)
    for rows, levels in zip(stratum, pit_levels):
        values = np.quantile(samples[rows], levels, axis=1).T  # (n_b, K) the pixel's quantiles at those levels
        out[rows] = np.take_along_axis(values, ranks[rows], axis=1)
    return out


def report(label: str, pixels: np.ndarray, truth: np.ndarray, stratum: list[np.ndarray], integrated: np.ndarray,
           true_integrated: np.ndarray) -> None:  # fmt: skip
    """One line per quantity: 68% misses by side and coverage per stratum, pooled, integrated; MAE."""
    lo, hi = np.quantile(pixels, [0.16, 0.84], axis=1)
    sides = " ".join(f"{(truth[rows] < lo[rows]).mean():.3f}/{(truth[rows] > hi[rows]).mean():.3f}" for rows in stratum)
    print(f"{label}: 68% misses below/above per stratum  {sides}")
    for level in LEVELS:
        lo, hi = np.quantile(pixels, [(1 - level) / 2, (1 + level) / 2], axis=1)
        inside = (truth >= lo) & (truth <= hi)
        per_stratum = " ".join(f"{inside[rows].mean():.3f}" for rows in stratum)
        ilo, ihi = np.quantile(integrated, [(1 - level) / 2, (1 + level) / 2], axis=1)
        covered = ((true_integrated >= ilo) & (true_integrated <= ihi)).mean()
        print(f"{label}: {level:.0%} per stratum {per_stratum} | pooled {inside.mean():.3f} | integrated {covered:.3f}")
    print(f"{label}: MAE of the median {np.abs(np.median(pixels, axis=1) - truth).mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="finished run directory (holds results/)")
    parser.add_argument("--n-samples", type=int, default=100, help="flow draws per validation map")
    parser.add_argument("--seed", type=int, default=10_000, help="validation map i is drawn with seed + i")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = args.run / "results"
    model = load_model_dir(res / "models", torch.device("cpu"))
    card = model.card
    maps = sorted(str(p) for p in (res / ("maps" if card.observe is None else "observed")).glob("shard_*.h5"))
    data = DatasetFiles(maps, str(res / "dataset/split.csv"), str(res / "dataset/normalisation.json"), card.channels)
    val = data.load("val")
    drawn = sample_in_chunks(
        model.cvae, val.conditions, args.n_samples, "flow", seeds=args.seed + np.arange(len(val)), flow=model.flow,
        scalars=val.scalars(card.scalars), noise=card.noise_scales,
    )  # fmt: skip
    val_samples = torch.cat([samples for _, samples in drawn]).numpy()
    val_mask = val.mask[:, 0].numpy()
    val_pixels = pixel_rows(val_samples, val_mask)
    pit = randomized_pit(val_pixels, val.exsitu[:, 0].numpy()[val_mask], np.random.default_rng(args.seed))
    val_stratum = strata(val_pixels)
    with h5py.File(res / "evaluation/samples.h5") as h5:  # the test maps' flow samples, in test-subset order
        samples = h5["samples"][()].astype(np.float64)
    test = data.load("test")
    truth, mask = test.exsitu[:, 0].numpy().astype(np.float64), test.mask[:, 0].numpy()
    mass = np.where(mask, 10.0 ** test.log_sigma.astype(np.float64), 0.0)  # equal-area pixels: mass weights
    k = samples.shape[1]
    pit_levels = [np.quantile(pit[rows], (np.arange(k) + 0.5) / k) for rows in val_stratum]
    pixels = pixel_rows(samples, mask)
    stratum = strata(pixels)
    mapped = samples.copy()
    maps_, y, x = np.nonzero(mask)
    mapped[maps_, :, y, x] = quantile_mapped(pixels, stratum, pit_levels)
    true_integrated = (truth * mass).sum((1, 2)) / mass.sum((1, 2))
    print(f"{args.run}: {len(val)} validation maps ({len(pit)} pixels), {len(samples)} test maps ({len(pixels)} px)")
    levels_68 = (f"[{np.quantile(pit[rows], 0.16):.3f}, {np.quantile(pit[rows], 0.84):.3f}]" for rows in val_stratum)
    print("validation PIT levels of the 68% interval per stratum: " + " ".join(levels_68))
    for label, remapped in (("before", samples), ("after ", mapped)):
        integrated = (remapped * mass[:, None]).sum((2, 3)) / mass.sum((1, 2))[:, None]
        report(label, pixel_rows(remapped, mask), truth[mask], stratum, integrated, true_integrated)


if __name__ == "__main__":
    main()
