"""Write a prediction of the ex-situ stellar mass fraction on the observed spaxel grid.

FITS file (all images on the observed grid, (ny, nx), with the input's celestial WCS copied
into every extension header; spaxels outside the valid footprint are NaN):

=========  ==========  ==========================================================
EXTNAME    shape       content [unit: ex-situ stellar mass fraction, 0..1]
=========  ==========  ==========================================================
PRIMARY    --          provenance: model dir, K, seed, input files, galaxy name, Re, z, PSF
                       (exsitu predict adds the integrated fractions, exsitu.survey)
MEAN       (ny, nx)    posterior mean over the K samples
STD        (ny, nx)    posterior standard deviation
P16        (ny, nx)    16th percentile
P50        (ny, nx)    median
P84        (ny, nx)    84th percentile
SAMPLES    (K, ny, nx) the posterior samples (only when kept)
=========  ==========  ==========================================================

and a PNG beside it (same name, ``.png``): the input maps, the mean and the std. Both are
written atomically (temporary file, then rename); on any failure neither is left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from exsitu.io import atomic_output
from exsitu.sky.observed import ObservedGalaxy, file_stem
from exsitu.sky.panel import channel_panels, draw_maps

log = logging.getLogger(__name__)

QUANTITY = "ex-situ stellar mass fraction"
SUMMARIES = ("MEAN", "STD", "P16", "P50", "P84")


@dataclass
class PredictionMaps:
    """Posterior summaries of the ex-situ fraction on the observed grid (see the module table).

    ``footprint`` (ny, nx) bool marks where a prediction was made; ``samples`` is None when
    the samples are not to be written; ``n_samples`` is K, the number of samples summarised.
    """

    mean: np.ndarray
    std: np.ndarray
    p16: np.ndarray
    p50: np.ndarray
    p84: np.ndarray
    footprint: np.ndarray
    n_samples: int
    samples: np.ndarray | None = None

    @classmethod
    def from_samples(cls, samples: np.ndarray, footprint: np.ndarray, keep_samples: bool = True) -> PredictionMaps:
        """Summarise (K, ny, nx) posterior samples of the ex-situ fraction inside ``footprint``."""
        samples = np.asarray(samples, dtype=np.float32)
        footprint = np.asarray(footprint, dtype=bool)
        if samples.ndim != 3 or samples.shape[1:] != footprint.shape:
            raise ValueError(f"samples must be (K, ny, nx) with (ny, nx) = {footprint.shape}, got {samples.shape}")
        inside = samples[:, footprint].astype(np.float64)
        p16, p50, p84 = np.percentile(inside, [16, 50, 84], axis=0)

        def on_grid(values: np.ndarray) -> np.ndarray:
            grid = np.full(footprint.shape, np.nan, dtype=np.float32)
            grid[footprint] = values
            return grid

        return cls(
            mean=on_grid(inside.mean(axis=0)),
            std=on_grid(inside.std(axis=0)),
            p16=on_grid(p16),
            p50=on_grid(p50),
            p84=on_grid(p84),
            footprint=footprint,
            n_samples=samples.shape[0],
            samples=np.where(footprint, samples, np.nan).astype(np.float32) if keep_samples else None,
        )

    def summaries(self) -> dict[str, np.ndarray]:
        """EXTNAME -> 2D map, NaN outside the footprint."""
        maps = dict(zip(SUMMARIES, (self.mean, self.std, self.p16, self.p50, self.p84)))
        return {name: np.where(self.footprint, np.asarray(m, dtype=np.float32), np.nan) for name, m in maps.items()}


def png_path_for(fits_path: str | Path) -> Path:
    """``x.fits`` or ``x.fits.gz`` -> ``x.png`` (the panel written beside the FITS file)."""
    path = Path(fits_path)
    return path.with_name(file_stem(path) + ".png")


def prediction_hdus(
    prediction: PredictionMaps,
    galaxy: ObservedGalaxy,
    model_dir: str | Path,
    seed: int,
    cards: Mapping[str, tuple[Any, str]] | None = None,
) -> fits.HDUList:
    """The FITS HDUs of a prediction (see the module table); ``cards`` (key -> (value, comment))
    are added to the PRIMARY header, except non-finite numbers (FITS headers cannot hold NaN)."""
    shape = galaxy.shape
    if prediction.footprint.shape != shape:
        raise ValueError(f"prediction grid {prediction.footprint.shape} differs from the observed grid {shape}")
    primary = fits.PrimaryHDU()
    head = primary.header
    head["QUANTITY"] = (QUANTITY, "what the images hold")
    head["MODELDIR"] = (str(model_dir), "trained model used")
    head["NSAMPLES"] = (int(prediction.n_samples), "K, posterior samples per spaxel")
    head["SEED"] = (int(seed), "random seed of the sampling")
    head["INPUT"] = (str(galaxy.path), "observation file")
    head["INFORMAT"] = (galaxy.source, "observation layout")
    if galaxy.pipe3d_path is not None:
        head["PIPE3D"] = (str(galaxy.pipe3d_path), "Pipe3D VAC file")
    head["CHANNELS"] = (",".join(galaxy.maps), "input channels used")
    head["REARCSEC"] = (galaxy.re_arcsec, "[arcsec] effective radius used")
    head["Z"] = (galaxy.redshift, "redshift used")
    head["PSFFWHM"] = (galaxy.psf_fwhm_arcsec, "[arcsec] PSF FWHM of the input")
    if galaxy.vsys_kms is not None:
        head["VSYS"] = (galaxy.vsys_kms, "[km/s] systemic velocity removed")
    head["GALAXY"] = (galaxy.name, "PLATE-IFU, else the input file name")
    for key, (value, comment) in (cards or {}).items():
        if isinstance(value, str) or np.isfinite(value):
            head[key] = (value.item() if isinstance(value, np.generic) else value, comment)
    wcs_cards = galaxy.wcs.to_header()
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    images = prediction.summaries()
    if prediction.samples is not None:
        samples = np.asarray(prediction.samples, dtype=np.float32)
        if samples.shape != (prediction.n_samples, *shape):
            raise ValueError(f"samples must be {(prediction.n_samples, *shape)}, got {samples.shape}")
        images["SAMPLES"] = np.where(prediction.footprint, samples, np.nan)
    for name, data in images.items():
        if data.shape[-2:] != shape:
            raise ValueError(f"{name} has shape {data.shape}, expected {shape}")
        hdu = fits.ImageHDU(data=data, header=wcs_cards.copy(), name=name)
        hdu.header["BUNIT"] = ("", QUANTITY)
        hdus.append(hdu)
    return fits.HDUList([primary, *hdus])


def draw_panel(prediction: PredictionMaps, galaxy: ObservedGalaxy, png: Path) -> None:
    """PNG: one panel per input map, then the predicted mean (on 0..1) and std (:mod:`exsitu.sky.panel`)."""
    summaries = prediction.summaries()
    panels = channel_panels({name: m.value for name, m in galaxy.maps.items()})
    panels += [
        ("ex-situ fraction\nposterior mean", summaries["MEAN"], "magma", (0.0, 1.0)),
        ("ex-situ fraction\nposterior std", summaries["STD"], "cividis", None),
    ]
    draw_maps(png, f"{galaxy.name} ({galaxy.path.name})", panels)


def write_prediction(
    path: str | Path,
    prediction: PredictionMaps,
    galaxy: ObservedGalaxy,
    model_dir: str | Path,
    seed: int,
    png: bool = True,
    *,
    cards: Mapping[str, tuple[Any, str]] | None = None,
) -> tuple[Path, Path | None]:
    """Write the prediction FITS file (and its PNG panel) atomically; return their paths.

    Args:
        path: output FITS path (``.fits`` or ``.fits.gz``).
        prediction: the posterior summaries (and optionally samples) on ``galaxy``'s grid.
        galaxy: the observation the prediction is for (grid, WCS, provenance, input maps).
        model_dir: the trained model's directory (recorded in the header).
        seed: the sampling seed (recorded in the header).
        png: also write the PNG panel beside the FITS file.
        cards: extra PRIMARY header cards, key -> (value, comment) (e.g. the catalogue values of
            :mod:`exsitu.survey`).
    """
    path = Path(path)
    png_path = png_path_for(path) if png else None
    with atomic_output(path) as tmp_fits:
        hdul = prediction_hdus(prediction, galaxy, model_dir, seed, cards)
        if png_path is None:
            hdul.writeto(tmp_fits, overwrite=True)
        else:
            with atomic_output(png_path) as tmp_png:
                hdul.writeto(tmp_fits, overwrite=True)
                draw_panel(prediction, galaxy, tmp_png)
    log.info("wrote %s%s", path, f" and {png_path}" if png_path else "")
    return path, png_path
