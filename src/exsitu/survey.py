"""Predict a survey: many observed galaxies with one model, one prediction file each, one catalogue.

Inputs (:func:`collect_inputs`): FITS files, directories (their ``*.fits``/``*.fits.gz`` files,
sorted by name) and list files. A list file has one galaxy per line: its path (relative to the
list file's directory unless absolute), then optional ``key=value`` columns that override what
the file says or add what it lacks::

    # comment lines and blank lines are skipped
    manga-8485-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz pipe3d=manga-8485-1901.Pipe3D.cube.fits.gz log_mstar=10.6
    "my galaxy.fits" redshift=0.031 re_arcsec=4.2 vsys=12

Keys: ``pipe3d`` (Pipe3D cube, MaNGA), ``log_mstar`` (log10 M* [Msun]), ``redshift``,
``re_arcsec`` (Re [arcsec]) and ``vsys`` (systemic velocity [km/s] to subtract).

Every galaxy gets ``<out_dir>/<name>.fits`` and ``<name>.png`` (:func:`exsitu.sky.write_prediction`)
and one row of the catalogue (``catalogue.fits`` and ``catalogue.csv``, written at the end). The
name is the galaxy's PLATE-IFU where the file gives one, else the file name without its FITS
suffix (a repeated name gets ``_2``, ``_3``, ... in input order). A galaxy that fails (unreadable
file, missing channel, scalar or Pipe3D file, nothing inside the field of view, ...) gets a row
with status "failed" and the reason, and the others go on.

Integrated ex-situ fractions (columns ``f_exsitu_1re_*`` and ``f_exsitu_1p5re_*``, each
``p50``, ``p16`` and ``p84``): on the model grid, inside circles of 1 and 1.5 Re about the galaxy
centre (:func:`exsitu.functionals.aperture`; for a model trained on ideal maps the grid is scaled
by Re x 4/3, so 1 Re is 0.75 of its half-mass radius), each sampled map's weighted mean over the
usable model pixels (:func:`exsitu.functionals.integrated_fraction`); the columns are the
16/50/84th percentiles of the K values, i.e. of the joint posterior of the integrated fraction,
not functions of per-pixel summaries. Weights (column ``weighting``): the stellar surface density
the model read when it has the mass channel ("mass"); otherwise the galaxy's surface brightness
(DAP ``SPX_MFLUX``, generic ``FLUX``: a light-weighted fraction, "light"), or equal weights when
the file has none ("uniform"); both are flagged.

Flags (column ``flags``, bits): see :data:`FLAGS`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from exsitu.functionals import aperture, integrated_fraction
from exsitu.io import InputError, atomic_output
from exsitu.modelcard import TrainedModel
from exsitu.predict import ObservedPosterior, predict_observation, rhalf_per_re
from exsitu.sky import read_observation, write_prediction
from exsitu.sky.observed import FITS_SUFFIXES, ObservedGalaxy, file_stem

log = logging.getLogger(__name__)

CATALOGUE = "catalogue"  # <out_dir>/catalogue.fits and catalogue.csv
#: Aperture radii [Re] of the integrated fractions, and their column infix.
APERTURES_RE = {"1re": 1.0, "1p5re": 1.5}
#: An aperture is flagged when usable model pixels cover less than this share of it.
MIN_APERTURE_COVERAGE = 0.9
#: Flag bits of the catalogue's ``flags`` column.
FLAGS = {
    "not_mass_weighted": 1,  # the model has no mass channel: light or uniform weights (column weighting)
    "aperture_1re_incomplete": 2,  # usable pixels cover < MIN_APERTURE_COVERAGE of the 1 Re circle
    "aperture_1p5re_incomplete": 4,  # the same for 1.5 Re
    "radius_3d": 8,  # model trained on ideal maps: its grid is scaled by Re x 4/3 (predict.RHALF_3D_PER_RE)
}
STATUS_OK, STATUS_FAILED = "ok", "failed"


@dataclass(frozen=True)
class GalaxyInput:
    """One galaxy to predict: its observation file and what the caller adds to or overrides in it."""

    path: Path
    pipe3d: Path | None = None
    log_mstar: float | None = None  # log10 M* [Msun]
    redshift: float | None = None
    re_arcsec: float | None = None  # Re [arcsec]
    vsys: float | None = None  # systemic velocity [km/s] to subtract


LIST_KEYS = tuple(f.name for f in fields(GalaxyInput) if f.name != "path")


def _parse_entry(tokens: list[str], base: Path, where: str) -> GalaxyInput:
    values: dict[str, Any] = {"path": base / tokens[0]}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep or key not in LIST_KEYS:
            raise InputError(f"{where}: '{token}' is not key=value with a key among {list(LIST_KEYS)}")
        if key == "pipe3d":
            values[key] = base / value
            continue
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"{where}: {key}={value!r} is not a number") from None
        if not np.isfinite(number):
            raise InputError(f"{where}: {key}={value!r} is not finite")
        values[key] = number
    return GalaxyInput(**values)


def read_input_list(path: str | os.PathLike) -> list[GalaxyInput]:
    """The galaxies of a list file (see the module doc); a malformed line is one error naming it."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the input list ({err})") from None
    inputs = []
    for number, line in enumerate(lines, start=1):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as err:
            raise InputError(f"{path}:{number}: {err}") from None
        if tokens:
            inputs.append(_parse_entry(tokens, path.parent, f"{path}:{number}"))
    return inputs


def is_fits_name(path: Path) -> bool:
    """True for a name ending in a FITS suffix (``.fits``, ``.fits.gz``, ...)."""
    return any(path.name.endswith(suffix) for suffix in FITS_SUFFIXES)


def collect_inputs(paths: Iterable[str | os.PathLike], list_file: str | os.PathLike | None = None) -> list[GalaxyInput]:
    """The galaxies of ``paths`` (FITS files, or directories: their FITS files sorted by name), then
    those of ``list_file``. A path that does not exist stays in (its row will say so); none at all,
    or a directory without FITS files, is an error."""
    inputs = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_fits_name(p))
            if not found:
                raise InputError(f"{path}: directory holds no FITS file ({', '.join(FITS_SUFFIXES)})")
            inputs += [GalaxyInput(p) for p in found]
        else:
            inputs.append(GalaxyInput(path))
    if list_file is not None:
        inputs += read_input_list(list_file)
    if not inputs:
        raise InputError("no galaxies to predict: give FITS files, directories or a --list file")
    return inputs


def shard_of(items: Sequence[Any], index: int, n_shards: int) -> list[tuple[int, Any]]:
    """(position, item) of the items of shard ``index`` of ``n_shards``: item i goes to shard i mod n."""
    if n_shards < 1 or not 0 <= index < n_shards:
        raise InputError(f"shard {index} of {n_shards}: need n_shards >= 1 and 0 <= shard < n_shards")
    return [(i, item) for i, item in enumerate(items) if i % n_shards == index]


def safe_name(name: str) -> str:
    """``name`` usable as a file name: characters other than letters, digits and ``-_.+`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name).strip(".") or "galaxy"


@dataclass
class SurveyRun:
    """How to predict galaxies: the model, the sampling and the options every galaxy shares.

    Attributes:
        model: the loaded model directory.
        n_samples: K posterior samples per galaxy.
        seed: the sampling seed, the same for every galaxy (a galaxy's samples do not depend on
            the others or its position in the batch: single-file predict gives the same).
        keep_samples: write the K samples into each prediction file (SAMPLES extension).
        pipe3d_dir: MaNGA: directory to find each galaxy's Pipe3D cube in (by PLATEIFU).
    """

    model: TrainedModel
    n_samples: int
    seed: int
    keep_samples: bool = False
    pipe3d_dir: Path | None = None


def integrated_quantiles(model: TrainedModel, posterior: ObservedPosterior) -> tuple[dict[str, float], int]:
    """Columns ``f_exsitu_<r>re_p50|p16|p84`` for each aperture, and their incomplete-coverage flag bits."""
    card = model.card
    values: dict[str, float] = {}
    flags = 0
    for infix, radius_re in APERTURES_RE.items():
        circle = aperture(card.npix, card.fov_rhalf, radius_re / rhalf_per_re(card))
        sampled = integrated_fraction(posterior.samples, posterior.weights, circle)  # (K,): one per sampled map
        quantiles = np.percentile(sampled, [50, 16, 84]) if np.isfinite(sampled).all() else [np.nan] * 3
        values.update({f"f_exsitu_{infix}_{q}": float(v) for q, v in zip(("p50", "p16", "p84"), quantiles)})
        if posterior.mask[circle].mean() < MIN_APERTURE_COVERAGE:
            flags |= FLAGS[f"aperture_{infix}_incomplete"]
    return values, flags


def galaxy_row(model: TrainedModel, galaxy: ObservedGalaxy, posterior: ObservedPosterior) -> dict[str, Any]:
    """The catalogue values of a galaxy predicted (all but index, name, input and fits)."""
    ra, dec = galaxy.centre_radec()
    fractions, flags = integrated_quantiles(model, posterior)
    if posterior.weighting != "mass":
        flags |= FLAGS["not_mass_weighted"]
    if model.card.radius == "3d":
        flags |= FLAGS["radius_3d"]
    return {
        "status": STATUS_OK,
        "reason": "",
        "pipe3d": str(galaxy.pipe3d_path or ""),
        "ra": ra,
        "dec": dec,
        "z": galaxy.redshift,
        "re_arcsec": galaxy.re_arcsec,
        "re_kpc": galaxy.re_kpc,
        "log_mstar": galaxy.scalars.get("log_mstar", np.nan),
        **fractions,
        "n_spaxels": posterior.n_spaxels,
        "weighting": posterior.weighting,
        "flags": flags,
    }


#: PRIMARY header cards of a prediction file that repeat its catalogue values: key (<= 8
#: characters: FX10P50 is the median integrated fraction inside 1.0 Re, FX15P84 the 84th
#: percentile inside 1.5 Re) -> (column, comment short enough for one card).
HEADER_CARDS = {
    **{
        f"FX{round(10 * radius):02d}{q.upper()}": (f"f_exsitu_{infix}_{q}", f"f_exsitu inside {radius:g} Re, {q}")
        for infix, radius in APERTURES_RE.items()
        for q in ("p50", "p16", "p84")
    },
    "NSPAXELS": ("n_spaxels", "spaxels with a prediction"),
    "WEIGHTS": ("weighting", "weights of the integrated fractions"),
    "FLAGS": ("flags", "bit flags (exsitu.survey.FLAGS)"),
}


def predict_galaxy(run: SurveyRun, item: GalaxyInput, output: Callable[[ObservedGalaxy], Path]) -> dict[str, Any]:
    """Read, predict and write one galaxy to ``output(galaxy)`` (+ PNG); return its catalogue values
    (:func:`galaxy_row`), which the file's PRIMARY header repeats (:data:`HEADER_CARDS`).
    Raises what the galaxy fails with."""
    galaxy = read_observation(
        item.path, run.model.card.channels, item.pipe3d, vsys=item.vsys, re_arcsec=item.re_arcsec,
        redshift=item.redshift, log_mstar=item.log_mstar, pipe3d_dir=run.pipe3d_dir,
    )  # fmt: skip
    posterior = predict_observation(run.model, galaxy, run.n_samples, run.seed, keep_samples=run.keep_samples)
    row = galaxy_row(run.model, galaxy, posterior)
    cards = {key: (row[column], comment) for key, (column, comment) in HEADER_CARDS.items()}
    path, _ = write_prediction(output(galaxy), posterior.maps, galaxy, run.model.directory, run.seed, cards=cards)
    return {**row, "name": file_stem(path), "fits": path.name}


def unique_name(name: str, taken: set[str]) -> str:
    """``safe_name(name)``, with ``_2``, ``_3``, ... appended when already ``taken``; added to ``taken``."""
    base = candidate = safe_name(name)
    number = 1
    while candidate in taken:
        number += 1
        candidate = f"{base}_{number}"
    taken.add(candidate)
    return candidate


def failure_reason(err: Exception, item: GalaxyInput) -> str:
    """The catalogue's reason for a failed galaxy: the message of bad input, the error type and
    message (and the traceback in the log) for anything else."""
    if isinstance(err, InputError):
        reason = str(err)
    else:
        log.error("%s: unexpected failure", item.path, exc_info=err)
        reason = f"{type(err).__name__}: {err}"
    log.warning("%s: failed: %s", item.path, reason)
    return reason


def predict_survey(
    run: SurveyRun, items: Sequence[tuple[int, GalaxyInput]], out_dir: str | os.PathLike
) -> pd.DataFrame:
    """Predict every galaxy of ``items`` ((position in the survey, input) pairs) into ``out_dir``:
    ``<name>.fits|png`` as it goes, the catalogue at the end. Returns the catalogue (one row per
    item, in the order given). A galaxy that fails gets a row with status "failed" and the reason;
    the others go on."""
    out_dir = Path(out_dir)
    rows = []
    taken: set[str] = set()

    def output(galaxy: ObservedGalaxy) -> Path:
        return out_dir / f"{unique_name(galaxy.name, taken)}.fits"

    with logging_redirect_tqdm():
        for position, item in tqdm(items, desc="exsitu predict", unit="galaxy", disable=None):
            try:
                row = predict_galaxy(run, item, output)
            except Exception as err:  # noqa: BLE001 - one galaxy's failure, whatever it is, must not stop a survey
                row = {"name": unique_name(file_stem(item.path), taken), "status": STATUS_FAILED,
                       "reason": failure_reason(err, item)}  # fmt: skip
            rows.append({"index": position, "input": str(item.path), **row})
    table = catalogue_frame(rows)
    write_catalogue(table, out_dir)
    return table


#: Catalogue columns: name -> (FITS format, unit, description).
COLUMNS: dict[str, tuple[str, str, str]] = {
    "index": ("K", "", "position of the galaxy in the inputs (0-based)"),
    "name": ("A", "", "PLATE-IFU where the file gives one, else the file name"),
    "status": ("A", "", "ok or failed"),
    "reason": ("A", "", "why the galaxy failed (empty when ok)"),
    "input": ("A", "", "observation file"),
    "pipe3d": ("A", "", "Pipe3D file read, if any"),
    "fits": ("A", "", "prediction file, relative to the catalogue's directory"),
    "ra": ("D", "deg", "right ascension of the galaxy centre"),
    "dec": ("D", "deg", "declination of the galaxy centre"),
    "z": ("D", "", "redshift"),
    "re_arcsec": ("D", "arcsec", "effective radius Re"),
    "re_kpc": ("D", "kpc", "Re, proper, in the TNG cosmology"),
    "log_mstar": ("D", "dex(Msun)", "log10 stellar mass, when given"),
    **{
        f"f_exsitu_{infix}_{q}": ("D", "", f"integrated ex-situ mass fraction inside {r:g} Re, posterior {label}")
        for infix, r in APERTURES_RE.items()
        for q, label in (("p50", "median"), ("p16", "16th percentile"), ("p84", "84th percentile"))
    },
    "n_spaxels": ("K", "", "spaxels with a prediction"),
    "weighting": ("A", "", "pixel weights of the integrated fractions: mass, light or uniform"),
    "flags": ("K", "", "bit flags (exsitu.survey.FLAGS)"),
}


def catalogue_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the catalogue table with every column of :data:`COLUMNS` (missing values: NaN, "", 0)."""
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for column, (form, _, _) in COLUMNS.items():
        if form == "A":
            table[column] = table[column].fillna("").astype(str)
        elif form == "K":
            table[column] = table[column].fillna(0).astype(np.int64)
        else:
            table[column] = table[column].astype(np.float64)
    return table


def write_catalogue(table: pd.DataFrame, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``catalogue.fits`` (with units and a description per column) and ``catalogue.csv`` atomically."""
    out_dir = Path(out_dir)
    columns = []
    for column, (form, unit, _) in COLUMNS.items():
        values = table[column].to_numpy()
        if form == "A":
            width = max(1, max((len(v.encode()) for v in values), default=1))
            columns.append(fits.Column(name=column, format=f"{width}A", unit=unit or None, array=values.astype(str)))
        else:
            columns.append(fits.Column(name=column, format=form, unit=unit or None, array=values))
    hdu = fits.BinTableHDU.from_columns(columns, name="CATALOGUE")
    for number, (_, _, description) in enumerate(COLUMNS.values(), start=1):
        hdu.header[f"TCOMM{number}"] = description
    fits_path, csv_path = out_dir / f"{CATALOGUE}.fits", out_dir / f"{CATALOGUE}.csv"
    with atomic_output(fits_path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, overwrite=True)
    with atomic_output(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    n_failed = int((table["status"] != STATUS_OK).sum())
    log.info("wrote %s and %s: %d galaxies, %d failed", fits_path, csv_path, len(table), n_failed)
    return fits_path, csv_path


def read_catalogue(path: str | os.PathLike) -> pd.DataFrame:
    """A ``catalogue.fits`` written by :func:`write_catalogue`, as a table; one clear error otherwise."""
    path = Path(path)
    try:
        with fits.open(path) as hdul:
            data = hdul["CATALOGUE"].data
            table = pd.DataFrame({name: np.asarray(data[name]) for name in data.names})
    except (OSError, KeyError) as err:
        raise InputError(f"{path}: not a prediction catalogue ({err})") from None
    missing = [column for column in COLUMNS if column not in table]
    if missing:
        raise InputError(f"{path}: not a prediction catalogue of this exsitu (columns {missing} missing)")
    for column, (form, _, _) in COLUMNS.items():
        if form == "A":
            table[column] = table[column].astype(str).str.rstrip()
    return table[list(COLUMNS)]


def merge_catalogues(shard_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> pd.DataFrame:
    """Merge the catalogues of shard directories into ``out_dir``'s, rows in input order (``index``);
    each row's ``fits`` is made relative to ``out_dir``."""
    out_dir = Path(out_dir)
    parts = []
    for shard_dir in map(Path, shard_dirs):
        part = read_catalogue(shard_dir / f"{CATALOGUE}.fits")
        prefix = Path(os.path.relpath(shard_dir, out_dir))
        part["fits"] = [str(prefix / name) if name else "" for name in part["fits"]]
        parts.append(part)
    table = catalogue_frame(pd.concat(parts).sort_values("index", kind="stable").to_dict("records"))
    write_catalogue(table, out_dir)
    return table
