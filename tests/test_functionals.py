"""Known-answer tests of the map functionals' shares at the clip, and that their calibration finds a posterior
with too little of its maps at 0."""

from __future__ import annotations

import numpy as np

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.calibration import randomized_pit, rank_histogram
from exsitu.functionals import CLIP_SHARES, functional_names, map_functionals

EPS = 1e-3


def test_shares_at_the_clip_are_mass_weighted_and_include_the_clip() -> None:
    maps = np.full((4, 4), 0.5)
    maps[0, 0], maps[0, 1], maps[0, 2] = 0.0, EPS, 2 * EPS  # at, at (the clip itself), above
    maps[1, 0], maps[1, 1] = 1.0, 1.0 - EPS  # both at the upper clip
    weights = np.ones((4, 4))
    weights[0, 0], weights[1, 0] = 3.0, 5.0
    weights[3, 3] = 0.0  # off the galaxy: a pixel at 0 there counts for nothing
    maps[3, 3] = 0.0
    out = map_functionals(maps, weights, fov_rhalf=4.0, clip=EPS)
    total = weights.sum()
    assert out["at_clip_0"] == np.float64((3.0 + 1.0) / total)
    assert out["at_clip_1"] == np.float64((5.0 + 1.0) / total)
    assert set(CLIP_SHARES) <= set(out) and list(out) == functional_names()


def test_too_few_zeros_in_the_samples_push_the_truth_above_them() -> None:
    rng = np.random.default_rng(3)
    n_galaxies, k, npix = 300, 60, 8
    galaxy_id = np.repeat(np.arange(n_galaxies), rng.integers(1, 3, n_galaxies))
    n = len(galaxy_id)
    boot = GalaxyBootstrap(galaxy_id, n_replicates=20)
    weights = rng.lognormal(size=(n, 1, npix, npix))
    p_zero = rng.uniform(0.0, 0.8, size=(n, 1, 1, 1))  # per map: how much of it no ex-situ particle reaches

    def maps(p: np.ndarray, count: int) -> np.ndarray:
        shape = (n, count, npix, npix)
        return np.where(rng.random(shape) < p, 0.0, rng.uniform(0.002, 0.05, size=shape))

    truth = map_functionals(maps(p_zero, 1)[:, 0], weights[:, 0], 4.0, EPS)["at_clip_0"]
    calibrated = map_functionals(maps(p_zero, k), weights, 4.0, EPS)["at_clip_0"]
    too_few = map_functionals(maps(0.5 * p_zero, k), weights, 4.0, EPS)["at_clip_0"]
    assert rank_histogram(randomized_pit(calibrated, truth, rng), boot).ks_pvalue > 0.01
    pit = randomized_pit(too_few, truth, rng)
    assert rank_histogram(pit, boot).ks_pvalue < 1e-6
    assert np.mean(pit > 0.84) > 0.5  # the truth above the samples' 68% interval in most maps
