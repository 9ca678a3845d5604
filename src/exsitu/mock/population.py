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
1 / (1 - f_ex) = dlog M* / dlog M_in the Jacobian. The draw is sampling-importance-resampling:
:data:`CANDIDATES` haloes from a lognormal proposal around the median halo of that M*, each with
its own history, one kept with probability proportional to its weight. At fixed M* a galaxy in a
more massive halo has had more mergers, is larger (sizes scale with R200) and has fewer in-situ
stars for its halo: the correlations of size, halo and ex-situ fraction come from there.

Units: log10 Msun; times in Gyr (lookback).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
from scipy.interpolate import PchipInterpolator

from exsitu.literature import tng100_population
from exsitu.mock.assembly import History, draw_history, with_host

INSITU_SCATTER_DEX = 0.08  # in-situ stellar mass about its median track at fixed halo mass
HMF_SLOPE = -0.9  # dn/dlog M ~ M^HMF_SLOPE below the cut (Tinker et al. 2008)
HMF_CUT = 14.7  # log10 M200 [Msun] of the exponential cut of the halo mass function
CANDIDATES = 4  # haloes per galaxy in the sampling-importance-resampling draw
PROPOSAL_DEX = 0.3  # width of the lognormal halo proposal
ROUNDS = 8  # rounds of candidates before the fallback (no candidate fits the stellar mass)
MAX_OFFSET = 2.5  # in-situ offsets beyond this many standard deviations are not drawn (truncated lognormal)
MIN_INSITU = 0.03  # share of in-situ stars a galaxy keeps in the fallback
#: Satellites fell into their present host uniformly between these lookback times [Gyr] (Wetzel et al.
#: 2013, MNRAS 432, 336: today's satellites fell in ~0.5-8 Gyr ago).
SATELLITE_INFALL_GYR = (0.5, 8.0)


def _bins() -> tuple[np.ndarray, list[dict]]:
    bins = tng100_population()["bins"]
    edges = np.array([b["log_mstar"][0] for b in bins] + [bins[-1]["log_mstar"][1]])
    return edges, bins


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


def _log_hmf(log_mhalo: np.ndarray) -> np.ndarray:
    return HMF_SLOPE * log_mhalo * np.log(10.0) - 10 ** (log_mhalo - HMF_CUT)


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


def draw_assembly(rng: np.random.Generator, log_mstar: float, satellite: bool) -> Assembly:
    """Halo and assembly history of a galaxy of ``log_mstar`` (a satellite of a bigger host if ``satellite``)."""
    since = float(rng.uniform(*SATELLITE_INFALL_GYR)) if satellite else None
    grid, total = _median_relation()
    centre = float(np.interp(log_mstar, total, grid))
    mstar = 10**log_mstar
    for _ in range(ROUNDS):
        log_mh = centre + rng.normal(0.0, PROPOSAL_DEX, CANDIDATES)
        histories = [draw_history(rng, float(m), satellite_since_gyr=since) for m in log_mh]
        accreted = np.array([h.accreted for h in histories])
        # In-situ stars: the halo's own (median track + offset) and those formed from merger gas.
        own = mstar - accreted - np.array([h.merger_gas for h in histories])
        ok = own > MIN_INSITU * mstar
        fex = np.where(ok, accreted / mstar, 0.0)
        offset = np.log10(np.where(ok, own, mstar)) - np.array([h.log_insitu_track[0] for h in histories])
        ok &= np.abs(offset) < MAX_OFFSET * INSITU_SCATTER_DEX
        if ok.any():
            log_w = (
                _log_hmf(log_mh)
                + 0.5 * ((log_mh - centre) / PROPOSAL_DEX) ** 2  # divided by the proposal density
                - 0.5 * (offset / INSITU_SCATTER_DEX) ** 2
                - np.log(1.0 - fex)
            )
            weights = np.where(ok, np.exp(log_w - log_w[ok].max()), 0.0)
            pick = int(rng.choice(CANDIDATES, p=weights / weights.sum()))
            return Assembly(log_mstar, float(log_mh[pick]), with_host(histories[pick], float(offset[pick])), since)
    # No candidate fits (rare): keep the one needing the smallest in-situ offset, its accretion and
    # merger gas scaled so that its own stars keep MIN_INSITU of the mass.
    pick = int(np.argmin(np.abs(offset)))
    history = histories[pick]
    brought = history.accreted + history.merger_gas
    if brought > (1.0 - MIN_INSITU) * mstar:
        scale = (1.0 - MIN_INSITU) * mstar / brought
        history = replace(history, deposit=history.deposit * scale, gas=history.gas * scale)
    own = mstar - history.accreted - history.merger_gas
    offset = float(np.log10(own) - history.log_insitu_track[0])
    return Assembly(log_mstar, float(log_mh[pick]), with_host(history, offset), since)
