"""Error bars that respect the test set's structure: a bootstrap over test GALAXIES.

The test maps are several lines of sight of few galaxies, and galaxies with a high ex-situ
fraction get more of them. Counting maps (or pixels) as independent overweights those galaxies
and understates the error. Here every map of galaxy g gets the weight 1 / n_los(g), so each
galaxy counts once, and replicates resample galaxy ids with replacement (Efron & Tibshirani
1993, ch. 8: resample the independent units). The interval is the percentile interval of the
replicates.

Most statistics are functions of a few weighted TOTALS (sum over maps of weight * per-map
value). The per-galaxy totals are computed once; a replicate is then a (B, G) @ (G, M) product
of the galaxies' multiplicities with those totals, so 1000 replicates cost milliseconds.
Statistics that are not functions of totals (medians, KS distances) use
:meth:`GalaxyBootstrap.reweighted`, which calls a function of the per-map weights per replicate.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from exsitu.io import InputError

log = logging.getLogger(__name__)

#: Fewer test galaxies than this and intervals from a galaxy bootstrap are unreliable.
MIN_GALAXIES = 10


@dataclass(frozen=True)
class Estimate:
    """A point value with its bootstrap percentile interval [low, high] at ``level`` (same units as the statistic)."""

    value: float
    low: float
    high: float
    level: float

    def to_dict(self) -> dict[str, float]:
        """{"value", "low", "high"} for metrics.json (the level is stated once by the caller)."""
        return {"value": self.value, "low": self.low, "high": self.high}


def warn_if_few_galaxies(n_galaxies: int, what: str = "test set", minimum: int = MIN_GALAXIES) -> bool:
    """Log a warning when fewer than ``minimum`` distinct galaxies back the statistics; return True if so."""
    few = n_galaxies < minimum
    if few:
        log.warning(
            "%s holds only %d distinct galaxies (< %d): galaxy-bootstrap intervals are unreliable",
            what,
            n_galaxies,
            minimum,
        )
    return few


def galaxy_weights(galaxy_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(galaxies, galaxy index of each map, map weights 1 / n_los): each galaxy's maps sum to weight 1."""
    galaxies, index = np.unique(np.asarray(galaxy_id), return_inverse=True)
    return galaxies, index, 1.0 / np.bincount(index)[index]


class GalaxyBootstrap:
    """Galaxy-weighted point values and bootstrap intervals for statistics of per-map values.

    galaxy_id: (N,) galaxy identifier of each map (any hashable numbers). Each map gets the weight
    1 / n_los of its galaxy (``map_weights``); ``counts`` (B, G) holds how often each galaxy is
    drawn in each replicate. Deterministic for a ``seed``.
    """

    def __init__(self, galaxy_id: np.ndarray, n_replicates: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        galaxy_id = np.asarray(galaxy_id)
        if galaxy_id.ndim != 1 or galaxy_id.size == 0:
            raise InputError(f"galaxy ids must be a non-empty 1-d array, got shape {galaxy_id.shape}")
        if not (isinstance(n_replicates, int) and n_replicates >= 1 and 0 < level < 1):
            raise InputError(f"bootstrap needs n_replicates >= 1 and 0 < level < 1, got {n_replicates!r}, {level!r}")
        self.galaxies, self.galaxy_index, self.map_weights = galaxy_weights(galaxy_id)
        self.level = float(level)
        g = len(self.galaxies)
        # A multinomial draw of G galaxies is exactly G draws with replacement, tallied.
        self.counts = (
            np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=n_replicates).astype(np.float64)
        )
        warn_if_few_galaxies(g)

    @property
    def n_galaxies(self) -> int:
        return len(self.galaxies)

    @property
    def n_maps(self) -> int:
        return len(self.galaxy_index)

    def galaxy_totals(self, per_map: np.ndarray) -> np.ndarray:
        """Per-galaxy weighted totals (G, ...) of per-map values (N, ...): sum over its maps of value / n_los."""
        per_map = np.asarray(per_map, dtype=np.float64)
        if per_map.shape[0] != self.n_maps:
            raise InputError(f"per-map values have {per_map.shape[0]} rows but the bootstrap holds {self.n_maps} maps")
        flat = (per_map * self.map_weights.reshape(-1, *([1] * (per_map.ndim - 1)))).reshape(self.n_maps, -1)
        totals = np.zeros((self.n_galaxies, flat.shape[1]))
        np.add.at(totals, self.galaxy_index, flat)
        return totals.reshape(self.n_galaxies, *per_map.shape[1:])

    def _interval(self, point: np.ndarray, replicates: np.ndarray) -> Estimate | list[Estimate]:
        tail = 50 * (1 - self.level)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates (no drawn galaxy in a stratum) -> NaN
            low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=0)
        estimates = [
            Estimate(float(v), float(lo), float(hi), self.level)
            for v, lo, hi in zip(point.ravel(), np.ravel(low), np.ravel(high))
        ]
        return estimates[0] if point.ndim == 0 else estimates

    def statistic(self, fn: Callable[..., np.ndarray], *per_map: np.ndarray) -> Estimate | list[Estimate]:
        """Estimate of ``fn(*totals)``, where each total is the galaxy-weighted sum of one per-map array.

        ``fn`` must be vectorised over a leading axis: it is called once with totals of shape
        (1 + B, ...) (row 0 the full sample, then the replicates) and returns (1 + B,) or
        (1 + B, M); the result is one Estimate, or a list of M. Example, the scatter of d per map:
        ``boot.statistic(lambda n, s1, s2: np.sqrt(s2 / n - (s1 / n) ** 2), np.ones(N), d, d**2)``.
        """
        totals = []
        for values in per_map:
            g = self.galaxy_totals(values)
            flat = g.reshape(self.n_galaxies, -1)
            both = np.concatenate([flat.sum(axis=0, keepdims=True), self.counts @ flat])
            totals.append(both.reshape(len(both), *g.shape[1:]))
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.asarray(fn(*totals), dtype=np.float64)
        return self._interval(result[0], result[1:])

    def ratio(self, numerator: np.ndarray, denominator: np.ndarray) -> Estimate | list[Estimate]:
        """Estimate of sum(w * numerator) / sum(w * denominator) over maps; e.g. per-pixel means from per-map
        pixel totals (numerator) and pixel counts (denominator). Arrays (N,) or (N, M) (then M estimates)."""
        numerator = np.asarray(numerator, dtype=np.float64)
        denominator = np.asarray(denominator, dtype=np.float64)
        denominator = np.broadcast_to(
            denominator.reshape(denominator.shape + (1,) * (numerator.ndim - denominator.ndim)), numerator.shape
        )
        return self.statistic(np.divide, numerator, denominator)

    def mean(self, values: np.ndarray) -> Estimate | list[Estimate]:
        """Estimate of the galaxy-weighted mean of per-map ``values`` (N,) or (N, M)."""
        return self.ratio(values, np.ones(len(values)))

    def reweighted(self, fn: Callable[[np.ndarray], float]) -> Estimate:
        """Estimate of any statistic ``fn(weights)`` of per-map ``weights`` (N,) (slow path, one call per replicate).

        ``fn`` receives the galaxy weights 1 / n_los times each galaxy's multiplicity in the
        replicate (0 for galaxies not drawn). For per-pixel statistics expand with the pixels' map index.
        """
        point = float(fn(self.map_weights))
        replicates = np.array([fn(self.map_weights * c[self.galaxy_index]) for c in self.counts], dtype=np.float64)
        return self._interval(np.asarray(point), replicates)  # type: ignore[return-value]
