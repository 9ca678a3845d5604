"""Read stellar mass surface density, age and metallicity maps from a MaNGA Pipe3D VAC cube.

File: ``manga-PLATE-IFU.Pipe3D.cube.fits.gz`` (SDSS DR15-DR17 Pipe3D value-added catalogue;
Sanchez et al. 2016, RMxAA 52, 21 and 171; Sanchez et al. 2018, RMxAA 54, 217; DR17 VAC:
Sanchez et al. 2022, ApJS 262, 36). The maps are on the spaxel grid of the MaNGA LOGCUBE,
hence of the DAP MAPS file; a different shape is an error (no regridding is attempted).

The ``SSP`` extension (selected by EXTNAME) is a (21, ny, nx) cube. Its planes, as the Pipe3D
data model gives them (Sanchez et al. 2016b, RMxAA 52, 171, the SSP maps of the cube files;
Sanchez et al. 2018, RMxAA 54, 217, the MaNGA VAC; the ``DESC_<i>`` header cards of the DR15
and DR17 VAC cubes), are:

====  =================================================================  ===================
 idx  content                                                            unit in the file
====  =================================================================  ===================
   0  V-band flux                                                        --
   1  continuum segmentation (bin id; 0 = not analysed)     [used]       --
   2  dezonification map                                                 --
 3-4  median flux in the fitted window, its standard deviation           --
   5  luminosity-weighted age                                            log10(age / yr)
   6  mass-weighted age                                     [used]       log10(age / yr)
   7  error of the age                                      [used]       dex
   8  luminosity-weighted metallicity                                    log10(Z / Zsun)
   9  mass-weighted metallicity                             [used]       log10(Z / Zsun)
  10  error of the metallicity                              [used]       dex
11-12 dust attenuation A_V of the stars, its error                       mag
13-14 stellar LOS velocity, its error                                    km/s
15-16 stellar velocity dispersion, its error                             km/s
  17  mass-to-light ratio                                                log10(Msun / Lsun)
  18  stellar mass surface density                                       log10(Msun / spaxel)
  19  stellar mass surface density, dust corrected          [used]       log10(Msun / spaxel)
  20  error of the stellar mass surface density             [used]       dex
====  =================================================================  ===================

Checked for issue 16 against the planes that published analyses of the DR15/DR17 cubes read.
ERGO-ML reads planes 18, 13, 15, 9 and 6 for mass density, velocity, dispersion, mass-weighted
metallicity and mass-weighted age: the table's planes, except that it takes the mass density
before the dust correction (18) where this reader takes the dust-corrected one (19), the better
estimate of the stellar mass the simulated maps hold. Velocity and dispersion come from the DAP
MAPS file (:mod:`exsitu.sky.manga`), not from planes 13 and 15.

Mass-weighted (not light-weighted) age and metallicity are used because the simulated maps
are mass-weighted (``exsitu.projection``). When the SSP header names its planes (``DESC_<i>``
keys) the names are checked against the table; a mismatch is an error rather than a silent
read of the wrong plane.

Conversions to the model units: mass per spaxel -> per kpc^2 with the spaxel's proper size
at the redshift (``exsitu.units.tng_cosmology``; Pipe3D's own luminosity distances use a
slightly different cosmology, a < 0.05 dex effect); age 10**(log age - 9) Gyr; metallicity
re-referenced from Pipe3D's solar value (:data:`PIPE3D_ZSUN`) to TNG's (0.0127). Errors in dex
become inverse variances in the model units (for age: sigma_Gyr = age ln(10) sigma_dex).
A spaxel is valid where the segmentation is > 0 and the error is > 0.

MaNGA grids are square, so a transposed or flipped Pipe3D grid would pass the shape check;
when the SSP header carries a celestial WCS, the sky positions of the grid corners must agree
with the MAPS file's to half a spaxel.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from exsitu.io import InputError
from exsitu.sky.observed import ChannelMap, check_shape, extension, finish_channel, kpc_per_arcsec, open_fits
from exsitu.units import ZSUN

log = logging.getLogger(__name__)

# Solar metallicity of Pipe3D's SSP libraries (GSD156 / MaStar: Z = 0.019 is solar). Not
# stated in the VAC data model; an assumption that shifts metallicity by log10(0.019/0.0127).
PIPE3D_ZSUN = 0.019
SEGMENTATION_PLANE = 1
# channel -> (value plane, error plane, words its DESC_<i> must contain, lower case); see the module table
PLANES = {
    "mass": (19, 20, ("mass", "dens")),
    "age": (6, 7, ("age", "mass")),
    "metallicity": (9, 10, ("metal", "mass")),
}
N_PLANES = 21


def find_pipe3d(directory: str | Path, plateifu: str | None, maps_path: Path) -> Path:
    """The Pipe3D cube of galaxy ``plateifu`` in ``directory``: ``manga-PLATE-IFU.Pipe3D.cube.fits[.gz]``
    directly in it or in its ``PLATE/`` subdirectory (the SDSS SAS layout).

    ``maps_path`` (the DAP file it is for) only names the galaxy in messages.
    """
    if plateifu is None:
        raise InputError(
            f"{maps_path}: no PLATEIFU (header key or manga-PLATE-IFU-MAPS file name) to find its Pipe3D file by"
        )
    directory = Path(directory)
    plate = plateifu.split("-")[0]
    names = [f"manga-{plateifu}.Pipe3D.cube.fits.gz", f"manga-{plateifu}.Pipe3D.cube.fits"]
    candidates = [folder / name for folder in (directory, directory / plate) for name in names]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{maps_path}: no Pipe3D file for {plateifu} in {directory} (looked for {names[0]} and {names[1]}, "
        f"also under {plate}/)"
    )


def check_plane_names(header: object, path: Path) -> None:
    """Fail if the SSP header names a plane we use with a description that does not match."""
    for channel, (plane, _, words) in PLANES.items():
        desc = header.get(f"DESC_{plane}")  # type: ignore[attr-defined]
        if desc is None:
            continue
        if not all(word in str(desc).lower() for word in words):
            raise InputError(
                f"{path}: SSP plane {plane} is '{desc}', expected the {channel} map ({' '.join(words)}); "
                "not the Pipe3D layout this reader knows"
            )


def check_same_sky(header: fits.Header, wcs: WCS, spaxel_arcsec: float, path: Path) -> None:
    """Fail if the SSP header's celestial WCS puts the grid corners elsewhere on the sky than ``wcs``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own = WCS(header).celestial
    if own.naxis != 2:
        log.info("%s: SSP header has no celestial WCS; trusting that it shares the MAPS grid", path)
        return
    ny, nx = wcs.array_shape
    corners = ([0, nx - 1, 0, nx - 1], [0, 0, ny - 1, ny - 1])
    sky_own = own.pixel_to_world(*corners)
    sky_maps = wcs.pixel_to_world(*corners)
    offset = float(sky_own.separation(sky_maps).arcsec.max())
    if offset > 0.5 * spaxel_arcsec:
        raise InputError(
            f"{path}: the SSP grid is not the MAPS grid: its corners lie up to {offset:.2f} arcsec from the MAPS "
            "corners (transposed, flipped or another pointing?)"
        )


def to_model_units(
    channel: str, value: np.ndarray, error_dex: np.ndarray, redshift: float, spaxel_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pipe3D plane (file units) -> (value, ivar) in the model units of ``channel``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if channel == "mass":
            spaxel_kpc = spaxel_arcsec * kpc_per_arcsec(redshift)
            return value - 2.0 * np.log10(spaxel_kpc), 1.0 / error_dex**2
        if channel == "age":
            age_gyr = 10.0 ** (value - 9.0)
            return age_gyr, 1.0 / (age_gyr * np.log(10.0) * error_dex) ** 2
        return value + np.log10(PIPE3D_ZSUN / ZSUN), 1.0 / error_dex**2


def read_pipe3d(
    path: str | Path,
    channels: tuple[str, ...],
    wcs: WCS,
    redshift: float,
    spaxel_arcsec: float,
) -> dict[str, ChannelMap]:
    """Read the stellar-population ``channels`` (mass, age, metallicity) of a Pipe3D cube.

    Args:
        path: the ``*.Pipe3D.cube.fits[.gz]`` file.
        channels: wanted channels; those not in ``("mass", "age", "metallicity")`` are ignored.
        wcs: celestial WCS of the observation's spaxel grid (array shape set); the Pipe3D maps
            must have its shape and, if they carry a WCS, lie at the same sky positions.
        redshift: galaxy redshift (for the spaxel size in kpc).
        spaxel_arcsec: spaxel side [arcsec].

    Returns:
        channel -> :class:`ChannelMap` in the model units (log10 Msun/kpc^2, Gyr, log10 Z/Zsun).
    """
    path = Path(path)
    wanted = [c for c in channels if c in PLANES]
    maps: dict[str, ChannelMap] = {}
    if not wanted:
        return maps
    with open_fits(path) as hdul:
        ssp = extension(hdul, "SSP", path, "the Pipe3D stellar-population maps")
        cube = np.asarray(ssp.data, dtype=np.float64)
        if cube.ndim != 3 or cube.shape[0] < N_PLANES:
            raise InputError(f"{path}: extension SSP has shape {cube.shape}, expected ({N_PLANES}, ny, nx)")
        check_shape(cube[0], wcs.array_shape, path, "extension SSP (per plane)", "the DAP MAPS spaxel grid")
        check_same_sky(ssp.header, wcs, spaxel_arcsec, path)
        check_plane_names(ssp.header, path)
        analysed = cube[SEGMENTATION_PLANE] > 0
        for channel in wanted:
            plane, error_plane, _ = PLANES[channel]
            error = cube[error_plane]
            value, ivar = to_model_units(channel, cube[plane], error, redshift, spaxel_arcsec)
            # error <= 0 or NaN means no measurement: mark it through ivar, as the DAP does.
            ivar = np.where(np.isfinite(error) & (error > 0), ivar, 0.0)
            maps[channel] = finish_channel(channel, value, ivar, analysed, path, f"SSP plane {plane}")
    return maps
