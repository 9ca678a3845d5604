"""Potential, velocity dispersions and density samplers for mock galaxies.

The potential is the galaxy's stellar components (each a Hernquist sphere: bulge, disc,
in-situ halo, each satellite's debris) plus an NFW dark halo. Dispersions
of pressure-supported tracers solve the spherical Jeans equation in that potential
(Binney & Tremaine 2008, Sect. 4.8). Units: kpc, km/s, Msun.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exsitu.literature import G_KPC, concentration, r200_kpc

JEANS_GRID = 160  # log-spaced radii per tracer scale, 1e-3 to 1e3 scale lengths


@dataclass(frozen=True)
class Potential:
    """Stellar Hernquist components (masses ``m_star`` [Msun], scales ``a_star`` [kpc]) plus an NFW halo."""

    m_star: np.ndarray
    a_star: np.ndarray
    log_mhalo: float

    def circular_speed(self, r: np.ndarray) -> np.ndarray:
        """Circular speed [km/s] at radius ``r`` [kpc]."""
        r = np.maximum(np.asarray(r, dtype=np.float64), 1e-3)
        m_stars = np.sum(self.m_star * r[..., None] ** 2 / (r[..., None] + self.a_star) ** 2, axis=-1)
        c = concentration(self.log_mhalo)
        x = r * c / r200_kpc(self.log_mhalo)
        m_dm = 10**self.log_mhalo * (np.log1p(x) - x / (1.0 + x)) / (np.log1p(c) - c / (1.0 + c))
        return np.sqrt(G_KPC * (m_stars + m_dm) / r)

    def hernquist_dispersion(self, r: np.ndarray, scale: np.ndarray, beta: float = 0.0) -> np.ndarray:
        """Radial velocity dispersion [km/s] at ``r`` [kpc] of Hernquist tracers of ``scale`` [kpc] (per particle).

        Solves the spherical Jeans equation with constant anisotropy ``beta`` in this potential,
        sigma_r^2(r) = r^(-2 beta) / rho(r) * integral_r^inf r'^(2 beta) rho(r') v_c^2(r') / r' dr'
        (Binney & Tremaine 2008, eq. 4.216), on a grid per distinct scale.
        """
        r = np.asarray(r, dtype=np.float64)
        scales, which = np.unique(np.asarray(scale, dtype=np.float64), return_inverse=True)
        x = np.geomspace(1e-3, 1e3, JEANS_GRID)
        rr = scales[:, None] * x  # (k, grid)
        weight = x ** (2.0 * beta) / (x * (1.0 + x) ** 3)  # r^(2 beta) rho, up to constants
        integrand = weight * self.circular_speed(rr) ** 2  # times dr / r = d ln r
        steps = 0.5 * (integrand[:, 1:] + integrand[:, :-1]) * np.diff(np.log(x))
        outer = np.concatenate([np.cumsum(steps[:, ::-1], axis=1)[:, ::-1], np.zeros((scales.size, 1))], axis=1)
        sigma2 = outer / weight
        xp = np.log(np.clip(r / scales[which], x[0], x[-1]))
        grid_index = np.interp(xp, np.log(x), np.arange(JEANS_GRID))
        lo = np.floor(grid_index).astype(int).clip(0, JEANS_GRID - 2)
        frac = grid_index - lo
        out = (1.0 - frac) * sigma2[which, lo] + frac * sigma2[which, lo + 1]
        return np.sqrt(np.maximum(out, 0.0))


def frame(axis: np.ndarray) -> np.ndarray:
    """Orthonormal rows (e1, e2, axis) with the unit vector ``axis`` the third row."""
    axis = np.asarray(axis, dtype=np.float64)
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(axis, e1), axis])


def hernquist_radii(rng: np.random.Generator, scale: np.ndarray, r_max_scales: float = 30.0) -> np.ndarray:
    """Radii of Hernquist spheres of ``scale`` (one per particle), truncated at ``r_max_scales`` scales.

    Inverse of M(<r)/M = r^2 / (r + a)^2; the half-mass radius is (1 + sqrt 2) a.
    """
    scale = np.asarray(scale, dtype=np.float64)
    s = np.sqrt(rng.uniform(0.0, (r_max_scales / (r_max_scales + 1.0)) ** 2, scale.size))
    return scale * s / (1.0 - s)


def directions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` isotropic unit vectors."""
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def spheroid(
    rng: np.random.Generator,
    pot: Potential,
    scale: np.ndarray,
    axes: np.ndarray,
    flattening: np.ndarray,
    *,
    rotation: np.ndarray,
    beta: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities of pressure-supported particles (one row per particle).

    Hernquist radii of ``scale`` [kpc], squashed along the per-particle unit ``axes`` by
    ``flattening`` (c/a); Jeans dispersions with anisotropy ``beta`` (radial sigma_r,
    tangential sigma_r sqrt(1 - beta)); mean rotation ``rotation`` x v_c about ``axes``, rising
    from zero at the centre.
    """
    n = scale.size
    r = hernquist_radii(rng, scale)
    pos = directions(rng, n) * r[:, None]
    along = np.sum(pos * axes, axis=1, keepdims=True)
    pos = pos - (1.0 - flattening[:, None]) * along * axes
    r = np.linalg.norm(pos, axis=1)
    rhat = pos / np.maximum(r, 1e-6)[:, None]
    sig_r = pot.hernquist_dispersion(r, scale, beta)
    vel = rng.normal(size=(n, 3)) * (sig_r * np.sqrt(1.0 - beta))[:, None]
    radial = np.sum(vel * rhat, axis=1)
    vel += (rng.normal(size=n) * sig_r - radial)[:, None] * rhat  # radial component gets sigma_r
    phi_hat = np.cross(axes, rhat)
    norm = np.linalg.norm(phi_hat, axis=1, keepdims=True)
    v_rot = rotation * pot.circular_speed(r) * r / (r + scale)
    vel += v_rot[:, None] * phi_hat / np.maximum(norm, 1e-6)
    return pos, vel
