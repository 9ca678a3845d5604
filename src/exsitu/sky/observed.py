"""The observed galaxy every reader returns, and the checks every reader applies.

:class:`ObservedGalaxy` holds, on the observed spaxel grid, one :class:`ChannelMap` per
model channel in the model's units (see ``exsitu.contracts.UNITS``): stellar mass surface
density [log10 Msun/kpc^2], LOS velocity relative to systemic [km/s], instrument-corrected
velocity dispersion [km/s], mass-weighted age [Gyr] and metallicity [log10 Z/Zsun, Zsun =
0.0127 as in TNG], plus the geometry the regridding needs (spaxel size, Re, centre, PSF,
redshift, celestial WCS).

:func:`open_fits` reads a whole FITS file into memory so that a truncated or corrupt file
fails here, with one message, instead of later at a random extension.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from exsitu.contracts import CHANNELS
from exsitu.io import InputError
from exsitu.units import tng_cosmology

log = logging.getLogger(__name__)

C_KMS = 299792.458  # speed of light [km/s]
FITS_BLOCK = 2880  # bytes; a FITS file is a whole number of blocks (FITS standard 4.0, section 3.1)
FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fits", ".fit", ".fts")
#: Galaxy scalars an observation can give (exsitu.scalars names): log10 stellar mass [Msun],
#: log10 half-mass (here: effective) radius [kpc], redshift.
SCALAR_NAMES = ("log_mstar", "log_rhalf_kpc", "redshift")


@dataclass
class ChannelMap:
    """One observed map on the spaxel grid.

    Attributes:
        value: (ny, nx) float64 in the channel's model unit; NaN where not ``valid``.
        ivar: (ny, nx) inverse variance in the channel's unit squared, or None when the
            input gives no uncertainty; 0 where not ``valid``.
        valid: (ny, nx) bool, the spaxel may be used.
    """

    value: np.ndarray
    ivar: np.ndarray | None
    valid: np.ndarray


@dataclass
class ObservedGalaxy:
    """An observed galaxy ready for regridding onto the model's map grid.

    Attributes:
        maps: channel name -> :class:`ChannelMap`, only the channels that were asked for,
            in the order asked.
        spaxel_arcsec: spaxel side [arcsec].
        re_arcsec: effective (half-light) radius [arcsec], > 0.
        redshift: redshift used to turn arcsec into kpc (see :func:`kpc_per_arcsec`).
        psf_fwhm_arcsec: FWHM of the point spread function [arcsec].
        wcs: 2D celestial WCS of the spaxel grid (copied into the prediction file).
        path: the observation file read.
        centre_xy: galaxy centre (x = column, y = row) in 0-based spaxel coordinates.
        source: the layout read: ``"manga-dap"`` or ``"generic"``.
        vsys_kms: the velocity subtracted from the input velocities [km/s] (relative to the
            file's own reference, e.g. SCINPVEL for MaNGA), None if nothing was subtracted.
        pipe3d_path: the Pipe3D file the stellar-population maps came from, if any.
        plateifu: the MaNGA PLATE-IFU designation when the file gives one (``PLATEIFU`` key).
        flux: (ny, nx) surface brightness [any unit] where the file has it (DAP ``SPX_MFLUX``,
            generic ``FLUX``); a light weight for galaxies read without the mass channel.
        scalars: galaxy scalars the observation gives (:data:`SCALAR_NAMES`), filled by
            :func:`exsitu.sky.read_observation`: ``redshift``, ``log_rhalf_kpc`` (log10 of Re in
            kpc, projected) and ``log_mstar`` (log10 stellar mass [Msun]) when known.
    """

    maps: dict[str, ChannelMap]
    spaxel_arcsec: float
    re_arcsec: float
    redshift: float
    psf_fwhm_arcsec: float
    wcs: WCS
    path: Path
    centre_xy: tuple[float, float]
    source: str
    vsys_kms: float | None = None
    pipe3d_path: Path | None = None
    plateifu: str | None = None
    flux: np.ndarray | None = None
    scalars: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The galaxy's name: its PLATE-IFU when known, else the file name without the FITS suffixes."""
        return self.plateifu or file_stem(self.path)

    @property
    def re_kpc(self) -> float:
        """Re [proper kpc] at the galaxy's redshift (:func:`kpc_per_arcsec`)."""
        return self.re_arcsec * kpc_per_arcsec(self.redshift)

    def centre_radec(self) -> tuple[float, float]:
        """(RA, Dec) [deg] of the galaxy centre, from the grid's WCS."""
        ra, dec = self.wcs.pixel_to_world_values(*self.centre_xy)
        return float(ra), float(dec)

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the spaxel grid."""
        return tuple(self.wcs.array_shape)  # type: ignore[return-value]

    @property
    def footprint(self) -> np.ndarray:
        """(ny, nx) bool: spaxels valid in every channel read (where a prediction is made)."""
        valid = np.ones(self.shape, dtype=bool)
        for channel in self.maps.values():
            valid &= channel.valid
        return valid


def file_stem(path: str | Path) -> str:
    """``dir/x.fits.gz`` -> ``x``: the file name without its FITS suffix (other names are kept whole)."""
    name = Path(path).name
    for suffix in FITS_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def kpc_per_arcsec(redshift: float) -> float:
    """Proper transverse scale [kpc/arcsec] at ``redshift`` in TNG's cosmology
    (:func:`exsitu.units.tng_cosmology`; other flat LCDM choices move it by a few per cent at z < 0.15)."""
    if not np.isfinite(redshift) or redshift <= 0:
        raise InputError(f"redshift must be a positive number to convert arcsec to kpc, got {redshift}")
    return float(tng_cosmology().kpc_proper_per_arcmin(redshift).value / 60.0)


def check_channel_names(channels: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Return ``channels`` as a tuple; fail naming any name that is not a model channel."""
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise InputError(f"unknown channel(s) {unknown}; the model channels are {list(CHANNELS)}")
    if not channels:
        raise InputError("no channels asked for; the model needs at least one of " + str(list(CHANNELS)))
    return tuple(channels)


@contextlib.contextmanager
def open_fits(path: str | Path) -> Iterator[fits.HDUList]:
    """Open a (possibly gzipped) FITS file with every HDU's data read into memory.

    Fails with one :class:`InputError` if the file is missing, is not FITS, or is truncated
    or corrupt (astropy alone silently drops the missing HDUs of a truncated ``.gz``).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise InputError(f"{path}: gzip stream is truncated or corrupt ({err})") from None
    if not raw.startswith(b"SIMPLE  ="):
        raise InputError(f"{path}: not a FITS file (no SIMPLE card at the start)")
    if len(raw) % FITS_BLOCK:
        # astropy reads a file cut inside a header as if it ended before that HDU
        raise InputError(f"{path}: FITS file is truncated ({len(raw)} bytes, not whole {FITS_BLOCK}-byte blocks)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data  # force the read: a short data block fails here
        except (OSError, ValueError, TypeError, IndexError) as err:
            raise InputError(f"{path}: FITS file is truncated or corrupt ({err})") from None
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message).lower()]
    if truncated:
        hdul.close()
        raise InputError(f"{path}: FITS file is truncated ({truncated[0]})")
    try:
        yield hdul
    finally:
        hdul.close()


def extension(hdul: fits.HDUList, name: str, path: Path, needed_for: str) -> fits.ImageHDU:
    """The image HDU ``name`` (by EXTNAME, never by number); fail naming what needs it."""
    if name not in hdul:
        raise InputError(f"{path}: extension {name} is missing ({needed_for} needs it)")
    hdu = hdul[name]
    if hdu.data is None:
        raise InputError(f"{path}: extension {name} has no data ({needed_for} needs it)")
    return hdu


def check_shape(array: np.ndarray, shape: tuple[int, ...], path: Path, what: str, reference: str) -> None:
    """Fail if ``array`` does not have ``shape`` (the shape of ``reference``)."""
    if tuple(array.shape) != tuple(shape):
        raise InputError(f"{path}: {what} has shape {tuple(array.shape)}, expected {tuple(shape)} like {reference}")


def finish_channel(
    name: str,
    value: np.ndarray,
    ivar: np.ndarray | None,
    valid: np.ndarray,
    path: Path,
    source: str,
) -> ChannelMap:
    """Apply the rules every reader shares and return the :class:`ChannelMap`.

    ``valid`` is the reader's mask (quality bits, footprint); spaxels with IVAR <= 0 are
    dropped too. Fails if a value the mask keeps is NaN or infinite (the input is broken,
    not merely masked) or if no spaxel is left. Outside ``valid`` the value becomes NaN and
    the ivar 0.
    """
    value = np.asarray(value, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool).copy()
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=np.float64)
        bad_ivar = valid & ~np.isfinite(ivar)
        if bad_ivar.any():
            raise InputError(
                f"{path}: {source} inverse variance has {int(bad_ivar.sum())} NaN/inf values at valid spaxels"
            )
        valid &= ivar > 0
    bad = valid & ~np.isfinite(value)
    if bad.any():
        raise InputError(
            f"{path}: channel '{name}' ({source}) has {int(bad.sum())} NaN/inf values at spaxels its mask marks valid"
        )
    if not valid.any():
        raise InputError(f"{path}: channel '{name}' ({source}) has no valid spaxel (all masked)")
    value = np.where(valid, value, np.nan)
    if ivar is not None:
        ivar = np.where(valid, ivar, 0.0)
    return ChannelMap(value=value, ivar=ivar, valid=valid)


def positive_float(value: object, path: Path, what: str) -> float:
    """``value`` as a finite float > 0; fail naming ``what`` otherwise (None means missing)."""
    if value is None:
        raise InputError(f"{path}: {what} is missing")
    number = finite_float(value, path, what)
    if number <= 0:
        raise InputError(f"{path}: {what} must be positive, got {number}")
    return number


def finite_float(value: object, path: Path, what: str) -> float:
    """``value`` as a finite float; fail naming ``what`` otherwise."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{path}: {what} is not a number: {value!r}") from None
    if not np.isfinite(number):
        raise InputError(f"{path}: {what} must be finite, got {number}")
    return number


def celestial_wcs(header: fits.Header, shape: tuple[int, int], path: Path, where: str) -> WCS:
    """The 2D celestial WCS of ``header`` with the array shape set; fail if there is none."""
    with warnings.catch_warnings():
        # MaNGA headers carry non-WCS cards astropy comments on; they do not matter here.
        warnings.simplefilter("ignore")
        wcs = WCS(header).celestial
    if wcs.naxis != 2:
        raise InputError(f"{path}: {where} header has no 2D celestial WCS (CTYPE RA---/DEC-- cards)")
    wcs.array_shape = shape
    return wcs


def wcs_spaxel_arcsec(wcs: WCS, path: Path) -> float:
    """Spaxel side [arcsec] from the WCS (geometric mean of the two axes)."""
    scales = wcs.proj_plane_pixel_scales()
    arcsec = float(np.sqrt(abs(scales[0].to_value("arcsec") * scales[1].to_value("arcsec"))))
    return positive_float(arcsec, path, "spaxel size from the WCS")
