"""Known-answer tests of the calibration maths: a posterior calibrated by construction
(ties at zero included) covers at the nominal level; a too-narrow one is caught."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.calibration import (
    COVERAGE_LEVELS,
    CoverageStratum,
    StratumDef,
    central_coverage,
    coverage_by_stratum,
    crps,
    functional_coverage_by_median,
    map_generators,
    mass_terciles,
    pixel_strata,
    randomized_pit,
    rank_histogram,
    stratum_tallies,
    tarp_atc_terms,
    tarp_credibility,
    weighted_ks_uniform,
)
from exsitu.io import InputError
from exsitu.radial import pixel_radius


def zero_inflated(rng: np.random.Generator, shape: tuple[int, ...], p_zero: np.ndarray) -> np.ndarray:
    """Draws with a point mass at 0 (probability p_zero) and a Beta(2, 5) part otherwise."""
    values = rng.beta(2, 5, size=shape)
    return np.where(rng.random(shape) < p_zero, 0.0, values)


def test_per_map_generators_make_each_maps_numbers_its_own() -> None:
    """With one generator per map, a map's PITs and TARP credibility are those it gets alone, whatever maps it is
    ranked with; a generator count that does not match the maps is one clear error."""
    rng = np.random.default_rng(2)
    n, k, p = 5, 8, 6
    samples = np.where(rng.random((n, k, p, p)) < 0.3, 0.0, rng.random((n, k, p, p)))  # ties at 0
    truth = np.where(rng.random((n, p, p)) < 0.3, 0.0, rng.random((n, p, p)))
    seeds = np.arange(n) + 100
    pits = randomized_pit(np.moveaxis(samples, 1, -1), truth, map_generators(seeds, 1))
    tarp = tarp_credibility(samples, truth, map_generators(seeds, 1), reference="posterior")
    for i in range(n):
        alone = map_generators(seeds[i : i + 1], 1)
        assert np.array_equal(
            pits[i : i + 1], randomized_pit(np.moveaxis(samples[i : i + 1], 1, -1), truth[i : i + 1], alone)
        )
        alone = map_generators(seeds[i : i + 1], 1)
        assert tarp[i] == tarp_credibility(samples[i : i + 1], truth[i : i + 1], alone, reference="posterior")[0]
    other_stream = randomized_pit(np.moveaxis(samples, 1, -1), truth, map_generators(seeds, 2))
    assert not np.array_equal(pits, other_stream)  # the stream (the posterior tested) changes the numbers
    with pytest.raises(InputError, match="one generator per map is needed: 5 maps, 4 generators"):
        randomized_pit(np.moveaxis(samples, 1, -1), truth, map_generators(seeds[:4], 1))
    with pytest.raises(InputError, match="one generator per map is needed: 5 maps, 4 generators"):
        tarp_credibility(samples, truth, map_generators(seeds[:4], 1))


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
    nominal = np.linspace(0.1, 0.9, 9)
    assert np.all(central_coverage(randomized_pit(samples, truth, rng), nominal) < nominal)


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
    atc = tarp_atc_terms(tarp_credibility(samples, truth, rng)).mean()
    if sign == 0:
        assert abs(atc) < 0.05
    else:
        assert np.sign(atc) == sign and abs(atc) > 0.1


def test_tarp_atc_terms_integrate_the_curve() -> None:
    """The exact ATC (mean of per-map terms) agrees with the trapezoid of ECP(a) - a on 501 levels."""
    rng = np.random.default_rng(4)
    alpha = np.linspace(0.5, 1.0, 501)
    for ranks in (rng.random(5000), rng.beta(0.5, 0.5, 5000), rng.beta(3, 3, 5000)):
        ecp = (ranks[:, None] < alpha).mean(axis=0)
        assert tarp_atc_terms(ranks).mean() == pytest.approx(2 * np.trapezoid(ecp - alpha, alpha), abs=0.002)
    assert tarp_atc_terms(np.array([0.2, 0.9])).tolist() == pytest.approx([0.25, -0.55])


def test_tarp_credibility_ignores_pixels_off_the_galaxy() -> None:
    rng = np.random.default_rng(5)
    n, k, p = 20, 30, 8
    mask = rng.random((n, p, p)) < 0.6
    truth = np.where(mask, rng.random((n, p, p)), 0.0)
    samples = np.where(mask[:, None], rng.random((n, k, p, p)), 0.0)
    reference = rng.random((n, p, p))
    masked = tarp_credibility(samples, truth, np.random.default_rng(0), reference, mask)
    whole = tarp_credibility(samples, truth, np.random.default_rng(0), reference)
    np.testing.assert_allclose(masked, whole)
    with pytest.raises(InputError, match="reference must be one of"):
        tarp_credibility(samples, truth, rng, "gaussian")


def test_weighted_ks_matches_scipy_for_unit_weights() -> None:
    rng = np.random.default_rng(6)
    values = rng.beta(1.3, 1.0, 300)
    distance, pvalue = weighted_ks_uniform(values, np.ones(300), 300)
    reference = stats.kstest(values, "uniform", method="exact")
    assert distance == pytest.approx(reference.statistic) and pvalue == pytest.approx(reference.pvalue)


def maps_of_galaxies(n_los: list[int], npix: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(galaxy_id per map, mask (N, P, P): a disc of radius 1.9 r_half for fov 4, log M* per map)."""
    galaxy_id = np.repeat(np.arange(len(n_los)), n_los)
    mask = np.broadcast_to(pixel_radius(npix, 4.0) < 1.9, (len(galaxy_id), npix, npix)).copy()
    log_mstar = 10.0 + 0.1 * galaxy_id + 0.01 * np.arange(len(galaxy_id)) % 3  # maps of a galaxy differ a little
    return galaxy_id, mask, log_mstar


def by_label(strata: list[CoverageStratum]) -> dict[str, CoverageStratum]:
    return {s.label: s for s in strata}


LEVELS = (0.68, 0.95)


def covered_pixels(pit: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, P, P, L) bool: the galaxy pixel's truth inside the central interval of each of LEVELS, from its PIT map."""
    return (np.abs(pit - 0.5)[..., None] <= np.asarray(LEVELS) / 2) & mask[..., None]


def strata_coverage(
    pit: np.ndarray, median: np.ndarray, truth: np.ndarray, mask: np.ndarray, boot: GalaxyBootstrap
) -> list[CoverageStratum]:
    """Coverage per pixel stratum (median, truth, radius; fov 4 r_half) from per-map tallies, as evaluate does."""
    strata = pixel_strata(median, truth, mask, 4.0)
    hits, pixels = stratum_tallies(covered_pixels(pit, mask), [selector for _, selector in strata])
    return coverage_by_stratum([definition for definition, _ in strata], hits, pixels, boot, LEVELS)


def pit_map(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A PIT map (N, P, P): ``values`` on the galaxy pixels, 0.5 elsewhere."""
    out = np.full(mask.shape, 0.5)
    out[mask] = values
    return out


def test_coverage_by_truth_and_by_posterior_median() -> None:
    rng = np.random.default_rng(7)
    galaxy_id, mask, _ = maps_of_galaxies([4] * 30, npix=32)
    truth = np.where(rng.random(mask.shape) < 0.3, 0.0, rng.random(mask.shape))
    truth[rng.random(mask.shape) < 0.2] = 1.0
    median = rng.random(mask.shape)
    t, m = truth[mask], median[mask]
    # Truth 0 always covered, truth 1 never, interior calibrated except where the median is below 0.2.
    pit = np.where(t == 0, 0.5, np.where(t == 1, 0.0, np.where(m < 0.2, 0.0, rng.random(t.size))))
    strata = strata_coverage(pit_map(mask, pit), median, truth, mask, GalaxyBootstrap(galaxy_id, n_replicates=200))
    truth_strata = by_label([s for s in strata if s.by == "truth"])
    assert truth_strata["truth = 0"].coverage["0.68"].value == 1.0
    assert truth_strata["truth = 1"].coverage["0.95"].value == 0.0
    assert truth_strata["truth = 1"].n_pixels == int((t == 1).sum()) and truth_strata["truth = 1"].n_galaxies == 30
    bins = [s for s in strata if s.by == "truth"][2:]  # after exact 0 and exact 1
    assert bins[0].label == "0 < truth <= 0.2" and bins[-1].label == "0.8 < truth < 1"
    interior = (t > 0) & (t < 1)
    assert len(bins) == 5 and sum(s.n_pixels for s in bins) == int(interior.sum())
    # Above a truth of 0.2 the median stratum below 0.2 (never covered) takes 20% of the pixels away.
    for s in bins[1:]:
        assert s.coverage["0.68"].value == pytest.approx(0.8 * 0.68, abs=0.03)
        assert s.coverage["0.68"].low < s.coverage["0.68"].value < s.coverage["0.68"].high
    medians = [s for s in strata if s.by == "median"]
    assert [s.label for s in medians][:2] == ["0 <= median < 0.05", "0.05 <= median < 0.2"]
    assert medians[-1].label == "0.8 <= median <= 1"
    assert sum(s.n_pixels for s in medians) == int(mask.sum())
    # Truth is 0 on 24% of the pixels (covered), 1 on 20% (never), interior on 56% (covered by its level
    # where the median is >= 0.2).
    zero, inside = 0.3 * 0.8, 0.7 * 0.8
    for s in medians[:2]:
        assert s.coverage["0.95"].value == pytest.approx(zero, abs=0.03)
    for s in medians[2:]:
        assert s.coverage["0.68"].value == pytest.approx(zero + 0.68 * inside, abs=0.03)


def test_coverage_by_radius_mass_and_galaxy_weighting() -> None:
    galaxy_id, mask, log_mstar = maps_of_galaxies([3, 1, 2, 2, 1, 3, 1, 2, 2])
    n = len(galaxy_id)
    truth = np.full(mask.shape, 0.5)
    boot = GalaxyBootstrap(galaxy_id, n_replicates=100)
    radius = np.broadcast_to(pixel_radius(16, 4.0), mask.shape)
    pit = np.where(radius < 1.0, 0.5, 0.0)
    strata = by_label(strata_coverage(pit, truth, truth, mask, boot))
    assert strata["0.00 <= r/r_half < 0.50"].coverage["0.68"].value == 1.0
    assert strata["0.50 <= r/r_half < 1.00"].coverage["0.68"].value == 1.0
    assert strata["1.00 <= r/r_half < 1.50"].coverage["0.68"].value == 0.0
    assert strata["2.00 <= r/r_half < 2.83"].n_pixels == 0  # the disc ends at 1.9
    assert np.isnan(strata["2.00 <= r/r_half < 2.83"].coverage["0.68"].value)
    # Mass terciles hold 3 of the 9 galaxies each; only the heaviest tercile is covered.
    heavy = np.broadcast_to((galaxy_id >= 6)[:, None, None], mask.shape)
    hits, pixels = stratum_tallies(covered_pixels(np.where(heavy, 0.5, 0.0), mask), [mask])
    terciles = mass_terciles(log_mstar, boot)
    mass = [
        coverage_by_stratum([definition], hits * maps[:, None, None], pixels * maps[:, None], boot, LEVELS)[0]
        for definition, maps in terciles
    ]
    assert [s.n_galaxies for s in mass] == [3, 3, 3] and sum(s.n_maps for s in mass) == n
    assert [s.coverage["0.68"].value for s in mass] == [0.0, 0.0, 1.0]
    assert mass[0].high < mass[1].low and mass[1].high < mass[2].low
    # Galaxy 0 (3 maps) covered, galaxy 1 (1 map) not: galaxy-weighted 1/2, not the map-weighted 3/4.
    two = GalaxyBootstrap(galaxy_id[:4], n_replicates=10)
    first = np.arange(4)[:, None, None] < 3
    hits, pixels = stratum_tallies(covered_pixels(np.where(first, 0.5, 0.0), mask[:4]), [mask[:4]])
    overall = coverage_by_stratum([StratumDef("all", "all", 0.0, 1.0)], hits, pixels, two, LEVELS)[0]
    assert overall.coverage["0.68"].value == pytest.approx(0.5)
    assert (overall.n_maps, overall.n_galaxies) == (4, 2)


def test_rank_histogram_of_integrated_fraction() -> None:
    rng = np.random.default_rng(8)
    n_galaxies, k = 400, 100
    galaxy_id = np.repeat(np.arange(n_galaxies), rng.integers(1, 6, n_galaxies))
    n = len(galaxy_id)
    # Calibrated: truth and samples from one distribution, a point mass at 0 included (ties).
    draws = zero_inflated(rng, (n, k + 1), np.full((n, 1), 0.3))
    boot = GalaxyBootstrap(galaxy_id, n_replicates=10)
    calibrated = rank_histogram(randomized_pit(draws[:, 1:], draws[:, 0], rng), boot)
    assert calibrated.ks_pvalue > 0.01
    np.testing.assert_allclose(calibrated.fraction, 0.1, atol=0.03)
    assert calibrated.n_maps.sum() == n and calibrated.n_galaxies == n_galaxies
    # Too narrow: samples around the truth's distribution centre with a tenth of its spread.
    truth = rng.normal(size=n)
    narrow = rank_histogram(randomized_pit(rng.normal(scale=0.1, size=(n, k)), truth, rng), boot)
    assert narrow.ks_pvalue < 1e-6
    assert narrow.fraction[0] + narrow.fraction[-1] > 0.6


def test_functional_coverage_by_median_finds_a_bin_biased_high() -> None:
    rng = np.random.default_rng(11)
    n_galaxies, k = 600, 100
    galaxy_id = np.repeat(np.arange(n_galaxies), rng.integers(1, 4, n_galaxies))
    n = len(galaxy_id)
    boot = GalaxyBootstrap(galaxy_id, n_replicates=50)
    # Integrated fractions: a posterior calibrated by construction (truth and samples from one logit-normal).
    centre = rng.uniform(-6.0, 1.0, size=(n, 1))
    draws = 1.0 / (1.0 + np.exp(-(centre + 0.5 * rng.normal(size=(n, k + 1)))))
    truth, samples = draws[:, 0], draws[:, 1:]
    median = np.median(samples, axis=1)
    bins = functional_coverage_by_median(randomized_pit(samples, truth, rng), median, boot, (0.68, 0.95))
    assert sum(b["n_maps"] for b in bins) == n
    for b in bins:
        if b["n_maps"] >= 200:
            assert b["coverage"]["0.68"]["low"] <= 0.68 <= b["coverage"]["0.68"]["high"], b
            assert abs(b["below"]["value"] - b["above"]["value"]) < 0.08, b
    # Near-zero maps whose samples sit high (truth at a tenth of its calibrated value): their bin misses, below.
    low = centre[:, 0] < -5.0
    shifted = np.where(low, truth / 10, truth)
    bins = functional_coverage_by_median(randomized_pit(samples, shifted, rng), median, boot, (0.68, 0.95))
    first = bins[0]
    assert first["label"] == "0 <= median < 0.01" and first["n_maps"] > 50
    assert first["coverage"]["0.68"]["high"] < 0.5 and first["below"]["value"] > 0.5 > first["above"]["value"]
    assert bins[-1]["coverage"]["0.68"]["low"] <= 0.68 <= bins[-1]["coverage"]["0.68"]["high"]
