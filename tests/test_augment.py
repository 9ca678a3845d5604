"""The eight symmetries of the square as augmentation: exact for all five channels, the target and the mask
(projecting a mock galaxy along transformed axes gives the transformed maps), and a group action."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exsitu.augment import ELEMENTS, apply_elements, dihedral, random_dihedral
from exsitu.literature import age_of_universe_gyr
from exsitu.mock.galaxies import draw_galaxy, make_particles
from exsitu.mock.particles import half_mass_radius
from exsitu.projection import project
from exsitu.sightlines import random_rotations

# The sky-plane transforms in exsitu.projection's convention (rotation rows: image x, image y, line of sight).
QUARTER_TURN = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # (x, y, z) -> (y, -x, z)
REFLECTION = np.diag([-1.0, 1.0, 1.0])  # image x -> -x: improper, the line of sight is unchanged


def compose(a: int, b: int) -> int:
    """The element equal to applying ``b`` first, then ``a``."""
    corners = torch.arange(4).reshape(2, 2)  # D4 acts faithfully on the corners of a square
    target = dihedral(dihedral(corners, b), a)
    return next(e for e in range(ELEMENTS) if torch.equal(dihedral(corners, e), target))


def sky_transform(element: int) -> np.ndarray:
    """The 3x3 transform of the image axes that ``augment.dihedral(., element)`` stands for."""
    return np.linalg.matrix_power(QUARTER_TURN, element % 4) @ (REFLECTION if element >= 4 else np.eye(3))


@pytest.fixture(scope="module")
def mock_galaxy() -> dict[str, np.ndarray]:
    """A mock disc galaxy with accreted debris (~8500 star particles), in its own frame."""
    # 10^10.8 Msun: the exact halo draw gave this seed's 10^10.6 galaxy too few ex-situ stars (0.037) to test with.
    particles = make_particles(draw_galaxy(np.random.default_rng(5), 10.8), age_of_universe_gyr(), 0.0)
    assert 0.05 < np.mean(particles.insitu == 0) < 0.95
    return {
        "pos": particles.pos,
        "vel": particles.vel,
        "mass": particles.mass,
        "age": particles.age,
        "metallicity": particles.metallicity,
        "exsitu_flag": particles.insitu == 0,
    }


@pytest.mark.parametrize("smoothing", ["none", "adaptive"])
@pytest.mark.parametrize("npix", [16, 33])
def test_symmetries_of_the_maps_are_projections_along_transformed_axes(mock_galaxy, smoothing, npix) -> None:
    rotation = random_rotations(np.random.default_rng(1), 1)[0]
    rotations = np.stack([sky_transform(e) @ rotation for e in range(ELEMENTS)])
    assert np.allclose(np.linalg.det(rotations), [1, 1, 1, 1, -1, -1, -1, -1])
    fov = 4 * half_mass_radius(mock_galaxy["pos"], mock_galaxy["mass"])
    conditions, exsitu, mask = project(**mock_galaxy, rotations=rotations, fov_kpc=fov, npix=npix, smoothing=smoothing)
    assert 0.2 < mask[0].mean() and np.ptp(conditions[0, 1][mask[0, 0]]) > 50  # a galaxy that rotates
    for e in range(ELEMENTS):
        # Pixel sums run over the same particles in the same order, so binned maps are bitwise equal; the
        # adaptive kernels depend on 3D positions only and are symmetric, but their FFT convolution rounds in
        # float64 in another order, so float32 round-off is allowed there (bitwise equal on this mock).
        tol = {"rtol": 0, "atol": 0} if smoothing == "none" else {"rtol": 1e-6, "atol": 1e-6}
        for name, maps in (("conditions", conditions), ("exsitu", exsitu)):
            expected = dihedral(torch.from_numpy(maps[0]), e).numpy()
            np.testing.assert_allclose(maps[e], expected, **tol, err_msg=f"{name}, element {e}")
        np.testing.assert_array_equal(mask[e], dihedral(torch.from_numpy(mask[0]), e).numpy())


def test_dihedral_is_a_group_action() -> None:
    maps = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    assert torch.equal(dihedral(maps, 0), maps)
    images = {e: dihedral(maps, e) for e in range(ELEMENTS)}
    assert len({tuple(t.flatten().tolist()) for t in images.values()}) == ELEMENTS  # eight distinct maps
    for a in range(ELEMENTS):
        inverse = [b for b in range(ELEMENTS) if compose(b, a) == 0]
        assert len(inverse) == 1 and torch.equal(dihedral(images[a], inverse[0]), maps)
        for b in range(ELEMENTS):
            assert torch.equal(dihedral(images[b], a), images[compose(a, b)])
    assert compose(1, 1) == 2 and compose(4, 4) == 0 and compose(1, 4) != compose(4, 1)  # not abelian
    # Per-map elements in one gather equal the single transforms, for every dtype.
    elements = torch.tensor([3, 6])
    for t in (maps, maps > 40, maps.to(torch.int64)):
        out = apply_elements(t, elements)
        assert out.dtype == t.dtype
        assert all(torch.equal(out[i], dihedral(t[i], int(e))) for i, e in enumerate(elements))


def which_element(image: torch.Tensor, original: torch.Tensor) -> int:
    """The element that maps ``original`` to ``image`` (distinct for generic maps)."""
    return next(e for e in range(ELEMENTS) if torch.equal(image, dihedral(original, e)))


def test_random_dihedral_moves_a_maps_tensors_together_and_is_deterministic() -> None:
    n = 64
    conditions = torch.randn(n, 5, 8, 8)
    exsitu = conditions[:, :1].sigmoid()
    mask = conditions[:, :1] > 0
    scalars, weights = torch.randn(n, 2), torch.rand(n)
    batch = [conditions, exsitu, mask, scalars, weights]
    out = random_dihedral(batch, torch.Generator().manual_seed(0))
    assert out[3] is scalars and out[4] is weights  # non-map tensors untouched
    assert all(o.shape == b.shape and o.dtype == b.dtype for o, b in zip(out, batch))
    # The same element for all of a map's tensors: target and mask still follow channel 0.
    assert torch.equal(out[1], out[0][:, :1].sigmoid()) and torch.equal(out[2], out[0][:, :1] > 0)
    # Each map got one of the eight images of itself, and all eight elements occur.
    found = [which_element(out[0][i], conditions[i]) for i in range(n)]
    assert set(found) == set(range(ELEMENTS))
    again = random_dihedral(batch, torch.Generator().manual_seed(0))
    other = random_dihedral(batch, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(out, again))
    assert not torch.equal(out[0], other[0])
    # Applying two random draws equals applying their composition (a group action, map by map).
    twice = random_dihedral(out, torch.Generator().manual_seed(1))
    second = [which_element(other[0][i], conditions[i]) for i in range(n)]
    for i in range(n):
        assert torch.equal(twice[0][i], dihedral(conditions[i], compose(second[i], found[i])))


def test_bad_inputs_are_clear() -> None:
    with pytest.raises(ValueError, match="element in 0..7"):
        dihedral(torch.zeros(4, 4), 8)
    with pytest.raises(ValueError, match="square maps"):
        dihedral(torch.zeros(4, 5), 1)
    with pytest.raises(ValueError, match="batch size"):
        random_dihedral([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4)], torch.Generator())
