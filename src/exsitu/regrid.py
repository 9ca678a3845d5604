"""Flux-conserving (area-overlap) regridding between axis-aligned grids of square pixels.

Two grids that differ in pixel size, extent and centre (an ideal simulation map and an IFU
spaxel grid, or a spaxel grid and the model's P x P grid) share one length unit (kpc or
arcsec). A source pixel contributes to a destination pixel in proportion to the area they
share; because both grids are axis-aligned that area is the product of the 1D overlaps along
x and along y, so regridding is two small dense matrix products, ``Wy @ image @ Wx.T``
(exact, no sub-sampling, vectorised over any leading axes). This is the "drizzle" scheme
with pixfrac = 1 (Fruchter & Hook 2002, PASP 114, 144) for grids that are not rotated.

* :func:`regrid_sum` moves EXTENSIVE quantities (mass, mass-weighted moments such as
  sum(m v)): totals are conserved for the part of the source inside the destination.
* :func:`regrid_mean` moves INTENSIVE quantities (velocity, age, posterior ex-situ
  fraction): each destination pixel gets the overlap-area (optionally weight-) weighted mean.
* :func:`covered_fraction` says how much of each destination pixel a (masked) source covers.

Ratios of moments (mass-weighted means) should be regridded as moments with
:func:`regrid_sum` and divided afterwards, which is what :func:`regrid_mean` with
``weights`` does in one call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PixelGrid:
    """An axis-aligned grid of square pixels.

    ``image[iy, ix]`` covers x in ``[x0 + ix*pixel, x0 + (ix+1)*pixel)`` with
    ``x0 = center[0] - nx*pixel/2``, and the same for y with ``center[1]`` and ``ny``: the
    convention of :func:`exsitu.projection.project` (whose grid is ``PixelGrid.square(P, fov)``).

    Attributes:
        shape: (ny, nx) pixels.
        pixel: pixel side, in any length unit (kpc, arcsec) shared with the other grid.
        center: (x, y) of the grid centre, same unit.
    """

    shape: tuple[int, int]
    pixel: float
    center: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1 or not self.pixel > 0:
            raise ValueError(f"PixelGrid needs a (ny, nx) shape of positive ints and a pixel > 0, got {self}")

    @classmethod
    def square(cls, npix: int, fov: float, center: tuple[float, float] = (0.0, 0.0)) -> PixelGrid:
        """``npix`` x ``npix`` pixels spanning ``fov`` (length unit) on a side, centred on ``center``."""
        return cls((int(npix), int(npix)), float(fov) / int(npix), (float(center[0]), float(center[1])))

    @property
    def area(self) -> float:
        """Area of one pixel [length unit^2]."""
        return self.pixel * self.pixel

    @property
    def x_edges(self) -> np.ndarray:
        """(nx + 1,) pixel edges along x."""
        return self.center[0] + self.pixel * (np.arange(self.shape[1] + 1) - 0.5 * self.shape[1])

    @property
    def y_edges(self) -> np.ndarray:
        """(ny + 1,) pixel edges along y."""
        return self.center[1] + self.pixel * (np.arange(self.shape[0] + 1) - 0.5 * self.shape[0])

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of every pixel centre, each (ny, nx)."""
        xe, ye = self.x_edges, self.y_edges
        return np.meshgrid(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]))


def overlap_1d(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """(n_dst, n_src) length shared by destination interval j and source interval i (edges increasing)."""
    lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1])
    hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:])
    return np.clip(hi - lo, 0.0, None)


def _apply(image: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """``wy @ image @ wx.T`` over the last two axes of ``image`` (leading axes broadcast)."""
    return np.matmul(np.matmul(wy, np.asarray(image, dtype=np.float64)), wx.T)


def regrid_sum(image: np.ndarray, src: PixelGrid, dst: PixelGrid) -> np.ndarray:
    """Regrid an extensive quantity (per-pixel totals) from ``src`` to ``dst``.

    Each source pixel's total is split among destination pixels by overlap area, so the sum
    over ``dst`` equals the sum over the source pixels inside it (exactly, when ``dst``
    contains ``src``). Units are unchanged (e.g. Msun per pixel in, Msun per pixel out).

    Args:
        image: (..., ny_src, nx_src) per-pixel totals.
    Returns:
        (..., ny_dst, nx_dst) float64 per-pixel totals.
    """
    wy = overlap_1d(src.y_edges, dst.y_edges) / src.pixel
    wx = overlap_1d(src.x_edges, dst.x_edges) / src.pixel
    return _apply(image, wy, wx)


def regrid_mean(
    values: np.ndarray, src: PixelGrid, dst: PixelGrid, weights: np.ndarray | None = None, fill: float = 0.0
) -> np.ndarray:
    """Regrid an intensive quantity: the overlap-area (x ``weights``) weighted mean of the source pixels.

    With ``weights`` the result is ``sum(A w v) / sum(A w)`` over source pixels overlapping
    each destination pixel (A: overlap area); a mass-weighted map regridded with the mass as
    weight is exactly the ratio of regridded moments. Units of ``values`` are unchanged.

    Args:
        values: (..., ny_src, nx_src).
        weights: broadcastable to ``values``, >= 0 (e.g. mass per pixel, or a 0/1 mask to
            ignore pixels); None weighs by area alone.
        fill: value of destination pixels with no weighted overlap.
    Returns:
        (..., ny_dst, nx_dst) float64.
    """
    wy = overlap_1d(src.y_edges, dst.y_edges)
    wx = overlap_1d(src.x_edges, dst.x_edges)
    values = np.asarray(values, dtype=np.float64)
    w = np.ones(values.shape[-2:]) if weights is None else np.asarray(weights, dtype=np.float64)
    num = _apply(w * values, wy, wx)
    den = _apply(w, wy, wx)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), float(fill))
    np.divide(num, den, out=out, where=den > 0)
    return out


def covered_fraction(src: PixelGrid, dst: PixelGrid, mask: np.ndarray | None = None) -> np.ndarray:
    """(..., ny_dst, nx_dst) fraction in [0, 1] of each destination pixel's area covered by source
    pixels (only those where ``mask`` is true, if given; ``mask`` is (..., ny_src, nx_src))."""
    m = np.ones(src.shape) if mask is None else np.asarray(mask, dtype=np.float64)
    return np.clip(regrid_sum(m, src, dst) * (src.area / dst.area), 0.0, 1.0)
