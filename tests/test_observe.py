"""Mock IFU observations (exsitu.observe): moments not ratios, conservation, footprint, S/N, Voronoi, settings."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm

from exsitu.io import InputError
from exsitu.observe import (
    arcsec_per_kpc,
    convolve_psf,
    draw_redshifts,
    hexagon_mask,
    maps_from_moments,
    moments_from_maps,
    observe_maps,
    projected_half_mass_radius,
    snr_map,
    voronoi_bins,
)
from exsitu.regrid import PixelGrid, regrid_sum
from exsitu.settings import ObserveSettings

P, FOV, RPROJ = 32, 20.0, 5.0  # ideal field = output field (fov_rhalf 4 x R_proj 5 kpc)
V_LEFT, V_RIGHT, MASS_RATIO = 100.0, -100.0, 9.0
# Noise-free, unbinned, footprint-free observation at one redshift: only the PSF acts.
PRESET = ObserveSettings.from_config({})


def preset(**overrides) -> ObserveSettings:
    """The MaNGA preset with some settings changed."""
    return replace(PRESET, **overrides)


CLEAN = preset(
    redshift=(0.05, 0.05),
    psf_fwhm_arcsec=5.0,
    snr_at_re=1e9,
    min_snr=0.0,
    voronoi_snr=None,
    coverage_re=100.0,
    ifu_arcsec=None,
    sigma_inst_kms=0.0,
    age_error_dex=0.0,
    metallicity_error_dex=0.0,
)


def two_halves(n: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ideal maps of a uniform slab: x < 0 is 9x denser, moves at +100 km/s and is all ex-situ; x > 0 at -100 km/s."""
    left = np.arange(P) < P // 2
    cond = np.zeros((n, 5, P, P), np.float32)
    cond[:, 0] = np.where(left, math.log10(MASS_RATIO * 1e8), 8.0)
    cond[:, 1] = np.where(left, V_LEFT, V_RIGHT)
    cond[:, 2] = 50.0
    cond[:, 3] = np.where(left, 10.0, 2.0)
    cond[:, 4] = 0.0
    exsitu = np.broadcast_to(np.where(left, 1.0, 0.0), (n, 1, P, P)).astype(np.float32)
    return cond, exsitu, np.ones((n, 1, P, P), bool)


def disc(n: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ideal maps of a rotating exponential disc (scale length 3 kpc) with an ex-situ fraction rising outwards."""
    x, y = PixelGrid.square(P, FOV).centers()
    r = np.hypot(x, y)
    cond = np.zeros((n, 5, P, P), np.float32)
    cond[:, 0] = 9.0 - r / 3.0 / math.log(10)
    cond[:, 1] = 200.0 * np.tanh(x / 2.0)
    cond[:, 2] = 120.0 * np.exp(-r / 10)
    cond[:, 3] = 8.0 - 0.3 * r
    cond[:, 4] = -0.02 * r
    exsitu = np.broadcast_to(np.clip(r / 15, 0, 1), (n, 1, P, P)).astype(np.float32)
    return cond, exsitu, np.ones((n, 1, P, P), bool)


def observe(maps, settings: ObserveSettings, seed: int = 0):
    cond, exsitu, mask = maps
    n = cond.shape[0]
    return observe_maps(
        cond, exsitu, mask, np.full(n, FOV), np.full(n, RPROJ), fov_rhalf=4.0, settings=settings,
        rng=np.random.default_rng(seed),
    )  # fmt: skip


def test_velocity_is_the_ratio_of_convolved_moments_not_the_convolved_ratio():
    obs = observe(two_halves(), CLEAN)
    sigma_kpc = CLEAN.psf_fwhm_arcsec / 2.3548 / float(arcsec_per_kpc(0.05))
    x = np.array([-0.3125, 0.3125, 1.5625])  # output pixel centres of columns 15, 16, 18
    left, right = MASS_RATIO * norm.cdf(-x / sigma_kpc), norm.cdf(x / sigma_kpc)
    moment_ratio = (V_LEFT * left + V_RIGHT * right) / (left + right)
    convolved_ratio = V_LEFT * norm.cdf(-x / sigma_kpc) + V_RIGHT * norm.cdf(x / sigma_kpc)
    measured = obs.conditions[0, 1, P // 2, [15, 16, 18]]
    np.testing.assert_allclose(measured, moment_ratio, atol=3.0)
    assert np.all(np.abs(measured - convolved_ratio) > 40.0)
    # Age is mass-weighted the same way: the dense old side dominates the blurred boundary.
    assert obs.conditions[0, 3, P // 2, 16] > 6.0 + 1.0


def test_target_exsitu_map_stays_intrinsic():
    obs = observe(two_halves(), CLEAN)
    assert obs.mask.all()
    np.testing.assert_array_equal(obs.exsitu[0, 0, :, : P // 2], 1.0)
    np.testing.assert_array_equal(obs.exsitu[0, 0, :, P // 2 :], 0.0)
    assert obs.conditions[0, 1, P // 2, P // 2] > V_RIGHT + 100.0  # while the observed velocity is blurred


def test_moments_round_trip_and_psf_and_regrid_conserve_mass():
    cond, _, mask = disc(1)
    grid = PixelGrid.square(P, FOV)
    moments = moments_from_maps(cond[0], mask[0], grid.area)
    back, good = maps_from_moments(moments, grid.area)
    assert good.all()
    np.testing.assert_allclose(back, cond[0], atol=1e-4)
    # Spaxel grid padded beyond the PSF's reach: regridding then convolving keeps every Msun.
    spaxels = PixelGrid.square(90, 30.0)
    on_spaxels = regrid_sum(moments, grid, spaxels)
    blurred = convolve_psf(on_spaxels, 7.0)
    np.testing.assert_allclose(on_spaxels[0].sum(), moments[0].sum(), rtol=1e-12)
    np.testing.assert_allclose(blurred[0].sum(), moments[0].sum(), rtol=1e-10)
    assert blurred[0].max() < 0.9 * on_spaxels[0].max()  # it did blur


def test_hexagon_footprint_geometry():
    grid = PixelGrid.square(801, 4.0)
    x, y = grid.centers()
    inside = hexagon_mask(x, y, 1.5)
    np.testing.assert_allclose(inside.sum() * grid.area, 2 * math.sqrt(3) * 1.5**2, rtol=2e-3)  # area 2 sqrt(3) a^2
    assert hexagon_mask(np.array([1.49, 1.5 / math.cos(math.pi / 6) - 1e-3]), np.array([0.0, 0.0]), 1.5).all()
    assert not hexagon_mask(np.array([0.0, 1.5 / math.cos(math.pi / 6) + 1e-3]), np.array([1.51, 0.0]), 1.5).any()
    assert np.all(inside[np.hypot(x, y) < 1.5])


def test_observed_mask_lies_inside_the_footprint():
    obs = observe(disc(1), preset(redshift=(0.03, 0.03)))
    x, y = PixelGrid.square(P, 4.0 * RPROJ).centers()
    half_spaxel = 0.5 * 0.5 / float(arcsec_per_kpc(0.03))
    assert obs.mask[0, 0].any()
    assert not np.any(obs.mask[0, 0] & ~hexagon_mask(x, y, 1.5 * RPROJ + 2 * half_spaxel))
    assert obs.mask[0, 0][hexagon_mask(x, y, 1.5 * RPROJ - 2 * half_spaxel)].all()


def test_snr_is_monotone_in_surface_density_and_the_cut_shrinks_the_mask():
    sigma = np.geomspace(1e5, 1e10, 50)
    snr = snr_map(sigma, 1e8, 20.0)
    assert np.all(np.diff(snr) > 0)
    np.testing.assert_allclose(snr_map(np.array([1e8, 4e8]), 1e8, 20.0), [20.0, 40.0])
    loose = observe(disc(1), preset(voronoi_snr=None, min_snr=1.0))
    strict = observe(disc(1), preset(voronoi_snr=None, min_snr=25.0))
    assert strict.mask.sum() < loose.mask.sum()
    assert not np.any(strict.mask & ~loose.mask)
    # The surviving spaxels are the dense middle: the cut is a contour of surface density.
    r = np.hypot(*PixelGrid.square(P, 4.0 * RPROJ).centers())
    assert r[strict.mask[0, 0]].max() < r[loose.mask[0, 0] & ~strict.mask[0, 0]].min() + 1.0


def test_voronoi_bins_reach_the_target_snr():
    rng = np.random.default_rng(0)
    iy, ix = np.mgrid[:30, :30]
    snr = rng.uniform(1.0, 8.0, 900)
    strong = rng.choice(900, 20, replace=False)
    snr[strong] = rng.uniform(10.0, 20.0, 20)
    bins = voronoi_bins(ix.ravel().astype(float), iy.ravel().astype(float), 3.0 * snr**2, snr, 10.0)
    counts = np.bincount(bins)
    assert np.all(counts > 0)  # indices are 0..n_bins-1
    assert np.all(counts[bins[strong]] == 1)  # spaxels at the target stay alone
    bin_snr = np.sqrt(np.bincount(bins, snr**2))[counts > 1]
    assert 9.5 < np.median(bin_snr) < 11.5
    assert np.quantile(bin_snr, 0.1) > 7.0
    # Scattered faint spaxels that no compact bin can lift to the target are binned together.
    scattered = voronoi_bins(np.arange(20) * 3.0, np.zeros(20), np.full(20, 25.0), np.full(20, 5.0), 10.0)
    np.testing.assert_array_equal(scattered, 0)


def test_observation_is_deterministic_for_a_seed_and_bins_faint_spaxels():
    faint = preset(snr_at_re=6.0, redshift=(0.06, 0.1), ifu_arcsec=None)
    a, b, c = observe(disc(), faint, seed=3), observe(disc(), faint, seed=3), observe(disc(), faint, seed=4)
    for name in ("conditions", "exsitu", "mask", "redshift", "n_spaxels", "n_bins"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.conditions, c.conditions)
    assert a.conditions.dtype == np.float32 and a.mask.dtype == bool
    assert np.all(a.n_bins < a.n_spaxels)
    assert np.all((a.redshift >= 0.06) & (a.redshift <= 0.1))
    np.testing.assert_allclose(a.psf_fwhm_pix, 2.5 / a.arcsec_per_kpc / (4.0 * RPROJ / P))


def test_redshift_draw_puts_the_footprint_within_the_ifu_sizes():
    settings = PRESET
    rng = np.random.default_rng(0)
    tiny, small, medium, huge = (draw_redshifts(np.full(400, r), settings, rng) for r in (0.3, 2.0, 10.0, 60.0))
    for rproj, z in ((2.0, small), (10.0, medium)):
        diameter = arcsec_per_kpc(z) * 2 * 1.5 * rproj / math.cos(math.pi / 6)  # vertex to vertex [arcsec]
        assert np.all((diameter >= 12.5 * (1 - 1e-4)) & (diameter <= 32.5 * (1 + 1e-4)))
        assert np.ptp(z) > 0.005  # a range, not a point
    assert small.max() < medium.min()  # bigger galaxies are observed further away
    np.testing.assert_array_equal(tiny, 0.01)  # too small even at z_min: as near as allowed
    np.testing.assert_array_equal(huge, 0.15)  # too big even at z_max: as far as allowed
    free = draw_redshifts(np.full(400, 10.0), replace(settings, ifu_arcsec=None), rng)
    assert free.min() < 0.02 and free.max() > 0.14


def test_projected_half_mass_radius_from_particles():
    rng = np.random.default_rng(2)
    n = 200_000
    r = rng.gamma(2.0, 2.0, n)  # an exponential disc of scale length 2 kpc: p(R) ~ R exp(-R/2)
    phi = rng.uniform(0, 2 * np.pi, n)
    pos = np.stack([r * np.cos(phi), r * np.sin(phi), rng.normal(0, 0.1, n)], axis=1)
    mass = np.ones(n)
    face_on = np.eye(3)[None]
    exact = 2.0 * 1.6783469900166612  # half-mass radius of an exponential disc: 1.678 scale lengths
    rproj = projected_half_mass_radius(pos, mass, face_on)
    np.testing.assert_allclose(rproj, exact, rtol=0.01)
    edge_on = np.array([[[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]])
    assert projected_half_mass_radius(pos, mass, edge_on)[0] < rproj[0]  # projection only shrinks radii


@pytest.mark.parametrize(
    "values, key",
    [
        ({"redshift": [0.2, 0.1]}, "observe.redshift"),
        ({"redshift": [0.1]}, "observe.redshift"),
        ({"spaxel_arcsec": 0}, "observe.spaxel_arcsec"),
        ({"psf_fwhm_arcsec": "2.5"}, "observe.psf_fwhm_arcsec"),
        ({"snr_at_re": True}, "observe.snr_at_re"),
        ({"min_snr": -1}, "observe.min_snr"),
        ({"voronoi_snr": 0}, "observe.voronoi_snr"),
        ({"coverage_re": None}, "observe.coverage_re"),
        ({"ifu_arcsec": [30, 10]}, "observe.ifu_arcsec"),
        ({"ifu_arcsec": 30}, "observe.ifu_arcsec"),
        ({"snr": 20}, "observe': Additional properties are not allowed ('snr'"),
    ],
)
def test_bad_settings_name_the_key(values, key):
    with pytest.raises(InputError, match=re.escape(f"config key '{key}")):
        ObserveSettings.from_config(values)


def test_settings_from_config_take_the_preset_and_accept_null():
    section = {"enabled": True, "redshift": [0.02, 0.08], "voronoi_snr": None, "ifu_arcsec": None}
    settings = ObserveSettings.from_config(section)
    assert settings == preset(enabled=True, redshift=(0.02, 0.08), voronoi_snr=None, ifu_arcsec=None)
    assert PRESET.spaxel_arcsec == 0.5 and PRESET.psf_fwhm_arcsec == 2.5 and PRESET.coverage_re == 1.5
