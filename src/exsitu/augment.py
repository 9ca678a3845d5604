"""Data augmentation with the eight symmetries of the square pixel grid (the dihedral group D4).

A map is a projection along a line of sight of a galaxy whose orientation is random. Rotating the
image axes about the line of sight by a multiple of 90 degrees is the same galaxy seen with another
orientation; reflecting the sky plane (image x -> -x) is its mirror image, an equally valid galaxy
(gravity and hydrodynamics are parity-invariant). Neither changes the line-of-sight axis, so every
star keeps its line-of-sight velocity: all five channels (mass, velocity, dispersion, age,
metallicity), the ex-situ map and the mask simply move with their pixels, with no sign flip.
tests/test_augment.py projects a mock galaxy's particles along the transformed axes and checks the
maps equal the transformed maps.

Element ``e`` in 0..7 of :data:`ELEMENTS`: reflect the image x axis (flip the last axis) when
``e >= 4``, then rotate by ``e % 4`` quarter turns (``torch.rot90`` on the last two axes). In
``exsitu.projection`` terms (rotation rows: image x, image y, line of sight) a quarter turn replaces
the rows (x, y, z) by (y, -x, z) and the reflection by (-x, y, z).
"""

from __future__ import annotations

import torch

#: The group's elements: 4 rotations, then the 4 rotations after a reflection.
ELEMENTS = 8


def dihedral(maps: torch.Tensor, element: int) -> torch.Tensor:
    """``maps`` (..., P, P) transformed by one element of the group (module docstring); any dtype."""
    if not 0 <= element < ELEMENTS:
        raise ValueError(f"a symmetry of the square is an element in 0..{ELEMENTS - 1}, got {element}")
    if maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"the symmetries of the square need square maps, got {tuple(maps.shape)}")
    out = maps.flip(-1) if element >= 4 else maps
    return torch.rot90(out, element % 4, dims=(-2, -1))


def _permutation(element: int, npix: int) -> torch.Tensor:
    """Flat source pixel of every output pixel under ``element``: out.flat[i] = maps.flat[perm[i]]."""
    return dihedral(torch.arange(npix * npix).reshape(npix, npix), element).reshape(-1)


def apply_elements(maps: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
    """(B, ..., P, P) maps, map i transformed by ``elements[i]`` (B,) int; one gather, any dtype and device."""
    b, p = maps.shape[0], maps.shape[-1]
    if elements.shape != (b,):
        raise ValueError(f"one element per map: elements must be ({b},), got {tuple(elements.shape)}")
    table = torch.stack([_permutation(e, p) for e in range(ELEMENTS)]).to(maps.device)
    flat = maps.reshape(b, -1, p * p)
    index = table[elements.to(maps.device)][:, None, :].expand_as(flat)
    return flat.gather(-1, index).reshape(maps.shape)


def random_dihedral(batch: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A training batch with one random symmetry per map (the training loop's ``batch_transform``).

    Every 4-d tensor (B, C, P, P) of ``batch`` (conditions, ex-situ map, mask) gets map i's element,
    the same for all of them; other tensors (scalars, weights) are returned untouched. The elements
    are drawn uniformly from ``generator`` (on its device), so a run is deterministic for its state.
    """
    images = [t for t in batch if t.ndim == 4]
    if not images:
        return list(batch)
    n = images[0].shape[0]
    if any(t.shape[0] != n for t in images):
        raise ValueError(f"the batch's maps disagree on the batch size: {[tuple(t.shape) for t in images]}")
    elements = torch.randint(ELEMENTS, (n,), generator=generator, device=generator.device)
    return [apply_elements(t, elements) if t.ndim == 4 else t for t in batch]
