"""Known-answer tests of the calibration maths: a posterior calibrated by construction
(ties at zero included) covers at the nominal level; a too-narrow one is caught."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from exsitu.calibration import (
    COVERAGE_LEVELS,
    central_coverage,
    crps,
    expected_coverage_curve,
    randomized_pit,
    tarp_curve,
    tarp_ranks,
)


def zero_inflated(rng: np.random.Generator, shape: tuple[int, ...], p_zero: np.ndarray) -> np.ndarray:
    """Draws with a point mass at 0 (probability p_zero) and a Beta(2, 5) part otherwise."""
    values = rng.beta(2, 5, size=shape)
    return np.where(rng.random(shape) < p_zero, 0.0, values)


def test_randomized_pit_is_calibrated_with_ties_at_zero() -> None:
    rng = np.random.default_rng(0)
    n, s = 20000, 50
    p_zero = rng.uniform(0.2, 0.8, size=(n, 1))
    draws = zero_inflated(rng, (n, s + 1), p_zero)  # truth and samples from one distribution
    truth, samples = draws[:, 0], draws[:, 1:]
    assert np.mean(truth == 0) > 0.3  # the tie case is really exercised
    observed = central_coverage(randomized_pit(samples, truth, rng))
    np.testing.assert_allclose(observed, COVERAGE_LEVELS, atol=0.015)
    # The non-randomized PIT of the same posterior is far off: the pitfall the randomization fixes.
    naive = (samples < truth[:, None]).mean(axis=1)
    assert abs(central_coverage(naive, (0.68,))[0] - 0.68) > 0.1


def test_too_narrow_posterior_is_detected() -> None:
    rng = np.random.default_rng(1)
    n, s = 20000, 50
    truth = rng.normal(size=n)
    samples = rng.normal(scale=0.5, size=(n, s))
    coverage68 = central_coverage(randomized_pit(samples, truth, rng), (0.68,))[0]
    assert coverage68 < 0.5
    nominal, observed = expected_coverage_curve(randomized_pit(samples, truth, rng))
    assert nominal[0] == 0 and nominal[-1] == 1
    assert np.all(observed[1:-1] < nominal[1:-1] + 0.01)


def test_crps_matches_gaussian_closed_form() -> None:
    rng = np.random.default_rng(2)
    y = np.array([0.0, 1.0, -2.0])
    samples = rng.normal(size=(3, 40000))
    z = y  # unit Gaussian: CRPS = z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)
    expected = z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    np.testing.assert_allclose(crps(samples, y), expected, atol=0.01)
    assert crps(np.zeros((1, 5)), np.zeros(1))[0] == pytest.approx(0.0)


@pytest.mark.parametrize(("scale", "sign"), [(1.0, 0), (0.4, -1), (2.5, 1)])
def test_tarp_atc_sign(scale: float, sign: int) -> None:
    rng = np.random.default_rng(3)
    n, s, d = 1500, 60, 16
    centre = rng.uniform(0.3, 0.7, size=(n, 1, d))
    truth = (centre + 0.05 * rng.normal(size=(n, 1, d)))[:, 0]
    samples = centre + 0.05 * scale * rng.normal(size=(n, s, d))
    alpha, ecp, atc = tarp_curve(tarp_ranks(samples, truth, rng))
    assert alpha.shape == ecp.shape and ecp[0] == 0 and ecp[-1] == 1
    if sign == 0:
        assert abs(atc) < 0.05
    else:
        assert np.sign(atc) == sign and abs(atc) > 0.1
