"""Scalar summaries of ex-situ fraction maps on the model grid: integrated fractions in apertures and rings,
the inner-minus-outer gradient, and the mass shares at the clip.

A model map spans ``fov_rhalf`` half-mass radii on a side and is centred on the galaxy, so a
pixel's distance from the map centre in half-mass radii is the same for every galaxy
(:func:`exsitu.radial.pixel_radius`). The integrated ex-situ fraction inside an aperture is the
mass-weighted mean of the map there, sum(w f) / sum(w), with w the stellar mass per pixel
(pixels of one map have equal areas, so surface density serves as well as mass).

The shares at the clip are the mass-weighted share of the galaxy whose fraction lies at or beyond the
likelihood's clip (f <= eps, f >= 1 - eps; ``cvae.logit_eps``). A true map has them wherever no ex-situ (or
no in-situ) particle reaches a pixel's kernel; a sample has them wherever its logit falls beyond the clip.
Their calibration tells whether a posterior puts the right amount of a map at 0 and 1 jointly, which
the integrated fraction of a map predicted near 0 depends on (README, "Where the integrated fraction's
intervals miss").
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
    region = np.ones(np.shape(maps)[-2:], bool) if aperture is None else np.asarray(aperture, dtype=bool)
    return region_fractions(maps, weights, region[None])[..., 0]


def region_fractions(maps: np.ndarray, weights: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Mass-weighted ex-situ fraction of maps (..., P, P) inside each of ``regions`` (R, P, P) bool: shape (..., R).

    ``maps`` and ``weights`` as in :func:`integrated_fraction`; NaN where a region holds no weight. One
    matrix product over the pixels for all regions: the weights (one map of K samples shares them) are
    multiplied into the regions once, never broadcast to the samples' shape (the evaluation's 13
    functionals per sample took 12 s of its 200 that way).
    """
    maps = np.asarray(maps, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    lead = np.broadcast_shapes(maps.shape[:-2], weights.shape[:-2])
    regions = np.asarray(regions, dtype=bool)
    weighted = (weights[..., None, :, :] * regions).reshape(*weights.shape[:-2], len(regions), -1)
    sums = (weighted @ maps.reshape(*maps.shape[:-2], -1, 1))[..., 0]  # (..., R): sum(w f) per region
    total = np.broadcast_to(weighted.sum(-1), (*lead, len(regions)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.broadcast_to(sums, (*lead, len(regions))) / np.where(total > 0, total, np.nan)


#: Apertures of the integrated fractions in the evaluation: name -> radius [half-mass radii] (None: the field).
APERTURES: dict[str, float | None] = {"fov": None, "1rhalf": 1.0, "2rhalf": 2.0}
#: Ring edges [half-mass radii] of the radial-profile functionals (mass-weighted fraction per ring).
PROFILE_EDGES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
#: The gradient functional: mass-weighted fraction inside INNER minus that in the OUTER ring [half-mass radii].
GRADIENT_INNER, GRADIENT_OUTER = (0.0, 1.0), (1.0, 2.0)
#: The mass shares at the clip (see the module doc): f <= eps and f >= 1 - eps.
CLIP_SHARES: tuple[str, ...] = ("at_clip_0", "at_clip_1")


def ring(npix: int, fov_rhalf: float, inner: float, outer: float) -> np.ndarray:
    """(npix, npix) bool: pixel centres at inner <= r < outer half-mass radii from the map centre."""
    radius = pixel_radius(npix, fov_rhalf)
    return (radius >= inner) & (radius < outer)


def functional_names() -> list[str]:
    """Names of :func:`map_functionals`, in its order."""
    return [f"integrated_{name}" for name in APERTURES] + list(_rings()) + ["gradient", *CLIP_SHARES]


def _rings() -> dict[str, tuple[float, float]]:
    """The radial-profile functionals: name -> (inner, outer) edge [half-mass radii]."""
    return {f"profile_{lo:g}-{hi:g}": (lo, hi) for lo, hi in zip(PROFILE_EDGES[:-1], PROFILE_EDGES[1:])}


def integrated_fractions(maps: np.ndarray, weights: np.ndarray, fov_rhalf: float) -> dict[str, np.ndarray]:
    """Mass-weighted ex-situ fraction of maps (..., P, P) inside each of :data:`APERTURES`: name -> shape (...).

    ``weights`` as in :func:`integrated_fraction`; ``fov_rhalf`` the map's side in half-mass radii. NaN where an
    aperture holds no galaxy mass.
    """
    apertures = _apertures(np.shape(maps)[-1], fov_rhalf)
    values = region_fractions(maps, weights, np.stack(list(apertures.values())))
    return {name: values[..., i] for i, name in enumerate(apertures)}


def _apertures(npix: int, fov_rhalf: float) -> dict[str, np.ndarray]:
    """The pixels of each of :data:`APERTURES`: name -> (P, P) bool."""
    whole = np.ones((npix, npix), bool)
    return {name: whole if r is None else aperture(npix, fov_rhalf, r) for name, r in APERTURES.items()}


def map_functionals(maps: np.ndarray, weights: np.ndarray, fov_rhalf: float, clip: float) -> dict[str, np.ndarray]:
    """The scalar functionals of maps (..., P, P), each of shape (...): those astronomers quote, and the clip shares.

    ``integrated_<aperture>``: mass-weighted ex-situ fraction inside each of :data:`APERTURES`;
    ``profile_<lo>-<hi>``: inside each ring of :data:`PROFILE_EDGES`; ``gradient``: inner minus outer
    (:data:`GRADIENT_INNER`, :data:`GRADIENT_OUTER`); ``at_clip_0`` and ``at_clip_1``: the mass share of the map
    at f <= ``clip`` and at f >= 1 - ``clip`` (``cvae.logit_eps``). ``weights`` as in :func:`integrated_fraction`;
    NaN where an aperture holds no galaxy mass (e.g. outside an IFU footprint).
    """
    maps = np.asarray(maps)
    npix = maps.shape[-1]
    regions = {f"integrated_{name}": pixels for name, pixels in _apertures(npix, fov_rhalf).items()}
    regions |= {name: ring(npix, fov_rhalf, lo, hi) for name, (lo, hi) in _rings().items()}
    regions |= {"inner": ring(npix, fov_rhalf, *GRADIENT_INNER), "outer": ring(npix, fov_rhalf, *GRADIENT_OUTER)}
    values = region_fractions(maps, weights, np.stack(list(regions.values())))
    out = {name: values[..., i] for i, name in enumerate(regions)}
    out["gradient"] = out.pop("inner") - out.pop("outer")
    out["at_clip_0"] = integrated_fraction(maps <= clip, weights)
    out["at_clip_1"] = integrated_fraction(maps >= 1.0 - clip, weights)
    return out
