"""Apply a trained model to observed maps: regrid onto the model's grid, normalise, sample the
posterior, and map the samples back onto the observed spaxel grid.

:func:`predict_maps` works on arrays already on the model grid (physical units, the
:mod:`exsitu.contracts` channel convention); :func:`predict_observation` takes an
:class:`~exsitu.sky.ObservedGalaxy` from any reader. The model grid of an observed galaxy is
``npix`` x ``npix`` pixels spanning ``fov_rhalf`` x Re, centred on the galaxy: the model was
trained on maps scaled by the projected half-mass radius, whose observable analogue is Re.
A model trained on ideal maps (scaled by the 3D half-mass radius) is applied with
Re x :data:`RHALF_3D_PER_RE` (:func:`rhalf_per_re`).

A model whose card lists galaxy scalars (``model.json`` ``scalars``) gets them from the
galaxy (:func:`model_scalars`): ``log_rhalf_kpc`` is log10 of the radius the model grid is
scaled by, in kpc (Re, or Re x 4/3 for a "3d" model, as :func:`model_grid` scales the field of
view); ``redshift`` and ``log_mstar`` are the observation's (file or caller).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from exsitu.io import InputError
from exsitu.modelcard import ModelCard, TrainedModel
from exsitu.regrid import PixelGrid, covered_fraction, regrid_mean
from exsitu.sample import sample_in_chunks
from exsitu.sky.observed import SCALAR_NAMES, ObservedGalaxy
from exsitu.sky.output import PredictionMaps

log = logging.getLogger(__name__)

#: 3D over projected half-mass radius, ~4/3 for the spheroidal and disc profiles of galaxies
#: (Hernquist 1990: 1.33; exponential discs seen at random inclinations: ~1.3).
RHALF_3D_PER_RE = 4.0 / 3.0
#: A model pixel is used when at least this share of it is covered by valid spaxels.
MIN_COVERED = 0.5
#: Where a galaxy's scalars come from, for the message when one is missing.
SCALAR_SOURCES = {
    "log_mstar": "--log-mstar (a log_mstar= column of a --list file; the generic layout's LOGMSTAR key)",
    "redshift": "--redshift (the DAP's SCINPVEL; the generic layout's Z key)",
    "log_rhalf_kpc": "--re-arcsec and --redshift",
}


def normalise(model: TrainedModel, conditions: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """Standardise physical condition maps (N, C, P, P) with the model's statistics; 0 off the mask."""
    card = model.card
    mean = np.asarray(card.mean, np.float32)[None, :, None, None]
    std = np.asarray(card.std, np.float32)[None, :, None, None]
    normed = (np.asarray(conditions, np.float32) - mean) / std * mask[:, None]
    return torch.from_numpy(np.ascontiguousarray(normed.astype(np.float32)))


def predict_maps(
    model: TrainedModel,
    conditions: np.ndarray,
    mask: np.ndarray,
    n_samples: int,
    seed: int,
    scalars: np.ndarray | None = None,
) -> np.ndarray:
    """Flow-mode posterior samples (N, K, P, P) of the ex-situ fraction for maps on the model grid.

    Args:
        conditions: (N, C, P, P) the model's channels (``model.card.channels``) in physical units.
        mask: (N, P, P) bool, galaxy pixels.
        n_samples: K >= 1.
        seed: the sampling seed; the same seed and maps give the same samples as the evaluate stage.
        scalars: (N, S) the galaxy scalars ``model.card.scalars`` in that order (see
            :func:`model_scalars`); required when the card lists scalars, ignored otherwise.
    """
    if n_samples < 1:
        raise InputError(f"--samples must be at least 1, got {n_samples}")
    card = model.card
    if conditions.shape[1:] != (len(card.channels), card.npix, card.npix) or mask.shape[1:] != (card.npix,) * 2:
        raise InputError(
            f"maps of shape {conditions.shape} / mask {mask.shape} do not fit the model: "
            f"(N, {len(card.channels)}, {card.npix}, {card.npix}) for channels {list(card.channels)}"
        )
    tensor = None
    if card.scalars:
        if scalars is None or np.shape(scalars) != (len(conditions), len(card.scalars)):
            raise InputError(
                f"the model needs scalars {list(card.scalars)} for each of the {len(conditions)} maps, "
                f"got an array of shape {np.shape(scalars)}"
            )
        tensor = torch.as_tensor(np.asarray(scalars, np.float32))
    normed = normalise(model, conditions, mask)
    # Every galaxy is sampled with the user's seed: its samples depend only on the model, its maps and
    # the seed, whatever else is predicted in the same call (exsitu.sample.sample_in_chunks).
    chunks = sample_in_chunks(
        model.cvae, normed, n_samples, "flow", seeds=np.full(len(normed), seed), flow=model.flow,
        scalars=tensor, noise=card.noise_scales,
    )  # fmt: skip
    return torch.cat([samples for _, samples in chunks]).numpy()


def model_scalars(model: TrainedModel, galaxy: ObservedGalaxy) -> np.ndarray:
    """(S,) the galaxy's values of the scalars ``model.card.scalars``, in that order.

    ``log_rhalf_kpc`` is adapted to the model: log10 of the radius its grid is scaled by (Re, or
    Re x :data:`RHALF_3D_PER_RE` for a model trained on ideal maps). A scalar the galaxy lacks is
    one error naming it and how to give it.
    """
    card = model.card
    unknown = [name for name in card.scalars if name not in SCALAR_NAMES]
    if unknown:
        raise InputError(
            f"{model.directory}: the model needs scalars {unknown}, which exsitu predict cannot obtain "
            f"(it knows {list(SCALAR_NAMES)})"
        )
    missing = [name for name in card.scalars if name not in galaxy.scalars]
    if missing:
        raise InputError(
            f"{galaxy.path}: the model needs the galaxy scalar {', '.join(missing)}, which the input lacks; give "
            + "; ".join(f"{name} with {SCALAR_SOURCES[name]}" for name in missing)
        )
    values = {**galaxy.scalars}
    if "log_rhalf_kpc" in values:
        values["log_rhalf_kpc"] += float(np.log10(rhalf_per_re(card)))
    return np.array([values[name] for name in card.scalars], dtype=np.float64)


def model_grid(model: TrainedModel, galaxy: ObservedGalaxy) -> PixelGrid:
    """The model's P x P grid on the sky [arcsec], centred on the galaxy centre."""
    card = model.card
    return PixelGrid.square(card.npix, card.fov_rhalf * galaxy.re_arcsec * rhalf_per_re(card))


def rhalf_per_re(card: ModelCard) -> float:
    """The radius the model's grid is scaled by, in units of Re: 1, or :data:`RHALF_3D_PER_RE` for a
    model trained on ideal maps (scaled by the 3D half-mass radius; ``exsitu predict`` warns)."""
    return RHALF_3D_PER_RE if card.radius == "3d" else 1.0


def spaxel_grid(galaxy: ObservedGalaxy) -> PixelGrid:
    """The observed spaxel grid [arcsec] with the galaxy centre at (0, 0)."""
    ny, nx = galaxy.shape
    cx, cy = galaxy.centre_xy
    s = galaxy.spaxel_arcsec
    return PixelGrid((ny, nx), s, ((0.5 * nx - cx - 0.5) * s, (0.5 * ny - cy - 0.5) * s))


def observed_to_model(model: TrainedModel, galaxy: ObservedGalaxy) -> tuple[np.ndarray, np.ndarray]:
    """The galaxy's maps regridded onto the model grid: conditions (C, P, P) and mask (P, P).

    Intensive maps are averaged over the spaxels each model pixel overlaps, weighted by area and,
    when the mass channel is read, by surface density (the maps are mass-weighted means);
    surface density itself is averaged linearly, then logged.
    """
    card = model.card
    missing = [c for c in card.channels if c not in galaxy.maps]
    if missing:
        raise InputError(f"{galaxy.path}: the model needs channels {missing}, which were not read")
    src, dst = spaxel_grid(galaxy), model_grid(model, galaxy)
    footprint = galaxy.footprint
    values = {c: np.where(footprint, galaxy.maps[c].value, 0.0) for c in card.channels}
    weight = footprint.astype(np.float64)
    if "mass" in values:
        weight = weight * np.where(footprint, 10.0 ** values["mass"], 0.0)
    mask = covered_fraction(src, dst, footprint) >= MIN_COVERED
    if not mask.any():
        raise InputError(f"{galaxy.path}: no valid spaxel falls on the model's field of view")
    maps = []
    for channel in card.channels:
        if channel == "mass":
            sigma = regrid_mean(10.0 ** values["mass"], src, dst, weights=footprint.astype(np.float64), fill=1.0)
            maps.append(np.log10(sigma))
        else:
            maps.append(regrid_mean(values[channel], src, dst, weights=weight))
    return np.where(mask, np.stack(maps), 0.0).astype(np.float32), mask


def pixel_weights(
    model: TrainedModel, galaxy: ObservedGalaxy, conditions: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, str]:
    """(P, P) weights of the model pixels for integrated fractions, 0 off ``mask``, and their kind.

    "mass": the stellar surface density the model read (its mass channel, linear); "light": the
    galaxy's flux map (``ObservedGalaxy.flux``) regridded, for models without the mass channel;
    "uniform": equal weights when there is neither.
    """
    card = model.card
    if "mass" in card.channels:
        return np.where(mask, 10.0 ** conditions[card.channels.index("mass")].astype(np.float64), 0.0), "mass"
    if galaxy.flux is not None:
        src, dst = spaxel_grid(galaxy), model_grid(model, galaxy)
        light = regrid_mean(galaxy.flux, src, dst, weights=galaxy.footprint.astype(np.float64), fill=0.0)
        if np.any(light[mask] > 0):
            return np.where(mask, light, 0.0), "light"
    return mask.astype(np.float64), "uniform"


@dataclass
class ObservedPosterior:
    """A galaxy's posterior: summarised on its spaxel grid, and sampled on the model grid.

    Attributes:
        maps: the summaries (and optionally samples) on the observed spaxel grid.
        samples: (K, P, P) the posterior samples on the model grid (0 off ``mask``).
        mask: (P, P) bool, the model pixels the galaxy covers.
        weights: (P, P) pixel weights for integrated fractions (:func:`pixel_weights`).
        weighting: "mass", "light" or "uniform".
    """

    maps: PredictionMaps
    samples: np.ndarray
    mask: np.ndarray
    weights: np.ndarray
    weighting: str

    @property
    def n_spaxels(self) -> int:
        """Spaxels with a prediction (the usable footprint)."""
        return int(self.maps.footprint.sum())


def predict_observation(
    model: TrainedModel, galaxy: ObservedGalaxy, n_samples: int, seed: int, keep_samples: bool = False
) -> ObservedPosterior:
    """Posterior of the galaxy's ex-situ map; on its own spaxel grid NaN outside the usable footprint.

    ``keep_samples`` keeps the K sampled maps on the spaxel grid (the output file's SAMPLES
    extension). The samples depend only on the model, the galaxy and ``seed``.
    """
    scalars = model_scalars(model, galaxy)
    conditions, mask = observed_to_model(model, galaxy)
    samples = predict_maps(model, conditions[None], mask[None], n_samples, seed, scalars=scalars[None])[0]
    src, dst = model_grid(model, galaxy), spaxel_grid(galaxy)
    on_spaxels = regrid_mean(samples, src, dst, weights=mask.astype(np.float64), fill=np.nan)
    usable = galaxy.footprint & (covered_fraction(src, dst, mask) >= MIN_COVERED)
    if not usable.any():
        raise InputError(f"{galaxy.path}: no spaxel is both valid and inside the model's field of view")
    log.info("%s: %d spaxels predicted with %d samples", galaxy.path, int(usable.sum()), n_samples)
    maps = PredictionMaps.from_samples(on_spaxels.astype(np.float32), usable, keep_samples=keep_samples)
    weights, weighting = pixel_weights(model, galaxy, conditions, mask)
    return ObservedPosterior(maps, samples, mask, weights, weighting)
