"""Read an observation from any IFU written in the generic exsitu layout.

Generic layout (one FITS file, extensions selected by EXTNAME):

PRIMARY header keys (FITS keywords have at most 8 characters)

=========  ========  =====================================================================
key        required  meaning
=========  ========  =====================================================================
REARCSEC   yes       effective (half-light) radius [arcsec], > 0
Z          yes       redshift, > 0 (turns arcsec into kpc)
PSFFWHM    yes       FWHM of the point spread function [arcsec], > 0
PIXSCALE   no        spaxel side [arcsec]; default: from the channel extensions' WCS
XCEN YCEN  no        galaxy centre in 0-based spaxel coordinates (x = column, y = row);
                     default: the grid centre ((nx - 1) / 2, (ny - 1) / 2)
LOGMSTAR   no        log10 of the galaxy's stellar mass [Msun] (the scalar ``log_mstar``)
PLATEIFU   no        the galaxy's name in catalogues (default: the file name)
=========  ========  =====================================================================

(``REARCSEC`` and ``Z`` may be missing when the caller gives them, e.g. ``exsitu predict
--re-arcsec``/``--redshift``.)

Image extensions, one 2D image per channel the model uses, all on one spaxel grid and each
with the grid's 2D celestial WCS (CTYPE RA---xxx / DEC--xxx, CRPIX, CRVAL, CDELT or CD):

=============  ==================================================================
EXTNAME        content [unit]
=============  ==================================================================
MASS           stellar mass surface density [log10 Msun/kpc^2], as projected on the sky
VELOCITY       mass-weighted LOS stellar velocity relative to systemic [km/s]
DISPERSION     LOS stellar velocity dispersion, instrument-corrected [km/s]
AGE            mass-weighted stellar age [Gyr]
METALLICITY    mass-weighted stellar metallicity [log10 Z/Zsun], Zsun = 0.0127
=============  ==================================================================

and, optionally for each, ``<NAME>_IVAR`` (inverse variance [unit^-2]; spaxels with IVAR <= 0
are not used) and ``<NAME>_MASK`` (integer; non-zero = do not use). With neither, every
finite spaxel is used; otherwise NaN or inf at a spaxel they keep is an error. An optional
``FLUX`` image (surface brightness, any unit) weights the integrated ex-situ fraction of a model
without the mass channel (``exsitu.survey``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits

from exsitu.contracts import CHANNELS
from exsitu.io import InputError
from exsitu.sky.observed import (
    ChannelMap,
    ObservedGalaxy,
    celestial_wcs,
    check_shape,
    finish_channel,
    finite_float,
    positive_float,
    wcs_spaxel_arcsec,
)

log = logging.getLogger(__name__)

RE_KEY, Z_KEY, PSF_KEY, PIXSCALE_KEY, XCEN_KEY, YCEN_KEY = "REARCSEC", "Z", "PSFFWHM", "PIXSCALE", "XCEN", "YCEN"
MSTAR_KEY, NAME_KEY, FLUX_EXT = "LOGMSTAR", "PLATEIFU", "FLUX"


def is_generic(hdul: fits.HDUList) -> bool:
    """True if ``hdul`` looks like the generic layout (REARCSEC key or a channel extension)."""
    return RE_KEY in hdul[0].header or any(name.upper() in hdul for name in CHANNELS)


def read_image(hdul: fits.HDUList, name: str, path: Path, needed_for: str) -> np.ndarray:
    """A 2D image extension by EXTNAME as float64; fail naming ``needed_for`` if absent or not 2D."""
    if name not in hdul or hdul[name].data is None:
        raise InputError(f"{path}: {needed_for} needs image extension {name} (generic layout, see exsitu.sky.generic)")
    data = np.asarray(hdul[name].data)
    if data.ndim != 2:
        raise InputError(f"{path}: extension {name} has shape {data.shape}, expected a 2D image")
    return data


def read_generic(
    hdul: fits.HDUList,
    path: Path,
    channels: tuple[str, ...],
    vsys: float | None = None,
    re_arcsec: float | None = None,
    *,
    redshift: float | None = None,
) -> ObservedGalaxy:
    """Read ``channels`` and the geometry of a generic-layout file.

    Args:
        hdul: the open file (see :func:`exsitu.sky.observed.open_fits`).
        path: its path, for messages and provenance.
        channels: the channels wanted (all must be present).
        vsys: velocity [km/s] to subtract from VELOCITY (already relative to systemic by the
            layout's definition, so normally None).
        re_arcsec: effective radius [arcsec] overriding REARCSEC.
        redshift: redshift overriding Z.
    """
    header = hdul[0].header
    re_value = header.get(RE_KEY) if re_arcsec is None else re_arcsec
    re_arcsec = positive_float(re_value, path, f"effective radius (PRIMARY key {RE_KEY} [arcsec])")
    z_value = header.get(Z_KEY) if redshift is None else redshift
    redshift = positive_float(z_value, path, f"redshift (PRIMARY key {Z_KEY})")
    psf = positive_float(header.get(PSF_KEY), path, f"PSF FWHM (PRIMARY key {PSF_KEY} [arcsec])")

    maps: dict[str, ChannelMap] = {}
    shape: tuple[int, int] | None = None
    first = ""
    for name in channels:
        ext = name.upper()
        value = read_image(hdul, ext, path, f"channel '{name}'").astype(np.float64)
        if shape is None:
            shape, first = value.shape, ext
        check_shape(value, shape, path, f"extension {ext}", first)
        valid = np.ones(shape, dtype=bool)
        ivar = None
        if f"{ext}_IVAR" in hdul:
            ivar = read_image(hdul, f"{ext}_IVAR", path, f"channel '{name}'").astype(np.float64)
            check_shape(ivar, shape, path, f"extension {ext}_IVAR", first)
        if f"{ext}_MASK" in hdul:
            mask = read_image(hdul, f"{ext}_MASK", path, f"channel '{name}'")
            check_shape(mask, shape, path, f"extension {ext}_MASK", first)
            valid = mask == 0
        elif ivar is None:
            valid = np.isfinite(value)  # no mask, no ivar: the finite spaxels are the footprint
        if name == "velocity" and vsys is not None:
            value = value - vsys
        maps[name] = finish_channel(name, value, ivar, valid, path, f"extension {ext}")
    assert shape is not None  # channels is never empty (check_channel_names)

    wcs = celestial_wcs(hdul[first].header, shape, path, f"extension {first}")
    spaxel = header.get(PIXSCALE_KEY)
    spaxel_arcsec = (
        wcs_spaxel_arcsec(wcs, path) if spaxel is None else positive_float(spaxel, path, f"PRIMARY key {PIXSCALE_KEY}")
    )
    ny, nx = shape
    centre = (float(header.get(XCEN_KEY, (nx - 1) / 2)), float(header.get(YCEN_KEY, (ny - 1) / 2)))
    flux = None
    if FLUX_EXT in hdul:
        flux = read_image(hdul, FLUX_EXT, path, "the light weight").astype(np.float64)
        check_shape(flux, shape, path, f"extension {FLUX_EXT}", first)
    scalars = {}
    if MSTAR_KEY in header:
        scalars["log_mstar"] = finite_float(header[MSTAR_KEY], path, f"PRIMARY key {MSTAR_KEY} (log10 M* [Msun])")
    return ObservedGalaxy(
        maps=maps,
        spaxel_arcsec=spaxel_arcsec,
        re_arcsec=re_arcsec,
        redshift=redshift,
        psf_fwhm_arcsec=psf,
        wcs=wcs,
        path=path,
        centre_xy=centre,
        source="generic",
        vsys_kms=vsys,
        plateifu=str(header[NAME_KEY]).strip() if NAME_KEY in header else None,
        flux=flux,
        scalars=scalars,
    )
