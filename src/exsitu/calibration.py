"""Calibration of sample-based posteriors: per-pixel coverage, CRPS and the TARP whole-map test.

All functions take posterior samples and the truth as numpy arrays of ex-situ mass
fractions (dimensionless, in [0, 1]) and return dimensionless numbers.

Ex-situ maps have a point mass at 0, so many samples equal the truth exactly. A plain
rank/PIT then piles up at 0 and looks badly overconfident; the randomized PIT
u = (#(x_s < y) + U * (#(x_s = y) + 1)) / (S + 1), with U ~ Uniform(0, 1), spreads
each tie uniformly over the ranks it could take, so it is Uniform(0, 1) for a calibrated
posterior, ties included. Coverage of the central interval at level a is then the fraction
of u inside [(1 - a) / 2, (1 + a) / 2].
"""

from __future__ import annotations

import numpy as np

#: Nominal levels of the central intervals reported in metrics.json.
COVERAGE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95)


def randomized_pit(samples: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomized probability integral transform of ``truth`` under ``samples``.

    samples: (..., S) posterior draws; truth: (...) the true values.
    Returns u in (0, 1), shape of ``truth``; Uniform(0, 1) for a calibrated posterior.
    """
    below = (samples < truth[..., None]).sum(axis=-1)
    ties = (samples == truth[..., None]).sum(axis=-1)
    return (below + rng.random(below.shape) * (ties + 1)) / (samples.shape[-1] + 1)


def central_coverage(pit: np.ndarray, levels: np.ndarray | tuple[float, ...] = COVERAGE_LEVELS) -> np.ndarray:
    """Observed fraction of PIT values inside the central interval of each nominal level."""
    half_width = np.abs(np.asarray(pit).ravel() - 0.5)
    return np.array([np.mean(half_width <= level / 2) for level in levels]) if half_width.size else np.full(len(levels), np.nan)


def expected_coverage_curve(pit: np.ndarray, n_levels: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """(nominal, observed) coverage of central intervals on a grid of levels from 0 to 1."""
    nominal = np.linspace(0.0, 1.0, n_levels)
    return nominal, central_coverage(pit, nominal)


def crps(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score of each truth value from S samples (lower is better).

    CRPS = E|X - y| - E|X - X'| / 2, with the pair term from the sorted samples in
    O(S log S): sum_ij |x_i - x_j| = 2 sum_i (2 i - S - 1) x_(i), i = 1..S.
    samples: (..., S); truth: (...). Returns the shape of ``truth``, same units as the maps.
    """
    s = samples.shape[-1]
    spread = np.abs(samples - truth[..., None]).mean(axis=-1)
    ordered = np.sort(samples, axis=-1)
    weights = 2 * np.arange(1, s + 1) - s - 1
    pairs = 2 * (ordered * weights).sum(axis=-1) / s**2
    return spread - pairs / 2


def tarp_ranks(samples: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-map TARP statistic (Lemos et al. 2023) of whole flattened maps.

    samples: (N, S, D) posterior maps; truth: (N, D). For each map a reference point is drawn
    uniformly in [0, 1]^D (the range of a fraction); the result is the fraction of samples
    closer to it than the truth, randomized over ties as the per-pixel PIT. Uniform(0, 1) when
    the posterior is calibrated jointly over all pixels. Batches of maps can be ranked
    separately and concatenated.
    """
    # In the samples' dtype: a float64 reference would double the (N, S, D) temporary.
    reference = rng.random((truth.shape[0], truth.shape[-1])).astype(samples.dtype)
    d_samples = np.linalg.norm(samples - reference[:, None, :], axis=-1)
    d_truth = np.linalg.norm(truth - reference, axis=-1)
    return randomized_pit(d_samples, d_truth, rng)


def tarp_curve(ranks: np.ndarray, n_levels: int = 51) -> tuple[np.ndarray, np.ndarray, float]:
    """TARP expected coverage ECP(a) = mean(rank < a) on a grid of a, and its area (ATC).

    ATC = 2 * integral over a in [0.5, 1] of (ECP - a): 0 when calibrated, < 0 when the
    posterior is too narrow (overconfident), > 0 when too wide. Returns (a, ECP, ATC).
    """
    alpha = np.linspace(0.0, 1.0, n_levels)
    ecp = np.array([np.mean(ranks < a) for a in alpha])
    upper = alpha >= 0.5
    atc = 2 * float(np.trapezoid(ecp[upper] - alpha[upper], alpha[upper]))
    return alpha, ecp, atc
