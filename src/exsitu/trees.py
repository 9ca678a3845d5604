"""The gradient-boosted-tree baseline: each pixel's ex-situ fraction from its own observables, its radius
and its galaxy's context, with no neighbouring pixels.

A pixel's features (:class:`TreeFeatures`, in this order):

- its condition channels (the model's ``conditions.channels``, physical units of ``contracts.UNITS``);
- its projected radius from the map centre in half-mass radii (``exsitu.radial.pixel_radius``);
- the configured galaxy scalars (``exsitu.scalars``: log10 M*, log10 r_half [kpc], redshift);
- the map's mean of each of dispersion, age and metallicity that the channels provide, over the
  galaxy pixels, weighted by the surface density when ``mass`` is a channel (equal weights otherwise).

Three scikit-learn ``HistGradientBoostingRegressor`` models are fitted on the same training pixels
and weights: ``loss="absolute_error"`` (its prediction is the conditional median, the summary that
minimises the absolute error) and ``loss="quantile"`` at 0.16 and 0.84 (a 68% interval). Trees are
invariant to monotone transforms of a feature, so physical or standardised channels give the same
trees; physical units make the map means mass-weighted without the normalisation at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from exsitu.io import InputError
from exsitu.lookup import per_pixel
from exsitu.radial import pixel_radius

#: Channels whose map-level mean is a feature (when the model has the channel).
MAP_MEAN_CHANNELS: tuple[str, ...] = ("dispersion", "age", "metallicity")
#: Quantile levels of the interval models.
QUANTILES: tuple[float, float] = (0.16, 0.84)
#: Boosting settings, fixed a priori: the scikit-learn defaults, with early stopping on a random tenth of the
#: training pixels at any data size.
BOOSTING = {
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
}


@dataclass(frozen=True)
class TreeFeatures:
    """How the trees see a pixel: the channels (contract order), the scalars (canonical order), the field in r_half."""

    channels: tuple[str, ...]
    scalars: tuple[str, ...]
    fov_rhalf: float

    @property
    def map_means(self) -> tuple[str, ...]:
        """The channels whose map mean is a feature."""
        return tuple(c for c in MAP_MEAN_CHANNELS if c in self.channels)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in column order."""
        return (*self.channels, "radius_rhalf", *self.scalars, *(f"map_mean_{c}" for c in self.map_means))

    def features(
        self, conditions: np.ndarray, mask: np.ndarray, scalars: np.ndarray, pixels: np.ndarray | None = None
    ) -> np.ndarray:
        """(n_pix, F) float64 features of the ``pixels`` (N, P, P) bool, default ``mask``, in mask order.

        conditions: (N, C, P, P) the channels in physical units; mask: (N, P, P) galaxy pixels (the map
        means run over all of them); scalars: (N, S) the galaxy scalars in the order of ``self.scalars``.
        """
        n, c, p = len(mask), len(self.channels), mask.shape[-1]
        if conditions.shape != (n, c, p, p):
            raise InputError(f"tree features need conditions of shape {(n, c, p, p)}, got {conditions.shape}")
        scalars = np.asarray(scalars, np.float64)
        if scalars.shape != (n, len(self.scalars)):
            raise InputError(f"tree features need scalars {self.scalars} of shape {(n, len(self.scalars))}")
        pixels = mask if pixels is None else pixels
        cond = conditions.astype(np.float64)
        if "mass" in self.channels:
            weight = np.where(mask, 10.0 ** cond[:, self.channels.index("mass")], 0.0)
        else:
            weight = mask.astype(np.float64)
        total = weight.sum(axis=(1, 2))
        if np.any(total <= 0):
            raise InputError(f"maps {np.flatnonzero(total <= 0).tolist()} have no galaxy pixel")
        means = [(cond[:, self.channels.index(m)] * weight).sum(axis=(1, 2)) / total for m in self.map_means]
        radius = np.broadcast_to(pixel_radius(p, self.fov_rhalf), mask.shape)[pixels]
        return np.column_stack(
            [np.moveaxis(cond, 1, -1)[pixels], radius, per_pixel(np.column_stack([scalars, *means]), pixels)]
        )


@dataclass(frozen=True)
class PixelTrees:
    """The fitted tree baseline: the median model and the two quantile models, on :class:`TreeFeatures`."""

    inputs: TreeFeatures
    median: HistGradientBoostingRegressor
    lower: HistGradientBoostingRegressor
    upper: HistGradientBoostingRegressor

    def predict(
        self, conditions: np.ndarray, mask: np.ndarray, scalars: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, p16, p84) maps (N, P, P) float32 in [0, 1], 0 outside ``mask``, p16 <= median <= p84.

        Inputs as for :meth:`TreeFeatures.features` (conditions in physical units).
        """
        maps = np.zeros((3, *mask.shape), np.float32)
        maps[:, mask] = self.predict_features(self.inputs.features(conditions, mask, scalars)).T
        return maps[0], maps[1], maps[2]

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """(n, 3) median, p16, p84 for (n, F) features, clipped to [0, 1] and ordered (quantile models can cross)."""
        median = np.clip(self.median.predict(features), 0.0, 1.0)
        lower = np.minimum(np.clip(self.lower.predict(features), 0.0, 1.0), median)
        upper = np.maximum(np.clip(self.upper.predict(features), 0.0, 1.0), median)
        return np.column_stack([median, lower, upper]).astype(np.float32)


def fit_trees(
    features: np.ndarray, target: np.ndarray, weights: np.ndarray | None, inputs: TreeFeatures, seed: int = 0
) -> PixelTrees:
    """Fit the three models on training pixels: (n, F) ``inputs.features``, (n,) true fractions, (n,) weights (None: 1).

    Deterministic for ``seed`` (the early-stopping split and the binning subsample). Time grows with the
    pixels and the boosting iterations; the fit_baselines stage logs it (results/benchmarks/fit_baselines.tsv).
    """
    if features.ndim != 2 or features.shape != (len(target), len(inputs.names)):
        raise InputError(
            f"tree features must be (n, {len(inputs.names)}) for {len(target)} targets, got {features.shape}"
        )
    if len(target) < 20:
        raise InputError(f"the tree baseline needs at least 20 training pixels, got {len(target)}")
    if weights is not None and np.all(weights == weights[0]):
        weights = None  # the same fit, on scikit-learn's faster unweighted leaf medians

    def model(loss: str, quantile: float | None = None) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(loss=loss, quantile=quantile, random_state=seed, **BOOSTING).fit(
            features, target, sample_weight=weights
        )

    return PixelTrees(inputs, model("absolute_error"), model("quantile", QUANTILES[0]), model("quantile", QUANTILES[1]))
