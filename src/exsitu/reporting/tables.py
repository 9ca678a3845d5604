"""The report's tables as DataFrames (step 2 of 3: read, compute, render), each from the documents the
earlier stages wrote: metrics.json (schema: ``exsitu.evaluation``), noise_scale.json's ``diagnostics``
(``exsitu.residual_diagnostics``), relations.json, model.json and Snakemake's benchmarks.

A number with a galaxy-bootstrap interval is shown as "value [low, high]" (:func:`interval`, 95%);
fractions, MAE, CRPS and RMS are ex-situ stellar mass fractions (dimensionless). Cells are strings
where they carry an interval, so a table shows exactly what metrics.json holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from exsitu.reporting.read import ReportData

#: The strata of the per-pixel coverage that are calibration targets (issue 15): a calibrated posterior
#: covers at the nominal level in each; strata by truth bend even then and are shown apart.
TARGET_STRATA: tuple[str, ...] = ("median", "mass", "radius")
#: Strata with fewer galaxy pixels than this are too small to judge (issue 15's threshold).
MIN_STRATUM_PIXELS = 1000
#: Issue 14's targets on the default run, as (ratio row, column of :func:`comparisons_table`, the ratio must be
#: at most, the upper end of its interval must be below (None: no condition)).
TARGETS: tuple[tuple[str, str, float, float | None], ...] = (
    ("flow / trees", "MAE per pixel", 0.85, 0.95),
    ("flow / trees", "integrated RMS, field of view", 0.80, None),
    ("flow / prior", "MAE per pixel", 0.95, None),
    ("reconstruction / flow", "MAE per pixel", 0.85, None),
)


def interval(estimate: Mapping[str, float | None] | None, digits: int = 4) -> str:
    """ "value [low, high]" of a metrics.json estimate (95% galaxy-bootstrap interval); "–" when undefined.

    The space inside the brackets is a no-break space, so a narrow table cell wraps before the interval only.
    """
    if not estimate or estimate.get("value") is None:
        return "–"
    low, high = estimate.get("low"), estimate.get("high")
    if low is None or high is None:
        return f"{estimate['value']:.{digits}f}"
    return f"{estimate['value']:.{digits}f} [{low:.{digits}f},\u00a0{high:.{digits}f}]"


def number(value: float | None, fmt: str = "{:.3g}") -> str:
    """A number for a table cell; "–" for None (undefined: an empty bin, a zero variance)."""
    return "–" if value is None else fmt.format(value)


def aperture_label(radius: float | None) -> str:
    """Name of an aperture of metrics.json ``apertures`` (its radius in half-mass radii; None: the field)."""
    return "field of view" if radius is None else f"{radius:g} r_half"


def functional_label(name: str, apertures: Mapping[str, float | None]) -> str:
    """Readable name of a functional of ``exsitu.functionals`` (``integrated_<aperture>``, ``profile_<lo>-<hi>``,
    ``gradient``, ``at_clip_<0|1>``)."""
    if name.startswith("integrated_"):
        return f"integrated, {aperture_label(apertures[name.removeprefix('integrated_')])}"
    if name.startswith("profile_"):
        return f"ring {name.removeprefix('profile_')} r_half"
    if name.startswith("at_clip_"):
        return f"mass share at the clip ({name.removeprefix('at_clip_')})"
    return "gradient (0-1 minus 1-2 r_half)" if name == "gradient" else name


#: The point summaries of a posterior in metrics.json (``modes.<name>.point``).
POINTS: tuple[str, ...] = ("median", "mean")


def point_blocks(metrics: Mapping[str, Any], points: Sequence[str] = ("median",)) -> dict[str, Mapping[str, Any]]:
    """The point-estimate blocks of every posterior (its ``points``: median, mean) and every baseline, by label."""
    out: dict[str, Mapping[str, Any]] = {}
    for name, block in metrics["modes"].items():
        for point in points:
            out[f"{name} (posterior {point})"] = block["point"][point]
    out.update({f"{name} (baseline)": block for name, block in metrics["baselines"].items()})
    return out


def accuracy_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Every posterior (median and mean point) and baseline side by side: per-pixel MAE, CRPS (posteriors) and per
    aperture the integrated fraction's RMS, bias (predicted - true) and scatter, with intervals."""
    apertures = metrics["apertures"]
    crps = {
        f"{name} (posterior {point})": block["crps"] for name, block in metrics["modes"].items() for point in POINTS
    }
    rows = {}
    for label, block in point_blocks(metrics, POINTS).items():
        row = {("per pixel", "MAE"): interval(block["mae"]), ("per pixel", "CRPS"): interval(crps.get(label))}
        for a, radius in apertures.items():
            for key in ("rms", "bias", "scatter"):
                row[(f"integrated, {aperture_label(radius)}", key)] = interval(block["integrated"][a][key], 3)
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def comparisons_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """metrics.json ``comparisons``: paired-bootstrap ratios of the flow's posterior-median MAE over each baseline's
    and the prior's, reconstruction over flow, and the flow's integrated-fraction RMS over each baseline's."""
    comparisons, apertures = metrics["comparisons"], metrics["apertures"]
    rows: dict[str, dict[str, str]] = {}
    for name, ratio in comparisons["mae_flow_over"].items():
        row = {"MAE per pixel": interval(ratio, 3)}
        for a, rms in comparisons["integrated_rms_flow_over"].get(name, {}).items():
            row[f"integrated RMS, {aperture_label(apertures[a])}"] = interval(rms, 3)
        rows[f"flow / {name}"] = row
    rows["reconstruction / flow"] = {"MAE per pixel": interval(comparisons["mae_reconstruction_over_flow"], 3)}
    return pd.DataFrame.from_dict(rows, orient="index").fillna("–")


def _ratio(metrics: Mapping[str, Any], row: str, column: str) -> Mapping[str, float] | None:
    comparisons = metrics["comparisons"]
    if row == "reconstruction / flow":
        return comparisons["mae_reconstruction_over_flow"]
    name = row.removeprefix("flow / ")
    if column == "MAE per pixel":
        return comparisons["mae_flow_over"].get(name)
    for a, radius in metrics["apertures"].items():
        if column == f"integrated RMS, {aperture_label(radius)}":
            return comparisons["integrated_rms_flow_over"].get(name, {}).get(a)
    return None


def targets_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Issue 14's targets (:data:`TARGETS`) with the measured ratio and whether each holds on this run."""
    rows = []
    for row, column, at_most, upper_below in TARGETS:
        ratio = _ratio(metrics, row, column)
        value = None if ratio is None else ratio.get("value")
        holds = value is not None and value <= at_most
        if upper_below is not None:
            holds = holds and ratio.get("high") is not None and ratio["high"] < upper_below
        target = f"<= {at_most:g}" + ("" if upper_below is None else f", upper end < {upper_below:g}")
        rows.append(
            {"ratio": f"{row}: {column}", "target": target, "measured": interval(ratio, 3),
             "verdict": "holds" if holds else "MISSED"}
        )  # fmt: skip
    return pd.DataFrame(rows).set_index("ratio")


def by_mass_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Per stellar-mass bin and method (flow posterior median, every baseline): the integrated fraction's RMS,
    bias and scatter per aperture, and the galaxies behind them ("(few)": fewer than the bootstrap needs)."""
    methods = {"flow": metrics["modes"]["flow"]["point"]["median"], **metrics["baselines"]}
    apertures = metrics["apertures"]
    first = next(iter(apertures))
    rows = {}
    for name, block in methods.items():
        for b, counts in enumerate(block["integrated"][first]["by_mass"]):
            lo, hi = counts["log_mstar"]
            row = {("", "maps"): str(counts["n_maps"]),
                   ("", "galaxies"): f"{counts['n_galaxies']}{' (few)' if counts['few_galaxies'] else ''}"}  # fmt: skip
            for a, radius in apertures.items():
                cell = block["integrated"][a]["by_mass"][b]
                for key in ("rms", "bias", "scatter"):
                    row[(f"integrated, {aperture_label(radius)}", key)] = interval(cell.get(key), 3)
            rows[(f"log M* {lo:g}-{hi:g}", name)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["stellar mass", "method"])
    return frame.sort_index(level=0, sort_remaining=False)


def calibration_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Per posterior: pooled per-pixel coverage at 68% and 95%, mean posterior std, TARP ATC with both references
    and their KS p-values; the tree baseline's 16-84% quantile interval coverage for comparison."""
    rows = {}
    for name, block in metrics["modes"].items():
        row = {
            "coverage 68%": interval(block["coverage"].get("0.68"), 3),
            "coverage 95%": interval(block["coverage"].get("0.95"), 3),
            "mean std": interval(block["mean_std"], 3),
        }
        for reference in ("uniform", "posterior"):
            tarp = block["tarp"][reference]
            row[f"TARP ATC, {reference} reference"] = interval(tarp["atc"], 3)
            row[f"KS p, {reference}"] = number(tarp["ks_pvalue"], "{:.2g}")
        rows[name] = row
    trees = metrics["baselines"].get("trees", {})
    if "coverage_68" in trees:
        rows["trees (16-84% quantiles)"] = {"coverage 68%": interval(trees["coverage_68"], 3)}
    return pd.DataFrame.from_dict(rows, orient="index").fillna("–")


def strata_table(strata: Sequence[Mapping[str, Any]], groups: Sequence[str] = TARGET_STRATA) -> pd.DataFrame:
    """Per-pixel coverage of one posterior by stratum (``groups`` of metrics.json ``strata``), with counts;
    "(small)" marks strata below :data:`MIN_STRATUM_PIXELS` galaxy pixels."""
    rows = {}
    for s in strata:
        if s["by"] not in groups:
            continue
        small = " (small)" if s["n_pixels"] < MIN_STRATUM_PIXELS else ""
        rows[(s["by"], s["label"])] = {
            "galaxy pixels": f"{s['n_pixels']}{small}",
            "galaxies": str(s["n_galaxies"]),
            "coverage 68%": interval(s["coverage"].get("0.68"), 3),
            "coverage 95%": interval(s["coverage"].get("0.95"), 3),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["by", "stratum"])
    return frame


def functionals_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Per posterior and functional (integrated fractions, radial rings, gradient, shares at the clip): coverage of
    its central 68% and 95% intervals and the KS p-value of its rank histogram's uniformity, with the maps it is
    defined on."""
    rows = {}
    for name, block in metrics["modes"].items():
        for functional, entry in block["functionals"].items():
            ranks = entry.get("rank_histogram", {})
            rows[(name, functional_label(functional, metrics["apertures"]))] = {
                "maps": str(entry["n_maps"]),
                "coverage 68%": interval(entry.get("coverage", {}).get("0.68"), 3),
                "coverage 95%": interval(entry.get("coverage", {}).get("0.95"), 3),
                "rank KS p": number(ranks.get("ks_pvalue"), "{:.2g}"),
            }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["posterior", "functional"])
    return frame


def functional_by_median_table(metrics: Mapping[str, Any], functional: str = "integrated_fov") -> pd.DataFrame:
    """Per posterior and bin of the posterior median of ``functional``: coverage of its central 68% and 95%
    intervals and the shares of truths below and above the 68% interval, with the maps and galaxies each bin holds
    (metrics.json ``functionals.<functional>.by_median``; posteriors without it are left out)."""
    rows = {}
    for name, block in metrics["modes"].items():
        for entry in block["functionals"].get(functional, {}).get("by_median", []):
            rows[(name, entry["label"])] = {
                "maps": str(entry["n_maps"]),
                "galaxies": str(entry["n_galaxies"]),
                "coverage 68%": interval(entry["coverage"].get("0.68"), 3),
                "coverage 95%": interval(entry["coverage"].get("0.95"), 3),
                "truth below the 68% interval": interval(entry["below"], 3),
                "truth above it": interval(entry["above"], 3),
            }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if rows:
        frame.index = pd.MultiIndex.from_tuples(frame.index, names=["posterior", "posterior median"])
    return frame


def scores_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Per posterior: mean energy and variogram scores per test map (lower is better), and the squared error over
    the samples' spread of the smooth and rough parts of the maps (1 when calibrated), with intervals."""

    def row(block: Mapping[str, Any]) -> dict[str, str]:
        by_scale = block["spread_by_scale"]
        sigma = by_scale["smoothing_pixels"]
        return {
            **{f"{score} score": interval(block["scores"][score]) for score in ("energy", "variogram")},
            f"error / spread, smooth part (sigma {sigma:g} px)": interval(by_scale["smooth"], 3),
            "error / spread, rough part": interval(by_scale["rough"], 3),
        }

    return pd.DataFrame.from_dict({name: row(block) for name, block in metrics["modes"].items()}, orient="index")


#: What each clip model of metrics.json's ``likelihood.clip_model`` means, for the report.
CLIP_MODELS = {
    "clipped": "the density of their clipped logit",
    "censored": "their probability of lying beyond the clip (censored)",
    "hurdle": "a class of their own, with its probability per pixel (hurdle)",
}


def likelihood_table(metrics: Mapping[str, Any], noise_scale: Mapping[str, Any]) -> pd.DataFrame:
    """The decoder's likelihood (family, degrees of freedom, clip) and the noise scales every posterior applies."""
    likelihood, noise = metrics["likelihood"], metrics["noise"]
    rows = {
        "likelihood family": likelihood["family"],
        "degrees of freedom": number(likelihood["dof"]),
        "clip of the true fraction (logit_eps)": f"{likelihood['logit_eps']:g}",
        "pixels at the clip enter as (cvae.censored, cvae.hurdle)": CLIP_MODELS[
            likelihood.get("clip_model", "clipped")
        ],
        "noise scale, low-rank (correlated) part": f"{noise['lowrank']:.3f}",
        "noise scale, diagonal (independent) part, where the mean is 1/2": f"{noise['diagonal']:.3f}",
        "its slope per logit, factor exp(slope |mean logit|)": f"{noise.get('diagonal_slope', 0):.3f}",
        "clip classes (hurdle): Platt slope; shift low, high (recalibrate.clip_classes)": _class_calibration(
            noise_scale.get("clip_class_fit") or {}
        ),
        "single scale (energy-score minimum, lowrank = diagonal)": f"{noise_scale['noise_scale']:.3f}",
        "how the scales were fitted (recalibrate.method)": noise_scale.get("method_description", "–"),
        "fitted on": f"{noise_scale.get('n_maps', '–')} validation maps of {noise_scale.get('n_galaxies', '–')} "
        f"galaxies, {noise_scale.get('n_samples', '–')} samples each",
    }
    return pd.DataFrame({"value": rows})


def _class_calibration(fit: Mapping[str, Any]) -> str:
    """The clip classes' Platt scaling and the validation class NLL it moved, or "as trained"."""
    if not fit:
        return "as trained"
    return (
        f"{fit['clip_slope']:.3f}; {fit['clip_low']:+.3f}, {fit['clip_high']:+.3f} (class NLL "
        f"{fit['nll_as_trained']:.4f} -> {fit['nll_fitted']:.4f} nats per pixel, {fit['n_pixels']} validation pixels)"
    )


#: The residual blocks of noise_scale.json ``diagnostics``: (noise setting, latent mode).
DIAGNOSTIC_BLOCKS: tuple[tuple[str, str], ...] = tuple(
    (setting, mode) for setting in ("as_trained", "recalibrated") for mode in ("reconstruction", "flow")
)


def diagnostic_blocks(diagnostics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The blocks of noise_scale.json ``diagnostics`` by a readable name ("as trained, flow", ...)."""
    return {f"{setting.replace('_', ' ')}, {mode}": diagnostics[setting][mode] for setting, mode in DIAGNOSTIC_BLOCKS}


def diagnostics_table(diagnostics: Mapping[str, Any]) -> pd.DataFrame:
    """Per noise setting and latent mode: kurtosis of the marginal, jointly whitened and within-map residuals (the
    model's expected value in brackets), the marginal tail shares against a right model's, and the per-map
    Mahalanobis distance per pixel M/n: its median and 16-84% range, the model's, and the KS p of its PIT."""
    rows = {}
    for name, block in diagnostic_blocks(diagnostics).items():
        expected = number(block["expected_joint_kurtosis"])
        m = block["mahalanobis_per_pixel"]
        q, e = m["quantiles"], m["expected_quantiles"]
        rows[name] = {
            "kurtosis: marginal": number(block["marginal"]["kurtosis"]),
            "joint": f"{number(block['joint']['kurtosis'])} ({expected})",
            "within map": f"{number(block['joint_within_map']['kurtosis'])} ({expected})",
            "|u| > 1 (0.317)": number(block["marginal"].get("tail_1")),
            "|u| > 1.96 (0.05)": number(block["marginal"].get("tail_1.96")),
            "|u| > 2.576 (0.01)": number(block["marginal"].get("tail_2.576")),
            "M/n median (model)": f"{number(q['0.5'])} ({number(e['0.5'])})",
            "M/n 16-84% (model)": f"{number(q['0.16'])}-{number(q['0.84'])} ({number(e['0.16'])}-{number(e['0.84'])})",
            "M/n 5-95% (model)": f"{number(q['0.05'])}-{number(q['0.95'])} ({number(e['0.05'])}-{number(e['0.95'])})",
            "PIT of M: KS p": number(m["pit_ks_pvalue"], "{:.2g}"),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "noise, z from"
    return frame


def diagnostics_bins_table(diagnostics: Mapping[str, Any], view: str) -> pd.DataFrame:
    """The residual diagnostics in bins of the true fraction (``view`` = "by_truth") or of the likelihood's median
    (``"by_prediction"``): per noise setting and latent mode, the marginal kurtosis, the share beyond 1.96 (0.05
    when right) and the mean squared whitened residual (1 when right), with the bin's galaxy pixels (by prediction
    they differ between blocks)."""
    rows: dict[str, dict[tuple[str, str], str]] = {}
    for column, block in diagnostic_blocks(diagnostics).items():
        for entry in block[view]:
            row = rows.setdefault(entry["label"], {})
            row[(column, "pixels")] = str(entry["n_pixels"])
            row[(column, "kurtosis")] = number(entry["marginal"].get("kurtosis"))
            row[(column, "|u| > 1.96")] = number(entry["marginal"].get("tail_1.96"))
            row[(column, "mean e^2")] = number(entry["joint_mean_square"])
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "true fraction" if view == "by_truth" else "likelihood median"
    return frame


def stage_costs(benchmarks: pd.DataFrame) -> pd.DataFrame:
    """Per stage (``exsitu.reporting.read.read_benchmarks`` rows): jobs, summed and longest wall time [s] and the
    peak resident memory of its largest job [MB]; a last row ``all stages``."""
    columns = ["jobs", "total wall time [s]", "longest job [s]", "peak RSS [MB]"]
    if benchmarks.empty:
        return pd.DataFrame(columns=columns)
    grouped = benchmarks.groupby("stage", sort=False)
    out = pd.DataFrame(
        {
            "jobs": grouped.size(),
            "total wall time [s]": grouped["s"].sum(),
            "longest job [s]": grouped["s"].max(),
            "peak RSS [MB]": grouped["max_rss"].max(),
        }
    )[columns]
    out.loc["all stages"] = [out["jobs"].sum(), out[columns[1]].sum(), out[columns[2]].max(), out[columns[3]].max()]
    return out


def model_card_table(card: Mapping[str, Any]) -> pd.DataFrame:
    """What results/models/model.json tells ``exsitu predict``: conditions, galaxy scalars, grid, noise scales."""
    noise = card.get("noise", {})
    observe = card.get("observe")
    rows = {
        "condition maps": ", ".join(card["channels"]),
        "galaxy scalars": ", ".join(card.get("scalars", [])) or "none",
        "grid": f"{card['npix']} x {card['npix']} pixels over {card['fov_rhalf']:g} "
        f"{'projected' if card['radius'] == 'projected' else '3D'} half-mass radii",
        "trained on": "mock IFU observations" if observe else "ideal projections",
        "noise scales (low-rank, diagonal)": f"{noise.get('lowrank', 1.0):.3f}, {noise.get('diagonal', 1.0):.3f}",
        "format, config hash": f"{card.get('format', '–')}, {card.get('config_hash', '–')}",
    }
    return pd.DataFrame({"value": rows})


def data_table(data: ReportData) -> pd.DataFrame:
    """The run's data in numbers: selected subhalos, galaxies, maps, and what the test set holds."""
    metrics = data.metrics
    rows = {
        "selected subhalos (all snapshots)": str(len(data.catalog)),
        "distinct galaxies": str(data.catalog["galaxy_id"].nunique()),
        "maps (projections)": str(len(data.plan)),
        "test maps evaluated": str(metrics["n_maps"]),
        "test galaxies (each counts once)": str(metrics["n_galaxies"]),
        "test galaxy pixels": str(metrics["n_pixels"]),
        "posterior samples per map": str(metrics["n_samples"]),
        "test galaxy pixels with true fraction exactly 0 or 1 [%]": f"{100 * metrics['exact_01_share']:.1f}",
        "training prior (plan.weighting)": str(metrics["training_prior"]),
        # .get: metrics written before the option existed hold the summary context
        "the flow's context (flow.context)": str(metrics.get("flow_context", "summary")),
    }
    return pd.DataFrame({"value": rows})


def split_table(split: pd.DataFrame) -> pd.DataFrame:
    """Maps and galaxies per subset of the split."""
    return split.groupby("subset").agg(maps=("galaxy_id", "size"), galaxies=("galaxy_id", "nunique"))


def latent_summary(history: pd.DataFrame) -> str:
    """ "N of D latent dimensions active (KL > threshold)" at the kept epoch of the cVAE history."""
    dims = [c for c in history.columns if c.startswith("val_kl_dim_")]
    if "active_units" not in history or not dims:
        return "no KL columns in the history"
    best = int(history["best_epoch"].iloc[-1])
    row = history.loc[history["epoch"] == best].iloc[0]
    total = float(sum(row[c] for c in dims))
    return f"{int(row['active_units'])} of {len(dims)} dimensions active, {total:.3g} nats in all"


def tng_table(relations: Mapping[str, Any]) -> pd.DataFrame:
    """Per TNG100 mass bin: galaxies and share, f_ex percentiles, median r_1/2 and rho(f_ex, r_1/2), central share
    and the f_ex medians of centrals and satellites, each as "this simulation | TNG100-1"."""

    def pair(mine: float | None, theirs: float | None, fmt: str = "{:.3f}") -> str:
        return f"{number(mine, fmt)} | {number(theirs, fmt)}"

    rows = {}
    for b in relations["tng100"]["bins"]:
        tng = b["tng100"]
        row = {
            "galaxies": b["n"],
            "share": pair(b["share"], tng["share"]),
            "f_ex p16": pair(b["fex_p16"], tng["fex_p16"]),
            "f_ex median": pair(b["fex_median"], tng["fex_median"]),
            "f_ex p84": pair(b["fex_p84"], tng["fex_p84"]),
            "r_1/2 median [kpc]": pair(b["rhalf_median_kpc"], tng["rhalf_median_kpc"], "{:.2f}"),
            "rho(f_ex, r_1/2)": pair(b["rho_fex_rhalf"], tng["rho_fex_rhalf"], "{:+.2f}"),
        }
        if "central_share" in b:
            row["central share"] = pair(b["central_share"], tng["central_share"], "{:.2f}")
            row["f_ex median, centrals / satellites"] = pair(b["fex_median_centrals"], b["fex_median_satellites"])
        rows[f"log M* {b['log_mstar'][0]:.2f}-{b['log_mstar'][1]:.2f}"] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def tng_checks_table(relations: Mapping[str, Any]) -> pd.DataFrame:
    """Every check of the simulation against TNG100-1 (``exsitu.relations.TOLERANCES``) with its verdict."""
    rows = [
        {
            "check": c["what"],
            "mass bin": c["bin"],
            "this simulation": f"{c['mock']:.3f}",
            "TNG100-1": f"{c['tng100']:.3f}",
            "tolerance": f"x{c['tolerance']:g}" if c["what"] == "share" else f"+-{c['tolerance']:g}",
            "verdict": "holds" if c["passed"] else "MISSED",
        }
        for c in relations["tng100"]["checks"]
    ]
    return pd.DataFrame(rows).set_index("check") if rows else pd.DataFrame()


def relations_table(relations: Mapping[str, Any]) -> pd.DataFrame:
    """Per mass bin: central dispersion against Zahid+16, pooled and per-galaxy in/ex-situ metallicity and age."""
    edges = relations["mass_edges"]
    bands = relations["bands"]
    centres = [0.5 * (lo + hi) for lo, hi in zip(edges[:-1], edges[1:])]
    band = bands["central_dispersion"]
    lo = np.interp(centres, bands["log_mstar"], band["lo"])
    hi = np.interp(centres, bands["log_mstar"], band["hi"])
    within = relations["within_galaxy"]
    rows = {}
    for k in range(len(centres)):
        rows[f"log M* {edges[k]:.2f}-{edges[k + 1]:.2f}"] = {
            "sigma_cen median [km/s]": number(relations["central_dispersion"]["median"][k]),
            "Zahid+16 band": f"{lo[k]:.0f}-{hi[k]:.0f}",
            "Z overlap, pooled": number(relations["metallicity"]["overlap"][k]),
            "Z overlap per galaxy (median)": number(within["metallicity_overlap"]["median"][k]),
            "Z in - ex [dex] (median)": number(within["metallicity_insitu_minus_exsitu"]["median"][k]),
            "age overlap per galaxy (median)": number(within["age_overlap"]["median"][k]),
            "age in - ex [Gyr] (median)": number(within["age_insitu_minus_exsitu"]["median"][k]),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
