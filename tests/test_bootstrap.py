"""The galaxy bootstrap: each galaxy counts once, intervals shrink with more galaxies and cover at
about their level, replicates are cheap and reproducible."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from exsitu.bootstrap import GalaxyBootstrap


def galaxies_with_projections(
    rng: np.random.Generator, n_galaxies: int, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(galaxy_id, per-map value): 1-8 projections per galaxy, values = galaxy effect + small per-map noise."""
    n_los = rng.integers(1, 9, size=n_galaxies)
    galaxy_id = np.repeat(1000 + 7 * np.arange(n_galaxies), n_los)  # arbitrary, non-contiguous ids
    effect = spread * rng.normal(size=n_galaxies)
    return galaxy_id, np.repeat(effect, n_los) + 0.1 * rng.normal(size=n_los.sum())


def test_point_value_weights_each_galaxy_once() -> None:
    galaxy_id = np.array([5, 5, 5, 9, 2, 2])
    values = np.array([1.0, 2.0, 3.0, 10.0, 4.0, 6.0])
    boot = GalaxyBootstrap(galaxy_id, n_replicates=50)
    np.testing.assert_allclose(boot.map_weights, [1 / 3, 1 / 3, 1 / 3, 1, 1 / 2, 1 / 2])
    assert boot.mean(values).value == pytest.approx((2.0 + 10.0 + 5.0) / 3)


def test_duplicating_one_galaxys_maps_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    galaxy_id, values = galaxies_with_projections(rng, 25)
    first = galaxy_id == galaxy_id[0]
    more_id = np.concatenate([galaxy_id, np.repeat(galaxy_id[first], 4)])
    more_values = np.concatenate([values, np.tile(values[first], 4)])
    base, duplicated = GalaxyBootstrap(galaxy_id, seed=3), GalaxyBootstrap(more_id, seed=3)
    assert duplicated.mean(more_values).value == pytest.approx(base.mean(values).value, abs=1e-12)
    assert duplicated.mean(more_values).low == pytest.approx(base.mean(values).low, abs=1e-12)
    # Counting maps instead would move the estimate towards the duplicated galaxy.
    assert abs(more_values.mean() - values.mean()) > 1e-3


def test_interval_shrinks_with_more_galaxies() -> None:
    rng = np.random.default_rng(1)
    widths = {}
    for n_galaxies in (10, 100):
        estimates = [
            GalaxyBootstrap(g, seed=0).mean(v)
            for g, v in (galaxies_with_projections(rng, n_galaxies) for _ in range(10))
        ]
        widths[n_galaxies] = np.mean([e.high - e.low for e in estimates])
    assert widths[100] < 0.5 * widths[10]  # ~ 1 / sqrt(10) expected


def test_interval_covers_the_true_mean_at_about_its_level() -> None:
    rng = np.random.default_rng(2)
    covered = []
    for trial in range(200):
        galaxy_id, values = galaxies_with_projections(rng, 30)
        estimate = GalaxyBootstrap(galaxy_id, n_replicates=400, seed=trial).mean(values)
        covered.append(estimate.low <= 0.0 <= estimate.high)
    # The percentile interval undercovers slightly at 30 galaxies; maps-as-independent would be far worse.
    assert 0.85 <= np.mean(covered) <= 0.99


def test_nonlinear_statistic_from_totals() -> None:
    rng = np.random.default_rng(3)
    galaxy_id, values = galaxies_with_projections(rng, 40)
    boot = GalaxyBootstrap(galaxy_id)
    w = boot.map_weights
    mean = np.sum(w * values) / w.sum()
    expected = np.sqrt(np.sum(w * (values - mean) ** 2) / w.sum())
    scatter = boot.statistic(lambda n, s1, s2: np.sqrt(s2 / n - (s1 / n) ** 2), np.ones(len(values)), values, values**2)
    assert scatter.value == pytest.approx(expected)
    assert scatter.low < scatter.value < scatter.high


def test_reweighted_slow_path_agrees_with_totals() -> None:
    rng = np.random.default_rng(4)
    galaxy_id, values = galaxies_with_projections(rng, 20)
    boot = GalaxyBootstrap(galaxy_id, n_replicates=200)
    fast = boot.mean(values)
    slow = boot.reweighted(lambda w: np.sum(w * values) / np.sum(w))
    assert (slow.value, slow.low, slow.high) == pytest.approx((fast.value, fast.low, fast.high))


def test_ratio_of_per_pixel_totals_and_vector_statistics() -> None:
    """Per-pixel MAE with the pixels' map index: totals per map, then a ratio; (N, M) gives M estimates."""
    rng = np.random.default_rng(5)
    galaxy_id = np.array([1, 1, 2, 3, 3, 3])
    map_index = rng.integers(0, 6, size=500)
    residual = rng.normal(size=500)
    totals = np.bincount(map_index, weights=np.abs(residual), minlength=6)
    counts = np.bincount(map_index, minlength=6).astype(np.float64)
    np.testing.assert_allclose(totals.sum(), np.abs(residual).sum())
    boot = GalaxyBootstrap(galaxy_id, n_replicates=100)
    w = boot.map_weights[map_index]
    assert boot.ratio(totals, counts).value == pytest.approx(np.sum(w * np.abs(residual)) / w.sum())
    both = boot.ratio(np.column_stack([totals, 2 * totals]), counts)
    assert len(both) == 2 and both[1].value == pytest.approx(2 * both[0].value)


def test_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(6)
    galaxy_id, values = galaxies_with_projections(rng, 30)
    a, b = GalaxyBootstrap(galaxy_id, seed=11).mean(values), GalaxyBootstrap(galaxy_id, seed=11).mean(values)
    c = GalaxyBootstrap(galaxy_id, seed=12).mean(values)
    assert a == b and (c.low, c.high) != (a.low, a.high)


def test_thousand_replicates_of_thousand_maps_well_under_a_second() -> None:
    rng = np.random.default_rng(7)
    galaxy_id = rng.integers(0, 300, size=1000)
    values = rng.normal(size=(1000, 51))  # e.g. a 51-level ECP curve per map
    start = time.perf_counter()
    boot = GalaxyBootstrap(galaxy_id, n_replicates=1000)
    boot.mean(values)
    boot.mean(values[:, 0])
    assert time.perf_counter() - start < 1.0


def test_warns_when_few_galaxies(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="exsitu.bootstrap"):
        GalaxyBootstrap(np.arange(12))
        assert not caplog.records
        GalaxyBootstrap(np.array([1, 1, 2, 3]))
    assert len(caplog.records) == 1 and "only 3 distinct galaxies" in caplog.records[0].getMessage()
