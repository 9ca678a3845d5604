"""Calibration of sample-based posteriors: per-pixel coverage, CRPS and the TARP whole-map test.

All functions take posterior samples and the truth as numpy arrays of ex-situ mass
fractions (dimensionless, in [0, 1]) and return dimensionless numbers.

Ex-situ maps have a point mass at 0, so many samples equal the truth exactly. A plain
rank/PIT then piles up at 0 and looks badly overconfident; the randomized PIT
u = (#(x_s < y) + U * (#(x_s = y) + 1)) / (S + 1), with U ~ Uniform(0, 1), spreads
each tie uniformly over the ranks it could take, so it is Uniform(0, 1) for a calibrated
posterior, ties included. Coverage of the central interval at level a is then the fraction
of u inside [(1 - a) / 2, (1 + a) / 2].

The galaxy-weighted summaries (:func:`tarp_summary`, :func:`coverage_by_stratum`,
:func:`rank_histogram`) take a :class:`~exsitu.bootstrap.GalaxyBootstrap`:
every map of a galaxy weighs 1 / n_los, so each test galaxy counts once, and every headline
number comes with a 95% interval from resampling galaxies.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from exsitu.bootstrap import Estimate, GalaxyBootstrap
from exsitu.io import InputError
from exsitu.radial import pixel_radius

#: Nominal levels of the central intervals reported in metrics.json.
COVERAGE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95)


#: The random numbers of a calibration test: one generator, or one per map (:func:`map_generators`).
RandomSource = np.random.Generator | Sequence[np.random.Generator]


def map_generators(seeds: Sequence[int] | np.ndarray, stream: int) -> list[np.random.Generator]:
    """One generator per map, seeded with (``stream``, the map's seed): non-negative integers.

    With them a map's randomized PITs and TARP references depend only on its seed and the stream (e.g. which
    posterior is tested), not on the other maps tested with it, so chunks of any size give the same numbers.
    """
    return [np.random.default_rng([int(stream), int(seed)]) for seed in np.asarray(seeds).reshape(-1)]


def _per_map(rng: RandomSource, n: int) -> Sequence[np.random.Generator]:
    """The generator of each of ``n`` maps: the one generator for all, or the given ones (one per map)."""
    if isinstance(rng, np.random.Generator):
        return [rng] * n
    if len(rng) != n:
        raise InputError(f"one generator per map is needed: {n} maps, {len(rng)} generators")
    return rng


def _uniforms(rng: RandomSource, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform(0, 1) numbers of ``shape``, row i from map i's generator."""
    if isinstance(rng, np.random.Generator):
        return rng.random(shape)  # the same numbers as row by row, in one call
    return np.stack([g.random(shape[1:]) for g in _per_map(rng, shape[0])]) if len(rng) else np.empty(shape)


def randomized_pit(samples: np.ndarray, truth: np.ndarray, rng: RandomSource) -> np.ndarray:
    """Randomized probability integral transform of ``truth`` under ``samples``.

    samples: (..., S) posterior draws; truth: (...) the true values; rng: one generator, or one per
    entry of the first axis of ``truth`` (:func:`map_generators`).
    Returns u in (0, 1), shape of ``truth``; Uniform(0, 1) for a calibrated posterior.
    """
    below = (samples < truth[..., None]).sum(axis=-1)
    ties = (samples == truth[..., None]).sum(axis=-1)
    return (below + _uniforms(rng, below.shape) * (ties + 1)) / (samples.shape[-1] + 1)


def central_coverage(pit: np.ndarray, levels: np.ndarray | tuple[float, ...] = COVERAGE_LEVELS) -> np.ndarray:
    """Observed fraction of PIT values inside the central interval of each nominal level."""
    half_width = np.abs(np.asarray(pit).ravel() - 0.5)
    return (
        np.array([np.mean(half_width <= level / 2) for level in levels])
        if half_width.size
        else np.full(len(levels), np.nan)
    )


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


#: Reference-point choices of :func:`tarp_credibility`.
TARP_REFERENCES: tuple[str, ...] = ("uniform", "posterior")
#: Interior truth bins of :func:`pixel_strata` (exact 0 and exact 1 are strata of their own).
TRUTH_STRATUM_EDGES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Width of the radial strata of :func:`pixel_strata`, in units of the stellar half-mass radius.
RADIUS_STEP_RHALF = 0.5


def tarp_credibility(
    samples: np.ndarray,
    truth: np.ndarray,
    rng: RandomSource,
    reference: str | np.ndarray = "uniform",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Per-map TARP credibility (Lemos et al. 2023, arXiv:2302.03026) of whole maps, two reference choices.

    samples: (N, K, ...) posterior maps; truth: (N, ...); mask: (N, ...) bool galaxy pixels or None
    (all pixels); rng: one generator, or one per map (:func:`map_generators`). Only galaxy pixels enter
    the distances. For maps whose samples and truth are both 0 off the galaxy (as the sampler writes
    them) this changes nothing: those pixels add the same constant to every squared distance. Returns
    (N,) values in (0, 1): the fraction of samples closer to the reference than the truth, ties
    randomized as in :func:`randomized_pit`; Uniform(0, 1) when the posterior is calibrated. Maps are
    independent, so chunks can be ranked separately and concatenated (with per-map generators, the
    same numbers whatever the chunks).

    reference:
    - ``"uniform"``: a point drawn uniformly in [0, 1]^D (the range of a fraction), the choice of the
      TARP paper. In D ~ 10^3 dimensions every distance to such a point is dominated by the sum of
      per-pixel variances, so the test mostly checks the TOTAL posterior variance.
    - ``"posterior"``: one posterior sample, picked at random and held out; the truth is ranked among
      the other K - 1. Under calibration the truth and all K samples are exchangeable draws from the
      same posterior, so the held-out sample is a valid reference independent of the truth, and it
      lies where the posterior mass is, which probes the shape of the posterior rather than its
      total variance. A reference built FROM the ranked samples (e.g. their mean, or a Gaussian with
      their mean and std) is not valid: it sits closer to those samples than to an independent draw,
      by O(1/K) in squared distance, and in high D that alone biases the ranks.
    - an array of the shape of ``truth``: given reference points (e.g. to compare with the ``tarp`` package).
    """
    n, k = samples.shape[:2]
    given = isinstance(reference, np.ndarray)
    if given and reference.shape != truth.shape:
        raise InputError(f"TARP reference points must have the shape of the truth {truth.shape}, got {reference.shape}")
    if not given and reference not in TARP_REFERENCES:
        raise InputError(f"TARP reference must be one of {TARP_REFERENCES} or an array, got {reference!r}")
    hold_out = not given and reference == "posterior"
    if hold_out and k < 2:
        raise InputError(f"TARP with posterior references needs at least 2 samples per map, got {k}")
    flat, target = samples.reshape(n, k, -1), truth.reshape(n, -1)
    keep = np.ones(target.shape, bool) if mask is None else np.asarray(mask, bool).reshape(n, -1)
    d_samples = np.empty((n, k - hold_out))
    d_truth = np.empty(n)
    draws = _per_map(rng, n)
    for i, draw in enumerate(draws):  # one map at a time bounds the temporaries at K x (galaxy pixels)
        x, y = flat[i][:, keep[i]].astype(np.float64), target[i][keep[i]].astype(np.float64)
        if given:
            ref = reference.reshape(n, -1)[i][keep[i]].astype(np.float64)
        elif hold_out:
            held_out = draw.integers(k)
            ref, x = x[held_out], np.delete(x, held_out, axis=0)
        else:
            ref = draw.random(y.shape)
        # Squared distances: the ranking is the same as with distances, and exact ties stay ties.
        d_samples[i] = ((x - ref) ** 2).sum(axis=-1)
        d_truth[i] = ((y - ref) ** 2).sum()
    return randomized_pit(d_samples, d_truth, rng)


def tarp_atc_terms(credibility: np.ndarray) -> np.ndarray:
    """Per-map terms whose (weighted) mean is the exact TARP ATC of the empirical ECP.

    ATC = 2 * integral over a in [0.5, 1] of (ECP(a) - a) da with ECP(a) = mean(credibility < a);
    per map the integral of the indicator is 1 - max(c, 0.5), and the integral of a is 3/8, so
    ATC = mean(2 * (1 - max(c, 0.5)) - 3/4). 0 when calibrated, < 0 when the posterior is too
    narrow (overconfident), > 0 when too wide; it lies in [-0.75, 0.25] (all c -> 1, all c <= 0.5).
    Dimensionless.
    """
    return 2 * (1 - np.maximum(np.asarray(credibility, dtype=np.float64), 0.5)) - 0.75


def weighted_ks_uniform(values: np.ndarray, weights: np.ndarray, n_effective: int) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance of the weighted empirical CDF of ``values`` from Uniform(0, 1), and its p-value.

    The p-value is that of a one-sample two-sided KS test with ``n_effective`` independent draws
    (scipy.stats.kstwo). With unit weights and n_effective = len(values) it equals
    ``scipy.stats.kstest(values, "uniform")`` (exact mode).
    """
    order = np.argsort(values, kind="stable")
    x = np.asarray(values, dtype=np.float64)[order]
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    cdf /= cdf[-1]
    below = np.concatenate([[0.0], cdf[:-1]])
    distance = float(max(np.max(cdf - x), np.max(x - below)))
    return distance, float(stats.kstwo.sf(distance, n_effective))


@dataclass(frozen=True)
class TarpSummary:
    """Galaxy-weighted TARP result: ECP curve (with a bootstrap band), ATC with interval, KS test.

    alpha: (L,) credibility levels in [0, 1]; ecp, ecp_low, ecp_high: (L,) expected coverage
    probability and its bootstrap interval; atc: the area to curve (see :func:`tarp_atc_terms`);
    ks_statistic, ks_pvalue: KS test of the credibility values against Uniform(0, 1), weighted, with
    n = the number of galaxies (conservative: it treats a galaxy's projections as one draw). sbi's
    ``check_tarp`` instead applies scipy's KS test to the arrays (ecp, alpha), which is not a test of
    uniformity with a known sample size. n_maps, n_galaxies: what the numbers rest on.
    """

    alpha: np.ndarray
    ecp: np.ndarray
    ecp_low: np.ndarray
    ecp_high: np.ndarray
    atc: Estimate
    ks_statistic: float
    ks_pvalue: float
    n_maps: int
    n_galaxies: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: lists for the curves, {"value", "low", "high"} for the ATC."""
        return {
            "alpha": self.alpha.tolist(),
            "ecp": self.ecp.tolist(),
            "ecp_low": self.ecp_low.tolist(),
            "ecp_high": self.ecp_high.tolist(),
            "atc": self.atc.to_dict(),
            "ks_statistic": self.ks_statistic,
            "ks_pvalue": self.ks_pvalue,
            "n_maps": self.n_maps,
            "n_galaxies": self.n_galaxies,
            "interval_level": self.atc.level,
        }


def tarp_summary(credibility: np.ndarray, bootstrap: GalaxyBootstrap, n_levels: int = 51) -> TarpSummary:
    """TARP ECP curve, ATC (exact, see :func:`tarp_atc_terms`) and KS p-value of per-map ``credibility`` (N,).

    Maps are weighted by ``bootstrap.map_weights`` (1 / n_los: each galaxy counts once); the
    intervals come from resampling galaxies. For unweighted, independent maps pass
    ``GalaxyBootstrap(np.arange(N))``.
    """
    credibility = np.asarray(credibility, dtype=np.float64)
    alpha = np.linspace(0.0, 1.0, n_levels)
    ecp = bootstrap.mean((credibility[:, None] < alpha[None, :]).astype(np.float64))
    distance, pvalue = weighted_ks_uniform(credibility, bootstrap.map_weights, bootstrap.n_galaxies)
    return TarpSummary(
        alpha=alpha,
        ecp=np.array([e.value for e in ecp]),
        ecp_low=np.array([e.low for e in ecp]),
        ecp_high=np.array([e.high for e in ecp]),
        atc=bootstrap.mean(tarp_atc_terms(credibility)),  # type: ignore[arg-type]
        ks_statistic=distance,
        ks_pvalue=pvalue,
        n_maps=bootstrap.n_maps,
        n_galaxies=bootstrap.n_galaxies,
    )


@dataclass(frozen=True)
class RankHistogram:
    """SBC-style rank histogram (Talts et al. 2018, arXiv:1804.06788) of one scalar per map.

    edges: (B + 1,) bin edges of the normalised rank u in [0, 1]; fraction: (B,) galaxy-weighted
    fraction of maps per bin (1 / B each when calibrated); n_maps: (B,) unweighted map counts;
    ks_statistic, ks_pvalue: weighted KS test of u against Uniform(0, 1) with n = the number of galaxies.
    """

    edges: np.ndarray
    fraction: np.ndarray
    n_maps: np.ndarray
    ks_statistic: float
    ks_pvalue: float
    n_galaxies: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "edges": self.edges.tolist(),
            "fraction": self.fraction.tolist(),
            "n_maps": self.n_maps.tolist(),
            "ks_statistic": self.ks_statistic,
            "ks_pvalue": self.ks_pvalue,
            "n_galaxies": self.n_galaxies,
        }


def rank_histogram(pit: np.ndarray, bootstrap: GalaxyBootstrap, n_bins: int = 10) -> RankHistogram:
    """Rank histogram and uniformity test of per-map normalised ranks ``pit`` (N,) in (0, 1).

    For the galaxy-integrated ex-situ fraction: ``pit = randomized_pit(f_samples, f_true, rng)`` with
    f_samples (N, K) the mass-weighted integrated fraction of each sampled map and f_true (N,) that of
    the true map (both dimensionless). The SBC integer rank of the truth among the K samples is
    floor(pit * (K + 1)); ties are broken at random, so pit is Uniform(0, 1) for a calibrated posterior
    and equal-width bins of pit have equal expected counts.
    """
    pit = np.asarray(pit, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(pit, edges[1:-1]), 0, n_bins - 1)
    weights = bootstrap.map_weights
    fraction = np.bincount(which, weights=weights, minlength=n_bins) / weights.sum()
    distance, pvalue = weighted_ks_uniform(pit, weights, bootstrap.n_galaxies)
    return RankHistogram(edges, fraction, np.bincount(which, minlength=n_bins), distance, pvalue, bootstrap.n_galaxies)


@dataclass(frozen=True)
class CoverageStratum:
    """Coverage of the central credible intervals on the galaxy pixels of one stratum.

    by: "median", "truth", "mass" or "radius"; label: human-readable condition; low, high: its bounds
    in the stratifying quantity (ex-situ fraction; log10 Msun; r / r_half). coverage: nominal level (as
    "0.68") -> galaxy-weighted observed coverage with bootstrap interval. n_pixels, n_maps,
    n_galaxies: what the stratum holds.
    """

    by: str
    label: str
    low: float
    high: float
    coverage: dict[str, Estimate]
    n_pixels: int
    n_maps: int
    n_galaxies: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "by": self.by,
            "label": self.label,
            "low": self.low,
            "high": self.high,
            "coverage": {level: e.to_dict() for level, e in self.coverage.items()},
            "n_pixels": self.n_pixels,
            "n_maps": self.n_maps,
            "n_galaxies": self.n_galaxies,
        }


#: Interior bins of the posterior-median strata of :func:`pixel_strata` (the calibration targets).
MEDIAN_STRATUM_EDGES: tuple[float, ...] = (0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class StratumDef:
    """What a coverage stratum is: ``by`` ("median", "truth", "radius" or "mass"), a label and its bounds."""

    by: str
    label: str
    low: float
    high: float


def median_bins(median: np.ndarray, edges: tuple[float, ...]) -> list[tuple[StratumDef, np.ndarray]]:
    """Bins of posterior medians (fractions) between ``edges``, the last one closed at its upper edge:
    (definition, bool selector of ``median``'s shape) each; NaN medians are in no bin."""
    which = np.clip(np.digitize(median, edges[1:-1]), 0, len(edges) - 2)
    finite = np.isfinite(median)
    out = []
    for j, (lo, hi) in enumerate(itertools.pairwise(edges)):
        relation = "<=" if j == len(edges) - 2 else "<"
        out.append((StratumDef("median", f"{lo:g} <= median {relation} {hi:g}", lo, hi), finite & (which == j)))
    return out


def pixel_strata(
    median: np.ndarray, truth: np.ndarray, mask: np.ndarray, fov_rhalf: float
) -> list[tuple[StratumDef, np.ndarray]]:
    """The pixel strata of maps (n, P, P): (definition, (n, P, P) bool selector of galaxy pixels) each.

    - by the posterior median (bins of :data:`MEDIAN_STRATUM_EDGES`, the last one closed at 1): a
      calibrated posterior covers at the nominal level in every one of them, so they are targets;
    - by truth (exactly 0, the interior in :data:`TRUTH_STRATUM_EDGES` bins, exactly 1): a
      Bayes-optimal posterior is pulled towards the prior, so it under-covers rare true values and
      these bend even when calibrated; shown, not a target;
    - by radius: rings of :data:`RADIUS_STEP_RHALF` half-mass radii out to the inscribed circle,
      then the corners out to fov_rhalf / sqrt(2).
    """
    mask = np.asarray(mask, bool)
    out = []
    for definition, member in median_bins(median, MEDIAN_STRATUM_EDGES):
        out.append((definition, mask & member))
    interior = (truth > 0) & (truth < 1)
    out += [
        (StratumDef("truth", "truth = 0", 0.0, 0.0), mask & (truth == 0)),
        (StratumDef("truth", "truth = 1", 1.0, 1.0), mask & (truth == 1)),
    ]
    truth_bin = np.digitize(truth, TRUTH_STRATUM_EDGES[1:-1], right=True)  # bins (lo, hi], the last one open at 1
    for j, (lo, hi) in enumerate(itertools.pairwise(TRUTH_STRATUM_EDGES)):
        relation = "<" if hi >= 1 else "<="
        out.append(
            (StratumDef("truth", f"{lo:g} < truth {relation} {hi:g}", lo, hi), mask & interior & (truth_bin == j))
        )
    edges = np.append(np.arange(0.0, fov_rhalf / 2 + 1e-9, RADIUS_STEP_RHALF), fov_rhalf / np.sqrt(2))
    ring = np.digitize(pixel_radius(mask.shape[-1], fov_rhalf), edges[1:-1])
    for j, (lo, hi) in enumerate(itertools.pairwise(edges)):
        label = f"{lo:.2f} <= r/r_half < {hi:.2f}"
        out.append((StratumDef("radius", label, float(lo), float(hi)), mask & (ring == j)[None]))
    return out


def stratum_tallies(covered: np.ndarray, selectors: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per map and stratum, pixels covered at each level and pixels: ((n, S, L), (n, S)).

    covered: (n, P, P, L) bool, the pixel's truth inside the central interval of each level;
    selectors: S (n, P, P) bool pixel sets.
    """
    hits = np.stack([(covered & sel[..., None]).sum(axis=(1, 2)) for sel in selectors], axis=1)
    pixels = np.stack([sel.sum(axis=(1, 2)) for sel in selectors], axis=1)
    return hits, pixels


def coverage_by_stratum(
    strata: list[StratumDef],
    hits: np.ndarray,
    pixels: np.ndarray,
    bootstrap: GalaxyBootstrap,
    levels: tuple[float, ...],
) -> list[CoverageStratum]:
    """Galaxy-weighted coverage of each stratum from per-map tallies (:func:`stratum_tallies`, all maps).

    Within a stratum, coverage = sum over maps of (1 / n_los) * pixels covered / sum of (1 / n_los) *
    pixels, with a galaxy-bootstrap interval. An empty stratum has NaN coverage and zero counts.
    """
    result = []
    for s, definition in enumerate(strata):
        estimates = bootstrap.ratio(hits[:, s], pixels[:, s])
        present = pixels[:, s] > 0
        result.append(
            CoverageStratum(
                by=definition.by,
                label=definition.label,
                low=definition.low,
                high=definition.high,
                coverage={f"{level:g}": e for level, e in zip(levels, estimates)},  # type: ignore[arg-type]
                n_pixels=int(pixels[:, s].sum()),
                n_maps=int(present.sum()),
                n_galaxies=int(np.unique(bootstrap.galaxy_index[present]).size),
            )
        )
    return result


#: Bins of a map functional's posterior median (ex-situ fractions) for its coverage by prediction: the
#: near-zero galaxies (median below 0.01) apart, then roughly logarithmic steps.
FUNCTIONAL_MEDIAN_EDGES: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def functional_coverage_by_median(
    pit: np.ndarray,
    median: np.ndarray,
    bootstrap: GalaxyBootstrap,
    levels: tuple[float, ...],
    edges: tuple[float, ...] = FUNCTIONAL_MEDIAN_EDGES,
) -> list[dict[str, Any]]:
    """Coverage of a per-map functional's central intervals in bins of its posterior median, and where the misses lie.

    pit: (N,) randomized PIT of the true value under the sampled values (NaN where undefined);
    median: (N,) the samples' median (same units as ``edges``); ``bootstrap`` over the N maps. Per
    bin (the last one closed at its upper edge): the galaxy-weighted coverage at each of ``levels``,
    and the shares of maps whose truth lies below and above the central interval of ``levels[0]``,
    each with a galaxy-bootstrap interval. A calibrated posterior covers at the nominal level in every
    bin of its prediction and misses as often on either side; binning by the truth would not test this
    (see :func:`pixel_strata`). Returns JSON-ready dicts: label, low, high, n_maps, n_galaxies,
    coverage {level: estimate}, below, above.
    """
    pit, median = np.asarray(pit, dtype=np.float64), np.asarray(median, dtype=np.float64)
    defined = np.isfinite(pit) & np.isfinite(median)
    half_width = np.abs(np.where(defined, pit, 0.5) - 0.5)
    first = levels[0] / 2
    with np.errstate(invalid="ignore"):  # NaN PITs compare False: an undefined map is neither below nor above
        outcomes = np.column_stack(
            [half_width <= level / 2 for level in levels] + [pit < 0.5 - first, pit > 0.5 + first]
        ).astype(np.float64)
    out = []
    for definition, in_bin in median_bins(median, edges):
        member = defined & in_bin
        estimates = bootstrap.ratio(outcomes * member[:, None], member.astype(np.float64))
        out.append(
            {
                "label": definition.label,
                "low": float(definition.low),
                "high": float(definition.high),
                "n_maps": int(member.sum()),
                "n_galaxies": int(np.unique(bootstrap.galaxy_index[member]).size),
                "coverage": {f"{level:g}": e.to_dict() for level, e in zip(levels, estimates)},
                "below": estimates[len(levels)].to_dict(),
                "above": estimates[len(levels) + 1].to_dict(),
            }
        )
    return out


def mass_terciles(log_mstar: np.ndarray, bootstrap: GalaxyBootstrap) -> list[tuple[StratumDef, np.ndarray]]:
    """Terciles of the test GALAXIES' stellar masses (log10 Msun, a galaxy's maps by their mean), so that each
    holds a third of the galaxies: (definition, (N,) bool map selector) each."""
    index = bootstrap.galaxy_index
    galaxy_mass = (np.bincount(index, weights=log_mstar) / np.bincount(index))[index]
    cuts = np.quantile(np.unique(galaxy_mass), [1 / 3, 2 / 3])
    tercile = np.digitize(galaxy_mass, cuts)
    out = []
    for j in range(3):
        members = galaxy_mass[tercile == j]
        lo, hi = (float(members.min()), float(members.max())) if members.size else (np.nan, np.nan)
        out.append((StratumDef("mass", f"log M* tercile {j + 1} [{lo:.2f}, {hi:.2f}]", lo, hi), tercile == j))
    return out
