"""One entry point for observed galaxies: detect the file layout and read the model's channels.

Layouts: a MaNGA DAP MAPS file (kinematics; :mod:`exsitu.sky.manga`), optionally with a
Pipe3D VAC cube for mass, age and metallicity (:mod:`exsitu.sky.pipe3d`), or any IFU in the
generic layout (:mod:`exsitu.sky.generic`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from exsitu.io import InputError
from exsitu.sky import pipe3d
from exsitu.sky.generic import is_generic, read_generic
from exsitu.sky.manga import is_dap_maps, read_dap_maps
from exsitu.sky.observed import ObservedGalaxy, check_channel_names, finite_float, open_fits

log = logging.getLogger(__name__)


def read_observation(
    path: str | Path,
    channels: Sequence[str],
    pipe3d_path: str | Path | None = None,
    vsys: float | None = None,
    re_arcsec: float | None = None,
    *,
    redshift: float | None = None,
    log_mstar: float | None = None,
    pipe3d_dir: str | Path | None = None,
) -> ObservedGalaxy:
    """Read the ``channels`` a model needs from an observation file, and the galaxy's scalars.

    Args:
        path: a MaNGA DAP ``MAPS`` file or a generic-layout FITS file (``.fits`` or ``.fits.gz``).
        channels: model channel names (subset of ``exsitu.contracts.CHANNELS``), in model order.
        pipe3d_path: MaNGA only: the Pipe3D VAC cube giving mass, age and metallicity.
        vsys: systemic velocity [km/s] to subtract from the velocities (MaNGA: relative to
            SCINPVEL; None measures it from the inner 0.5 Re). Generic: normally None.
        re_arcsec: effective radius [arcsec] overriding the file's.
        redshift: redshift overriding the file's (MaNGA: SCINPVEL / c; generic: Z).
        log_mstar: log10 stellar mass [Msun] overriding the file's (generic: LOGMSTAR).
        pipe3d_dir: MaNGA, when ``pipe3d_path`` is None: a directory holding the Pipe3D cube
            of the galaxy (found by PLATEIFU, see :func:`exsitu.sky.pipe3d.find_pipe3d`).

    Returns:
        the :class:`ObservedGalaxy`, its ``maps`` in the order of ``channels``, its
        ``scalars`` holding ``redshift``, ``log_rhalf_kpc`` (log10 Re [kpc], projected) and,
        when known, ``log_mstar``.

    Raises:
        InputError: one message per problem: unknown or unavailable channel, unreadable or
            truncated file, wrong shapes, no valid spaxel, NaN/inf inside the mask, bad Re.
    """
    path = Path(path)
    wanted = check_channel_names(list(channels))
    with open_fits(path) as hdul:
        if is_dap_maps(hdul):
            galaxy = read_dap_maps(hdul, path, wanted, vsys=vsys, re_arcsec=re_arcsec, redshift=redshift)
        elif is_generic(hdul):
            if pipe3d_path is not None:
                raise InputError(f"{path}: a Pipe3D file goes with a MaNGA DAP MAPS file, not the generic layout")
            galaxy = read_generic(hdul, path, wanted, vsys=vsys, re_arcsec=re_arcsec, redshift=redshift)
        else:
            raise InputError(
                f"{path}: neither a MaNGA DAP MAPS file (SPX_ELLCOO extension, SCINPVEL key) nor the generic "
                "layout (REARCSEC key, channel extensions MASS/VELOCITY/...; see exsitu.sky.generic)"
            )
    missing = [c for c in wanted if c not in galaxy.maps]  # only MaNGA leaves some: mass, age, metallicity
    if missing:
        if pipe3d_path is None and pipe3d_dir is not None:
            pipe3d_path = pipe3d.find_pipe3d(pipe3d_dir, galaxy.plateifu, path)
        if pipe3d_path is None:
            raise InputError(
                f"{path}: {', '.join(missing)} need{'s' if len(missing) == 1 else ''} a Pipe3D file "
                "(--pipe3d or --pipe3d-dir): the DAP MAPS file has stellar kinematics only"
            )
        galaxy.maps.update(pipe3d.read_pipe3d(pipe3d_path, missing, galaxy.wcs, galaxy.redshift, galaxy.spaxel_arcsec))
        galaxy.pipe3d_path = Path(pipe3d_path)
    galaxy.maps = {name: galaxy.maps[name] for name in wanted}
    galaxy.scalars.update(redshift=galaxy.redshift, log_rhalf_kpc=float(np.log10(galaxy.re_kpc)))
    if log_mstar is not None:
        galaxy.scalars["log_mstar"] = finite_float(log_mstar, path, "the given log10 M* [Msun]")
    log.info(
        "%s: read %s (%s), Re = %.2f arcsec, z = %.4f, %d valid spaxels",
        path,
        list(wanted),
        galaxy.source,
        galaxy.re_arcsec,
        galaxy.redshift,
        int(galaxy.footprint.sum()),
    )
    return galaxy
