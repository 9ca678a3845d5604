"""IllustrisTNG code units -> physical units, and the simulation's own cosmology.

TNG stores comoving lengths in ckpc/h, velocities as km/s * sqrt(a) (Gadget's internal
velocity), masses in 1e10 Msun/h and stellar birth times as the scale factor at birth.
Every conversion the data stages need lives here so that the mock writer (which goes the
other way) and the readers agree by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from astropy.cosmology import LambdaCDM

ZSUN = 0.0127  # TNG's solar metallicity (mass fraction)
MASS_UNIT_MSUN = 1.0e10  # TNG mass unit is 1e10 Msun/h

# Header attributes every TNG snapshot / group catalogue carries and our readers use.
COSMOLOGY_KEYS = ("Time", "HubbleParam", "Omega0", "OmegaLambda", "BoxSize")


def length_to_physical_kpc(x: np.ndarray, a: float, h: float) -> np.ndarray:
    """Comoving ckpc/h -> physical kpc."""
    return np.asarray(x, dtype=np.float64) * (a / h)


def length_to_code(x_kpc: np.ndarray, a: float, h: float) -> np.ndarray:
    """Physical kpc -> comoving ckpc/h (inverse of :func:`length_to_physical_kpc`)."""
    return np.asarray(x_kpc, dtype=np.float64) * (h / a)


def velocity_to_peculiar(v: np.ndarray, a: float) -> np.ndarray:
    """Snapshot particle velocity [km/s * sqrt(a)] -> peculiar velocity [km/s]."""
    return np.asarray(v, dtype=np.float64) * np.sqrt(a)


def velocity_to_code(v_kms: np.ndarray, a: float) -> np.ndarray:
    """Peculiar velocity [km/s] -> snapshot particle velocity (stored as v / sqrt(a))."""
    return np.asarray(v_kms, dtype=np.float64) / np.sqrt(a)


def mass_to_msun(m: np.ndarray, h: float) -> np.ndarray:
    """Code mass [1e10 Msun/h] -> Msun."""
    return np.asarray(m, dtype=np.float64) * (MASS_UNIT_MSUN / h)


def mass_to_code(m_msun: np.ndarray, h: float) -> np.ndarray:
    """Msun -> code mass [1e10 Msun/h]."""
    return np.asarray(m_msun, dtype=np.float64) * (h / MASS_UNIT_MSUN)


def wrap_periodic(dx: np.ndarray, box: float) -> np.ndarray:
    """Separations (any length unit) folded into [-box/2, box/2): the nearest periodic image."""
    dx = np.asarray(dx, dtype=np.float64)
    return dx - box * np.floor(dx / box + 0.5)


def cosmology(header: Mapping[str, Any]) -> LambdaCDM:
    """The simulation's cosmology from a snapshot/group Header (HubbleParam, Omega0, OmegaLambda)."""
    return _cosmology(float(header["HubbleParam"]), float(header["Omega0"]), float(header["OmegaLambda"]))


@functools.cache
def _cosmology(h: float, om0: float, ol0: float) -> LambdaCDM:
    """One (immutable) astropy cosmology per parameter set: building one costs ~20 ms (its critical density goes
    through astropy's unit composition), and the tag stage asks once per galaxy, 6 of its 10 s a shard."""
    # imported here, not at the top: astropy.cosmology costs ~0.8 s of `exsitu predict`'s start-up
    from astropy.cosmology import FlatLambdaCDM, LambdaCDM

    if abs(om0 + ol0 - 1.0) < 1e-6:
        return FlatLambdaCDM(H0=100.0 * h, Om0=om0)
    return LambdaCDM(H0=100.0 * h, Om0=om0, Ode0=ol0)


#: IllustrisTNG's cosmological parameters, as a snapshot Header spells them: flat LambdaCDM,
#: Planck 2015 (Planck Collaboration XIII 2016, as used by Nelson et al. 2019, Comput. Astrophys.
#: Cosmol. 6, 2). The one definition: the mock universe writes these into its headers.
TNG_HEADER: dict[str, float] = {"HubbleParam": 0.6774, "Omega0": 0.3089, "OmegaLambda": 0.6911}


@functools.cache
def tng_cosmology() -> LambdaCDM:
    """IllustrisTNG's cosmology (:data:`TNG_HEADER`: h = 0.6774, Omega_m = 0.3089, flat).

    Observed angles and simulated lengths are converted with it, so both share one length scale.
    """
    return cosmology(TNG_HEADER)


def _age_table(cosmo: LambdaCDM, n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(scale factor, cosmic time [Gyr]) on a log grid; t(a) is smooth, so interpolation is exact enough."""
    a = np.geomspace(1e-3, 1.0, n)
    return a, cosmo.age(1.0 / a - 1.0).to_value("Gyr")


def stellar_age_gyr(a_birth: np.ndarray, a_now: float, cosmo: LambdaCDM) -> np.ndarray:
    """Age [Gyr] at scale factor ``a_now`` of stars born at scale factor ``a_birth`` (> 0)."""
    a_grid, t_grid = _age_table(cosmo)
    t_now = float(cosmo.age(1.0 / a_now - 1.0).to_value("Gyr"))
    return t_now - np.interp(np.asarray(a_birth, dtype=np.float64), a_grid, t_grid)


def birth_scale_factor(age_gyr: np.ndarray, a_now: float, cosmo: LambdaCDM) -> np.ndarray:
    """Scale factor at birth of stars that are ``age_gyr`` old at ``a_now`` (inverse of the above)."""
    a_grid, t_grid = _age_table(cosmo)
    t_now = float(cosmo.age(1.0 / a_now - 1.0).to_value("Gyr"))
    return np.interp(t_now - np.asarray(age_gyr, dtype=np.float64), t_grid, a_grid)
