"""Star particles of accreted satellites: their own populations, deposited by mass ratio and orbit.

Each satellite's stars formed in the satellite between ``start_gyr`` and ``quench_gyr`` (infall,
or later for a satellite that kept forming stars in the host's halo), with the metallicity of the
satellite at that time from the stellar mass-metallicity relation (so a massive satellite accreted
late is as metal rich as the host's own stars) and its internal gradient: the most bound stars are
the most metal rich and end up deepest in the host, the outskirts are stripped first and are
deposited farther out (Amorisco 2017, MNRAS 464, 2882). Where they end up follows particle
tagging (Cooper et al. 2010, MNRAS 406, 744): the debris of a satellite phase-mixes over a few
orbital periods at its deposition radius, so old and major-merger debris forms a smooth, hot,
slightly flattened and radially anisotropic spheroid, while recent minor debris is still coherent:
streams on low-eccentricity orbits, shells on radial ones (Amorisco 2015, MNRAS 450, 575; Hendel &
Johnston 2015, MNRAS 454, 2472). A satellite flagged ``coplanar`` settles into a thick, rotating
accreted disc in the host's disc plane (Abadi et al. 2003, ApJ 597, 21; Read et al. 2008, MNRAS 389, 1041).

Units: kpc, km/s, Msun, Gyr (lookback), metallicity as a mass fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from exsitu.literature import redshift_at_lookback
from exsitu.mock.assembly import Satellite, star_metallicities
from exsitu.mock.dynamics import Potential, frame, spheroid
from exsitu.mock.particles import Particles
from exsitu.units import ZSUN

KPC_PER_KMS_GYR = 0.9778  # 1 kpc / (1 km/s) in Gyr
MIXING_ORBITS = 4.0  # orbits after which debris is smooth at the maps' resolution
SATELLITE_GROWTH = (
    1.7  # a satellite's stellar mass grew as (1+z)^-1.7 before it stopped forming stars (Moster et al. 2013)
)
INTERNAL_SPREAD_DEX = 0.15  # metallicity spread inside a satellite at fixed formation time


def _gather(sats: Sequence[Satellite], name: str, idx: np.ndarray) -> np.ndarray:
    return np.array([getattr(s, name) for s in sats], dtype=np.float64)[idx]


def debris(
    rng: np.random.Generator,
    sats: Sequence[Satellite],
    counts: np.ndarray,
    lookback_gyr: float,
    pot: Potential,
    *,
    disc_axis: np.ndarray,
    disc_scale_kpc: float,
) -> Particles:
    """``counts[j]`` star particles of satellite ``sats[j]``, seen ``lookback_gyr`` before z=0 (masses left empty).

    Ages are z=0 lookback times; the caller shifts them to the snapshot. Only satellites whose stars
    arrived before ``lookback_gyr`` may be passed.
    """
    idx = np.repeat(np.arange(len(sats)), counts)
    n = idx.size
    if n == 0:
        return Particles(
            np.empty((0, 3)), np.empty((0, 3)), np.empty(0), np.empty(0), np.empty(0), np.empty(0, np.int8)
        )
    quench, start = _gather(sats, "quench_gyr", idx), _gather(sats, "start_gyr", idx)
    age = quench + (start - quench) * rng.uniform(size=n) ** _gather(sats, "sfh_shape", idx)
    z_form, z_quench = redshift_at_lookback(age), redshift_at_lookback(quench)
    log_m_end = _gather(sats, "log_mstar_sat", idx)
    log_m_form = log_m_end - SATELLITE_GROWTH * np.log10((1.0 + z_form) / (1.0 + z_quench))
    log_z = star_metallicities(log_m_end, z_quench, log_m_form, z_form, idx) + _gather(sats, "z_offset", idx)
    bound = rng.uniform(size=n)  # share of the satellite's stars more bound than this one
    log_z += _gather(sats, "z_gradient", idx) * (bound - 0.5) + rng.normal(0.0, INTERNAL_SPREAD_DEX, n)

    # Four binding classes (not one radius per star: each distinct radius costs a Jeans solution).
    radius = _gather(sats, "radius_kpc", idx) * (0.6 + 0.8 * (np.floor(4.0 * bound) + 0.5) / 4.0)
    axes = np.array([s.axis for s in sats])[idx]
    ecc = _gather(sats, "eccentricity", idx)
    v_dep = pot.circular_speed(radius)
    orbits = (_gather(sats, "arrival_gyr", idx) - lookback_gyr) * v_dep / (2.0 * np.pi * radius * KPC_PER_KMS_GYR)
    major = np.array([s.kind == "major" for s in sats])[idx]
    orbits = np.where(major, 3.0 * orbits, orbits)  # violent relaxation mixes major-merger debris fast
    coplanar = np.array([s.coplanar for s in sats])[idx]
    mixed = ~coplanar & (rng.uniform(size=n) < 1.0 - np.exp(-orbits / MIXING_ORBITS))
    stream = ~coplanar & ~mixed & (ecc < 0.75)
    shell = ~coplanar & ~mixed & ~stream

    pos, vel = np.empty((n, 3)), np.empty((n, 3))
    per_sat = rng.uniform(size=(len(sats), 3))  # per-satellite shape, rotation and orbital phase
    flat, spin, phase = per_sat[idx, 0], per_sat[idx, 1], 2.0 * np.pi * per_sat[idx, 2]
    pos[mixed], vel[mixed] = spheroid(
        rng,
        pot,
        radius[mixed] / 2.414,
        axes[mixed],
        0.6 + 0.35 * flat[mixed],
        rotation=np.where(major, 0.5, 0.3)[mixed] * spin[mixed],
        beta=0.3,
    )
    sigma_sat = np.clip(15.0 * (10**log_m_end / 1e9) ** 0.25, 5.0, 80.0)
    for mask, fn in ((stream, _stream), (shell, _shell)):
        if mask.any():
            pos[mask], vel[mask] = fn(
                rng, radius[mask], ecc[mask], axes[mask], phase=phase[mask], orbits=orbits[mask], v_c=v_dep[mask]
            )
            vel[mask] += rng.normal(size=(int(mask.sum()), 3)) * sigma_sat[mask, None]
    if coplanar.any():
        pos[coplanar], vel[coplanar] = _accreted_disc(rng, int(coplanar.sum()), pot, disc_axis, disc_scale_kpc)
    return Particles(pos, vel, np.empty(0), age, ZSUN * 10**log_z, np.zeros(n, np.int8))


def _orbit_frames(axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two in-plane unit vectors per orbit normal in ``axes``."""
    helper = np.where(np.abs(axes[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = np.cross(axes, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(axes, e1)


def _stream(
    rng: np.random.Generator,
    radius: np.ndarray,
    ecc: np.ndarray,
    axes: np.ndarray,
    *,
    phase: np.ndarray,
    orbits: np.ndarray,
    v_c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Tidal streams: stars spread in orbital phase along an eccentric orbit in a flat rotation curve.

    The phase spread grows with the orbits completed since infall; speeds conserve energy and
    angular momentum in the logarithmic potential of circular speed ``v_c``.
    """
    n = radius.size
    r_apo = 1.3 * radius
    r_peri = r_apo * (1.0 - ecc) / (1.0 + ecc)
    semi = 0.5 * (r_apo + r_peri)
    width = np.minimum(2.0 * np.pi, 0.3 + 1.5 * orbits)
    psi = phase + width * (rng.uniform(size=n) - 0.5)
    r = semi * (1.0 - ecc**2) / (1.0 + ecc * np.cos(psi)) * (1.0 + rng.normal(0.0, 0.05, n))
    e1, e2 = _orbit_frames(axes)
    rhat = np.cos(psi)[:, None] * e1 + np.sin(psi)[:, None] * e2
    that = -np.sin(psi)[:, None] * e1 + np.cos(psi)[:, None] * e2
    pos = r[:, None] * rhat + rng.normal(0.0, 0.04, n)[:, None] * r[:, None] * axes
    v_apo2 = 2.0 * v_c**2 * np.log(r_apo / r_peri) / np.maximum((r_apo / r_peri) ** 2 - 1.0, 1e-6)
    ang_mom = r_apo * np.sqrt(v_apo2)
    v2 = v_apo2 + 2.0 * v_c**2 * np.log(r_apo / r)
    v_t = ang_mom / r
    v_r = np.sqrt(np.maximum(v2 - v_t**2, 0.0)) * np.sign(np.sin(psi))
    return pos, v_r[:, None] * rhat + v_t[:, None] * that


def _shell(
    rng: np.random.Generator,
    radius: np.ndarray,
    ecc: np.ndarray,
    axes: np.ndarray,
    *,
    phase: np.ndarray,
    orbits: np.ndarray,
    v_c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Shells: debris of a radial orbit piles up near apocentre in caps with a sharp outer edge.

    Each completed orbit adds a shell, closer in and on alternating sides (Quinn 1984, ApJ 279, 596).
    """
    n = radius.size
    k = np.floor(rng.uniform(size=n) * (np.floor(orbits) + 1.0))  # shell number
    r_shell = 1.3 * radius * (1.0 + ecc) / 2.0 * 0.75**k
    side = np.where(k % 2 == 0, 1.0, -1.0)
    e1, e2 = _orbit_frames(axes)
    apo = side[:, None] * (np.cos(phase)[:, None] * e1 + np.sin(phase)[:, None] * e2)
    across = np.cross(axes, apo)
    t1, t2 = rng.normal(0.0, 0.5, n), rng.normal(0.0, 0.5, n)
    direction = (
        np.cos(t2)[:, None] * (np.cos(t1)[:, None] * apo + np.sin(t1)[:, None] * across) + np.sin(t2)[:, None] * axes
    )
    r = r_shell * (1.0 - np.abs(rng.normal(0.0, 0.06, n)))
    vel = rng.normal(size=(n, 3)) * (0.12 * v_c)[:, None]
    return r[:, None] * direction, vel


def _accreted_disc(
    rng: np.random.Generator, n: int, pot: Potential, axis: np.ndarray, disc_scale_kpc: float
) -> tuple[np.ndarray, np.ndarray]:
    """A thick, rotating, more extended disc of accreted stars in the host's disc plane."""
    r = rng.gamma(2.0, 1.5 * disc_scale_kpc, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    local = np.stack([r * np.cos(phi), r * np.sin(phi), rng.laplace(0.0, 0.3 * disc_scale_kpc, n)], axis=1)
    v_c = pot.circular_speed(r)
    v = np.stack([-0.8 * v_c * np.sin(phi), 0.8 * v_c * np.cos(phi), np.zeros(n)], axis=1)
    v += rng.normal(size=(n, 3)) * (0.3 * v_c)[:, None]
    rot = frame(axis)
    return local @ rot, v @ rot
