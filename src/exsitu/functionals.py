"""Scalar summaries of ex-situ fraction maps on the model grid: apertures and integrated fractions.

A model map spans ``fov_rhalf`` half-mass radii on a side and is centred on the galaxy, so a
pixel's distance from the map centre in half-mass radii is the same for every galaxy
(:func:`exsitu.radial.pixel_radius`). The integrated ex-situ fraction inside an aperture is the
mass-weighted mean of the map there, sum(w f) / sum(w), with w the stellar mass per pixel
(pixels of one map have equal areas, so surface density serves as well as mass).
"""

from __future__ import annotations

import numpy as np

from exsitu.radial import pixel_radius


def aperture(npix: int, fov_rhalf: float, r_max_rhalf: float) -> np.ndarray:
    """(npix, npix) bool: pixel centres within ``r_max_rhalf`` half-mass radii of the map centre.

    Args:
        npix: P, pixels per side of the model grid.
        fov_rhalf: the map's side in half-mass radii (``maps.fov_rhalf``; model.json ``fov_rhalf``).
        r_max_rhalf: aperture radius in half-mass radii (> 0).
    """
    if not r_max_rhalf > 0:
        raise ValueError(f"the aperture radius must be > 0 half-mass radii, got {r_max_rhalf}")
    return pixel_radius(npix, fov_rhalf) <= r_max_rhalf


def integrated_fraction(maps: np.ndarray, weights: np.ndarray, aperture: np.ndarray | None = None) -> np.ndarray:
    """Mass-weighted ex-situ fraction of maps (..., P, P) inside ``aperture``: shape (...).

    Args:
        maps: ex-situ fraction maps (dimensionless, 0..1), any leading axes (e.g. (N, K, P, P)).
        weights: stellar mass (or surface density) per pixel, broadcastable to ``maps``
            (e.g. (N, 1, P, P) for K samples of N maps); 0 off the galaxy.
        aperture: (P, P) bool, the pixels to integrate over (None: the whole map).

    Returns:
        sum(w f) / sum(w) over the pixels; NaN where the weights inside the aperture sum to 0.
    """
    maps = np.asarray(maps, dtype=np.float64)
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), maps.shape)
    if aperture is not None:
        weights = weights * np.asarray(aperture, dtype=bool)
    total = weights.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (maps * weights).sum(axis=(-2, -1)) / np.where(total > 0, total, np.nan)
