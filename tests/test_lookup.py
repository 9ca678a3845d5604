"""The per-pixel lookup baseline: recovers a known per-pixel function, sees nothing of a pixel's
surroundings, is reproducible, and respects its training-pixel cap."""

from __future__ import annotations

import time

import numpy as np
import pytest

from exsitu.io import InputError
from exsitu.lookup import fit_pixel_lookup, log_stellar_mass, pixel_features


def synthetic_maps(
    rng: np.random.Generator, n: int, npix: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(conditions (N,5,P,P), exsitu (N,P,P), mask, log M* (N,)): exsitu a known function of each pixel's values."""
    conditions = rng.normal(size=(n, 5, npix, npix)).astype(np.float32)
    mask = rng.random((n, npix, npix)) < 0.7
    log_mstar = rng.uniform(10.0, 11.5, n)
    signal = 1.5 * conditions[:, 3] - conditions[:, 4] + 1.0 * (log_mstar[:, None, None] - 10.75)
    exsitu = np.where(mask, 1 / (1 + np.exp(-signal)), 0.0).astype(np.float32)
    return conditions * mask[:, None], exsitu, mask, log_mstar


def test_recovers_a_known_per_pixel_function() -> None:
    rng = np.random.default_rng(0)
    train, test = synthetic_maps(rng, 400), synthetic_maps(rng, 40)
    start = time.perf_counter()
    lookup = fit_pixel_lookup(train[0], train[1], train[2], train[3])
    prediction = lookup.predict(test[0], test[2], test[3])
    elapsed = time.perf_counter() - start
    mask = test[2]
    mae = np.abs(prediction - test[1])[mask].mean()
    assert mae < 0.05
    assert mae < 0.2 * np.abs(train[1][train[2]].mean() - test[1][mask]).mean()
    assert np.all(prediction[~mask] == 0) and prediction.min() >= 0 and prediction.max() <= 1
    assert elapsed < 10


def test_prediction_depends_only_on_the_pixel_itself() -> None:
    rng = np.random.default_rng(1)
    train, test = synthetic_maps(rng, 100), synthetic_maps(rng, 5)
    lookup = fit_pixel_lookup(train[0], train[1], train[2], train[3], k=8)
    conditions, _, mask, log_mstar = test
    base = lookup.predict(conditions, mask, log_mstar)
    # Shuffle pixel positions inside each map: predictions move with their pixels, unchanged.
    order = rng.permutation(mask[0].size)

    def shuffle(a: np.ndarray) -> np.ndarray:
        return a.reshape(*a.shape[:-2], -1)[..., order].reshape(a.shape)

    np.testing.assert_array_equal(lookup.predict(shuffle(conditions), shuffle(mask), log_mstar), shuffle(base))
    # Change every other pixel of map 0: pixel (0, y, x) keeps its prediction.
    y, x = np.argwhere(mask[0])[0]
    changed = conditions.copy()
    keep = changed[0, :, y, x].copy()
    changed[0] = rng.normal(size=changed[0].shape) * mask[0]
    changed[0, :, y, x] = keep
    assert lookup.predict(changed, mask, log_mstar)[0, y, x] == base[0, y, x]


def test_deterministic_and_capped() -> None:
    rng = np.random.default_rng(2)
    train, test = synthetic_maps(rng, 60), synthetic_maps(rng, 3)
    a = fit_pixel_lookup(*train, max_pixels=2000, seed=4)
    b = fit_pixel_lookup(*train, max_pixels=2000, seed=4)
    c = fit_pixel_lookup(*train, max_pixels=2000, seed=5)
    assert a.tree.n == 2000
    np.testing.assert_array_equal(a.predict(test[0], test[2], test[3]), b.predict(test[0], test[2], test[3]))
    assert not np.array_equal(a.target, c.target)
    with pytest.raises(InputError, match="k >= 1"):
        fit_pixel_lookup(*train, k=0)


def test_features_and_stellar_mass() -> None:
    mask = np.zeros((2, 16, 16), bool)
    mask[:, :2, :5] = True  # 10 pixels
    log_sigma = np.full((2, 16, 16), 8.0)
    # 10 pixels of (32 kpc / 16)^2 = 4 kpc^2 at 1e8 Msun/kpc^2 -> 4e9 Msun; the second map 2x wider.
    np.testing.assert_allclose(log_stellar_mass(log_sigma, mask, np.array([32.0, 64.0])), np.log10([4e9, 1.6e10]))
    conditions = np.arange(2 * 5 * 16 * 16, dtype=np.float32).reshape(2, 5, 16, 16)
    features = pixel_features(conditions, mask, np.array([10.0, 11.0]))
    assert features.shape == (20, 6)
    np.testing.assert_array_equal(features[0, :5], conditions[0, :, 0, 0])
    assert features[0, 5] == 10.0 and features[-1, 5] == 11.0
    with pytest.raises(InputError, match="no stellar mass"):
        log_stellar_mass(log_sigma, np.zeros_like(mask), np.array([32.0, 64.0]))
