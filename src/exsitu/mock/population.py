"""Which galaxies the mock universe holds: TNG100's stellar mass function and central share, and for
each galaxy a halo and an assembly history consistent with its stellar mass.

The stellar mass function and the share of centrals per mass bin are inputs, taken from the
TNG100-1 z = 0 population (:func:`exsitu.literature.tng100_population`): the stellar mass function
as a monotone interpolation of its cumulative counts, the central share interpolated between bin
centres. The ex-situ fraction is NOT drawn: it follows from the assembly history
(:mod:`exsitu.mock.assembly`) of a halo chosen for the galaxy's stellar mass.

A galaxy's stellar mass M* is its in-situ stars plus what it accreted. Given M*, the halo and its
history are drawn from their conditional distribution,

    p(M200, history | M*) ~ n(M200) p(history | M200) p_in(M* - M_acc | M200) / (1 - f_ex),

where n is the halo mass function (dn/dlog M ~ M^-0.9 with an exponential cut at 10^14.7 Msun,
the slope of Tinker et al. 2008, ApJ 688, 709), p_in the lognormal scatter (:data:`INSITU_SCATTER_DEX`)
of the in-situ stellar mass about its median track (:func:`exsitu.mock.assembly.insitu_track`), and
1 / (1 - f_ex) = dlog M* / dlog M_in the Jacobian. The draw is exact rejection sampling of the forward
model: a halo from n(M200) within :data:`HALO_WINDOW_DEX` of the median halo of that M*, its history,
and its in-situ offset are drawn, and the candidate is kept when the stellar mass they add up to lies
within :data:`MSTAR_WINDOW_DEX` of the one asked for (the galaxy then has the candidate's mass). The
weights, Jacobian included, are then those of the forward model itself; no candidate is reweighted.
(Until 2026-12-07 a sampling-importance-resampling draw of 4 candidates stood here: with so few, the
draw leans towards its proposal, and at 10^10.4 Msun it gave f_ex p84 0.15 where the exact draw gives
0.19-0.23, by the width of the mass window measured.) At fixed M* a galaxy in a more massive halo has
had more mergers, is larger (sizes scale with R200) and has fewer in-situ stars for its halo: the
correlations of size, halo and ex-situ fraction come from there.

Units: log10 Msun; times in Gyr (lookback).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from exsitu.literature import tng100_population
from exsitu.mock.assembly import History, draw_history, with_host

INSITU_SCATTER_DEX = 0.08  # in-situ stellar mass about its median track at fixed halo mass
HMF_SLOPE = -0.9  # dn/dlog M ~ M^HMF_SLOPE below the cut (Tinker et al. 2008)
HMF_CUT = 14.7  # log10 M200 [Msun] of the exponential cut of the halo mass function
MAX_OFFSET = 2.5  # in-situ offsets beyond this many standard deviations are not drawn (truncated lognormal)
#: Haloes are proposed this far [dex] on either side of the median halo of the stellar mass asked for: the
#: conditional halo mass has a spread of 0.1-0.3 dex (``tests/test_mock_population.py`` checks the edges stay empty).
HALO_WINDOW_DEX = 1.2
MSTAR_WINDOW_DEX = 0.05  # a candidate is kept when its log M* is this close to the one asked for
MAX_CANDIDATES = 20000  # per galaxy; the rejection draw needs ~10^2
#: Satellites fell into their present host uniformly between these lookback times [Gyr] (Wetzel et al.
#: 2013, MNRAS 432, 336: today's satellites fell in ~0.5-8 Gyr ago).
SATELLITE_INFALL_GYR = (0.5, 8.0)


def _bins() -> tuple[np.ndarray, list[dict]]:
    bins = tng100_population()["bins"]
    edges = np.array([b["log_mstar"][0] for b in bins] + [bins[-1]["log_mstar"][1]])
    return edges, bins


def min_log_mstar() -> float:
    """The lower mass limit [log10 Msun] of the TNG100-1 population table: the mock's galaxies lie above it."""
    return float(_bins()[0][0])


def sample_log_mstar(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` stellar masses [log10 Msun] from the TNG100-1 z = 0 stellar mass function above 1e10 Msun."""
    edges, bins = _bins()
    cumulative = np.concatenate([[0.0], np.cumsum([b["n"] for b in bins])])
    inverse = PchipInterpolator(cumulative / cumulative[-1], edges)
    return inverse(rng.uniform(size=n))


def central_share(log_mstar: np.ndarray | float) -> np.ndarray:
    """Share of centrals among TNG100-1 galaxies of ``log_mstar`` (interpolated between bin centres)."""
    edges, bins = _bins()
    centres = 0.5 * (edges[1:] + edges[:-1])
    return np.interp(log_mstar, centres, [b["central_share"] for b in bins])


@functools.cache
def _median_relation() -> tuple[np.ndarray, np.ndarray]:
    """(log M200, median log M* = in-situ + accreted) of the assembly model, tabulated once with a fixed seed.

    It centres the halo proposal; its precision only changes how efficient the proposal is.
    """
    rng = np.random.default_rng(20231201)
    grid = np.arange(10.75, 15.01, 0.25)
    total = []
    for log_mh in grid:
        draws = [draw_history(rng, float(log_mh)) for _ in range(12)]
        total.append(np.median([np.log10(10 ** h.log_insitu_track[0] + h.accreted) for h in draws]))
    return grid, np.maximum.accumulate(np.array(total))


def _draw_halo(rng: np.random.Generator, low: float, high: float) -> float:
    """log10 M200 [Msun] from the halo mass function restricted to [low, high]: the power law by its inverse
    cumulative distribution, the exponential cut by rejection."""
    a, b = 10 ** (HMF_SLOPE * low), 10 ** (HMF_SLOPE * high)
    while True:
        log_mh = float(np.log10(a + rng.uniform() * (b - a)) / HMF_SLOPE)
        if rng.uniform() < np.exp(-(10 ** (log_mh - HMF_CUT))):
            return log_mh


def _draw_offset(rng: np.random.Generator) -> float:
    """The in-situ stellar mass's offset from its median track [dex]: lognormal, truncated at :data:`MAX_OFFSET`."""
    while True:
        x = float(rng.normal())
        if abs(x) < MAX_OFFSET:
            return x * INSITU_SCATTER_DEX


@dataclass(frozen=True)
class Assembly:
    """A galaxy's stellar mass, halo, and its history made consistent with them (see the module doc)."""

    log_mstar: float
    log_mhalo: float
    history: History  # after exsitu.mock.assembly.with_host
    satellite_since_gyr: float | None

    @property
    def exsitu_fraction(self) -> float:
        return self.history.accreted / 10**self.log_mstar


def draw_assembly(
    rng: np.random.Generator, log_mstar: float, satellite: bool, floor_log_mstar: float = -np.inf
) -> Assembly:
    """Halo and assembly history of a galaxy of ``log_mstar`` (a satellite of a bigger host if ``satellite``).

    Its stellar mass is within :data:`MSTAR_WINDOW_DEX` of ``log_mstar`` (the module doc says why not equal) and
    not below ``floor_log_mstar`` (a population's lower mass limit stays its limit).
    """
    since = float(rng.uniform(*SATELLITE_INFALL_GYR)) if satellite else None
    grid, total = _median_relation()
    centre = float(np.interp(log_mstar, total, grid))
    for _ in range(MAX_CANDIDATES):
        log_mh = _draw_halo(rng, centre - HALO_WINDOW_DEX, centre + HALO_WINDOW_DEX)
        history = draw_history(rng, log_mh, satellite_since_gyr=since)
        offset = _draw_offset(rng)
        drawn = float(np.log10(10 ** (history.log_insitu_track[0] + offset) + history.merger_gas + history.accreted))
        if abs(drawn - log_mstar) < MSTAR_WINDOW_DEX and drawn >= floor_log_mstar:
            return Assembly(drawn, log_mh, with_host(history, offset), since)
    raise RuntimeError(f"no halo of the assembly model makes a galaxy of log M* = {log_mstar:.2f}")
