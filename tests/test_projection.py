"""The projection kernel against a slow, obvious per-pixel implementation, and its conventions."""

from __future__ import annotations

import numpy as np
import pytest

from exsitu.projection import Z_FLOOR, project
from exsitu.sightlines import random_rotations
from exsitu.units import ZSUN


def slow_maps(pos, vel, mass, age, z, ex, rot, fov, p):
    """Loop over pixels; every particle whose projected position falls in it counts."""
    x, y, v = pos @ rot[0], pos @ rot[1], vel @ rot[2]
    out = np.zeros((6, p, p))
    mask = np.zeros((p, p), bool)
    edges = -fov / 2 + np.arange(p + 1) * fov / p
    for iy in range(p):
        for ix in range(p):
            sel = (x >= edges[ix]) & (x < edges[ix + 1]) & (y >= edges[iy]) & (y < edges[iy + 1])
            if not sel.any():
                continue
            m = mass[sel]
            mean_v = np.average(v[sel], weights=m)
            out[:, iy, ix] = [
                np.log10(m.sum() / (fov / p) ** 2),
                mean_v,
                np.sqrt(np.average((v[sel] - mean_v) ** 2, weights=m)),
                np.average(age[sel], weights=m),
                np.log10(max(np.average(z[sel], weights=m), Z_FLOOR) / ZSUN),
                np.average(ex[sel], weights=m),
            ]
            mask[iy, ix] = True
    return out, mask


@pytest.fixture
def particles():
    rng = np.random.default_rng(3)
    n = 3000
    return {
        "pos": rng.normal(0, 4.0, (n, 3)),
        "vel": rng.normal(0, 100.0, (n, 3)) + [0, 150.0, 0],
        "mass": rng.uniform(1e5, 3e5, n),
        "age": rng.uniform(0.5, 12.0, n),
        "metallicity": ZSUN * 10 ** rng.normal(0, 0.3, n),
        "exsitu_flag": rng.uniform(size=n) < 0.4,
    }


def test_kernel_matches_the_slow_implementation(particles) -> None:
    rotations = random_rotations(np.random.default_rng(0), 3)
    fov, p = 20.0, 12
    cond, ex, mask = project(**particles, rotations=rotations, fov_kpc=fov, npix=p, smoothing="none")
    assert cond.shape == (3, 5, p, p) and ex.shape == (3, 1, p, p) and mask.shape == (3, 1, p, p)
    assert cond.dtype == np.float32 and ex.dtype == np.float32 and mask.dtype == bool
    for k, rot in enumerate(rotations):
        ref, ref_mask = slow_maps(*particles.values(), rot, fov, p)
        np.testing.assert_array_equal(mask[k, 0], ref_mask)
        np.testing.assert_allclose(cond[k], ref[:5], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(ex[k, 0], ref[5], atol=1e-6)
    assert not mask.all() and mask.any()
    assert np.all(cond[~np.repeat(mask, 5, axis=1)] == 0) and np.all(ex[~mask] == 0)


def test_pixel_convention_and_velocity_sign() -> None:
    # image x = sim y, image y = sim z, line of sight = sim x
    rot = np.array([[[0, 1, 0], [0, 0, 1], [1, 0, 0]]], float)
    pos = np.array([[5.0, -9.5, 0.5], [0.0, 9.99, 9.99], [0.0, 10.0, 0.0]])  # the last is outside
    vel = np.array([[30.0, 0, 0], [-40.0, 0, 0], [0.0, 0, 0]])
    one = np.ones(3)
    cond, ex, mask = project(pos, vel, one, one, one * ZSUN, np.array([1, 0, 0]), rot, 20.0, 20, smoothing="none")
    assert mask.sum() == 2
    assert mask[0, 0, 10, 0] and mask[0, 0, 19, 19]  # map[iy, ix]: x in [-10 + ix, -9 + ix)
    assert cond[0, 1, 10, 0] == pytest.approx(30.0) and cond[0, 1, 19, 19] == pytest.approx(-40.0)
    assert ex[0, 0, 10, 0] == 1.0 and ex[0, 0, 19, 19] == 0.0
    assert cond[0, 4, 10, 0] == pytest.approx(0.0, abs=1e-6)  # Z = Zsun -> log 0
    assert cond[0, 0, 10, 0] == pytest.approx(0.0)  # 1 Msun in a 1 kpc^2 pixel


def test_zero_metallicity_is_floored_not_minus_infinity(particles) -> None:
    particles["metallicity"][:] = 0.0
    cond, _, mask = project(**particles, rotations=np.eye(3)[None], fov_kpc=10.0, npix=8)
    assert np.all(np.isfinite(cond))
    assert np.allclose(cond[0, 4][mask[0, 0]], np.log10(Z_FLOOR / ZSUN))
