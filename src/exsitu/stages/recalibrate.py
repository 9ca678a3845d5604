"""Fit the noise scales of the decoder's residual on the validation maps -> results/models/noise_scale.json.

Two scales, one on the correlated (low-rank) and one on the independent (diagonal) part of the map
likelihood's residual, fitted on a grid scored with the flow's full predictive (``exsitu.recalibration``: the
energy and variogram scores, the per-pixel coverage and the integrated fraction's coverage; the default
``recalibrate.method: joint`` takes, of the pairs whose validation pixels are covered at 68% and 95%, the one whose
integrated fractions are); with ``recalibrate.enabled: false`` both are 1 (the likelihood as trained). The JSON
also holds the residual diagnostics of the validation maps
(``exsitu.residual_diagnostics``), as trained and at the fitted scales. evaluate and the model card
(hence ``exsitu predict``) use the scales. The validation maps are streamed in chunks; their draws are kept
between the fit's passes only up to ``exsitu.recalibration.CACHE_BYTES``, so memory stays bounded at any size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from exsitu.checkpoint import load_models
from exsitu.dataset import DatasetFiles
from exsitu.device import resolve_device
from exsitu.recalibration import CHUNK_ELEMENTS, fit_noise_scales, unscaled, write_noise_scale
from exsitu.residual_diagnostics import diagnose
from exsitu.sample import maps_in_budget, sampling_layout
from exsitu.settings import ConditionSettings, RecalibrateSettings, section_of
from exsitu.stages import add_dataset_arguments, add_device_argument, run_stage, stage_parser

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__file__, __doc__)
    add_dataset_arguments(parser)
    parser.add_argument("--cvae", required=True, help="trained cVAE (results/models/cvae.pt)")
    parser.add_argument("--flow", required=True, help="trained flow (results/models/flow.pt)")
    add_device_argument(parser)
    parser.add_argument("--out", required=True, help="noise_scale.json to write")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    settings = section_of(args.settings, RecalibrateSettings)
    conditions = section_of(args.settings, ConditionSettings, required=False)
    data = DatasetFiles(args.maps, args.split, args.stats, conditions.channels)
    table = data.table("val")
    models = load_models({"cvae": args.cvae, "flow": args.flow}, device)
    cvae, flow = sampling_layout(models["cvae"]), models["flow"]
    chunk = maps_in_budget(settings.n_samples, cvae.cfg.npix, CHUNK_ELEMENTS)
    if settings.enabled:
        fit = fit_noise_scales(
            cvae, flow, lambda: data.chunks("val", chunk), table, settings, scalars=conditions.scalars
        )
        lowest, highest = fit.scales[0], fit.scales[-1]
        if {fit.noise.lowrank, fit.noise.diagonal, fit.noise_scale} & {lowest, highest}:
            log.warning("a best noise scale is at the end of the searched range [%g, %g]", lowest, highest)
        slopes = fit.slope_fit.get("slopes", [])
        if slopes and fit.noise.diagonal_slope in (slopes[0], slopes[-1]):
            log.warning("the diagonal slope is at the end of the searched range [%g, %g]", slopes[0], slopes[-1])
        if settings.diagonal_slope and not fit.slope_fit:
            log.warning("recalibrate.diagonal_slope is ignored with method %r (it needs another method)", fit.method)
        log.info(
            "noise scales (%s): low-rank %.3f, diagonal %.3f, diagonal slope %.3f per logit (single factor %.3f) "
            "from %d validation maps of %d galaxies (%d samples each)",
            fit.method, fit.noise.lowrank, fit.noise.diagonal, fit.noise.diagonal_slope, fit.noise_scale,
            fit.n_maps, fit.n_galaxies, fit.n_samples,
        )  # fmt: skip
    else:
        fit = unscaled(len(table), table["galaxy_id"].nunique())
    started = time.perf_counter()
    diagnostics = diagnose(
        cvae, flow, data.chunks("val", chunk), table, settings.seed, fit.noise, scalars=conditions.scalars
    )
    log.info("residual diagnostics in %.0f s", time.perf_counter() - started)
    flow_block = diagnostics["as_trained"]["flow"]
    log.info(
        "residual diagnostics (flow z, as trained): marginal kurtosis %s, within-map kurtosis %s, median M/n %.3f",
        flow_block["marginal"]["kurtosis"], flow_block["joint_within_map"]["kurtosis"],
        flow_block["mahalanobis_per_pixel"]["quantiles"]["0.5"],
    )  # fmt: skip
    write_noise_scale(args.out, fit, diagnostics)


if __name__ == "__main__":
    run_stage(main)
