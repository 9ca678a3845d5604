"""Unit conversions of TNG code units and the cosmology-based stellar ages."""

from __future__ import annotations

import numpy as np
import pytest

from exsitu.units import (
    birth_scale_factor,
    cosmology,
    length_to_code,
    length_to_physical_kpc,
    mass_to_code,
    mass_to_msun,
    stellar_age_gyr,
    velocity_to_code,
    velocity_to_peculiar,
    wrap_periodic,
)

TNG = {"HubbleParam": 0.6774, "Omega0": 0.3089, "OmegaLambda": 0.6911}


def test_length_mass_velocity_conversions() -> None:
    assert length_to_physical_kpc(np.array([1000.0]), 0.5, 0.7)[0] == pytest.approx(1000.0 * 0.5 / 0.7)
    assert mass_to_msun(np.array([1.0]), 0.7)[0] == pytest.approx(1e10 / 0.7)
    assert velocity_to_peculiar(np.array([100.0]), 0.25)[0] == pytest.approx(50.0)
    x = np.array([0.3, 12.0, 7.5e4])
    np.testing.assert_allclose(length_to_physical_kpc(length_to_code(x, 0.9, 0.6774), 0.9, 0.6774), x)
    np.testing.assert_allclose(mass_to_msun(mass_to_code(x, 0.6774), 0.6774), x)
    np.testing.assert_allclose(velocity_to_peculiar(velocity_to_code(x, 0.9), 0.9), x)


def test_periodic_wrap_picks_the_nearest_image() -> None:
    box = 75000.0
    dx = np.array([box - 1.0, -(box - 1.0), 10.0, -10.0, box / 2 - 1, box + 3.0])
    np.testing.assert_allclose(wrap_periodic(dx, box), [-1.0, 1.0, 10.0, -10.0, box / 2 - 1, 3.0])
    assert np.all(np.abs(wrap_periodic(np.linspace(-3 * box, 3 * box, 1001), box)) <= box / 2)


def test_ages_follow_the_simulation_cosmology() -> None:
    cosmo = cosmology(TNG)
    t0 = cosmo.age(0).to_value("Gyr")
    assert t0 == pytest.approx(13.8, abs=0.1)  # TNG's Planck 2015 cosmology
    a_birth = np.array([1.0, 0.5, 0.2])
    expected = t0 - cosmo.age(1 / a_birth - 1).to_value("Gyr")
    np.testing.assert_allclose(stellar_age_gyr(a_birth, 1.0, cosmo), expected, atol=2e-3)
    # at z=0.1 a star born at z=1 is younger than it is at z=0 by the time in between
    a91 = 1 / 1.1
    dt = t0 - cosmo.age(0.1).to_value("Gyr")
    assert stellar_age_gyr(np.array([0.5]), a91, cosmo)[0] == pytest.approx(expected[1] - dt, abs=2e-3)
    ages = np.array([0.1, 3.0, 10.0])
    np.testing.assert_allclose(stellar_age_gyr(birth_scale_factor(ages, a91, cosmo), a91, cosmo), ages, atol=2e-3)


def test_non_flat_header_gives_non_flat_cosmology() -> None:
    cosmo = cosmology({"HubbleParam": 0.7, "Omega0": 0.3, "OmegaLambda": 0.6})
    assert cosmo.Ode0 == pytest.approx(0.6)
    assert cosmo.H0.value == pytest.approx(70.0)
