"""The radial-profile baseline: the training-set mean ex-situ fraction as a function of
projected radius in units of the stellar half-mass radius.

Every map spans fov = fov_rhalf * rhalf, so a pixel's distance from the map centre maps
to r / rhalf with the same factor for every galaxy. The profile averages galaxy pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pixel_radius(npix: int, fov_rhalf: float) -> np.ndarray:
    """(npix, npix) projected radius of each pixel centre, in units of the half-mass radius."""
    centres = fov_rhalf * ((np.arange(npix) + 0.5) / npix - 0.5)
    return np.hypot(centres[None, :], centres[:, None])


@dataclass(frozen=True)
class RadialProfile:
    """Mean ex-situ fraction (dimensionless) at bin centres ``radius`` (units of rhalf)."""

    radius: np.ndarray
    exsitu: np.ndarray
    fov_rhalf: float

    def predict(self, mask: np.ndarray) -> np.ndarray:
        """Maps (N, P, P) of the profile on galaxy pixels of ``mask`` (N, P, P), 0 elsewhere."""
        radius = pixel_radius(mask.shape[-1], self.fov_rhalf)
        return np.where(mask, np.interp(radius, self.radius, self.exsitu), 0.0).astype(np.float32)


def fit_radial_profile(exsitu: np.ndarray, mask: np.ndarray, fov_rhalf: float) -> RadialProfile:
    """Fit the profile on training maps: exsitu and mask (N, P, P); one bin per pixel width."""
    npix = exsitu.shape[-1]
    radius = np.broadcast_to(pixel_radius(npix, fov_rhalf), exsitu.shape)[mask]
    edges = np.linspace(0.0, fov_rhalf / np.sqrt(2), npix + 1)
    which = np.clip(np.digitize(radius, edges) - 1, 0, npix - 1)
    total = np.bincount(which, weights=exsitu[mask], minlength=npix)
    count = np.bincount(which, minlength=npix)
    filled = count > 0
    centres = 0.5 * (edges[1:] + edges[:-1])
    return RadialProfile(centres[filled], total[filled] / count[filled], float(fov_rhalf))
