"""The radial-profile baseline: the training-set ex-situ fraction as a function of projected radius in
units of the stellar half-mass radius.

Every map spans fov = fov_rhalf * rhalf, so a pixel's distance from the map centre maps
to r / rhalf with the same factor for every galaxy. The profile uses galaxy pixels only, each
weighted by its map's weight (the training prior, see ``exsitu.fitted_baselines``), and gives per
radial bin either the weighted mean or the weighted median (the MAE-optimal summary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Summaries a profile can hold per radial bin.
STATISTICS = ("mean", "median")


def pixel_radius(npix: int, fov_rhalf: float) -> np.ndarray:
    """(npix, npix) projected radius of each pixel centre, in units of the half-mass radius."""
    centres = fov_rhalf * ((np.arange(npix) + 0.5) / npix - 0.5)
    return np.hypot(centres[None, :], centres[:, None])


@dataclass(frozen=True)
class RadialProfile:
    """Ex-situ fraction (dimensionless) at bin centres ``radius`` (units of rhalf); ``statistic`` says which summary."""

    radius: np.ndarray
    exsitu: np.ndarray
    fov_rhalf: float
    statistic: str = "mean"

    def predict(self, mask: np.ndarray) -> np.ndarray:
        """Maps (N, P, P) of the profile on galaxy pixels of ``mask`` (N, P, P), 0 elsewhere."""
        radius = pixel_radius(mask.shape[-1], self.fov_rhalf)
        return np.where(mask, np.interp(radius, self.radius, self.exsitu), 0.0).astype(np.float32)


def profile_from_pixels(
    radius: np.ndarray,
    exsitu: np.ndarray,
    weights: np.ndarray | None,
    npix: int,
    fov_rhalf: float,
    statistic: str = "mean",
) -> RadialProfile:
    """The profile from galaxy pixels: radius [rhalf], true ex-situ fraction and weight (n,) each (None: 1).

    One bin per pixel width out to the field's corner; empty bins are left out (the prediction interpolates).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    w = np.ones(len(exsitu)) if weights is None else np.asarray(weights, np.float64)
    edges = np.linspace(0.0, fov_rhalf / np.sqrt(2), npix + 1)
    which = np.clip(np.digitize(radius, edges) - 1, 0, npix - 1)
    total = np.bincount(which, weights=w, minlength=npix)
    filled = total > 0
    if statistic == "mean":
        value = np.bincount(which, weights=w * exsitu, minlength=npix)[filled] / total[filled]
    else:
        value = np.array(
            [
                np.quantile(exsitu[which == b], 0.5, weights=w[which == b], method="inverted_cdf")
                for b in np.flatnonzero(filled)
            ]
        )
    centres = 0.5 * (edges[1:] + edges[:-1])
    return RadialProfile(centres[filled], value, float(fov_rhalf), statistic)
