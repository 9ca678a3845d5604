"""Predict the ex-situ maps of observed galaxies with a trained model -> FITS + PNG each, and a catalogue.

One galaxy: ``exsitu predict INPUT --model-dir DIR --out OUT.fits`` writes OUT.fits and OUT.png.
Many: ``exsitu predict INPUT... [--list FILE] --model-dir DIR --out-dir DIR`` (INPUT: FITS files
or directories of them) loads the model once and writes DIR/<name>.fits|png per galaxy and
DIR/catalogue.fits|csv, one row per galaxy (integrated ex-situ fractions inside 1 and 1.5 Re,
status, reason; see exsitu.survey). A galaxy that fails gets a row with the reason and the others
go on; the exit status is then 3 (0 with --allow-failures).

INPUT is a MaNGA DAP MAPS file (``manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz``; mass, age and
metallicity come from a Pipe3D file: --pipe3d, or --pipe3d-dir holding manga-PLATE-IFU.Pipe3D.cube.fits.gz
per galaxy, or a pipe3d= column of the --list file) or a FITS file in the generic layout of
docs/design.md. Each output holds MEAN, STD, P16, P50, P84 (and SAMPLES with --samples) of the
ex-situ stellar mass fraction on the input's spaxel grid, with its WCS; spaxels outside the
usable footprint are NaN. A model conditioned on galaxy scalars takes them from the file (Re and
z) or from --log-mstar / --redshift / --re-arcsec (one galaxy) or the --list file's columns.

Exit status: 0 done; 1 bad input before any galaxy (model directory, flags, list file), or the
one galaxy of --out failing (no file written); 2 bad command line; 3 some galaxies of a batch
failed (their rows say why; everything else is written).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from exsitu.device import resolve_device
from exsitu.modelcard import load_model_dir
from exsitu.predict import RHALF_3D_PER_RE
from exsitu.stages import add_device_argument, run_stage, stage_parser
from exsitu.survey import STATUS_OK, SurveyRun, collect_inputs, predict_galaxy, predict_survey, shard_of

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 100  # summarised when --samples is not given (and then not written)
EXIT_SOME_FAILED = 3
#: Flags that describe one galaxy (GalaxyInput fields): refused when a call has several.
PER_GALAXY = ("pipe3d", "vsys", "re_arcsec", "redshift", "log_mstar")


def parse(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="DAP MAPS or generic-layout FITS files, directories")
    parser.add_argument("--list", help="list file: one galaxy per line, path then key=value columns (exsitu.survey)")
    parser.add_argument("--model-dir", required=True, help="trained model directory holding model.json")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="output FITS file (.fits or .fits.gz) of the one galaxy")
    out.add_argument("--out-dir", help="output directory: <name>.fits|png per galaxy, catalogue.fits|csv")
    parser.add_argument(
        "--samples", type=int, help=f"posterior samples to draw and write (default: {DEFAULT_SAMPLES}, not written)"
    )
    parser.add_argument("--summaries-only", action="store_true", help="draw --samples K but do not write them")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (the same for every galaxy)")
    parser.add_argument("--pipe3d", help="MaNGA, one galaxy: Pipe3D file with mass, age and metallicity maps")
    parser.add_argument("--pipe3d-dir", help="MaNGA: directory of Pipe3D files, found by PLATEIFU (also in PLATE/)")
    parser.add_argument("--vsys", type=float, help="one galaxy: systemic velocity [km/s] to subtract (default: fitted)")
    parser.add_argument("--re-arcsec", type=float, help="one galaxy: effective radius [arcsec] overriding the file's")
    parser.add_argument("--redshift", type=float, help="one galaxy: redshift overriding the file's")
    parser.add_argument("--log-mstar", type=float, help="one galaxy: log10 stellar mass [Msun] (scalar log_mstar)")
    parser.add_argument("--shard", type=int, default=0, help="with --n-shards: predict inputs i with i mod n == shard")
    parser.add_argument("--n-shards", type=int, default=1, help="split the inputs into this many shards")
    parser.add_argument("--allow-failures", action="store_true", help="exit 0 even when some galaxies failed")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    if not args.inputs and args.list is None:
        parser.error("give at least one INPUT or --list")
    return parser, args


def main(argv: Sequence[str] | None = None) -> None:
    parser, args = parse(argv)
    galaxies = collect_inputs(args.inputs, args.list)
    given = {name: getattr(args, name) for name in PER_GALAXY if getattr(args, name) is not None}
    if given and len(galaxies) > 1:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        parser.error(f"{flags} describe one galaxy; for {len(galaxies)} give them as --list columns")
    if given:
        galaxies = [replace(galaxies[0], **{k: Path(v) if k == "pipe3d" else v for k, v in given.items()})]
    if args.out is not None and len(galaxies) != 1:
        parser.error(f"--out writes one galaxy, got {len(galaxies)}; use --out-dir")
    model = load_model_dir(args.model_dir, resolve_device(args.device))
    if model.card.radius == "3d":
        log.warning(
            "the model was trained on ideal maps scaled by the 3D half-mass radius; using Re x %.2f for it "
            "(train with observe.enabled: true for observed galaxies)",
            RHALF_3D_PER_RE,
        )
    run = SurveyRun(
        model,
        args.samples or DEFAULT_SAMPLES,
        args.seed,
        keep_samples=args.samples is not None and not args.summaries_only,
        pipe3d_dir=Path(args.pipe3d_dir) if args.pipe3d_dir else None,
    )
    if args.out is not None:
        predict_galaxy(run, galaxies[0], lambda galaxy: Path(args.out))
        return
    table = predict_survey(run, shard_of(galaxies, args.shard, args.n_shards), args.out_dir)
    failed = int((table["status"] != STATUS_OK).sum())
    if failed:
        log.warning("%d of %d galaxies failed; catalogue.csv says why", failed, len(table))
        if not args.allow_failures:
            raise SystemExit(EXIT_SOME_FAILED)


if __name__ == "__main__":
    run_stage(main)
