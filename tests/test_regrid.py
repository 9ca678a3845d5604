"""Flux-conserving regridding between square-pixel grids (exsitu.regrid)."""

from __future__ import annotations

import numpy as np
import pytest

from exsitu.regrid import PixelGrid, covered_fraction, regrid_mean, regrid_sum


def test_grid_follows_the_projection_convention():
    grid = PixelGrid.square(4, 8.0, center=(1.0, -2.0))
    assert grid.pixel == 2.0 and grid.area == 4.0
    np.testing.assert_allclose(grid.x_edges, [-3, -1, 1, 3, 5])
    np.testing.assert_allclose(grid.y_edges, [-6, -4, -2, 0, 2])
    x, y = grid.centers()
    assert x[0, 1] == 0.0 and y[1, 0] == -3.0  # image[iy, ix]
    with pytest.raises(ValueError):
        PixelGrid((0, 3), 1.0)


def test_regrid_sum_conserves_the_total_inside_the_destination():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (3, 17, 17))  # leading axis: several moments at once
    src = PixelGrid.square(17, 10.0, center=(0.3, -0.2))
    dst = PixelGrid.square(23, 14.0)  # contains src, different pixel size and centre
    out = regrid_sum(image, src, dst)
    assert out.shape == (3, 23, 23)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), image.sum(axis=(1, 2)), rtol=1e-12)
    # A destination holding the right half of src (x from its centre, the middle of column 8) keeps that part.
    right = PixelGrid((2, 1), 5.0, center=(2.8, -0.2))
    expected = image[:, :, 9:].sum(axis=(1, 2)) + 0.5 * image[:, :, 8].sum(axis=1)
    np.testing.assert_allclose(regrid_sum(image, src, right).sum(axis=(1, 2)), expected, rtol=1e-12)


def test_regrid_sum_splits_a_pixel_by_overlap_area():
    src = PixelGrid.square(1, 1.0, center=(0.25, 0.0))  # x in [-0.25, 0.75): a quarter left of 0
    dst = PixelGrid((1, 2), 1.0)
    np.testing.assert_allclose(regrid_sum(np.array([[4.0]]), src, dst), [[1.0, 3.0]])


def test_regrid_mean_with_mass_weights_is_the_ratio_of_regridded_moments():
    rng = np.random.default_rng(1)
    mass = rng.uniform(0.1, 2.0, (12, 12))
    velocity = rng.normal(0, 100, (12, 12))
    src, dst = PixelGrid.square(12, 6.0), PixelGrid.square(5, 5.0, center=(0.4, 0.1))
    weighted = regrid_mean(velocity, src, dst, weights=mass)
    np.testing.assert_allclose(weighted, regrid_sum(mass * velocity, src, dst) / regrid_sum(mass, src, dst), rtol=1e-10)
    # Unweighted: a constant stays constant wherever the source covers the pixel, `fill` elsewhere.
    far = PixelGrid((1, 3), 6.0, center=(6.0, 0.0))  # pixels at x in [-3,3), [3,9), [9,15)
    np.testing.assert_allclose(regrid_mean(np.full((12, 12), 7.0), src, far, fill=-1.0), [[7.0, -1.0, -1.0]])


def test_regrid_mean_averages_aligned_subpixels_exactly():
    fine, coarse = PixelGrid.square(8, 4.0), PixelGrid.square(2, 4.0)
    x, y = fine.centers()
    linear = 3.0 + 2.0 * x - y
    xc, yc = coarse.centers()
    np.testing.assert_allclose(regrid_mean(linear, fine, coarse), 3.0 + 2.0 * xc - yc, atol=1e-12)
    # And back: each fine pixel takes its coarse parent's value.
    np.testing.assert_allclose(
        regrid_mean(3.0 + 2.0 * xc - yc, coarse, fine), np.kron(3.0 + 2.0 * xc - yc, np.ones((4, 4)))
    )


def test_covered_fraction_counts_masked_area():
    src = PixelGrid.square(4, 4.0)
    dst = PixelGrid((1, 3), 2.0, center=(1.0, 1.0))  # x in [-2,0), [0,2), [2,4); y in [0, 2)
    np.testing.assert_allclose(covered_fraction(src, dst), [[1.0, 1.0, 0.0]])
    mask = np.zeros((4, 4), bool)
    mask[2:, 2] = True  # the 1 x 2 strip x in [0,1), y in [0,2)
    np.testing.assert_allclose(covered_fraction(src, dst, mask), [[0.0, 0.5, 0.0]])
