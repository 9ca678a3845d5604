"""How good one point estimate of the ex-situ maps is: per-pixel errors and the integrated fraction.

A :class:`PointTally` collects, chunk of test maps by chunk, what the metrics need per map (absolute
errors summed over its galaxy pixels, the predicted integrated fractions) and histograms of the
residuals, so that no (maps, pixels) array is ever held; :meth:`PointTally.summary` turns them into
the point-estimate block of metrics.json with galaxy-bootstrap intervals (every test galaxy counts
once; ``exsitu.bootstrap``). Fractions are dimensionless, in [0, 1].

The integrated fraction is the mass-weighted ex-situ fraction inside an aperture
(``exsitu.functionals.APERTURES``); per aperture the block gives its RMS error, bias (mean of
predicted minus true), scatter (the standard deviation of that difference), MAE and Pearson r, over
all test maps and per stellar-mass bin (:data:`MASS_BINS`, log10 Msun of the galaxy's catalogue mass).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exsitu.bootstrap import MIN_GALAXIES, Estimate, GalaxyBootstrap
from exsitu.functionals import APERTURES

RESIDUAL_BINS = np.linspace(-1.0, 1.0, 81)
TRUTH_BINS = np.linspace(0.0, 1.0, 11)
#: log10 M* [Msun] edges of the per-mass-bin integrated-fraction metrics.
MASS_BINS: tuple[float, ...] = (10.0, 10.5, 11.0, 11.5, 12.5)


def histogram_quantiles(counts: np.ndarray, edges: np.ndarray, quantiles: tuple[float, ...]) -> list[float | None]:
    """Quantiles of binned values (linear inside a bin); None for an empty histogram."""
    total = counts.sum()
    if total == 0:
        return [None] * len(quantiles)
    cumulative = np.concatenate([[0.0], np.cumsum(counts)]) / total
    return [float(np.interp(q, cumulative, edges)) for q in quantiles]


class PointTally:
    """Per-map totals and residual histograms of one point estimate, gathered chunk by chunk."""

    def __init__(self) -> None:
        self.abs_error: list[np.ndarray] = []
        self.pixels: list[np.ndarray] = []
        self.integrated: dict[str, list[np.ndarray]] = {name: [] for name in APERTURES}
        self.residual_hist = np.zeros(len(RESIDUAL_BINS) - 1)
        self.by_truth = np.zeros((len(TRUTH_BINS) - 1, len(RESIDUAL_BINS) - 1))
        self.by_truth_sum = np.zeros((len(TRUTH_BINS) - 1, 2))  # sum of residuals and their squares per truth bin
        self.moments = np.zeros(3)  # count, sum, sum of squares of all residuals

    def add(
        self, prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray, integrated: dict[str, np.ndarray]
    ) -> None:
        """One chunk: predicted and true maps (n, P, P), galaxy pixels (n, P, P), predicted integrated
        fractions per aperture (n,) (for a posterior, its median over the samples' integrated fractions)."""
        residual = np.where(mask, prediction - truth, 0.0)
        self.abs_error.append(np.abs(residual).sum(axis=(1, 2)))
        self.pixels.append(mask.sum(axis=(1, 2)).astype(np.float64))
        for name in APERTURES:
            self.integrated[name].append(np.asarray(integrated[name], dtype=np.float64))
        r, t = residual[mask], truth[mask]
        self.residual_hist += np.histogram(np.clip(r, -1, 1), RESIDUAL_BINS)[0]
        which = np.clip(np.digitize(t, TRUTH_BINS[1:-1]), 0, len(TRUTH_BINS) - 2)
        self.by_truth += np.histogram2d(which, np.clip(r, -1, 1), [np.arange(len(TRUTH_BINS)) - 0.5, RESIDUAL_BINS])[0]
        np.add.at(self.by_truth_sum, which, np.stack([r, r**2], axis=1))
        self.moments += [r.size, r.sum(), (r**2).sum()]

    def per_map(self) -> dict[str, np.ndarray]:
        """Per-map arrays over every chunk so far: ``abs_error``, ``pixels`` (N,), ``integrated/<aperture>`` (N,)."""
        out = {"abs_error": np.concatenate(self.abs_error), "pixels": np.concatenate(self.pixels)}
        out.update({f"integrated/{name}": np.concatenate(v) for name, v in self.integrated.items()})
        return out

    def summary(
        self, boot: GalaxyBootstrap, true_integrated: dict[str, np.ndarray], log_mstar: np.ndarray
    ) -> dict[str, Any]:
        """The point-estimate block of metrics.json: ``mae`` (per galaxy pixel), ``residuals`` (descriptive,
        pixels pooled: mean, std, median, p16, p84, histogram), ``residual_vs_truth`` (per truth bin) and
        ``integrated`` (per aperture; see :func:`integrated_block`)."""
        maps = self.per_map()
        count, total, squares = self.moments
        mean = total / count if count else None
        median, p16, p84 = histogram_quantiles(self.residual_hist, RESIDUAL_BINS, (0.5, 0.16, 0.84))
        binned: dict[str, list] = {
            "edges": TRUTH_BINS.tolist(),
            "count": [],
            "mean": [],
            "median": [],
            "p16": [],
            "p84": [],
        }
        for b in range(len(TRUTH_BINS) - 1):
            n = float(self.by_truth[b].sum())
            binned["count"].append(int(n))
            binned["mean"].append(self.by_truth_sum[b, 0] / n if n else None)
            for key, q in zip(
                ("median", "p16", "p84"), histogram_quantiles(self.by_truth[b], RESIDUAL_BINS, (0.5, 0.16, 0.84))
            ):
                binned[key].append(q)
        return {
            "mae": boot.ratio(maps["abs_error"], maps["pixels"]).to_dict(),
            "residuals": {
                "mean": mean,
                "std": float(np.sqrt(max(squares / count - mean**2, 0.0))) if count else None,
                "median": median,
                "p16": p16,
                "p84": p84,
                "hist_edges": RESIDUAL_BINS.tolist(),
                "hist_counts": self.residual_hist.tolist(),
            },
            "residual_vs_truth": binned,
            "integrated": {
                name: integrated_block(maps[f"integrated/{name}"], true_integrated[name], boot, log_mstar)
                for name in APERTURES
            },
        }


def _moments(delta: np.ndarray, selected: np.ndarray, boot: GalaxyBootstrap) -> dict[str, Estimate]:
    """RMS, bias and scatter of ``delta`` over the maps in ``selected`` (galaxy-weighted, bootstrapped)."""
    ones, d = selected.astype(np.float64), np.where(selected, delta, 0.0)

    def rms(n, s1, s2):
        return np.sqrt(s2 / n)

    def bias(n, s1, s2):
        return s1 / n

    def scatter(n, s1, s2):
        return np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))

    return {
        name: boot.statistic(fn, ones, d, d**2) for name, fn in (("rms", rms), ("bias", bias), ("scatter", scatter))
    }


def integrated_block(
    predicted: np.ndarray, true: np.ndarray, boot: GalaxyBootstrap, log_mstar: np.ndarray
) -> dict[str, Any]:
    """Errors of predicted integrated fractions (N,) against the true ones (N,): ``rms``, ``bias``, ``scatter``,
    ``mae``, ``pearson_r`` (each {value, low, high}) over all maps with a finite value, and ``by_mass``: per
    stellar-mass bin (:data:`MASS_BINS`; ``log_mstar`` (N,) per map) the same three moments, the map and galaxy
    counts and ``few_galaxies`` (fewer than ``MIN_GALAXIES``: the interval is not reliable)."""
    valid = np.isfinite(predicted) & np.isfinite(true)
    delta = np.where(valid, predicted - true, 0.0)
    block: dict[str, Any] = {k: v.to_dict() for k, v in _moments(delta, valid, boot).items()}
    ones = valid.astype(np.float64)
    block["mae"] = boot.statistic(lambda n, s: s / n, ones, np.abs(delta)).to_dict()
    p, t = np.where(valid, predicted, 0.0), np.where(valid, true, 0.0)

    def pearson(n, x, y, xx, yy, xy):  # weighted totals, each (1 + replicates,)
        cov = xy / n - x * y / n**2
        # Clipped: a replicate of few distinct galaxies gives |r| = 1 up to round-off, which can exceed 1.
        return np.clip(cov / np.sqrt((xx / n - (x / n) ** 2) * (yy / n - (y / n) ** 2)), -1.0, 1.0)

    block["pearson_r"] = (
        boot.statistic(pearson, ones, p, t, p**2, t**2, p * t).to_dict() if np.std(t[valid]) > 0 else None
    )
    by_mass = []
    for lo, hi in zip(MASS_BINS[:-1], MASS_BINS[1:]):
        inside = valid & (log_mstar >= lo) & (log_mstar < hi)
        galaxies = int(np.unique(boot.galaxy_index[inside]).size)
        row: dict[str, Any] = {"log_mstar": [lo, hi], "n_maps": int(inside.sum()), "n_galaxies": galaxies}
        row["few_galaxies"] = galaxies < MIN_GALAXIES
        if inside.any():
            row.update({k: v.to_dict() for k, v in _moments(delta, inside, boot).items()})
        by_mass.append(row)
    block["by_mass"] = by_mass
    return block


def paired_ratio(
    boot: GalaxyBootstrap, numerator: tuple[np.ndarray, ...], denominator: tuple[np.ndarray, ...]
) -> Estimate:
    """Ratio of two galaxy-weighted means, each a ratio of per-map totals (value, pixels), with a PAIRED galaxy
    bootstrap (the same galaxies in both in every replicate): e.g. the MAE of one method over another's."""
    (a, b), (c, d) = numerator, denominator
    return boot.statistic(lambda w, x, y, z: (w / x) / (y / z), a, b, c, d)


def rms_ratio(boot: GalaxyBootstrap, predicted: np.ndarray, other: np.ndarray, true: np.ndarray) -> Estimate:
    """RMS error of one method's integrated fractions over another's, on the maps where both are finite (paired)."""
    valid = np.isfinite(predicted) & np.isfinite(other) & np.isfinite(true)
    d1, d2 = np.where(valid, predicted - true, 0.0), np.where(valid, other - true, 0.0)
    return boot.statistic(lambda n, s1, s2: np.sqrt(s1 / n) / np.sqrt(s2 / n), valid.astype(float), d1**2, d2**2)
