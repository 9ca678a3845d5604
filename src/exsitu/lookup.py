"""The per-pixel lookup baseline: the ex-situ fraction a pixel's own observables predict, with no spatial context.

Each galaxy pixel is described by its condition channels (the model's ``conditions.channels``, in
physical or normalised units, as long as fit and prediction agree) and its galaxy's context: one
or more per-map numbers, the configured galaxy scalars (``exsitu.scalars``: log10 M*, log10 r_half,
...) or the stellar mass inside the field of view (:func:`log_stellar_mass`). The prediction is
the weighted median true ex-situ fraction of the k nearest TRAINING pixels in that feature space,
each feature standardised to unit variance (k-nearest neighbour regression; Hastie, Tibshirani &
Friedman 2009, sec. 2.3.2); the median is the summary that minimises the absolute error, and the
weights are the training pixels' map weights (the training prior). Neighbours come from any
training map and any position, so the baseline knows nothing about where a pixel sits or what its
neighbours look like: it is the floor that spatial context and the cVAE's latent must beat.

The tree is built on at most ``max_pixels`` training pixels drawn at random (default 200 000:
fitting takes under a second on ~8e5 training pixels). Prediction is the cost: about 0.1 ms per
test pixel per core at k = 32 (benchmarks/bench_diagnostics.py: 19 s for 1.6e5 test pixels on one
busy core), so it scales with the number of TEST pixels; ``workers=-1`` spreads it over all cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from exsitu.io import InputError

#: Neighbours summarised per prediction (fixed a priori, not tuned on any test set).
LOOKUP_K = 32
#: At most this many training pixels, drawn at random, enter the tree.
LOOKUP_MAX_PIXELS = 200_000
#: Training pixels per leaf of the tree, split at the sliding midpoint (``balanced_tree=False``): the queries of
#: the default mock's 433 901 test pixels at k = 32 took 6.5-6.6 s on 2 cores against 8.9-9.3 s with scipy's
#: defaults (16 per leaf, median splits), with the same neighbour distances and predictions (the neighbours tied
#: at the k-th distance may differ: any of them is a k-th nearest neighbour).
LOOKUP_LEAFSIZE = 64


def log_stellar_mass(log_sigma: np.ndarray, mask: np.ndarray, fov_kpc: np.ndarray) -> np.ndarray:
    """log10 stellar mass [Msun] inside each map's field of view.

    log_sigma: (N, P, P) stellar mass surface density [log10 Msun/kpc^2] (the ``mass`` channel in
    physical units); mask: (N, P, P) galaxy pixels; fov_kpc: (N,) side of the map [kpc].
    """
    pixel_area = (np.asarray(fov_kpc, dtype=np.float64) / mask.shape[-1]) ** 2
    mass = np.where(mask, 10.0 ** np.asarray(log_sigma, dtype=np.float64), 0.0).sum(axis=(-2, -1)) * pixel_area
    if np.any(mass <= 0):
        raise InputError(f"maps {np.flatnonzero(mass <= 0).tolist()} have no stellar mass inside the mask")
    return np.log10(mass)


def per_pixel(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-map values (N, ...) repeated for each galaxy pixel of ``mask`` (N, P, P), in mask order: (n_pix, ...)."""
    return np.asarray(values)[np.nonzero(mask)[0]]


def pixel_features(conditions: np.ndarray, mask: np.ndarray, context: np.ndarray) -> np.ndarray:
    """(n_pix, C + S) features of the galaxy pixels in ``mask`` order: the C channels, then the map's S context values.

    conditions: (N, C, P, P); mask: (N, P, P) bool; context: (N,) (one value per map, e.g. log10 M* [Msun])
    or (N, S) (the galaxy scalars; S may be 0).
    """
    if conditions.ndim != 4 or conditions.shape[2:] != mask.shape[1:]:
        raise InputError(f"conditions must be (N, C, P, P) matching mask {mask.shape}, got {conditions.shape}")
    context = np.asarray(context, dtype=np.float64).reshape(len(mask), -1)
    channels = np.moveaxis(conditions, 1, -1)[mask]
    return np.column_stack([channels.astype(np.float64), per_pixel(context, mask)])


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted median of (n, k) values with positive (n, k) weights: the smallest value whose
    cumulative weight reaches half the row's total (``np.quantile(..., method="inverted_cdf")``, 10x faster)."""
    order = np.argsort(values, axis=1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(weights, order, axis=1), axis=1)
    first = (cumulative < 0.5 * cumulative[:, -1:]).sum(axis=1)
    return np.take_along_axis(values, order, axis=1)[np.arange(len(values)), first]


@dataclass(frozen=True)
class PixelLookup:
    """A fitted k-NN lookup: ``tree`` over standardised training features, their ``target`` ex-situ fractions
    and ``weights`` (the training prior).

    centre, scale: (F,) feature mean and std of the training pixels used; k: neighbours summarised.
    """

    tree: cKDTree
    target: np.ndarray
    weights: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    k: int

    def predict(self, conditions: np.ndarray, mask: np.ndarray, context: np.ndarray, workers: int = 1) -> np.ndarray:
        """Predicted ex-situ fraction maps (N, P, P) float32 in [0, 1], 0 outside ``mask``: the weighted median
        of the k nearest training pixels.

        Inputs as for :func:`fit_pixel_lookup`; ``workers``: threads for the tree query (-1: all cores).
        """
        out = np.zeros(mask.shape, np.float32)
        out[mask] = self.predict_features(pixel_features(conditions, mask, context), workers)
        return out

    def predict_features(self, features: np.ndarray, workers: int = 1) -> np.ndarray:
        """(n,) prediction for (n, F) pixel features (:func:`pixel_features`)."""
        _, neighbours = self.tree.query((features - self.centre) / self.scale, k=self.k, workers=workers)
        neighbours = neighbours.reshape(len(features), self.k)
        return weighted_median(self.target[neighbours], self.weights[neighbours]).astype(np.float32)


def lookup_from_features(
    features: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None, k: int = LOOKUP_K
) -> PixelLookup:
    """The lookup over training pixels given as (n, F) features, (n,) ex-situ fractions and (n,) weights (None: 1)."""
    if not isinstance(k, int) or k < 1 or len(target) < k:
        raise InputError(
            f"the lookup needs an integer k >= 1 and at least k training pixels, got k={k!r}, {len(target)} pixels"
        )
    w = np.ones(len(target)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(target),) or not np.all(w > 0):
        raise InputError(f"lookup weights must be {len(target)} positive numbers, got shape {w.shape}")
    centre, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature (one galaxy mass) carries no distance
    tree = cKDTree((features - centre) / scale, leafsize=LOOKUP_LEAFSIZE, balanced_tree=False)
    return PixelLookup(tree, np.asarray(target, np.float64), w, centre, scale, k)


def fit_pixel_lookup(
    conditions: np.ndarray,
    exsitu: np.ndarray,
    mask: np.ndarray,
    context: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    k: int = LOOKUP_K,
    max_pixels: int = LOOKUP_MAX_PIXELS,
    seed: int = 0,
) -> PixelLookup:
    """Fit the lookup on TRAINING maps.

    conditions: (N, C, P, P) condition channels; exsitu: (N, P, P) true ex-situ fraction in [0, 1];
    mask: (N, P, P) bool galaxy pixels; context: (N,) or (N, S) per-map galaxy context (the galaxy
    scalars, or :func:`log_stellar_mass`); weights: (N,) per-map weights (None: 1). A random subset of
    at most ``max_pixels`` galaxy pixels (drawn with ``seed``) is kept. Deterministic for a seed.
    """
    features = pixel_features(conditions, mask, context)
    target = np.asarray(exsitu, dtype=np.float64)[mask]
    w = None if weights is None else per_pixel(np.asarray(weights, np.float64), mask)
    if len(target) > max_pixels:
        keep = np.sort(np.random.default_rng(seed).choice(len(target), max_pixels, replace=False))
        features, target = features[keep], target[keep]
        w = None if w is None else w[keep]
    return lookup_from_features(features, target, w, k)
