"""Adaptive smoothing of the maps: the fast kernel against a slow per-particle implementation,
mass conservation, the k-NN radius estimate, the few-stars fallback and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

from exsitu.io import InputError
from exsitu.projection import MASK_FLOOR, Z_FLOOR, project
from exsitu.sightlines import random_rotations
from exsitu.smoothing import (
    CLASS_RATIO,
    SIGMA_MAX_FOV,
    SIGMA_MIN_PX,
    SIGMA_PER_H,
    TRUNCATE,
    smoothing_lengths,
)
from exsitu.units import ZSUN


def slow_lengths(pos, k, cell, cells):
    """Per particle: grow the cube of cells about its cell until it holds k particles."""
    ijk = np.floor(pos / cell + cells / 2).astype(int)
    inside = np.all((ijk >= 0) & (ijk < cells), axis=1)
    h = np.full(len(pos), np.inf)
    for i in np.flatnonzero(inside):
        j = 0
        while True:
            lo, hi = np.maximum(ijk[i] - j, 0), np.minimum(ijk[i] + j, cells - 1)
            count = np.sum(np.all((ijk >= lo) & (ijk <= hi), axis=1))
            if count >= k:
                rho = count / (np.prod(hi - lo + 1) * cell**3)
                h[i] = (3 * k / (4 * np.pi * rho)) ** (1 / 3)
                break
            if j >= cells - 1:
                break
            j = min(max(j + 1, round(j * np.sqrt(2))), cells - 1)
    return h


def slow_adaptive_maps(pos, vel, mass, age, z, ex, rot, fov, p, k):
    """Per particle: its Gaussian (or its pixel alone) added to a big canvas, then cropped."""
    cells = min(2 * p, 128)
    h = slow_lengths(pos, k, 2 * fov / cells, cells) if len(pos) >= k else np.zeros(len(pos))
    n_classes = int(np.ceil(np.log(SIGMA_MAX_FOV * p / SIGMA_MIN_PX) / np.log(CLASS_RATIO) - 1e-9)) + 1
    widths = [SIGMA_MIN_PX * CLASS_RATIO**c for c in range(n_classes)]
    sigma = SIGMA_PER_H * h * p / fov
    margin = 4 * p
    canvas = np.zeros((6, p + 2 * margin, p + 2 * margin))
    x, y, v = pos @ rot[0], pos @ rot[1], vel @ rot[2]
    for i in range(len(pos)):
        ix, iy = int(np.floor(x[i] * (p / fov) + p / 2)), int(np.floor(y[i] * (p / fov) + p / 2))
        if len(pos) < k:
            c = 0  # fewer stars than neighbours: the smallest Gaussian
        elif sigma[i] < SIGMA_MIN_PX / np.sqrt(CLASS_RATIO):
            c = None  # point kernel
        else:
            c = min(int(np.floor(np.log(sigma[i] / SIGMA_MIN_PX) / np.log(CLASS_RATIO) + 0.5)), n_classes - 1)
        if c is None:
            taps, r = np.ones((1, 1)), 0
        else:
            r = int(np.ceil(TRUNCATE * widths[c] - 1e-9))
            t = np.exp(-0.5 * (np.arange(-r, r + 1) / widths[c]) ** 2)
            taps = np.outer(t, t) / t.sum() ** 2
        if not (-margin + r <= ix < p + margin - r and -margin + r <= iy < p + margin - r):
            continue  # its kernel cannot reach the field
        m = mass[i]
        w = [m, m * v[i], m * v[i] ** 2, m * age[i], m * z[i], m * ex[i]]
        for q in range(6):
            canvas[q, margin + iy - r : margin + iy + r + 1, margin + ix - r : margin + ix + r + 1] += w[q] * taps
    s = canvas[:, margin : margin + p, margin : margin + p]
    mask = s[0] > MASK_FLOOR * mass.mean()
    out = np.zeros((6, p, p))
    sm = s[0][mask]
    vmean = s[1][mask] / sm
    out[0][mask] = np.log10(sm / (fov / p) ** 2)
    out[1][mask] = vmean
    out[2][mask] = np.sqrt(np.maximum(s[2][mask] / sm - vmean**2, 0))
    out[3][mask] = s[3][mask] / sm
    out[4][mask] = np.log10(np.maximum(s[4][mask] / sm, Z_FLOOR) / ZSUN)
    out[5][mask] = s[5][mask] / sm
    return out, mask


def assert_maps_close(fast: np.ndarray, slow: np.ndarray) -> None:
    """Within float32 and FFT rounding. The dispersion is the root of a difference of moments, so
    a pixel whose true spread is ~0 (one particle's kernel) shows sqrt(rounding): 0.01 km/s."""
    np.testing.assert_allclose(np.delete(fast, 2, axis=0), np.delete(slow, 2, axis=0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fast[2], slow[2], rtol=1e-5, atol=1e-2)


def galaxy(n: int, seed: int, spread_kpc: float = 3.0) -> dict[str, np.ndarray]:
    """A dense clump, a looser one and a sparse halo: every kernel class gets particles."""
    rng = np.random.default_rng(seed)
    sizes = [n // 4, n // 4, n - 2 * (n // 4)]
    scale = np.repeat([0.3, 1.0, 3.0], sizes)[:, None] * spread_kpc / 3.0
    centre = np.repeat([[1.0, 0.5, 0.0], [-2.0, 1.0, 0.5], [0.0, 0.0, 0.0]], sizes, axis=0)
    return {
        "pos": centre * spread_kpc / 3.0 + rng.normal(0, 1, (n, 3)) * scale,
        "vel": rng.normal(0, 80.0, (n, 3)) + [0, 120.0, 0],
        "mass": rng.uniform(1e5, 3e5, n),
        "age": rng.uniform(0.5, 12.0, n),
        "metallicity": ZSUN * 10 ** rng.normal(0, 0.3, n),
        "exsitu_flag": rng.uniform(size=n) < 0.4,
    }


def test_fast_kernel_matches_the_per_particle_loop() -> None:
    g = galaxy(600, seed=1)
    rotations = random_rotations(np.random.default_rng(2), 2)
    fov, p, k = 16.0, 16, 8
    cond, ex, mask = project(**g, rotations=rotations, fov_kpc=fov, npix=p, neighbours=k)
    assert cond.shape == (2, 5, p, p) and ex.shape == (2, 1, p, p) and mask.shape == (2, 1, p, p)
    assert cond.dtype == np.float32 and ex.dtype == np.float32 and mask.dtype == bool
    for j, rot in enumerate(rotations):
        ref, ref_mask = slow_adaptive_maps(*g.values(), rot, fov, p, k)
        np.testing.assert_array_equal(mask[j, 0], ref_mask)
        assert_maps_close(cond[j], ref[:5])
        np.testing.assert_allclose(ex[j, 0], ref[5], atol=1e-6)
    assert np.all(cond[~np.repeat(mask, 5, axis=1)] == 0) and np.all(ex[~mask] == 0)
    # The maps are fields: smoothing fills pixels the binned maps leave empty.
    _, _, binned = project(**g, rotations=rotations, fov_kpc=fov, npix=p, smoothing="none")
    assert mask.sum() > binned.sum() and np.all(mask[binned])


def test_grid_lengths_match_the_slow_cube_search_and_track_the_knn_distance() -> None:
    pos = galaxy(500, seed=3)["pos"]
    h = smoothing_lengths(pos, 16, 0.5, 24)
    np.testing.assert_allclose(h, slow_lengths(pos, 16, 0.5, 24), rtol=1e-12)
    assert np.isinf(h).any() and np.isfinite(h).mean() > 0.8  # the halo reaches past the 12 kpc grid
    # Against the exact distance to the 16th neighbour (itself counted, as in the cube counts).
    big = galaxy(4000, seed=4)["pos"]
    est = smoothing_lengths(big, 16, 0.5, 48)
    exact = cKDTree(big).query(big, k=[16])[0][:, 0]
    ratio = np.log10(est / exact)[np.isfinite(est)]
    assert abs(np.median(ratio)) < 0.1 and np.percentile(np.abs(ratio), 68) < 0.15


def test_mass_is_conserved_when_every_kernel_ends_inside_the_field() -> None:
    g = galaxy(2000, seed=5, spread_kpc=1.0)
    assert np.abs(g["pos"]).max() < 7.0  # the widest kernel (3 x fov/8 = 22.5 kpc) still ends inside +-30
    fov, p = 60.0, 32
    cond, _, mask = project(**g, rotations=random_rotations(np.random.default_rng(6), 3), fov_kpc=fov, npix=p)
    for j in range(3):
        total = np.sum(10.0 ** cond[j, 0][mask[j, 0]].astype(np.float64)) * (fov / p) ** 2
        assert total == pytest.approx(g["mass"].sum(), rel=1e-5)  # float32 maps


def test_few_stars_get_the_minimum_kernel_and_a_warning(caplog) -> None:
    g = galaxy(12, seed=7)
    rot = np.eye(3)[None]
    with caplog.at_level(logging.WARNING, logger="exsitu.smoothing"):
        cond, _ex, mask = project(**g, rotations=rot, fov_kpc=30.0, npix=16, neighbours=32)
    assert "12 star particles, fewer than the 32 neighbours" in caplog.text
    ref, ref_mask = slow_adaptive_maps(*g.values(), rot[0], 30.0, 16, 32)
    np.testing.assert_array_equal(mask[0, 0], ref_mask)
    assert_maps_close(cond[0], ref[:5])
    # The minimum kernel (sigma 0.5 pixel, radius 2) reaches 2 pixels beyond a particle's pixel.
    _, _, binned = project(**g, rotations=rot, fov_kpc=30.0, npix=16, smoothing="none")
    reach = binary_dilation(binned[0, 0], np.ones((5, 5), bool))
    assert np.all(reach[mask[0, 0]]) and mask.sum() > binned.sum()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"smoothing": "gaussian"}, "maps.smoothing"),
        ({"smoothing": None}, "maps.smoothing"),
        ({"neighbours": 0}, "maps.kernel_neighbours"),
        ({"neighbours": -4}, "maps.kernel_neighbours"),
        ({"neighbours": 2.5}, "maps.kernel_neighbours"),
    ],
)
def test_bad_options_are_one_clear_input_error(options, key) -> None:
    g = galaxy(50, seed=8)
    with pytest.raises(InputError, match=key):
        project(**g, rotations=np.eye(3)[None], fov_kpc=10.0, npix=8, **options)
