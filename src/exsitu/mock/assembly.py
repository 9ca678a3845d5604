"""Assembly histories of mock galaxies: cosmic time, halo and size scales, the stellar
mass-metallicity relation, and the satellites each galaxy accreted.

A galaxy's ex-situ stars are the stars of the satellites it accreted. The accreted mass
follows the ex-situ fraction-stellar mass relation of Illustris/IllustrisTNG
(Rodriguez-Gomez et al. 2016, MNRAS 458, 2371; Pillepich et al. 2018, MNRAS 475, 648) with
its large scatter, and is split by merger mass ratio as in Rodriguez-Gomez et al. 2016: on
average 50% from major mergers (stellar mass ratio > 1/4), 20% minor (1/10-1/4), 20% very
minor (< 1/10) and 10% stripped from satellites that still survive. A share too small for
one merger of its class (a major merger cannot bring less than a quarter of the host's
mass at infall) falls to the next class down, so low-mass hosts grow by minor mergers and
massive ones by major mergers, as in the simulations. Each satellite carries its infall
time, stellar mass and orbit; :mod:`exsitu.mock.debris` turns it into star particles.

Units: Gyr (lookback times unless named otherwise), Msun, kpc, km/s; metallicity in dex
relative to solar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Planck 2015 cosmology of IllustrisTNG (flat LambdaCDM); the analytic age formula is exact for it.
HUBBLE, OMEGA_M = 0.6774, 0.3089
HUBBLE_TIME_GYR = 977.792 / (100.0 * HUBBLE)  # 1/H0
G_KPC = 4.30091e-6  # gravitational constant [kpc (km/s)^2 / Msun]
RHO_CRIT = 277.5366 * HUBBLE**2  # critical density today [Msun / kpc^3]
SIZE_TO_R200 = 0.015  # galaxy 3D half-mass radius / R200 (Kravtsov 2013, ApJ 764, L31)
HOST_GROWTH = 1.7  # M*(z) = M*(0) (1+z)^-1.7: main-progenitor growth (Moster et al. 2013, Behroozi et al. 2013)

# Merger classes: name, mass-ratio range (satellite / host stellar mass at infall), infall lookback range [Gyr],
# mean share of the ex-situ mass (Rodriguez-Gomez et al. 2016, Sect. 4.2). Infall is uniform in time: the
# merger rate per galaxy per unit time is roughly constant since z ~ 2 (Rodriguez-Gomez et al. 2015, MNRAS
# 449, 49), so most accreted mass arrives at z < 1 when satellites are massive.
MERGER_CLASSES = (
    ("major", 0.25, 1.0, (0.6, 11.0), 0.5),
    ("minor", 0.1, 0.25, (0.6, 11.5), 0.2),
    ("very_minor", 0.003, 0.1, (0.6, 12.0), 0.2),
)
STRIPPED = ("stripped", 0.01, 0.3, (0.3, 9.0), 0.1)  # surviving satellites: their stripped stars only
MIX_CONCENTRATION = 6.0  # Dirichlet concentration of the per-galaxy class mix (galaxy-to-galaxy scatter)
MAX_EVENTS = 40  # per class; the last event absorbs what is left
DEPOSIT_SCALE = 1.4  # debris half-mass radius / size scale for mass ratio 1 at z=0
COPLANAR_CHANCE = 0.2  # a recent minor/major merger on a prograde orbit in the disc plane (accreted disc)

# Stellar mass-metallicity relation at z=0, log10(Z*/Zsun) vs log10(M*/Msun): Kirby et al. 2013 (ApJ 779,
# 102; [Fe/H] = -1.69 + 0.30 log(M*/1e6 Msun), +0.2 dex for alpha enhancement) below 1e9 Msun, the medians of
# Gallazzi et al. 2005 (MNRAS 362, 41, Table 2) above.
MZR_LOG_MASS = np.array([5.0, 6.0, 7.0, 8.0, 8.9, 9.5, 9.9, 10.1, 10.3, 10.5, 10.7, 10.9, 11.1, 11.3, 11.5, 11.9, 12.5])
MZR_LOG_Z = np.array(
    [-1.79, -1.49, -1.19, -0.89, -0.6, -0.6, -0.41, -0.23, -0.11, -0.01, 0.04, 0.07, 0.1, 0.12, 0.13, 0.15, 0.16]
)
MZR_SCATTER_DEX = 0.15  # galaxy-to-galaxy scatter about the relation (Gallazzi et al. 2005; Kirby et al. 2013)


def cosmic_time(z: np.ndarray | float) -> np.ndarray:
    """Age of the Universe [Gyr] at redshift ``z`` (flat LambdaCDM, analytic)."""
    ol = 1.0 - OMEGA_M
    x = np.sqrt(ol / OMEGA_M) * (1.0 + np.asarray(z, dtype=np.float64)) ** -1.5
    return 2.0 * HUBBLE_TIME_GYR / (3.0 * np.sqrt(ol)) * np.arcsinh(x)


T0_GYR = float(cosmic_time(0.0))


def redshift_at_lookback(lookback_gyr: np.ndarray | float) -> np.ndarray:
    """Redshift at ``lookback_gyr`` before z=0 (inverse of :func:`cosmic_time`); lookbacks are clipped to 13.5 Gyr."""
    ol = 1.0 - OMEGA_M
    t = T0_GYR - np.minimum(np.asarray(lookback_gyr, dtype=np.float64), 13.5)
    x = np.sinh(1.5 * np.sqrt(ol) * t / HUBBLE_TIME_GYR) / np.sqrt(ol / OMEGA_M)
    return x ** (-2.0 / 3.0) - 1.0


def lookback_of_redshift(z: np.ndarray | float) -> np.ndarray:
    """Lookback time [Gyr] to redshift ``z``."""
    return T0_GYR - cosmic_time(z)


def host_mass(m0: float, z: np.ndarray | float) -> np.ndarray:
    """Stellar mass [Msun] of the main progenitor at redshift ``z`` of a galaxy of ``m0`` Msun at z=0."""
    return m0 * (1.0 + np.asarray(z, dtype=np.float64)) ** -HOST_GROWTH


def stellar_metallicity(log_mstar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean log10(Z*/Zsun) of a galaxy of ``log_mstar`` at redshift ``z``.

    The z=0 relation (Kirby et al. 2013 + Gallazzi et al. 2005) shifted by the evolution of
    the stellar mass-metallicity relation in the FIRE simulations, 0.67 (exp(-z/2) - 1) dex
    (Ma et al. 2016, MNRAS 456, 2140).
    """
    z = np.asarray(z, dtype=np.float64)
    return np.interp(log_mstar, MZR_LOG_MASS, MZR_LOG_Z) + 0.67 * (np.exp(-0.5 * z) - 1.0)


def star_metallicities(
    log_m_end: np.ndarray, z_end: np.ndarray, log_m_form: np.ndarray, z_form: np.ndarray, group: np.ndarray
) -> np.ndarray:
    """log10(Z/Zsun) of individual stars, each formed in galaxy ``group`` (per-star arrays).

    A galaxy that stops forming stars at ``z_end`` with mass ``log_m_end`` has the mean stellar
    metallicity of the relation there; its stars spread about that mean as the galaxy's
    enrichment history dictates: a star formed at ``z_form`` when the galaxy had ``log_m_form``
    is offset by the change of :func:`stellar_metallicity` between then and the galaxy's
    stellar-mass-weighted mean. So old stars are metal poor and the galaxy average stays on
    the observed relation.
    """
    history = stellar_metallicity(log_m_form, z_form)
    counts = np.maximum(np.bincount(group), 1)
    mean = (np.bincount(group, weights=history) / counts)[group]
    return stellar_metallicity(log_m_end, z_end) + history - mean


def halo_mass(log_mstar: float) -> float:
    """log10 M200 [Msun] of the halo hosting ``log_mstar`` (median relation).

    Inverts the stellar-to-halo mass relation of Kravtsov, Vikhlinin & Meshcheryakov 2018
    (Astron. Lett. 44, 8; Behroozi et al. 2013 functional form), which counts the extended
    light of massive galaxies as TNG's bound stellar mass does.
    """
    log_m1, log_eps, alpha, delta, gamma = 11.35, -1.642, -1.779, 4.394, 0.547

    def f(x: np.ndarray) -> np.ndarray:
        return -np.log10(10 ** (alpha * x) + 1.0) + delta * np.log10(1.0 + np.exp(x)) ** gamma / (1.0 + np.exp(10**-x))

    log_mh = np.linspace(10.0, 15.5, 400)
    log_ms = log_eps + log_m1 + f(log_mh - log_m1) - f(np.zeros(1))
    return float(np.interp(log_mstar, log_ms, log_mh))


def r200_kpc(log_mhalo: float) -> float:
    """Radius [kpc] enclosing 200 times the critical density around a halo of ``log_mhalo``."""
    return float((3.0 * 10**log_mhalo / (4.0 * np.pi * 200.0 * RHO_CRIT)) ** (1.0 / 3.0))


def concentration(log_mhalo: float) -> float:
    """NFW concentration c200 at z=0 (Dutton & Maccio 2014, MNRAS 441, 3359)."""
    return float(10 ** (0.905 - 0.101 * (log_mhalo - 12.0 + np.log10(HUBBLE))))


def median_exsitu_fraction(log_mstar: np.ndarray | float) -> np.ndarray:
    """Median ex-situ stellar mass fraction at z=0 (Illustris/TNG, Rodriguez-Gomez et al. 2016, Pillepich et al. 2018).

    Logistic in log M*: ~0.09 at 1e10, ~0.2 at 3e10, ~0.38 at 1e11, ~0.6 at 3e11, ~0.78 at 1e12 Msun.
    """
    return 1.0 / (1.0 + np.exp(-(-0.5 + 1.8 * (np.asarray(log_mstar, dtype=np.float64) - 11.0))))


def exsitu_scatter_logit(log_mstar: float) -> float:
    """Scatter of logit(f_ex) at fixed mass: wide for low-mass galaxies, narrower for massive ones (RG16, Fig. 4)."""
    return float(np.clip(1.0 - 0.15 * (log_mstar - 10.0), 0.6, 1.1))


@dataclass(frozen=True)
class Satellite:
    """One accreted satellite: what it brought and how it fell in.

    ``log_mass`` is the stellar mass [log Msun] it deposited; ``mass_ratio`` its stellar mass over the
    host's at infall; ``infall_gyr`` the lookback time of infall (its star formation stops there);
    ``start_gyr`` the lookback time its star formation began; ``sfh_shape`` > 1 skews its star
    formation late, < 1 early; ``z_offset`` its offset from the mass-metallicity relation [dex];
    ``axis`` the unit normal of its orbital plane (host frame); ``eccentricity`` of its orbit;
    ``radius_kpc`` the half-mass radius of its debris once phase mixed; ``coplanar`` marks debris
    that settles into an accreted disc in the host's disc plane.
    """

    kind: str
    log_mass: float
    mass_ratio: float
    infall_gyr: float
    start_gyr: float
    sfh_shape: float
    z_offset: float
    axis: tuple[float, float, float]
    eccentricity: float
    radius_kpc: float
    coplanar: bool


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(x) for x in v / np.linalg.norm(v))


def _draw_class(
    rng: np.random.Generator, m0: float, budget: float, cls: tuple, last: bool, stripped_share: float = 1.0
) -> tuple[list[tuple[float, float, float]], float]:
    """Events (mass, mass ratio, infall z) of one merger class filling ``budget`` Msun; returns them and the rest.

    A satellite brings ``stripped_share`` of its mass (1 for mergers). When the next draw no
    longer fits, the rest goes to the next class unless it still makes a merger of this class.
    """
    _, mu_lo, mu_hi, (t_lo, t_hi), _ = cls
    events: list[tuple[float, float, float]] = []
    left = budget
    while left > 0.0:
        z = float(redshift_at_lookback(rng.uniform(t_lo, t_hi)))
        mu = float(np.exp(rng.uniform(np.log(mu_lo), np.log(mu_hi))))
        per_ratio = float(host_mass(m0, z)) * stripped_share
        if mu * per_ratio < left and len(events) < MAX_EVENTS - 1:
            events.append((mu * per_ratio, mu, z))
            left -= mu * per_ratio
            continue
        fit = left / per_ratio
        if fit >= mu_lo or last or len(events) >= MAX_EVENTS - 1:
            events.append((left, fit, z))
            left = 0.0
        break
    return events, left


def draw_history(
    rng: np.random.Generator, log_mstar: float, r_ref_kpc: float, spin: np.ndarray
) -> tuple[float, tuple[Satellite, ...]]:
    """Ex-situ fraction and accreted satellites of a z=0 galaxy of ``log_mstar`` (see the module docstring).

    ``r_ref_kpc`` is the galaxy's size scale (debris radii scale with it) and ``spin`` its disc axis.
    Debris of a satellite with mass ratio mu falling in at redshift z is deposited at a half-mass radius
    ~ mu^-0.3 (1+z)^-0.75 ``r_ref_kpc``: massive satellites sink deep by dynamical friction before they are
    disrupted, small ones are stripped far out (Amorisco 2017, MNRAS 464, 2882; Cooper et al. 2010, MNRAS
    406, 744), and early debris settles where the smaller galaxy of the time was (sizes grow as
    (1+z)^-0.75 at fixed mass, van der Wel et al. 2014, ApJ 788, 28).
    """
    m0 = 10**log_mstar
    logit = np.log(median_exsitu_fraction(log_mstar) / (1.0 - median_exsitu_fraction(log_mstar)))
    fex = float(1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, exsitu_scatter_logit(log_mstar))))))
    shares = rng.dirichlet(MIX_CONCENTRATION * np.array([c[4] for c in (*MERGER_CLASSES, STRIPPED)]))
    m_ex = fex * m0
    events: list[tuple[str, float, float, float]] = []
    stripped_share = float(rng.uniform(0.1, 0.6))
    got, rest = _draw_class(rng, m0, m_ex * shares[-1], STRIPPED, last=False, stripped_share=stripped_share)
    events += [("stripped", *e) for e in got]
    carry = rest
    for k, cls in enumerate(MERGER_CLASSES):
        got, carry = _draw_class(rng, m0, m_ex * shares[k] + carry, cls, last=k == len(MERGER_CLASSES) - 1)
        events += [(cls[0], *e) for e in got]
    spin = np.asarray(spin, dtype=np.float64)
    sats = []
    for kind, mass, mu, z in events:
        infall = float(lookback_of_redshift(z))
        coplanar = kind in ("major", "minor") and z < 1.5 and rng.uniform() < COPLANAR_CHANCE
        axis = spin + rng.normal(0.0, 0.2, 3) if coplanar else rng.normal(size=3)
        depth = DEPOSIT_SCALE * max(mu, 1e-3) ** -0.3 * (1.6 if kind == "stripped" else 1.0) / (1.0 + z) ** 0.75
        sats.append(
            Satellite(
                kind=kind,
                log_mass=float(np.log10(mass)),
                mass_ratio=float(mu),
                infall_gyr=infall,
                start_gyr=float(lookback_of_redshift(rng.uniform(3.5, 8.0))),
                sfh_shape=float(rng.lognormal(0.0, 0.5)),
                z_offset=float(rng.normal(0.0, MZR_SCATTER_DEX)),
                axis=_unit(axis),
                eccentricity=float(rng.uniform(0.3, 0.95)),
                radius_kpc=float(depth * r_ref_kpc * rng.lognormal(0.0, 0.25)),
                coplanar=bool(coplanar),
            )
        )
    return fex, tuple(sats)
