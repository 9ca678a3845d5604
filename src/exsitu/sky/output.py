"""Write a prediction of the ex-situ stellar mass fraction on the observed spaxel grid.

FITS file (all images on the observed grid, (ny, nx), with the input's celestial WCS copied
into every extension header; spaxels outside the valid footprint are NaN):

=========  ==========  ==========================================================
EXTNAME    shape       content [unit: ex-situ stellar mass fraction, 0..1]
=========  ==========  ==========================================================
PRIMARY    --          provenance: model dir, K, seed, input files, Re, z, PSF
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from exsitu.contracts import CHANNELS, UNITS
from exsitu.io import atomic_output
from exsitu.sky.observed import ObservedGalaxy

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
    name = path.name
    for suffix in (".fits.gz", ".fits", ".fit"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".png")
    return path.with_name(name + ".png")


def prediction_hdus(
    prediction: PredictionMaps, galaxy: ObservedGalaxy, model_dir: str | Path, seed: int
) -> fits.HDUList:
    """The FITS HDUs of a prediction (see the module table)."""
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
    """PNG: one panel per input map, then the predicted mean and std (Agg, no pyplot state)."""
    units = dict(zip(CHANNELS, UNITS))
    panels = [
        (f"{name} [{units[name]}]", m.value, "RdBu_r" if name == "velocity" else "viridis")
        for name, m in galaxy.maps.items()
    ]
    summaries = prediction.summaries()
    panels += [
        ("ex-situ fraction: mean", summaries["MEAN"], "magma"),
        ("ex-situ fraction: std", summaries["STD"], "cividis"),
    ]
    fig = Figure(figsize=(3.0 * len(panels), 3.2))
    FigureCanvasAgg(fig)
    # fixed margins: a layout engine would take ~0.7 s, a third of `exsitu predict`'s budget
    grid = {"left": 0.01, "right": 0.97, "bottom": 0.03, "top": 0.84, "wspace": 0.3}
    for ax, (title, image, cmap) in zip(fig.subplots(1, len(panels), squeeze=False, gridspec_kw=grid)[0], panels):
        # velocities diverge about systemic: symmetric limits so that white means v = 0
        limit = float(np.nanmax(np.abs(image))) if cmap == "RdBu_r" else None
        shown = ax.imshow(
            image, origin="lower", cmap=cmap, interpolation="nearest", vmin=-limit if limit else None, vmax=limit
        )
        fig.colorbar(shown, ax=ax, shrink=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(galaxy.path.name, fontsize=9)
    fig.savefig(png, format="png", dpi=100)


def write_prediction(
    path: str | Path,
    prediction: PredictionMaps,
    galaxy: ObservedGalaxy,
    model_dir: str | Path,
    seed: int,
    png: bool = True,
) -> tuple[Path, Path | None]:
    """Write the prediction FITS file (and its PNG panel) atomically; return their paths.

    Args:
        path: output FITS path (``.fits`` or ``.fits.gz``).
        prediction: the posterior summaries (and optionally samples) on ``galaxy``'s grid.
        galaxy: the observation the prediction is for (grid, WCS, provenance, input maps).
        model_dir: the trained model's directory (recorded in the header).
        seed: the sampling seed (recorded in the header).
        png: also write the PNG panel beside the FITS file.
    """
    path = Path(path)
    png_path = png_path_for(path) if png else None
    with atomic_output(path) as tmp_fits:
        hdul = prediction_hdus(prediction, galaxy, model_dir, seed)
        if png_path is None:
            hdul.writeto(tmp_fits, overwrite=True)
        else:
            with atomic_output(png_path) as tmp_png:
                hdul.writeto(tmp_fits, overwrite=True)
                draw_panel(prediction, galaxy, tmp_png)
    log.info("wrote %s%s", path, f" and {png_path}" if png_path else "")
    return path, png_path
