"""What the report shows, computed from what was read (step 2 of 3: read, compute, render): its tables
(``exsitu.reporting.tables``), its figures (``exsitu.figures``, ``exsitu.relations_figures``) and the
sentences written from the numbers (the headline and the reading of the residual diagnostics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from exsitu import figures, relations_figures
from exsitu.reporting import tables
from exsitu.reporting.read import ReportData

#: The report's figures, in the order they appear; each is written as ``<name>.png`` and ``<name>.svg``.
FIGURES: tuple[str, ...] = (
    "exsitu_distribution", "relation_exsitu_fraction", "relation_size", "relation_dispersion",
    "relation_exsitu_profile", "relation_metallicity", "relation_within_galaxy", "training_curves", "latent_kl",
    "example_posteriors", "residuals", "radial_profile", "integrated_by_mass", "integrated_fraction", "calibration",
    "stratified_coverage", "coverage_by_truth", "functional_ranks", "residual_tails", "mahalanobis_per_pixel",
)  # fmt: skip
#: M/n spreading over maps (16-84%) this many times wider than the model's reads as per-map tails.
PER_MAP_SPREAD = 2.0
#: A within-map kurtosis this much above the model's reads as per-pixel tails (3 is a Gaussian's).
PER_PIXEL_KURTOSIS = 1.0
#: A median M/n this many times the model's (or its inverse) reads as a likelihood too narrow (too wide).
SCALE_OFF = 1.5


@dataclass(frozen=True)
class ReportContent:
    """The report's tables (name -> DataFrame), figures (the names of :data:`FIGURES` -> Figure) and sentences."""

    data: ReportData
    tables: dict[str, pd.DataFrame]
    figures: dict[str, Figure]
    headline: str
    tails: str


def report_tables(data: ReportData) -> dict[str, pd.DataFrame]:
    """Every table of the report, by name."""
    metrics, diagnostics = data.metrics, data.noise_scale["diagnostics"]
    return {
        "data": tables.data_table(data),
        "split": tables.split_table(data.split),
        "tng": tables.tng_table(data.relations),
        "tng_checks": tables.tng_checks_table(data.relations),
        "relations": tables.relations_table(data.relations),
        "accuracy": tables.accuracy_table(metrics),
        "comparisons": tables.comparisons_table(metrics),
        "targets": tables.targets_table(metrics),
        "by_mass": tables.by_mass_table(metrics),
        "calibration": tables.calibration_table(metrics),
        "strata": tables.strata_table(metrics["modes"]["flow"]["strata"]),
        "functionals": tables.functionals_table(metrics),
        "functional_by_median": tables.functional_by_median_table(metrics),
        "scores": tables.scores_table(metrics),
        "likelihood": tables.likelihood_table(metrics, data.noise_scale),
        "diagnostics": tables.diagnostics_table(diagnostics),
        "diagnostics_by_truth": tables.diagnostics_bins_table(diagnostics, "by_truth"),
        "diagnostics_by_prediction": tables.diagnostics_bins_table(diagnostics, "by_prediction"),
        "cost": tables.stage_costs(data.benchmarks),
        "model": tables.model_card_table(data.card),
    }


def report_figures(data: ReportData) -> dict[str, Figure]:
    """Every figure of the report, by the names of :data:`FIGURES`, in their order."""
    metrics, relations, examples = data.metrics, data.relations, data.examples
    modes = metrics["modes"]
    apertures = {a: tables.aperture_label(r) for a, r in metrics["apertures"].items()}
    strata = {name: block["strata"] for name, block in modes.items()}
    first = next(iter(modes.values()))
    functionals = {name: tables.functional_label(name, metrics["apertures"]) for name in first["functionals"]}
    diagnostics = tables.diagnostic_blocks(data.noise_scale["diagnostics"])
    per_galaxy = data.plan.drop_duplicates(["snapshot", "subhalo_id"])["exsitu_total"].to_numpy()
    made = {
        "exsitu_distribution": figures.exsitu_distribution(per_galaxy, data.plan["exsitu_total"].to_numpy()),
        "relation_exsitu_fraction": relations_figures.exsitu_fraction_figure(relations),
        "relation_size": relations_figures.size_figure(relations),
        "relation_dispersion": relations_figures.dispersion_figure(relations),
        "relation_exsitu_profile": relations_figures.exsitu_profile_figure(relations),
        "relation_metallicity": relations_figures.metallicity_figure(relations),
        "relation_within_galaxy": relations_figures.within_galaxy_figure(relations),
        "training_curves": figures.training_curves(data.histories),
        "latent_kl": figures.latent_kl(data.histories["cvae"]),
        "example_posteriors": figures.example_posteriors(
            examples.conditions,
            examples.channels,
            examples.truth,
            examples.medians,
            examples.flow_std,
            mask=examples.mask,
            labels=examples.labels,
        ),  # fmt: skip
        "residuals": figures.residuals(tables.point_blocks(metrics)),
        "radial_profile": figures.radial_profile(*data.radial),
        "integrated_by_mass": figures.integrated_by_mass(
            {"flow": modes["flow"]["point"]["median"]["integrated"]}
            | {name: block["integrated"] for name, block in metrics["baselines"].items()},
            apertures,
        ),
        "integrated_fraction": figures.integrated_scatter(
            data.integrated.true, data.integrated.flow, data.integrated.trees, apertures
        ),
        "calibration": figures.calibration_curves(modes),
        "stratified_coverage": figures.stratified_coverage(strata, tables.TARGET_STRATA),
        "coverage_by_truth": figures.stratified_coverage(strata, ("truth",)),
        "functional_ranks": figures.functional_ranks(modes, functionals),
        "residual_tails": figures.residual_tails(diagnostics),
        "mahalanobis_per_pixel": figures.mahalanobis_per_pixel(diagnostics),
    }
    return {name: made[name] for name in FIGURES}


def headline(metrics: Mapping[str, Any]) -> str:
    """One paragraph of the run's main numbers: the flow against the trees, its calibration, the TARP areas."""
    flow, trees = metrics["modes"]["flow"], metrics["baselines"]["trees"]
    comparisons = metrics["comparisons"]
    fov = next(iter(metrics["apertures"]))
    return (
        f"Flow posterior median: per-pixel MAE {tables.interval(flow['point']['median']['mae'])}, "
        f"{tables.interval(comparisons['mae_flow_over']['trees'], 3)} times the tree baseline's "
        f"({tables.interval(trees['mae'])}); integrated fraction in the field of view: RMS "
        f"{tables.interval(flow['point']['median']['integrated'][fov]['rms'], 3)}, "
        f"{tables.interval(comparisons['integrated_rms_flow_over']['trees'][fov], 3)} times the trees'. "
        f"Per-pixel coverage of the flow posterior: {tables.interval(flow['coverage']['0.68'], 3)} at 68%, "
        f"{tables.interval(flow['coverage']['0.95'], 3)} at 95%; TARP ATC "
        f"{tables.interval(flow['tarp']['uniform']['atc'], 3)} (uniform references), "
        f"{tables.interval(flow['tarp']['posterior']['atc'], 3)} (held-out posterior reference). "
        + spread_by_scale_sentence(flow["spread_by_scale"])
        + " "
        + latent_use_sentence(comparisons["mae_reconstruction_over_flow"])
    )


def latent_use_sentence(reconstruction_over_flow: Mapping[str, float]) -> str:
    """Whether the decoder uses its latent, from the paired ratio of the reconstruction's per-pixel MAE (the cVAE
    given the true map's own latent) over the flow's, with the reading when its interval reaches 1.

    A collapsed cVAE (every latent dimension's KL at the free-bits floor, the decoder ignoring the latent) gives 1:
    knowing the truth's latent then does not improve the maps, and every posterior's samples are the prior's. The
    count of active latent units misses this (the floor keeps each dimension's KL above its cut).
    """
    text = (
        "Per-pixel MAE of the reconstruction (the true map's own latent) over the flow's: "
        f"{tables.interval(reconstruction_over_flow, 3)}"
    )
    if reconstruction_over_flow["high"] >= 1:
        return text + (
            " (its interval reaches 1: the decoded maps do not measurably use the latent, a posterior collapse; "
            "cvae.kl_warmup_epochs guards against it)."
        )
    return text + "."


def spread_by_scale_sentence(by_scale: Mapping[str, Any]) -> str:
    """What the squared error over the samples' spread of each map's smooth and rough parts says (1 when calibrated;
    ``exsitu.spatial_scales``), with the reading of each interval that excludes 1."""

    def reading(scale: str) -> str:
        estimate = by_scale[scale]
        text = f"{scale} part {tables.interval(estimate, 3)}"
        if estimate["low"] > 1:
            return text + " (the samples lack spread there)"
        if estimate["high"] < 1:
            return text + " (the samples spread more than the truth does)"
        return text

    return (
        "Squared distance of the truth from the samples over the samples' from each other (1 when calibrated): "
        + "; ".join(reading(scale) for scale in ("smooth", "rough"))
        + "."
    )


def _per_map(flow: Mapping[str, Any]) -> str:
    m = flow["mahalanobis_per_pixel"]
    q, e = m["quantiles"], m["expected_quantiles"]
    spread = (q["0.84"] - q["0.16"]) / max(e["0.84"] - e["0.16"], 1e-12)
    text = (
        f"With the flow's z at the fitted noise scales, the Mahalanobis distance per pixel M/n spreads over the "
        f"validation maps from {q['0.16']:.3g} to {q['0.84']:.3g} (16-84%), against {e['0.16']:.3g} to "
        f"{e['0.84']:.3g} for the model: {spread:.1f} times as wide"
    )
    if spread > PER_MAP_SPREAD:
        return text + (
            ": part of the tails would then live per map, whole maps sitting further from the truth than the "
            "likelihood allows, which per-pixel coverage hardly sees but integrated quantities do."
        )
    return text + ", about what the model allows, so there is little sign of per-map tails."


def _scale(flow: Mapping[str, Any], reconstruction: Mapping[str, Any]) -> str:
    flow_median = flow["mahalanobis_per_pixel"]["quantiles"]["0.5"]
    model = flow["mahalanobis_per_pixel"]["expected_quantiles"]["0.5"]
    own = reconstruction["mahalanobis_per_pixel"]["quantiles"]["0.5"]
    text = (
        f"Its median is {flow_median:.3g} (the model's {model:.3g}); with the encoder's z given the truth "
        f"(reconstruction) it is {own:.3g}"
    )
    if flow_median > SCALE_OFF * own:
        return text + ": most of the misfit would come from the flow's latent, not from the decoder's likelihood."
    if own > SCALE_OFF * model:
        return text + ": the decoder's likelihood itself would be too narrow, whichever z it is given."
    if own < model / SCALE_OFF:
        return text + ": the decoder's likelihood itself would be too wide, whichever z it is given."
    return text + ": at the typical map the likelihood's width would be about right."


def _per_pixel(flow: Mapping[str, Any]) -> str:
    within, expected = flow["joint_within_map"]["kurtosis"], flow["expected_joint_kurtosis"]
    if within is None or expected is None:
        return "The within-map kurtosis is undefined on these maps."
    if within > expected + PER_PIXEL_KURTOSIS:
        return (
            f"The within-map kurtosis, {within:.3g} against {expected:.3g} for the model, says that pixels within "
            "a map have heavier tails than modelled as well: per-pixel tails, outlying pixels in an otherwise "
            "well-fitted map."
        )
    return (
        f"The within-map kurtosis, {within:.3g} against {expected:.3g} for the model, is close to the model's: "
        "within a map there are few more outlying pixels than modelled."
    )


def _where(flow: Mapping[str, Any], as_trained: Mapping[str, Any]) -> str:
    share, before = flow["marginal"].get("tail_1.96"), as_trained["marginal"].get("tail_1.96")
    text = ""
    if share is not None and before is not None:
        text = (
            f"A share {share:.3f} of the marginal scores lies beyond 1.96 (0.05 when right; {before:.3f} as "
            f"trained), so the likelihood's 95% intervals at one z cover {1 - share:.3f} of the pixels. "
        )
    bins = [b for b in flow["by_prediction"] if b["n_pixels"] > 0 and b["joint_mean_square"] is not None]
    if bins:
        worst = max(bins, key=lambda b: b["joint_mean_square"])
        text += (
            f"By the likelihood's median, the whitened residuals are largest where it is {worst['label']} "
            f"(mean e^2 {worst['joint_mean_square']:.3g}, 1 when right)."
        )
    return text


def tails_paragraph(diagnostics: Mapping[str, Any]) -> str:
    """What the residual diagnostics (noise_scale.json ``diagnostics``) say about per-map against per-pixel tails,
    written from their numbers with conditional wording (the numbers change from run to run)."""
    recalibrated = diagnostics["recalibrated"]
    flow = recalibrated["flow"]
    return " ".join(
        (
            _per_map(flow),
            _scale(flow, recalibrated["reconstruction"]),
            _per_pixel(flow),
            _where(flow, diagnostics["as_trained"]["flow"]),
        )
    )


def compute_report(data: ReportData) -> ReportContent:
    """The report's tables, figures and sentences from what :func:`exsitu.reporting.read.read_report_inputs` read."""
    return ReportContent(
        data=data,
        tables=report_tables(data),
        figures=report_figures(data),
        headline=headline(data.metrics),
        tails=tails_paragraph(data.noise_scale["diagnostics"]),
    )
