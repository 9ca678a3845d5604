"""The per-pixel lookup baseline: recovers a known per-pixel function, sees nothing of a pixel's
surroundings, is reproducible, and respects its training-pixel cap."""

from __future__ import annotations

import time

import numpy as np
import pytest

from exsitu.io import InputError
from exsitu.lookup import fit_pixel_lookup, log_stellar_mass, pixel_features, weighted_median


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


def test_galaxy_scalars_as_context_carry_what_the_pixels_lack() -> None:
    # The ex-situ fraction rises with the galaxy's size at fixed pixel values (as in TNG at fixed mass):
    # only a lookup that is given log r_half as context can know it.
    rng = np.random.default_rng(3)

    def maps(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        conditions, _, mask, log_mstar = synthetic_maps(rng, n)
        log_rhalf = rng.uniform(0.3, 1.0, n)
        signal = conditions[:, 3] + 4.0 * (log_rhalf[:, None, None] - 0.65)
        exsitu = np.where(mask, 1 / (1 + np.exp(-signal)), 0.0)
        return conditions, exsitu, mask, np.column_stack([log_mstar, log_rhalf])

    train, test = maps(150), maps(20)
    with_size = fit_pixel_lookup(*train).predict(test[0], test[2], test[3])
    mass_only = fit_pixel_lookup(*train[:3], train[3][:, 0]).predict(test[0], test[2], test[3][:, 0])
    assert pixel_features(test[0], test[2], test[3]).shape[1] == 5 + 2
    mae = {name: np.abs(p - test[1])[test[2]].mean() for name, p in (("size", with_size), ("mass", mass_only))}
    assert mae["size"] < 0.6 * mae["mass"], mae


def test_map_weights_move_the_median_to_the_heavier_maps() -> None:
    # Every pixel of map i has the same features; maps alternate between truth 0.2 and 0.8.
    n, p = 40, 4
    conditions = np.zeros((n, 5, p, p), np.float32)
    mask = np.ones((n, p, p), bool)
    exsitu = np.broadcast_to(np.where(np.arange(n) % 2, 0.8, 0.2)[:, None, None], mask.shape)
    heavy_low = np.where(np.arange(n) % 2, 1.0, 2.0)
    for weights, expected in ((heavy_low, 0.2), (3.0 - heavy_low, 0.8)):
        lookup = fit_pixel_lookup(conditions, exsitu, mask, np.full(n, 10.5), weights=weights, k=n * p * p)
        np.testing.assert_allclose(lookup.predict(conditions[:2], mask[:2], np.full(2, 10.5)), expected, atol=1e-6)
    with pytest.raises(InputError, match="positive"):
        fit_pixel_lookup(conditions, exsitu, mask, np.full(n, 10.5), weights=np.zeros(n))


def test_weighted_median_is_numpys_inverted_cdf_quantile() -> None:
    rng = np.random.default_rng(4)
    values, weights = rng.random((500, 7)), rng.random((500, 7))
    expected = np.quantile(values, 0.5, axis=1, weights=weights, method="inverted_cdf")
    np.testing.assert_array_equal(weighted_median(values, weights), expected)
