"""Squared error against spread by spatial scale (exsitu.spatial_scales) on synthetic fields of known make-up."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from exsitu.spatial_scales import SMOOTHING_PIXELS, blur_matrix, error_and_spread, smooth_part

N, K, P = 200, 24, 16


def _fields(rng: np.random.Generator, shape: tuple[int, ...], correlated: float, white: float) -> np.ndarray:
    """Maps (..., P, P) around 0.5: a correlated part (white noise blurred over 3 pixels, unit variance per pixel)
    times ``correlated`` plus white noise times ``white``."""
    blurred = ndimage.gaussian_filter(rng.standard_normal(shape), [0] * (len(shape) - 2) + [3, 3], mode="wrap")
    blurred /= blurred.std()
    return 0.5 + 0.1 * (correlated * blurred + white * rng.standard_normal(shape))


def _ratios(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    parts = error_and_spread(samples, truth, mask)
    return {scale: parts[f"error/{scale}"].sum() / parts[f"spread/{scale}"].sum() for scale in ("smooth", "rough")}


def _disc() -> np.ndarray:
    y, x = np.mgrid[:P, :P] - P / 2 + 0.5
    return np.broadcast_to(np.hypot(x, y) < P / 2 - 1, (N, P, P))


def test_a_calibrated_posterior_has_ratio_one_at_every_scale() -> None:
    rng = np.random.default_rng(0)
    truth, samples = _fields(rng, (N, P, P), 1.0, 0.5), _fields(rng, (N, K, P, P), 1.0, 0.5)
    ratios = _ratios(samples, truth, _disc())
    assert ratios == pytest.approx({"smooth": 1.0, "rough": 1.0}, abs=0.1)


def test_samples_without_the_pixel_noise_show_it_in_the_rough_part_only() -> None:
    # The MaNGA preset's failure under recalibrate.method: coverage: the truth's pixel-to-pixel noise missing
    # from the samples, the correlated part a little wider instead.
    rng = np.random.default_rng(1)
    truth, samples = _fields(rng, (N, P, P), 1.0, 0.5), _fields(rng, (N, K, P, P), 1.1, 0.05)
    ratios = _ratios(samples, truth, _disc())
    # With independent truth and samples a scale's ratio is (truth's variance + samples') / (2 x samples').
    assert ratios["rough"] > 2 and 0.7 < ratios["smooth"] < 1.1


def test_a_too_wide_correlated_part_shows_in_the_smooth_part() -> None:
    rng = np.random.default_rng(2)
    truth, samples = _fields(rng, (N, P, P), 1.0, 0.5), _fields(rng, (N, K, P, P), 2.0, 0.5)
    ratios = _ratios(samples, truth, _disc())
    # (1 + 2^2) / (2 x 2^2) = 0.625 where the correlated part dominates
    assert ratios["smooth"] < 0.7 and ratios["rough"] == pytest.approx(1.0, abs=0.2)


def test_pixels_off_the_galaxy_count_for_nothing_and_a_constant_stays_constant() -> None:
    rng = np.random.default_rng(3)
    mask = _disc()[:4]
    truth, samples = _fields(rng, (4, P, P), 1.0, 0.5), _fields(rng, (4, K, P, P), 1.0, 0.5)
    before = error_and_spread(samples, truth, mask)
    after = error_and_spread(np.where(mask[:, None], samples, 9.0), np.where(mask, truth, -9.0), mask)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-6)
    # The matrix blur is scipy's Gaussian filter with zeros beyond the grid.
    b, field = blur_matrix(P), truth[0]
    np.testing.assert_allclose(
        b @ field @ b.T, ndimage.gaussian_filter(field, SMOOTHING_PIXELS, mode="constant"), rtol=1e-5, atol=1e-6
    )
    constant = smooth_part(np.full((4, P, P), 0.3), mask)
    np.testing.assert_allclose(constant[mask], 0.3, rtol=1e-6)
    assert np.all(constant[~mask] == 0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        error_and_spread(samples[:, :1], truth, mask)
