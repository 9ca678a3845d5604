"""Writers of observation files in the layouts :mod:`exsitu.sky` reads, from given arrays.

- :func:`write_manga_maps`: a MaNGA DAP ``MAPS`` file (DR17 or DR15 data model: extension
  names, BUNIT, multi-channel extensions with ``C<n>`` channel names, ``_IVAR``/``_MASK``
  companions, DONOTUSE bits, SCINPVEL, a 2D celestial WCS in every map header).
- :func:`write_pipe3d`: a Pipe3D VAC cube (``SSP`` extension with 21 planes and ``DESC_<i>``
  names), from maps in the model's units.
- :func:`write_generic`: the generic layout of :mod:`exsitu.sky.generic`.

The conversions to file units here are written out independently of the readers, so a
round trip checks the readers' conversions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.cosmology import FlatLambdaCDM
from astropy.io import fits

DONOTUSE = 1 << 30
UNRELIABLE = 1 << 5
C_KMS = 299792.458


def celestial_header(
    shape: tuple[int, int], spaxel_arcsec: float = 0.5, ra: float = 150.0, dec: float = 2.0
) -> fits.Header:
    """A 2D TAN WCS (RA increasing to the left, as on the sky) centred on the grid."""
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    header["CRPIX1"], header["CRPIX2"] = (shape[1] + 1) / 2, (shape[0] + 1) / 2
    header["CRVAL1"], header["CRVAL2"] = ra, dec
    header["CDELT1"], header["CDELT2"] = -spaxel_arcsec / 3600, spaxel_arcsec / 3600
    return header


def sky_offsets(shape: tuple[int, int], centre_xy: tuple[float, float], spaxel_arcsec: float) -> np.ndarray:
    """(2, ny, nx) on-sky offsets [arcsec] from the centre, +x toward +RA (left), +y toward +Dec."""
    rows, cols = np.indices(shape, dtype=np.float64)
    return np.stack([-(cols - centre_xy[0]) * spaxel_arcsec, (rows - centre_xy[1]) * spaxel_arcsec])


def _map_hdu(data: np.ndarray, name: str, wcs: fits.Header, bunit: str = "", channels: list[str] | None = None):
    header = wcs.copy()
    header["BUNIT"] = bunit
    header["HDUCLASS"] = "SDSS"
    header["HDUCLAS1"] = "CUBE" if channels else "IMAGE"
    for i, channel in enumerate(channels or [], start=1):
        header[f"C{i}"] = channel
    return fits.ImageHDU(data=data, header=header, name=name)


def _measurement(name: str, value, ivar, mask, wcs: fits.Header, bunit: str) -> list[fits.ImageHDU]:
    hdus = [
        _map_hdu(np.asarray(value, np.float32), name, wcs, bunit),
        _map_hdu(np.asarray(ivar, np.float32), f"{name}_IVAR", wcs, f"({bunit})^{{-2}}"),
        _map_hdu(np.asarray(mask, np.int32), f"{name}_MASK", wcs),
    ]
    hdus[0].header["ERRDATA"], hdus[0].header["QUALDATA"] = f"{name}_IVAR", f"{name}_MASK"
    return hdus


def write_manga_maps(
    path: str | Path,
    *,
    stellar_vel: np.ndarray,
    stellar_sigma: np.ndarray,
    sigmacorr: np.ndarray | float,
    centre_xy: tuple[float, float],
    re_arcsec: float,
    scinpvel: float,
    vel_ivar: np.ndarray | None = None,
    vel_mask: np.ndarray | None = None,
    sigma_ivar: np.ndarray | None = None,
    sigma_mask: np.ndarray | None = None,
    spaxel_arcsec: float = 0.5,
    release: str = "DR17",
    primary_cards: dict | None = None,
) -> Path:
    """Write a DAP MAPS file; ``stellar_vel`` is stored as given (relative to SCINPVEL) and
    ``stellar_sigma`` is the raw dispersion (astrophysical^2 + sigmacorr^2 under the root).

    The elliptical coordinates are circular about ``centre_xy`` (R/Re = R / ``re_arcsec``).
    ``release`` "DR17" writes 2-channel STELLAR_SIGMACORR and 4-channel SPX_ELLCOO; "DR15"
    a 2D STELLAR_SIGMACORR and 3-channel SPX_ELLCOO.
    """
    shape = np.shape(stellar_vel)
    ones, zeros = np.ones(shape), np.zeros(shape, np.int32)
    wcs = celestial_header(shape, spaxel_arcsec)
    primary = fits.PrimaryHDU()
    primary.header["SCINPVEL"] = (scinpvel, "Initial guess velocity")
    primary.header["DAPTYPE"] = "HYB10-MILESHC-MASTARSSP" if release == "DR17" else "HYB10-GAU-MILESHC"
    primary.header["ECOOPA"], primary.header["ECOOELL"] = 0.0, 0.0
    for key, value in (primary_cards or {}).items():
        primary.header[key] = value

    skycoo = sky_offsets(shape, centre_xy, spaxel_arcsec)
    radius = np.hypot(skycoo[0], skycoo[1])
    azimuth = np.degrees(np.arctan2(skycoo[1], skycoo[0])) % 360
    h_kpc = radius * FlatLambdaCDM(H0=100, Om0=0.3).kpc_proper_per_arcmin(scinpvel / C_KMS).value / 60
    if release == "DR17":
        ellcoo = np.stack([radius, radius / re_arcsec, h_kpc, azimuth])
        ell_names = ["Elliptical radius", "R/Re", "R h/kpc", "Elliptical azimuth"]
        corr = np.stack([np.broadcast_to(sigmacorr, shape), np.broadcast_to(sigmacorr, shape) * 0.9])
        corr_names = ["resolution_difference", "fit"]
    else:
        ellcoo = np.stack([radius, radius / re_arcsec, azimuth])
        ell_names = ["Elliptical radius", "R/Re", "Elliptical azimuth"]
        corr = np.broadcast_to(sigmacorr, shape)
        corr_names = None
    binid = np.where(np.isfinite(stellar_vel), np.arange(np.prod(shape)).reshape(shape), -1)
    binid_names = ["BINNED_SPECTRA", "STELLAR", "EM_M", "EM_G", "SI"]

    hdus = [
        primary,
        _map_hdu(skycoo.astype(np.float32), "SPX_SKYCOO", wcs, "arcsec", ["On-sky X", "On-sky Y"]),
        _map_hdu(ellcoo.astype(np.float32), "SPX_ELLCOO", wcs, "", ell_names),
        _map_hdu(np.exp(-radius / re_arcsec).astype(np.float32), "SPX_MFLUX", wcs, "1E-17 erg/s/cm^2/ang/spaxel"),
        _map_hdu(ones.astype(np.float32), "SPX_MFLUX_IVAR", wcs),
        _map_hdu((30 * np.exp(-radius / re_arcsec)).astype(np.float32), "SPX_SNR", wcs),
        _map_hdu(np.stack([binid] * 5).astype(np.int32), "BINID", wcs, "", binid_names),
        *_measurement(
            "STELLAR_VEL", stellar_vel, ones if vel_ivar is None else vel_ivar,
            zeros if vel_mask is None else vel_mask, wcs, "km/s",
        ),
        *_measurement(
            "STELLAR_SIGMA", stellar_sigma, ones if sigma_ivar is None else sigma_ivar,
            zeros if sigma_mask is None else sigma_mask, wcs, "km/s",
        ),
        _map_hdu(np.asarray(corr, np.float32), "STELLAR_SIGMACORR", wcs, "km/s", corr_names),
    ]  # fmt: skip
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def write_pipe3d(
    path: str | Path,
    *,
    mass: np.ndarray,
    age_gyr: np.ndarray,
    metallicity: np.ndarray,
    footprint: np.ndarray,
    redshift: float,
    spaxel_arcsec: float = 0.5,
    error_dex: float = 0.1,
    describe: bool = True,
) -> Path:
    """Write a Pipe3D cube from maps in the model's units (log10 Msun/kpc^2, Gyr,
    log10 Z/Zsun with Zsun = 0.0127); outside ``footprint`` the segmentation and maps are 0.

    File units: log10 Msun/spaxel (spaxel area at ``redshift`` in TNG's Planck 2015
    cosmology), log10 age/yr, log10 Z/0.019. ``describe`` writes the ``DESC_<i>`` plane names.
    """
    kpc_per_arcsec = FlatLambdaCDM(H0=67.74, Om0=0.3089).kpc_proper_per_arcmin(redshift).value / 60
    spaxel_area_kpc2 = (spaxel_arcsec * kpc_per_arcsec) ** 2
    shape = np.shape(mass)
    ssp = np.zeros((21, *shape), dtype=np.float32)
    inside = np.asarray(footprint, bool)
    ssp[0] = inside * 1.0  # V-band flux
    ssp[1] = np.where(inside, np.arange(1, inside.size + 1).reshape(shape), 0)  # segmentation
    mass_spaxel = np.asarray(mass) + np.log10(spaxel_area_kpc2)
    log_age = np.log10(np.asarray(age_gyr) * 1e9)
    log_met = np.asarray(metallicity) + np.log10(0.0127 / 0.019)
    for plane, values in ((5, log_age), (6, log_age), (8, log_met), (9, log_met), (18, mass_spaxel), (19, mass_spaxel)):
        ssp[plane] = np.where(inside, values, 0)
    for plane in (7, 10, 20):
        ssp[plane] = np.where(inside, error_dex, 0)
    names = {
        0: "Flux intensity in the V-band", 1: "CS segmentation map", 5: "luminosity weighted age",
        6: "mass weighted age", 7: "error in the age", 8: "luminosity weighted metallicity",
        9: "mass weighted metallicity", 10: "error in the metallicity", 18: "stellar mass density",
        19: "stellar mass density dust corrected", 20: "error in the stellar mass density",
    }  # fmt: skip
    header = celestial_header(shape, spaxel_arcsec)
    if describe:
        for plane in range(21):
            header[f"DESC_{plane}"] = names.get(plane, f"plane {plane}")
    dummy = np.zeros((2, *shape), np.float32)
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(ssp, header=header, name="SSP"),
        fits.ImageHDU(dummy, name="SFH"),
        fits.ImageHDU(dummy, name="INDICES"),
        fits.ImageHDU(dummy, name="ELINES"),
        fits.ImageHDU(dummy, name="FLUX_ELINES"),
    ]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def write_generic(
    path: str | Path,
    maps: dict[str, np.ndarray],
    *,
    re_arcsec: float | None,
    redshift: float | None,
    psf_fwhm: float,
    ivars: dict[str, np.ndarray] | None = None,
    masks: dict[str, np.ndarray] | None = None,
    spaxel_arcsec: float = 0.5,
    centre_xy: tuple[float, float] | None = None,
    pixscale_key: bool = False,
    primary_cards: dict | None = None,
) -> Path:
    """Write the generic layout: one image per channel (EXTNAME upper case), optional
    ``_IVAR``/``_MASK``, primary keys REARCSEC (omitted if None), Z (omitted if None), PSFFWHM
    (, PIXSCALE, XCEN, YCEN, and ``primary_cards`` such as LOGMSTAR and PLATEIFU)."""
    shape = np.shape(next(iter(maps.values())))
    wcs = celestial_header(shape, spaxel_arcsec)
    primary = fits.PrimaryHDU()
    if re_arcsec is not None:
        primary.header["REARCSEC"] = re_arcsec
    if redshift is not None:
        primary.header["Z"] = redshift
    primary.header["PSFFWHM"] = psf_fwhm
    for key, value in (primary_cards or {}).items():
        primary.header[key] = value
    if pixscale_key:
        primary.header["PIXSCALE"] = spaxel_arcsec
    if centre_xy is not None:
        primary.header["XCEN"], primary.header["YCEN"] = centre_xy
    hdus = [primary]
    for name, value in maps.items():
        hdus.append(fits.ImageHDU(np.asarray(value, np.float32), header=wcs.copy(), name=name.upper()))
        if ivars and name in ivars:
            hdus.append(
                fits.ImageHDU(np.asarray(ivars[name], np.float32), header=wcs.copy(), name=f"{name.upper()}_IVAR")
            )
        if masks and name in masks:
            hdus.append(
                fits.ImageHDU(np.asarray(masks[name], np.int16), header=wcs.copy(), name=f"{name.upper()}_MASK")
            )
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)
