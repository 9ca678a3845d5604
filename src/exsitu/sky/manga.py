"""Read stellar kinematics from a MaNGA DAP ``MAPS`` file (``manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz``).

Data-model facts used (DAP 3.1.x = DR17 and DAP 2.2.1 = DR15; sdss/mangadap docs
``datamodel.rst``, ``corrections.rst``, ``metadatamodel.rst``, ``tables/dapmapsbitmask.rst``,
and Westfall et al. 2019, AJ 158, 231):

- Extensions are selected by EXTNAME, and channels of multi-channel extensions by the
  header's ``C<n>`` names (1-based), never by number alone.
- ``STELLAR_VEL`` [km/s] is the LOS velocity relative to the input guess ``cz`` given by
  ``SCINPVEL`` [km/s] in the PRIMARY header (most often the NSA redshift); here
  ``redshift = SCINPVEL / c`` and the systemic velocity is removed: a plane fitted to the valid
  spaxels inside 0.5 Re, evaluated at the centre (or a given ``vsys``, in STELLAR_VEL's frame).
- ``STELLAR_SIGMA`` [km/s] is the raw dispersion; the astrophysical one is
  ``sqrt(STELLAR_SIGMA^2 - STELLAR_SIGMACORR^2)``. In DR17 (since MPL-8) STELLAR_SIGMACORR has
  two channels and the docs say *use the first*; in DR15 it is a single 2D map. Spaxels where
  the correction exceeds the measurement have no real solution and are masked.
- ``*_IVAR`` are inverse variances and ``*_MASK`` bit masks (MANGA_DAPPIXMASK); bit 30
  ``DONOTUSE`` marks spaxels not to be used for science. A spaxel is valid if DONOTUSE is
  unset and IVAR > 0.
- ``SPX_ELLCOO`` channels (DR17): 'Elliptical radius' [arcsec], 'R/Re', 'R h/kpc',
  'Elliptical azimuth' [deg] (DR15 lacks 'R h/kpc'). Re [arcsec] = R / (R/Re), the radius the
  DAP itself used (NSA elliptical-Petrosian half-light radius; the DAP substitutes Re = 1 arcsec
  when the NSA has none, so pass ``re_arcsec`` for such galaxies). A ``REFF`` primary key, when
  present, is only cross-checked.
- ``SPX_SKYCOO`` channels: on-sky offsets [arcsec] (+x toward +RA, +y toward +Dec) from the
  galaxy centre; the centre in spaxels is where both vanish (fit of the linear offset field).
- Each map header carries the spaxel grid's WCS (identical to the DRP LOGCUBE's sky axes).
- PSF: the DRP's reconstructed r-band FWHM ``RFWHM`` [arcsec] (then ``GFWHM``) when the primary
  header has it, else the survey median 2.54 arcsec (Law et al. 2016, AJ 152, 83; Yan et al.).
- ``PLATEIFU`` in the primary header names the galaxy (else the ``manga-PLATE-IFU-MAPS`` file
  name does); ``SPX_MFLUX`` [1e-17 erg/s/cm^2/A/spaxel] is the mean g-band flux per spaxel, the
  light weight of a prediction made without stellar masses.

Stellar surface density, ages and metallicities are not DAP products; they come from the
Pipe3D VAC (:mod:`exsitu.sky.pipe3d`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from astropy.io import fits

from exsitu.io import InputError
from exsitu.sky.observed import (
    C_KMS,
    ChannelMap,
    ObservedGalaxy,
    celestial_wcs,
    check_shape,
    extension,
    finish_channel,
    positive_float,
    wcs_spaxel_arcsec,
)

log = logging.getLogger(__name__)

DONOTUSE = 1 << 30  # MANGA_DAPPIXMASK bit 30
MANGA_PSF_FWHM_ARCSEC = 2.54  # median reconstructed PSF FWHM of MaNGA cubes [arcsec]
INNER_RE = 0.5  # systemic velocity from the spaxels inside this many Re
MIN_INNER_SPAXELS = 3


def is_dap_maps(hdul: fits.HDUList) -> bool:
    """True if ``hdul`` looks like a DAP MAPS file (has SPX_ELLCOO or a SCINPVEL key)."""
    return "SPX_ELLCOO" in hdul or "SCINPVEL" in hdul[0].header


def channel_plane(hdu: fits.ImageHDU, name: str, default: int, path: Path) -> np.ndarray:
    """The plane called ``name`` in a multi-channel DAP extension (``C<n>`` header names).

    Falls back to plane ``default`` (the data-model position) when the header names no
    channels; fails if it names them but not ``name``.
    """
    names = {str(v).strip(): int(k[1:]) - 1 for k, v in hdu.header.items() if k[:1] == "C" and k[1:].isdigit()}
    data = np.asarray(hdu.data)
    if data.ndim != 3:
        raise InputError(f"{path}: extension {hdu.name} should have channels (3D), has shape {data.shape}")
    index = names.get(name, None if names else default)
    if index is None or not 0 <= index < data.shape[0]:
        raise InputError(f"{path}: extension {hdu.name} has no channel '{name}' (channels: {sorted(names)})")
    return data[index]


def good_spaxels(hdul: fits.HDUList, ext: str, shape: tuple[int, int], path: Path, needed_for: str) -> np.ndarray:
    """Spaxels whose ``<ext>_MASK`` has DONOTUSE unset."""
    mask = np.asarray(extension(hdul, f"{ext}_MASK", path, needed_for).data)
    check_shape(mask, shape, path, f"extension {ext}_MASK", "SPX_ELLCOO")
    return (mask.astype(np.int64) & DONOTUSE) == 0


def read_measurement(
    hdul: fits.HDUList, ext: str, shape: tuple[int, int], path: Path, needed_for: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, ivar, DONOTUSE-free) for a DAP map with ``_IVAR`` and ``_MASK`` companions."""
    value = np.asarray(extension(hdul, ext, path, needed_for).data, dtype=np.float64)
    check_shape(value, shape, path, f"extension {ext}", "SPX_ELLCOO")
    ivar = np.asarray(extension(hdul, f"{ext}_IVAR", path, needed_for).data, dtype=np.float64)
    check_shape(ivar, shape, path, f"extension {ext}_IVAR", "SPX_ELLCOO")
    return value, ivar, good_spaxels(hdul, ext, shape, path, needed_for)


def effective_radius(ellcoo: fits.ImageHDU, header: fits.Header, path: Path) -> float:
    """Re [arcsec] = R / (R/Re) from SPX_ELLCOO; cross-checked against a REFF header key."""
    radius = channel_plane(ellcoo, "Elliptical radius", 0, path)
    r_over_re = channel_plane(ellcoo, "R/Re", 1, path)
    usable = np.isfinite(radius) & np.isfinite(r_over_re) & (radius > 0) & (r_over_re > 0)
    if not usable.any():
        raise InputError(f"{path}: effective radius missing: SPX_ELLCOO has no spaxel with R > 0 and R/Re > 0")
    re_arcsec = positive_float(float(np.median(radius[usable] / r_over_re[usable])), path, "Re from SPX_ELLCOO")
    reff = header.get("REFF")
    if isinstance(reff, (int, float)) and reff > 0 and abs(reff / re_arcsec - 1) > 0.01:
        log.warning(
            "%s: REFF = %.3f arcsec in the header but SPX_ELLCOO implies %.3f; using the latter", path, reff, re_arcsec
        )
    return re_arcsec


def centre_from_skycoo(skycoo: fits.ImageHDU, shape: tuple[int, int], path: Path) -> tuple[float, float]:
    """Spaxel (x, y) where the SPX_SKYCOO on-sky offsets are zero (least-squares plane fit)."""
    dx = channel_plane(skycoo, "On-sky X", 0, path)
    dy = channel_plane(skycoo, "On-sky Y", 1, path)
    check_shape(dx, shape, path, "extension SPX_SKYCOO", "SPX_ELLCOO")
    rows, cols = np.indices(shape)
    ok = np.isfinite(dx) & np.isfinite(dy)
    if ok.sum() < 3:
        raise InputError(f"{path}: SPX_SKYCOO has fewer than 3 finite spaxels; cannot locate the galaxy centre")
    design = np.column_stack([np.ones(ok.sum()), cols[ok], rows[ok]])
    (ax, bx, cx), *_ = np.linalg.lstsq(design, dx[ok], rcond=None)
    (ay, by, cy), *_ = np.linalg.lstsq(design, dy[ok], rcond=None)
    jacobian = np.array([[bx, cx], [by, cy]])
    if abs(np.linalg.det(jacobian)) < 1e-12:
        raise InputError(f"{path}: SPX_SKYCOO offsets do not vary across the grid; cannot locate the galaxy centre")
    x, y = np.linalg.solve(jacobian, [-ax, -ay])
    return float(x), float(y)


def psf_fwhm(header: fits.Header, path: Path) -> float:
    """PSF FWHM [arcsec]: RFWHM, else GFWHM, else the MaNGA median."""
    for key in ("RFWHM", "GFWHM"):
        if key in header:
            return positive_float(header[key], path, f"PRIMARY header {key} (PSF FWHM)")
    log.warning(
        "%s: no RFWHM/GFWHM in the header; assuming the MaNGA median PSF FWHM %.2f arcsec", path, MANGA_PSF_FWHM_ARCSEC
    )
    return MANGA_PSF_FWHM_ARCSEC


def systemic_velocity(channel: ChannelMap, r_over_re: np.ndarray, centre_xy: tuple[float, float], path: Path) -> float:
    """Systemic velocity [km/s]: a plane v = v0 + a x + b y fitted to the valid spaxels inside
    :data:`INNER_RE` Re, evaluated at the galaxy centre.

    A plain median of those spaxels is biased by (velocity gradient) x (centre offset from a
    spaxel centre) -- 7.5 km/s on the test disc -- because the spaxels do not sample the
    rotation field symmetrically; the plane removes that to first order.
    """
    inner = channel.valid & (r_over_re < INNER_RE)
    if inner.sum() < MIN_INNER_SPAXELS:
        raise InputError(
            f"{path}: only {int(inner.sum())} valid STELLAR_VEL spaxels inside {INNER_RE} Re, too few to "
            "measure the systemic velocity; pass vsys"
        )
    rows, cols = np.nonzero(inner)
    design = np.column_stack([np.ones(rows.size), cols - centre_xy[0], rows - centre_xy[1]])
    (v0, _, _), *_ = np.linalg.lstsq(design, channel.value[inner], rcond=None)
    return float(v0)


def read_dispersion(hdul: fits.HDUList, shape: tuple[int, int], path: Path) -> ChannelMap:
    """Instrument-corrected stellar velocity dispersion [km/s]."""
    sigma, ivar, good = read_measurement(hdul, "STELLAR_SIGMA", shape, path, "channel 'dispersion'")
    corr = np.asarray(extension(hdul, "STELLAR_SIGMACORR", path, "channel 'dispersion'").data, dtype=np.float64)
    if corr.ndim == 3:
        corr = corr[0]  # DR17: two corrections, the docs say use the first channel
    check_shape(corr, shape, path, "extension STELLAR_SIGMACORR", "SPX_ELLCOO")
    with np.errstate(invalid="ignore"):
        astro_sq = sigma**2 - corr**2
        real = astro_sq > 0
    imaginary = good & (ivar > 0) & np.isfinite(astro_sq) & ~real
    if imaginary.any():
        log.info("%s: %d spaxels with STELLAR_SIGMACORR >= STELLAR_SIGMA masked", path, int(imaginary.sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        astro = np.sqrt(np.where(imaginary, 0.0, astro_sq))
        # d sigma_astro = (sigma / sigma_astro) d sigma  =>  ivar_astro = ivar * sigma_astro^2 / sigma^2.
        # NaN inputs keep their ivar so that finish_channel reports them instead of masking them.
        astro_ivar = np.where(real, ivar * astro_sq / sigma**2, ivar)
    valid = good & ~imaginary
    return finish_channel("dispersion", astro, astro_ivar, valid, path, "STELLAR_SIGMA with STELLAR_SIGMACORR")


def plate_ifu(header: fits.Header, path: Path) -> str | None:
    """PLATE-IFU from the PLATEIFU key, else from a ``manga-PLATE-IFU-MAPS-...`` file name, else None."""
    if "PLATEIFU" in header:
        return str(header["PLATEIFU"]).strip()
    match = re.match(r"manga-(\d+-\d+)-MAPS", path.name)
    return match.group(1) if match else None


def light_weight(hdul: fits.HDUList, shape: tuple[int, int], path: Path) -> np.ndarray | None:
    """SPX_MFLUX (mean g-band flux per spaxel), 0 where not finite or negative; None without it."""
    if "SPX_MFLUX" not in hdul or hdul["SPX_MFLUX"].data is None:
        return None
    flux = np.asarray(hdul["SPX_MFLUX"].data, dtype=np.float64)
    check_shape(flux, shape, path, "extension SPX_MFLUX", "SPX_ELLCOO")
    return np.where(np.isfinite(flux) & (flux > 0), flux, 0.0)


def read_dap_maps(
    hdul: fits.HDUList,
    path: Path,
    channels: tuple[str, ...],
    vsys: float | None = None,
    re_arcsec: float | None = None,
    *,
    redshift: float | None = None,
) -> ObservedGalaxy:
    """Read the kinematic ``channels`` (velocity, dispersion) and the geometry of a DAP MAPS file.

    Args:
        hdul: the open file (see :func:`exsitu.sky.observed.open_fits`).
        path: its path, for messages and provenance.
        channels: the channels wanted; only the kinematic ones are read here.
        vsys: systemic velocity [km/s] relative to SCINPVEL to subtract; None measures it.
        re_arcsec: effective radius [arcsec] overriding the one in SPX_ELLCOO.
        redshift: redshift overriding SCINPVEL / c.

    Returns:
        an :class:`ObservedGalaxy` whose ``maps`` hold the kinematic channels asked for.
    """
    header = hdul[0].header
    ellcoo = extension(hdul, "SPX_ELLCOO", path, "the radius R/Re and Re")
    shape = tuple(np.asarray(ellcoo.data).shape[-2:])
    r_over_re = channel_plane(ellcoo, "R/Re", 1, path)
    if re_arcsec is None:
        re_arcsec = effective_radius(ellcoo, header, path)
    else:
        re_arcsec = positive_float(re_arcsec, path, "the given Re")
        r_over_re = channel_plane(ellcoo, "Elliptical radius", 0, path) / re_arcsec
    if redshift is None:
        scinpvel = header.get("SCINPVEL")
        if scinpvel is None:
            raise InputError(f"{path}: PRIMARY header key SCINPVEL (input cz [km/s], gives the redshift) is missing")
        redshift = positive_float(float(scinpvel) / C_KMS, path, "redshift SCINPVEL / c")
    else:
        redshift = positive_float(redshift, path, "the given redshift")
    wcs = celestial_wcs(ellcoo.header, shape, path, "SPX_ELLCOO")

    centre = centre_from_skycoo(extension(hdul, "SPX_SKYCOO", path, "the galaxy centre"), shape, path)
    maps: dict[str, ChannelMap] = {}
    for name in channels:
        if name == "velocity":
            value, ivar, good = read_measurement(hdul, "STELLAR_VEL", shape, path, "channel 'velocity'")
            maps[name] = finish_channel(name, value, ivar, good, path, "STELLAR_VEL")
            if vsys is None:
                vsys = systemic_velocity(maps[name], r_over_re, centre, path)
            maps[name].value = maps[name].value - vsys
        elif name == "dispersion":
            maps[name] = read_dispersion(hdul, shape, path)
    return ObservedGalaxy(
        maps=maps,
        spaxel_arcsec=wcs_spaxel_arcsec(wcs, path),
        re_arcsec=re_arcsec,
        redshift=redshift,
        psf_fwhm_arcsec=psf_fwhm(header, path),
        wcs=wcs,
        path=path,
        centre_xy=centre,
        source="manga-dap",
        vsys_kms=float(vsys) if "velocity" in maps else None,
        plateifu=plate_ifu(header, path),
        flux=light_weight(hdul, shape, path),
    )
