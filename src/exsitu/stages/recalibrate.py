"""Fit the noise scale of the decoder's residual on the validation maps -> results/models/noise_scale.json.

The scale multiplies every residual standard deviation of the map likelihood; it is the
minimiser of the validation energy score of the flow's full predictive (``exsitu.recalibration``).
With ``recalibrate.enabled: false`` it is 1 (the likelihood as trained). evaluate and the model
card (hence ``exsitu predict``) use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exsitu.checkpoint import load_model
from exsitu.cvae import CVAE
from exsitu.dataset import DatasetFiles
from exsitu.device import resolve_device
from exsitu.flow import LatentFlow
from exsitu.io import InputError
from exsitu.recalibration import fit_noise_scale, unscaled, write_noise_scale
from exsitu.settings import ConditionSettings, RecalibrateSettings, section_of
from exsitu.stages import add_device_argument, run_stage, stage_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    parser.add_argument("--maps", nargs="+", required=True, help="map shard files (HDF5)")
    parser.add_argument("--split", required=True, help="split.csv")
    parser.add_argument("--stats", required=True, help="normalisation.json")
    parser.add_argument("--cvae", required=True, help="trained cVAE (results/models/cvae.pt)")
    parser.add_argument("--flow", required=True, help="trained flow (results/models/flow.pt)")
    add_device_argument(parser)
    parser.add_argument("--out", required=True, help="noise_scale.json to write")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    settings = section_of(args.settings, RecalibrateSettings)
    channels = section_of(args.settings, ConditionSettings, required=False).channels
    val = DatasetFiles(args.maps, args.split, args.stats, channels).load("val")
    n_galaxies = val.table["galaxy_id"].nunique()
    if not settings.enabled:
        write_noise_scale(args.out, unscaled(len(val), n_galaxies))
        return
    cvae, flow = load_model(args.cvae, device), load_model(args.flow, device)
    if not isinstance(cvae, CVAE) or not isinstance(flow, LatentFlow):
        raise InputError(f"{args.cvae}, {args.flow}: expected the cVAE and the flow model files")
    fit = fit_noise_scale(cvae, flow, val, settings)
    lowest, highest = fit.scales[0], fit.scales[-1]
    if fit.noise_scale in (lowest, highest):
        log.warning("the best noise scale is at the end of the searched range [%g, %g]", lowest, highest)
    log.info(
        "noise scale %.3f from %d validation maps of %d galaxies (%d samples each)",
        fit.noise_scale, fit.n_maps, fit.n_galaxies, fit.n_samples,
    )  # fmt: skip
    write_noise_scale(args.out, fit)


if __name__ == "__main__":
    run_stage(main)
