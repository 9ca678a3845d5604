"""The non-spatial baselines, fitted once on the TRAINING maps (stage ``fit_baselines``) and applied per
chunk of maps: the radial profile (``exsitu.radial``), the per-pixel k-NN lookup (``exsitu.lookup``)
and the gradient-boosted trees (``exsitu.trees``).

All three are fitted on one random subsample of the training galaxy pixels, drawn with the map
weights of the training prior as sampling probabilities, so the subsample is distributed as that prior
and every fit is unweighted:

- ``natural``: map weight 1 / n_los of its galaxy (``exsitu.bootstrap.galaxy_weights``), so every
  training galaxy counts once, as in the population the plan drew from and as evaluation scores it;
- ``balanced``: map weight 1, the plan's prior, which gives rare high-f_ex galaxies up to
  ``plan.max_los`` lines of sight.

A pixel of a map with weight w is kept with probability c w, c = min(max_pixels / (sum of w over all
training galaxy pixels), 1 / max w): at most ``max_pixels`` pixels in expectation, and under the natural
prior about one map's worth of pixels per galaxy (its other lines of sight repeat the same stars). Drawn
per shard with ``seed``. Sampling instead of weighting keeps scikit-learn on its fast path (with
sample weights its leaf medians go through a slower weighted percentile) and costs little: the pixels
left out are mostly other projections of galaxies that are in.

Maps are read shard by shard (peak memory: one shard's training maps plus the subsample's features).
Every baseline predicts a median map (the summary that minimises the absolute error): the radial
profile the median per radius bin, the lookup the median of its k neighbours, the trees their
absolute-error model; the trees add a 16-84% interval.

``results/models/baselines.joblib`` holds one :class:`FittedBaselines` (joblib pickle; load it with
:func:`load_baselines`, and only files you wrote: unpickling runs code).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import joblib
import numpy as np
import pandas as pd

from exsitu.contracts import open_shard, read_map_rows, shard_index
from exsitu.dataset import DatasetFiles, channel_index, read_split, read_stats
from exsitu.io import InputError, atomic_output
from exsitu.lookup import PixelLookup, lookup_from_features, pixel_features
from exsitu.priors import map_weights
from exsitu.radial import RadialProfile, pixel_radius, profile_from_pixels
from exsitu.scalars import check_scalar_names, scalar_values
from exsitu.trees import PixelTrees, TreeFeatures, fit_trees

log = logging.getLogger(__name__)

#: The training priors a fit can use (module docstring).
#: Training pixels the baselines are fitted on, at most.
MAX_PIXELS = 300_000
#: Version of the file layout; another is refused.
FORMAT = "exsitu-baselines-1"


@dataclass(frozen=True)
class BaselinePrediction:
    """Predicted maps of one chunk: ``point`` name -> (N, P, P) float32 median map (0 outside the mask), and
    ``interval`` name -> (p16, p84) maps for the baselines that give one (the trees)."""

    point: dict[str, np.ndarray]
    interval: dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FittedBaselines:
    """The fitted baselines and what applying them needs.

    channels: the condition channels (contract order); mean, std: their normalisation statistics (C,),
    physical units (``normalisation.json``); scalars: the galaxy scalars (canonical order); npix,
    fov_rhalf: the map grid; weighting: the training prior; n_maps, n_galaxies, n_pixels: training maps,
    galaxies and pixels used.
    """

    radial: RadialProfile
    lookup: PixelLookup
    trees: PixelTrees
    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    scalars: tuple[str, ...]
    npix: int
    fov_rhalf: float
    weighting: str
    n_maps: int
    n_galaxies: int
    n_pixels: int
    format: str = FORMAT

    def physical(self, conditions: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Normalised conditions (N, C, P, P) in physical units (``contracts.UNITS``), 0 outside ``mask`` (N, P, P)."""
        return np.where(mask[:, None], conditions * self.std[:, None, None] + self.mean[:, None, None], 0.0)

    def predict(
        self, conditions: np.ndarray, mask: np.ndarray, scalars: np.ndarray, workers: int = 1
    ) -> BaselinePrediction:
        """Median maps of every baseline (and the trees' 16-84% interval) for N maps.

        conditions: (N, C, P, P) NORMALISED conditions (as ``exsitu.dataset.MapSet`` holds them: the
        channels standardised with ``mean`` and ``std``; values outside the mask are ignored); mask:
        (N, P, P) bool galaxy pixels; scalars: (N, S) the galaxy scalars in the order of ``self.scalars``
        (``exsitu.scalars.scalar_values``); workers: threads of the lookup's tree query (-1: all cores).
        """
        conditions, mask = np.asarray(conditions), np.asarray(mask, bool)
        if conditions.shape[1:] != (len(self.channels), self.npix, self.npix) or mask.shape != (
            len(conditions),
            self.npix,
            self.npix,
        ):
            raise InputError(
                f"the baselines need conditions (N, {len(self.channels)}, {self.npix}, {self.npix}) and mask "
                f"(N, {self.npix}, {self.npix}), got {conditions.shape} and {mask.shape}"
            )
        physical = self.physical(conditions, mask)
        scalars = np.asarray(scalars, np.float64).reshape(len(mask), len(self.scalars))
        median, p16, p84 = self.trees.predict(physical, mask, scalars)
        return BaselinePrediction(
            point={
                "radial": self.radial.predict(mask),
                "lookup": self.lookup.predict(physical, mask, scalars, workers=workers),
                "trees": median,
            },
            interval={"trees": (p16, p84)},
        )


def _shard_rows(data: DatasetFiles, table: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(shard file, its rows of the split ``table``) per shard, in shard order."""
    shards = shard_index(data.maps)
    unknown = sorted(set(table["shard"].astype(int)) - set(shards))
    if unknown:
        raise InputError(f"{data.split}: shards {unknown} are listed but no --maps file has that 'shard' attribute")
    for shard, rows in table.groupby("shard", sort=True):
        yield shards[int(shard)], rows


def _grid(paths: Sequence[str]) -> tuple[int, float]:
    """(npix, fov_rhalf) the map shards share."""
    grids = set()
    for path in paths:
        with open_shard(path) as f:
            if "npix" not in f.attrs or "fov_rhalf" not in f.attrs:
                raise InputError(f"{path}: attributes 'npix' and 'fov_rhalf' are missing")
            grids.add((int(f.attrs["npix"]), float(f.attrs["fov_rhalf"])))
    if len(grids) != 1:
        raise InputError(f"the map shards {list(paths)} mix grids (npix, fov_rhalf) {sorted(grids)}")
    return grids.pop()


def fit_baselines(
    data: DatasetFiles,
    scalars: Sequence[str],
    weighting: str = "natural",
    *,
    max_pixels: int = MAX_PIXELS,
    seed: int = 0,
) -> FittedBaselines:
    """Fit the radial profile, the lookup and the trees on the training maps of ``data`` (module docstring).

    ``data.channels`` are the condition channels; ``scalars`` the galaxy scalars (config
    ``conditions.scalars``); ``weighting`` the training prior. Deterministic for ``seed``.
    """
    scalars = check_scalar_names(scalars)
    npix, fov_rhalf = _grid(data.maps)
    keep = channel_index(data.channels)
    channels = tuple(data.channels)
    mean, std = (s[keep].astype(np.float64) for s in read_stats(data.stats))
    train = read_split(data.split, "train")
    train["weight"] = map_weights(train["galaxy_id"].to_numpy(), weighting)
    # Pass 1, masks only: the galaxy pixels per map set the sampling probabilities.
    train["pixels"] = 0
    for path, rows in _shard_rows(data, train):
        with open_shard(path) as f:
            train.loc[rows.index, "pixels"] = f["mask"][()][rows["row"].to_numpy(np.int64)].sum(axis=(1, 2, 3))
    scale = min(max_pixels / max(float((train["weight"] * train["pixels"]).sum()), 1e-300), 1 / train["weight"].max())
    train["keep"] = scale * train["weight"]
    inputs = TreeFeatures(channels, scalars, fov_rhalf)
    radius = pixel_radius(npix, fov_rhalf)
    parts: dict[str, list[np.ndarray]] = {"trees": [], "lookup": [], "radius": [], "target": []}
    for path, rows in _shard_rows(data, train):
        cond, exsitu, mask = read_map_rows(path, rows["row"].to_numpy(np.int64))
        cond, exsitu, mask = cond[:, keep], exsitu[:, 0], mask[:, 0].astype(bool)
        values = scalar_values(rows, scalars)
        draw = np.random.default_rng([seed, int(rows["shard"].iloc[0])]).random(mask.shape)
        pick = mask & (draw < rows["keep"].to_numpy()[:, None, None])
        parts["trees"].append(inputs.features(cond, mask, values, pixels=pick))
        parts["lookup"].append(pixel_features(cond, pick, values))
        parts["radius"].append(np.broadcast_to(radius, mask.shape)[pick])
        parts["target"].append(exsitu[pick].astype(np.float64))
    pixels = {name: np.concatenate(values) for name, values in parts.items()}
    target = pixels["target"]
    log.info(
        "fitting the baselines on %d of %d training galaxy pixels (%s prior), features %s",
        len(target), int(train["pixels"].sum()), weighting, list(inputs.names),
    )  # fmt: skip
    return FittedBaselines(
        radial=profile_from_pixels(pixels["radius"], target, None, npix, fov_rhalf, statistic="median"),
        lookup=lookup_from_features(pixels["lookup"], target),
        trees=fit_trees(pixels["trees"], target, None, inputs, seed=seed),
        channels=channels,
        mean=mean,
        std=std,
        scalars=scalars,
        npix=npix,
        fov_rhalf=fov_rhalf,
        weighting=weighting,
        n_maps=len(train),
        n_galaxies=int(train["galaxy_id"].nunique()),
        n_pixels=len(target),
    )


def save_baselines(baselines: FittedBaselines, path: str | os.PathLike) -> None:
    """Write ``baselines`` to ``path`` (joblib) atomically."""
    with atomic_output(path) as tmp:
        joblib.dump(baselines, tmp)


def load_baselines(path: str | os.PathLike) -> FittedBaselines:
    """Read a file written by :func:`save_baselines`; anything else is one ``InputError`` naming the file."""
    try:
        baselines = joblib.load(path)
    except FileNotFoundError:
        raise InputError(f"{path}: fitted baselines file not found") from None
    except Exception as err:  # noqa: BLE001 - unpickling raises pickle, EOF, value and import errors for foreign files
        raise InputError(f"{path}: not a fitted baselines file of the fit_baselines stage ({err})") from None
    if not isinstance(baselines, FittedBaselines) or baselines.format != FORMAT:
        raise InputError(f"{path}: not a fitted baselines file of format {FORMAT} (rerun the fit_baselines stage)")
    return baselines
