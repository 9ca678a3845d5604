"""The mock universe's galaxy population against the real TNG100-1 population, and the stellar populations
of mock galaxies without the shortcuts real galaxies do not offer.

The population test draws enough galaxies for the TNG100 figures to be measurable (thousands: the
default universe's few dozen massive galaxies would leave the percentiles to chance) and holds them to
the tolerances of ``exsitu.relations.TOLERANCES`` with the relations stage's own comparison.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from exsitu import literature
from exsitu.literature import age_of_universe_gyr
from exsitu.mock import assembly
from exsitu.mock import population as mock_population
from exsitu.mock.galaxies import draw_galaxy, draw_population, make_particles
from exsitu.relations import compare_with_tng100, half_mass_radius_kpc
from exsitu.units import ZSUN

#: Checks the mock misses at this population size, with how far it may be from TNG100 (absolute). Pooled over 20
#: universes of 750 galaxies (seeds 1000-1019, README) the median of 10^10.5-10^10.75 Msun galaxies is 0.025 low
#: (0.036 here) and the p16 of 10^11-10^11.25 0.063 high (within the tolerance here). The test keeps the misses from
#: growing; every other check must hold at its tolerance.
KNOWN_MISSES = {("fex_median", "10.50-10.75"): 0.045, ("fex_p16", "11.00-11.25"): 0.08}
N_POPULATION = 6000  # galaxies for the ex-situ fractions and the mass function (~20 s per 1000)
N_SIZES = 1500  # of them, made into particles for the sizes (~15 ms each)


@pytest.fixture(scope="module")
def population() -> dict[str, np.ndarray]:
    """Stellar mass, ex-situ fraction and central flag of N_POPULATION z = 0 mock galaxies, and the 3D half-mass
    radius of the first N_SIZES (NaN for the others)."""
    rng = np.random.default_rng(2024)
    models = draw_population(rng, N_POPULATION)
    rhalf = np.full(N_POPULATION, np.nan)
    for i, model in enumerate(models[:N_SIZES]):
        stars = make_particles(model, age_of_universe_gyr(), 0.0)
        rhalf[i] = half_mass_radius_kpc(stars.pos, stars.mass)
    return {
        "log_mstar": np.array([m.log_mstar for m in models]),
        "fex": np.array([m.exsitu_fraction for m in models]),
        "rhalf": rhalf,
        "central": np.array([not m.is_satellite for m in models]),
    }


def test_population_matches_tng100(population: dict[str, np.ndarray]) -> None:
    p = population
    everything = compare_with_tng100(p["log_mstar"], p["fex"], np.full(N_POPULATION, np.nan), p["central"])
    sized = compare_with_tng100(p["log_mstar"][:N_SIZES], p["fex"][:N_SIZES], p["rhalf"][:N_SIZES], None)
    checks = [c for c in everything["checks"] if c["what"] != "mean_rho"]
    checks += [c for c in sized["checks"] if c["what"] == "mean_rho"]
    assert len(checks) == 7 * 4 + 1  # every bin holds >= 10 galaxies: median, p16, p84, share; and the mean rho
    missed = [
        c
        for c in checks
        if not c["passed"] and abs(c["mock"] - c["tng100"]) > KNOWN_MISSES.get((c["what"], c["bin"]), 0.0)
    ]
    assert not missed, "\n".join(
        f"{c['what']} {c['bin']}: mock {c['mock']:.3f}, TNG100 {c['tng100']:.3f} (tolerance {c['tolerance']})"
        for c in missed
    )


def test_satellites_hold_fewer_accreted_stars_than_centrals(population: dict[str, np.ndarray]) -> None:
    # TNG100 at 10^10-10^10.5: satellites 0.044, centrals 0.067 (they stop accreting when they fall in).
    low = population["log_mstar"] < 10.5
    satellites = np.median(population["fex"][low & ~population["central"]])
    centrals = np.median(population["fex"][low & population["central"]])
    assert satellites < 0.9 * centrals


def test_the_halo_draw_is_the_forward_models_conditional() -> None:
    """At fixed stellar mass, the rejection draw gives the ex-situ fractions and haloes of the forward model (halo
    from the mass function, its history, its in-situ scatter) among the galaxies it makes at that mass.

    Massive galaxies, where the halo's conditional is widest: the sampling-importance-resampling draw of 4
    candidates that stood here before failed both tests (KS p 4e-8 and 6e-35 with 600 galaxies)."""
    rng = np.random.default_rng(11)
    low, high = 11.3, 11.4
    forward_fex, forward_halo = [], []
    while len(forward_fex) < 400:  # the forward model, over haloes far wider than the conditional (12.1-13.5)
        log_mh = mock_population._draw_halo(rng, 11.8, 14.0)
        history = assembly.draw_history(rng, log_mh)
        offset = mock_population._draw_offset(rng)
        mstar = 10 ** (history.log_insitu_track[0] + offset) + history.merger_gas + history.accreted
        if low < np.log10(mstar) < high:
            forward_fex.append(assembly.with_host(history, offset).accreted / mstar)
            forward_halo.append(log_mh)
    drawn = [mock_population.draw_assembly(rng, float(m), False) for m in rng.uniform(low, high, 400)]
    assert all(low - 0.05 < a.log_mstar < high + 0.05 for a in drawn)
    assert stats.ks_2samp(forward_fex, [a.exsitu_fraction for a in drawn]).pvalue > 0.01
    assert stats.ks_2samp(forward_halo, [a.log_mhalo for a in drawn]).pvalue > 0.01


def test_the_halo_window_holds_the_conditional() -> None:
    # The proposal's edges must lie where the conditional halo mass has no weight, at the massive end most of all
    # (there it reaches furthest below the median relation: a smaller halo with more mergers).
    rng = np.random.default_rng(3)
    grid, total = mock_population._median_relation()
    for log_mstar in (10.1, 11.9):
        centre = float(np.interp(log_mstar, total, grid))
        haloes = np.array([mock_population.draw_assembly(rng, log_mstar, False).log_mhalo for _ in range(200)])
        assert np.all(np.abs(haloes - centre) < mock_population.HALO_WINDOW_DEX - 0.15)


@pytest.fixture(scope="module")
def galaxies() -> list:
    """Thirty galaxies of 10^10.6 Msun and their z = 0 stars."""
    rng = np.random.default_rng(5)
    models = [draw_galaxy(rng, 10.6) for _ in range(30)]
    return [(m, make_particles(m, age_of_universe_gyr(), 0.0)) for m in models]


def test_in_situ_metallicity_scatters_at_fixed_age(galaxies: list) -> None:
    # Stochastic accretion, merger dilution and radial migration: TNG50 disc stars of one age span
    # several tenths of a dex in [Fe/H] (Ratcliffe et al. 2024), far more than the 0.1 dex of a star's
    # own scatter.
    spreads = []
    for _, stars in galaxies:
        mid = (stars.insitu == 1) & (stars.age > 4.0) & (stars.age < 6.0)
        spreads.append(np.std(np.log10(stars.metallicity[mid] / ZSUN)))
    assert np.median(spreads) > 0.15


def test_bulge_ages_differ_between_galaxies(galaxies: list) -> None:
    # The bulge is the oldest in-situ stars of each galaxy's own star formation history: its mean age varies.
    ages = []
    for _, stars in galaxies:
        central = (stars.insitu == 1) & (
            np.linalg.norm(stars.pos, axis=1) < np.quantile(np.linalg.norm(stars.pos, axis=1), 0.1)
        )
        ages.append(stars.age[central].mean())
    assert np.std(ages) > 0.5


def test_satellites_form_stars_after_infall_and_have_gradients(galaxies: list) -> None:
    young, gradients = 0, []
    for model, stars in galaxies:
        ex = stars.insitu == 0
        first_infall = min((s.infall_gyr for s in model.satellites), default=np.inf)
        young += int(np.sum(stars.age[ex] < first_infall))
        if ex.sum() > 50:
            radius = np.linalg.norm(stars.pos[ex], axis=1)
            gradients.append(stats.spearmanr(radius, stars.metallicity[ex])[0])
    assert young > 0  # some accreted stars formed after their satellite fell in
    assert np.median(gradients) < 0  # the most bound, metal-rich stars of a satellite settle deepest


@pytest.mark.parametrize("relation", ["KRAVTSOV_2018", "BEHROOZI_2013"])
def test_stellar_to_halo_relation_dwarf_slope(relation: str) -> None:
    """In dwarf haloes the relation goes as M200^-alpha of the chosen parameters (the slope that sets most of the
    low-mass ex-situ fraction, README), and the mock draws with Kravtsov et al. 2018's."""
    shmr = getattr(literature, relation)
    low, high = literature.log_mstar_of_halo(np.array([10.0, 10.5]), 0.0, shmr)
    assert (high - low) / 0.5 == pytest.approx(-shmr.alpha, abs=0.05)
    assert assembly.SHMR == literature.KRAVTSOV_2018
