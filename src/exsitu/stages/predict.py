"""Predict the ex-situ map of an observed galaxy with a trained model -> OUT.fits + OUT.png.

INPUT is a MaNGA DAP MAPS file (``manga-PLATE-IFU-MAPS-DAPTYPE.fits.gz``; mass, age and
metallicity come from a Pipe3D file given with --pipe3d) or a FITS file in the generic layout
of docs/design.md. The output holds MEAN, STD, P16, P50, P84 (and SAMPLES with --samples) of
the ex-situ stellar mass fraction on the input's spaxel grid, with its WCS; spaxels outside the
usable footprint are NaN. A PNG panel (input maps, mean, std) is written beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from exsitu.device import resolve_device
from exsitu.modelcard import load_model_dir
from exsitu.predict import predict_observation
from exsitu.sky import read_observation, write_prediction
from exsitu.stages import add_device_argument, run_stage, stage_parser

DEFAULT_SAMPLES = 100  # summarised when --samples is not given (and then not written)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("input", help="MaNGA DAP MAPS file or generic-layout FITS file")
    parser.add_argument("--model-dir", required=True, help="trained model directory holding model.json")
    parser.add_argument("--out", required=True, help="output FITS file (.fits or .fits.gz)")
    parser.add_argument(
        "--samples", type=int, help=f"posterior samples to draw and write (default: {DEFAULT_SAMPLES}, not written)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--pipe3d", help="MaNGA: Pipe3D file with mass, age and metallicity maps")
    parser.add_argument("--vsys", type=float, help="systemic velocity [km/s] to subtract (default: inner spaxels)")
    parser.add_argument("--re-arcsec", type=float, help="effective radius [arcsec] overriding the file's")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples must be at least 1, got {args.samples}")
    model = load_model_dir(args.model_dir, resolve_device(args.device))
    galaxy = read_observation(args.input, model.card.channels, args.pipe3d, vsys=args.vsys, re_arcsec=args.re_arcsec)
    n_samples = args.samples or DEFAULT_SAMPLES
    prediction = predict_observation(model, galaxy, n_samples, args.seed, keep_samples=args.samples is not None)
    write_prediction(args.out, prediction, galaxy, args.model_dir, args.seed)


if __name__ == "__main__":
    run_stage(main)
