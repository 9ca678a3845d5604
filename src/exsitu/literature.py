"""Published relations of galaxy and dark-halo physics, and the real TNG100 galaxy population.

The mock universe (:mod:`exsitu.mock`) is built from these relations, and the relations stage
(:mod:`exsitu.relations`) checks simulated galaxies against them; keeping them here, apart from
the mock generator, means that measuring a real TNG run does not depend on the mock.

- Cosmic time in IllustrisTNG's cosmology (:func:`exsitu.units.tng_cosmology`), tabulated.
- Dark haloes: the stellar-to-halo mass relation (Kravtsov, Vikhlinin & Meshcheryakov 2018 at
  z = 0, evolved with Behroozi, Wechsler & Conroy 2013), R200, concentrations (Dutton & Maccio
  2014), mean mass growth and merger rates (Fakhouri, Ma & Boylan-Kolchin 2010), satellite merging
  times by dynamical friction (Boylan-Kolchin, Ma & Quataert 2008).
- Stellar populations: the stellar mass-metallicity relation (Gallazzi et al. 2005; Kirby et al.
  2013) and its evolution (Ma et al. 2016), the star-forming main sequence (Speagle et al. 2014),
  satellite quenching after infall (Wetzel et al. 2013).
- Structure: galaxy sizes (Kravtsov 2013; Shen et al. 2003) and the central velocity dispersion
  of quiescent galaxies (Zahid et al. 2016).
- The TNG100-1 galaxy population at z = 0 (:func:`tng100_population`), shipped as
  ``exsitu/data/tng100_population.json`` with its source.

Units: Msun, kpc, km/s, Gyr (lookback times unless named otherwise), metallicity in dex relative
to solar; ``log_`` means log10.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np

from exsitu.units import tng_cosmology

HUBBLE_TIME_UNIT_GYR = 977.792  # 1 / (100 km/s/Mpc) in Gyr: H0^-1 = 977.792 / H0[km/s/Mpc] Gyr
G_KPC = 4.30091e-6  # gravitational constant [kpc (km/s)^2 / Msun]


# --- cosmic time ---------------------------------------------------------------------------------


def cosmic_time_gyr(z: np.ndarray | float) -> np.ndarray:
    """Age of the Universe [Gyr] at redshift ``z`` in TNG's flat LambdaCDM without radiation, analytic:
    t = 2 / (3 H0 sqrt(OL)) asinh(sqrt(OL / Om) (1 + z)^-1.5)."""
    cosmo = tng_cosmology()
    om, ol = float(cosmo.Om0), float(cosmo.Ode0)
    x = np.sqrt(ol / om) * (1.0 + np.asarray(z, dtype=np.float64)) ** -1.5
    return 2.0 * HUBBLE_TIME_UNIT_GYR / (3.0 * cosmo.H0.value * np.sqrt(ol)) * np.arcsinh(x)


@functools.cache
def age_of_universe_gyr() -> float:
    """Age of the Universe today [Gyr] in TNG's cosmology."""
    return float(cosmic_time_gyr(0.0))


def lookback_of_redshift(z: np.ndarray | float) -> np.ndarray:
    """Lookback time [Gyr] to redshift ``z``."""
    return age_of_universe_gyr() - cosmic_time_gyr(z)


def redshift_at_lookback(lookback_gyr: np.ndarray | float) -> np.ndarray:
    """Redshift at ``lookback_gyr`` before z = 0 (inverse of :func:`lookback_of_redshift`); lookbacks are clipped
    to 13.5 Gyr."""
    cosmo = tng_cosmology()
    om, ol = float(cosmo.Om0), float(cosmo.Ode0)
    t = age_of_universe_gyr() - np.minimum(np.asarray(lookback_gyr, dtype=np.float64), 13.5)
    x = np.sinh(1.5 * cosmo.H0.value * np.sqrt(ol) * t / HUBBLE_TIME_UNIT_GYR)
    return (x / np.sqrt(ol / om)) ** (-2.0 / 3.0) - 1.0


def efunc(z: np.ndarray | float) -> np.ndarray:
    """E(z) = H(z) / H0 of TNG's flat LambdaCDM (radiation neglected, as in TNG's initial conditions)."""
    cosmo = tng_cosmology()
    return np.sqrt(cosmo.Om0 * (1.0 + np.asarray(z, dtype=np.float64)) ** 3 + cosmo.Ode0)


def hubble_gyr(z: np.ndarray | float) -> np.ndarray:
    """Hubble time 1 / H(z) [Gyr]."""
    return HUBBLE_TIME_UNIT_GYR / (tng_cosmology().H0.value * efunc(z))


# --- dark haloes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShmrParameters:
    """z = 0 parameters of a stellar-to-halo mass relation in the form of Behroozi, Wechsler & Conroy 2013
    (ApJ 770, 57, eqs. 3-4): log10 M1 [Msun], log10 epsilon, alpha (below M1 the relation goes as M200^-alpha),
    delta and gamma (the massive end)."""

    log_m1: float
    log_eps: float
    alpha: float
    delta: float
    gamma: float


#: Kravtsov, Vikhlinin & Meshcheryakov 2018 (Astron. Lett. 44, 8; M200c), the mock's relation: it counts the
#: extended light of massive galaxies as TNG's bound stellar mass does.
KRAVTSOV_2018 = ShmrParameters(log_m1=11.35, log_eps=-1.642, alpha=-1.779, delta=4.394, gamma=0.547)
#: Behroozi et al. 2013 at z = 0 (Sect. 5): a shallower dwarf slope; ``benchmarks/bench_population.py --shmr``
#: measures how much of the low-mass ex-situ fraction the slope sets.
BEHROOZI_2013 = ShmrParameters(log_m1=11.514, log_eps=-1.777, alpha=-1.412, delta=3.508, gamma=0.316)


def log_mstar_of_halo(
    log_mhalo: np.ndarray | float, z: np.ndarray | float = 0.0, shmr: ShmrParameters = KRAVTSOV_2018
) -> np.ndarray:
    """Median log10 M* [Msun] of the central galaxy of a halo of log10 M200 [Msun] at redshift ``z``.

    The functional form of Behroozi, Wechsler & Conroy 2013 (ApJ 770, 57, eqs. 3-4) with the z = 0
    parameters ``shmr`` (default :data:`KRAVTSOV_2018`) and the redshift evolution of every parameter
    from Behroozi et al. 2013 (Sect. 5).
    """
    z = np.asarray(z, dtype=np.float64)
    a = 1.0 / (1.0 + z)
    nu = np.exp(-4.0 * a**2)
    log_m1 = shmr.log_m1 + (-1.793 * (a - 1.0) - 0.251 * z) * nu
    log_eps = shmr.log_eps + (-0.006 * (a - 1.0)) * nu - 0.119 * (a - 1.0)
    alpha = shmr.alpha + 0.731 * (a - 1.0) * nu
    delta = shmr.delta + (2.608 * (a - 1.0) - 0.043 * z) * nu
    gamma = shmr.gamma + (1.319 * (a - 1.0) + 0.279 * z) * nu

    def f(x: np.ndarray) -> np.ndarray:
        return -np.log10(10 ** (alpha * x) + 1.0) + delta * np.log10(1.0 + np.exp(x)) ** gamma / (
            1.0 + np.exp(np.minimum(10.0**-x, 700.0))
        )

    x = np.asarray(log_mhalo, dtype=np.float64) - log_m1
    return log_eps + log_m1 + f(x) - f(np.zeros_like(x))


def log_halo_of_mstar(log_mstar: np.ndarray | float) -> np.ndarray:
    """log10 M200 [Msun] of the halo whose median central has ``log_mstar`` at z = 0 (inverse SHMR)."""
    grid = np.linspace(10.0, 15.5, 600)
    return np.interp(np.asarray(log_mstar, dtype=np.float64), log_mstar_of_halo(grid), grid)


def r200_kpc(log_mhalo: np.ndarray | float, z: np.ndarray | float = 0.0) -> np.ndarray:
    """Physical radius [kpc] enclosing 200 times the critical density at ``z`` around a halo of ``log_mhalo``."""
    cosmo = tng_cosmology()
    hubble = cosmo.H0.value * efunc(z) / 1000.0  # km/s/kpc
    rho_crit = 3.0 * hubble**2 / (8.0 * np.pi * G_KPC)  # Msun/kpc^3
    return (3.0 * 10 ** np.asarray(log_mhalo, dtype=np.float64) / (4.0 * np.pi * 200.0 * rho_crit)) ** (1.0 / 3.0)


def concentration(log_mhalo: float) -> float:
    """NFW concentration c200 at z = 0 (Dutton & Maccio 2014, MNRAS 441, 3359)."""
    h = tng_cosmology().H0.value / 100.0
    return float(10 ** (0.905 - 0.101 * (log_mhalo - 12.0 + np.log10(h))))


#: Galaxy 3D half-mass radius over R200 (Kravtsov 2013, ApJ 764, L31; scatter ~0.2 dex).
SIZE_TO_R200 = 0.015


def halo_growth_rate(m_halo: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean mass accretion rate [Msun/Gyr] of haloes of ``m_halo`` [Msun] at ``z``.

    Fakhouri, Ma & Boylan-Kolchin 2010 (MNRAS 406, 2267), eq. 2:
    46.1 Msun/yr (M / 1e12 Msun)^1.1 (1 + 1.11 z) E(z).
    """
    z = np.asarray(z, dtype=np.float64)
    return 46.1e9 * (np.asarray(m_halo) / 1e12) ** 1.1 * (1.0 + 1.11 * z) * efunc(z)


#: Fakhouri et al. 2010, eq. 1: A, alpha, beta, xi_tilde, gamma, eta.
MERGER_RATE = (0.0104, 0.133, -1.995, 9.72e-3, 0.263, 0.0993)


def halo_merger_rate(m_halo: np.ndarray | float, xi: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    """Mergers per halo per unit redshift per unit halo mass ratio ``xi`` (< 1) for descendants of ``m_halo``.

    dN/dxi/dz = A (M / 1e12 Msun)^alpha xi^beta exp[(xi / xi_tilde)^gamma] (1 + z)^eta
    (Fakhouri, Ma & Boylan-Kolchin 2010, eq. 1; fitted over 1e-5 < xi < 1, 0 < z < 6).
    """
    amp, alpha, beta, xi_t, gamma, eta = MERGER_RATE
    xi = np.asarray(xi, dtype=np.float64)
    return (
        amp
        * (np.asarray(m_halo) / 1e12) ** alpha
        * xi**beta
        * np.exp((xi / xi_t) ** gamma)
        * (1.0 + np.asarray(z, dtype=np.float64)) ** eta
    )


def merging_time_gyr(
    xi: np.ndarray, z: np.ndarray, circularity: np.ndarray, orbit_energy_radius: np.ndarray
) -> np.ndarray:
    """Time [Gyr] from infall at ``z`` to coalescence of a satellite of halo mass ratio ``xi`` (< 1).

    Boylan-Kolchin, Ma & Quataert 2008 (MNRAS 383, 93), eq. 5 with A = 0.216, b = 1.3, c = 1.9,
    d = 1: t / t_dyn = A (1/xi)^b / ln(1 + 1/xi) exp(c circularity) (r_c / r_vir)^d, and
    t_dyn = r_vir / V_vir = 0.1 / H(z).
    """
    inverse = 1.0 / np.asarray(xi, dtype=np.float64)
    ratio = 0.216 * inverse**1.3 / np.log1p(inverse) * np.exp(1.9 * circularity) * orbit_energy_radius
    return ratio * 0.1 * hubble_gyr(z)


# --- stellar populations -------------------------------------------------------------------------

# Stellar mass-metallicity relation at z = 0, log10(Z*/Zsun) against log10(M*/Msun): Kirby et al. 2013
# (ApJ 779, 102; [Fe/H] = -1.69 + 0.30 log(M*/1e6 Msun), +0.2 dex for alpha enhancement) below 1e9 Msun,
# the medians of Gallazzi et al. 2005 (MNRAS 362, 41, Table 2) above.
MZR_LOG_MASS = np.array([5.0, 6.0, 7.0, 8.0, 8.9, 9.5, 9.9, 10.1, 10.3, 10.5, 10.7, 10.9, 11.1, 11.3, 11.5, 11.9, 12.5])
MZR_LOG_Z = np.array(
    [-1.79, -1.49, -1.19, -0.89, -0.6, -0.6, -0.41, -0.23, -0.11, -0.01, 0.04, 0.07, 0.1, 0.12, 0.13, 0.15, 0.16]
)
MZR_SCATTER_DEX = 0.15  # galaxy-to-galaxy scatter about the relation (Gallazzi et al. 2005; Kirby et al. 2013)


def stellar_metallicity(log_mstar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean log10(Z*/Zsun) of a galaxy of ``log_mstar`` at redshift ``z``.

    The z = 0 relation (Kirby et al. 2013 + Gallazzi et al. 2005) shifted by the evolution of the
    stellar mass-metallicity relation in the FIRE simulations, 0.67 (exp(-z/2) - 1) dex (Ma et al.
    2016, MNRAS 456, 2140).
    """
    z = np.asarray(z, dtype=np.float64)
    return np.interp(log_mstar, MZR_LOG_MASS, MZR_LOG_Z) + 0.67 * (np.exp(-0.5 * z) - 1.0)


def main_sequence_ssfr(log_mstar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Specific star formation rate [1/Gyr] of star-forming galaxies of ``log_mstar`` at ``z``.

    Speagle et al. 2014 (ApJS 214, 15), eq. 28: log SFR = (0.84 - 0.026 t) log M* - (6.51 - 0.11 t),
    t the age of the Universe [Gyr].
    """
    t = age_of_universe_gyr() - lookback_of_redshift(z)
    log_m = np.asarray(log_mstar, dtype=np.float64)
    log_sfr = (0.84 - 0.026 * t) * log_m - (6.51 - 0.11 * t)  # Msun/yr
    return 10 ** (log_sfr - log_m) * 1e9


def satellite_quenching_delay_gyr(log_mstar: np.ndarray) -> np.ndarray:
    """Time [Gyr] a star-forming satellite keeps forming stars after infall before it quenches.

    Wetzel et al. 2013 (MNRAS 432, 336): "delayed-then-rapid" quenching, SFR unaffected for 2-4 Gyr
    after infall (longer for less massive satellites), then fading with an e-folding time < 0.8 Gyr.
    A linear fit to their delay times: 4.4 Gyr at 1e9 Msun to 2.4 Gyr at 1e11 Msun.
    """
    return np.clip(4.4 - 1.0 * (np.asarray(log_mstar, dtype=np.float64) - 9.0), 1.5, 5.0)


# --- structure and kinematics --------------------------------------------------------------------


def shen_sizes_kpc(log_mstar: np.ndarray) -> dict[str, np.ndarray]:
    """3D half-light radii [kpc] of early and late types: Shen et al. 2003 (MNRAS 343, 978, eqs. 17-18)
    deprojected as r_1/2 = 4/3 R_e (Wolf et al. 2010)."""
    m = 10 ** np.asarray(log_mstar, dtype=np.float64)
    return {
        "early": 4.0 / 3.0 * 2.88e-6 * m**0.56,
        "late": 4.0 / 3.0 * 0.1 * m**0.14 * (1.0 + m / 3.98e10) ** (0.39 - 0.14),
    }


def zahid_dispersion_kms(log_mstar: np.ndarray) -> np.ndarray:
    """Central velocity dispersion [km/s] of quiescent galaxies: sigma = 118 km/s (M*/10^10.26)^a, a = 0.403
    below and 0.293 above the break (Zahid et al. 2016, ApJ 832, 203); intrinsic scatter ~0.1 dex."""
    log_mstar = np.asarray(log_mstar, dtype=np.float64)
    return 118.0 * 10 ** (np.where(log_mstar < 10.26, 0.403, 0.293) * (log_mstar - 10.26))


# --- the TNG100-1 galaxy population ----------------------------------------------------------------


@functools.cache
def tng100_population() -> dict[str, Any]:
    """The TNG100-1 z = 0 galaxy population above 1e10 Msun, per stellar-mass bin (numbers and source).

    Keys: ``source`` (where the numbers come from), ``n_galaxies``, ``bins`` (list of dicts with
    ``log_mstar`` [lo, hi], ``n``, ``share``, ``fex_p16``, ``fex_median``, ``fex_p84``,
    ``rhalf_median_kpc``, ``rho_fex_rhalf``, ``central_share``) and ``satellites_vs_centrals`` (median
    f_ex of satellites and centrals in one mass range).
    """
    return json.loads(files("exsitu").joinpath("data", "tng100_population.json").read_text())
