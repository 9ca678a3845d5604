"""The per-pixel lookup baseline: the ex-situ fraction a pixel's own observables predict, with no spatial context.

Each galaxy pixel is described by its condition channels (the model's ``conditions.channels``; the normalised units of
``exsitu.dataset.MapSet``, or physical units, as long as fit and prediction agree) and its
galaxy's log10 stellar mass. The prediction is the mean true ex-situ fraction of the k nearest
TRAINING pixels in that 6-d feature space, each feature standardised to unit variance (k-nearest
neighbour regression; Hastie, Tibshirani & Friedman 2009, sec. 2.3.2). Neighbours come from any
training map and any position, so the baseline knows nothing about where a pixel sits or what
its neighbours look like: it is the floor that spatial context and the cVAE's latent must beat.

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

#: Neighbours averaged per prediction (fixed a priori, not tuned on any test set).
LOOKUP_K = 32
#: At most this many training pixels, drawn at random, enter the tree.
LOOKUP_MAX_PIXELS = 200_000


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


def pixel_features(conditions: np.ndarray, mask: np.ndarray, log_mstar: np.ndarray) -> np.ndarray:
    """(n_pix, C + 1) features of the galaxy pixels in ``mask`` order: the C channels, then the map's log10 M* [Msun].

    conditions: (N, C, P, P); mask: (N, P, P) bool; log_mstar: (N,).
    """
    if conditions.ndim != 4 or conditions.shape[2:] != mask.shape[1:]:
        raise InputError(f"conditions must be (N, C, P, P) matching mask {mask.shape}, got {conditions.shape}")
    channels = np.moveaxis(conditions, 1, -1)[mask]
    mass = np.broadcast_to(np.asarray(log_mstar, dtype=np.float64)[:, None, None], mask.shape)[mask]
    return np.column_stack([channels.astype(np.float64), mass])


@dataclass(frozen=True)
class PixelLookup:
    """A fitted k-NN lookup: ``tree`` over standardised training features, their ``target`` ex-situ fractions.

    centre, scale: (6,) feature mean and std of the training pixels used; k: neighbours averaged.
    """

    tree: cKDTree
    target: np.ndarray
    centre: np.ndarray
    scale: np.ndarray
    k: int

    def predict(self, conditions: np.ndarray, mask: np.ndarray, log_mstar: np.ndarray, workers: int = 1) -> np.ndarray:
        """Predicted ex-situ fraction maps (N, P, P) float32 in [0, 1], 0 outside ``mask``.

        Inputs as for :func:`fit_pixel_lookup`; ``workers``: threads for the tree query (-1: all cores).
        """
        features = (pixel_features(conditions, mask, log_mstar) - self.centre) / self.scale
        _, neighbours = self.tree.query(features, k=self.k, workers=workers)
        out = np.zeros(mask.shape, np.float32)
        out[mask] = self.target[neighbours.reshape(len(features), self.k)].mean(axis=1)
        return out


def fit_pixel_lookup(
    conditions: np.ndarray,
    exsitu: np.ndarray,
    mask: np.ndarray,
    log_mstar: np.ndarray,
    *,
    k: int = LOOKUP_K,
    max_pixels: int = LOOKUP_MAX_PIXELS,
    seed: int = 0,
) -> PixelLookup:
    """Fit the lookup on TRAINING maps.

    conditions: (N, C, P, P) condition channels; exsitu: (N, P, P) true ex-situ fraction in [0, 1];
    mask: (N, P, P) bool galaxy pixels; log_mstar: (N,) log10 stellar mass [Msun] of each map's
    galaxy (:func:`log_stellar_mass`). A random subset of at most ``max_pixels`` galaxy pixels
    (drawn with ``seed``) is kept. Deterministic for a seed.
    """
    features = pixel_features(conditions, mask, log_mstar)
    target = np.asarray(exsitu, dtype=np.float64)[mask]
    if not isinstance(k, int) or k < 1 or len(target) < k:
        raise InputError(
            f"the lookup needs an integer k >= 1 and at least k training pixels, got k={k!r}, {len(target)} pixels"
        )
    if len(target) > max_pixels:
        keep = np.sort(np.random.default_rng(seed).choice(len(target), max_pixels, replace=False))
        features, target = features[keep], target[keep]
    centre, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature (one galaxy mass) carries no distance
    return PixelLookup(cKDTree((features - centre) / scale), target, centre, scale, k)
