"""The run report (stage ``report``): one self-contained HTML file (figures embedded as base64
PNG, no external URLs or scripts) summarising a run: configuration and data, training curves,
example posteriors (the paper's Fig. 2), residuals (Fig. 3a/3b), calibration, the
baseline comparison and the per-stage wall time from Snakemake's benchmark TSVs.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from exsitu import figures, relations_figures
from exsitu.io import InputError, atomic_output, read_json, read_table

log = logging.getLogger(__name__)

#: The report's figures, in the order they appear; each is written as ``<name>.png`` and ``<name>.svg``.
FIGURES: tuple[str, ...] = (
    "exsitu_distribution", "training_curves", "example_posteriors", "residuals",
    "integrated_fraction", "calibration", "radial_profile",
    "relation_exsitu_fraction", "relation_size", "relation_dispersion", "relation_exsitu_profile",
    "relation_metallicity", "relation_within_galaxy", "latent_kl", "stratified_coverage", "rank_histogram",
)  # fmt: skip
FIGURE_FORMATS = (".png", ".svg")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


def read_metrics(path: str) -> dict[str, Any]:
    """metrics.json from the evaluate stage, checked for the keys the report reads."""
    return read_json(path, ("n_maps", "n_pixels", "modes", "baselines"), "metrics file")


def figure_paths(paths: Sequence[str | os.PathLike]) -> dict[str, list[Path]]:
    """Group the figure files a rule declares by figure name; every name of :data:`FIGURES` must have them all."""
    grouped: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        if path.stem not in FIGURES or path.suffix not in FIGURE_FORMATS:
            raise InputError(f"{path}: not a report figure (names {list(FIGURES)}, formats {list(FIGURE_FORMATS)})")
        grouped.setdefault(path.stem, []).append(path)
    missing = [name for name in FIGURES if sorted(p.suffix for p in grouped.get(name, [])) != sorted(FIGURE_FORMATS)]
    if missing:
        raise InputError(f"--figures lacks a PNG and SVG file for {missing}")
    return grouped


def save_figure(fig: Figure, paths: Sequence[Path]) -> Path:
    """Write ``fig`` to each of ``paths`` (format from the suffix, atomically), close it; return the PNG."""
    for path in paths:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=90)
    plt.close(fig)
    return next(p for p in paths if p.suffix == ".png")


def embed(png: Path, alt: str) -> str:
    """An <img> holding the PNG file as base64, so the HTML stays self-contained."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(frame: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    """An HTML table of ``frame`` (index as first column), escaped."""
    return frame.to_html(float_format=float_format.format, na_rep="–", border=0, escape=True)


def stage_times(benchmarks: str) -> pd.DataFrame:
    """Wall time per stage [s] from Snakemake's benchmark TSVs (column ``s``), sharded stages summed.

    Returns one row per stage (jobs, total, longest job) and a last row ``all stages``.
    """
    rows = []
    # Oldest first: stages then appear in the order the run finished them.
    for tsv in sorted(Path(benchmarks).glob("**/*.tsv"), key=lambda path: path.stat().st_mtime):
        frame = pd.read_csv(tsv, sep="\t")
        if "s" not in frame.columns or frame.empty:
            continue
        stage = tsv.relative_to(benchmarks).parts[0].removesuffix(".tsv")
        rows.append({"stage": stage, "seconds": float(frame["s"].iloc[-1])})
    if not rows:
        return pd.DataFrame(columns=["jobs", "total wall time [s]", "longest job [s]"])
    grouped = pd.DataFrame(rows).groupby("stage", sort=False)["seconds"]
    out = pd.DataFrame({"jobs": grouped.size(), "total wall time [s]": grouped.sum(), "longest job [s]": grouped.max()})
    out.loc["all stages"] = [out["jobs"].sum(), out["total wall time [s]"].sum(), out["longest job [s]"].max()]
    return out


def interval(estimate: Mapping[str, float] | None, digits: int = 4) -> str:
    """ "value [low, high]" of a metrics.json estimate (95% galaxy-bootstrap interval)."""
    if not estimate or estimate.get("value") is None:
        return "–"
    low, high = estimate.get("low"), estimate.get("high")
    if low is None or high is None:
        return f"{estimate['value']:.{digits}f}"
    return f"{estimate['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def comparison_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """All posteriors and baselines side by side, each number with its 95% galaxy-bootstrap interval."""
    rows = {}
    for group in ("modes", "baselines"):
        for name, block in metrics[group].items():
            tarp = block.get("tarp", {})
            rows[f"{name} ({'posterior' if group == 'modes' else 'baseline'})"] = {
                "MAE per pixel": interval(block["mae"]),
                "CRPS": interval(block.get("crps")),
                "coverage 68%": interval(block.get("coverage", {}).get("0.68"), 3),
                "coverage 95%": interval(block.get("coverage", {}).get("0.95"), 3),
                "TARP ATC (uniform)": interval(tarp.get("uniform", {}).get("atc"), 3),
                "TARP ATC (posterior)": interval(tarp.get("posterior", {}).get("atc"), 3),
                "integrated: scatter": interval(block["integrated"]["scatter"], 3),
                "integrated: bias": interval(block["integrated"]["bias"], 3),
            }
    return pd.DataFrame.from_dict(rows, orient="index")


def strata_table(strata: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-pixel coverage by stratum, with counts and intervals."""
    rows = {
        f"{s['by']}: {s['label']}": {
            "galaxy pixels": s["n_pixels"],
            "galaxies": s["n_galaxies"],
            "coverage 68%": interval(s["coverage"].get("0.68"), 3),
            "coverage 95%": interval(s["coverage"].get("0.95"), 3),
        }
        for s in strata
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def tarp_table(modes: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """TARP ATC with both references, intervals and KS p-values, per posterior."""
    rows = {}
    for name, block in modes.items():
        row = {}
        for reference in ("uniform", "posterior"):
            tarp = block["tarp"][reference]
            row[f"ATC, {reference} reference"] = interval(tarp["atc"], 3)
            row[f"KS p, {reference}"] = f"{tarp['ks_pvalue']:.2g}"
        row["integrated fraction: rank KS p"] = f"{block['rank_histogram']['ks_pvalue']:.2g}"
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def latent_summary(history: pd.DataFrame) -> str:
    """ "N of D latent dimensions active (KL > threshold)" at the kept epoch of the cVAE history."""
    dims = [c for c in history.columns if c.startswith("val_kl_dim_")]
    if "active_units" not in history or not dims:
        return "no KL columns in the history"
    best = int(history["best_epoch"].iloc[-1])
    row = history.loc[history["epoch"] == best].iloc[0]
    total = float(sum(row[c] for c in dims))
    return f"{int(row['active_units'])} of {len(dims)} dimensions active, {total:.3g} nats in all"


@dataclass(frozen=True)
class ReportInputs:
    """The files a report summarises (all written by earlier stages)."""

    catalog: str
    plan: str
    split: str
    histories: Sequence[str]
    metrics: str
    summaries: str
    benchmarks: str  # directory of Snakemake benchmark TSVs
    relations: str  # the relations stage's JSON
    model_card: str  # results/models/model.json


def tng_table(relations: dict[str, Any]) -> pd.DataFrame:
    """Per TNG100 mass bin: galaxies and share, f_ex percentiles, median r_1/2 and rho(f_ex, r_1/2), central share
    and the f_ex medians of centrals and satellites, each as "this simulation | TNG100-1"."""
    rows = {}
    for b in relations["tng100"]["bins"]:
        tng = b["tng100"]

        def pair(mine: float | None, theirs: float | None, fmt: str = "{:.3f}") -> str:
            return f"{'–' if mine is None else fmt.format(mine)} | {'–' if theirs is None else fmt.format(theirs)}"

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


def tng_checks_table(relations: dict[str, Any]) -> pd.DataFrame:
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


def relations_table(relations: dict[str, Any]) -> pd.DataFrame:
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
            "sigma_cen median [km/s]": relations["central_dispersion"]["median"][k],
            "Zahid+16 band": f"{lo[k]:.0f}-{hi[k]:.0f}",
            "Z overlap, pooled": relations["metallicity"]["overlap"][k],
            "Z overlap per galaxy (median)": within["metallicity_overlap"]["median"][k],
            "Z in - ex [dex] (median)": within["metallicity_insitu_minus_exsitu"]["median"][k],
            "age overlap per galaxy (median)": within["age_overlap"]["median"][k],
            "age in - ex [Gyr] (median)": within["age_insitu_minus_exsitu"]["median"][k],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def build_report(inputs: ReportInputs, figure_files: Mapping[str, Sequence[Path]], run_config: dict[str, Any]) -> str:
    """Write the figures to their files (``figure_files``: name -> paths) and return the report's HTML text."""
    catalog = read_table(inputs.catalog, ["snapshot", "subhalo_id", "galaxy_id"])
    plan = read_table(inputs.plan, ["snapshot", "subhalo_id", "galaxy_id", "exsitu_total"])
    split = read_table(inputs.split, ["subset", "galaxy_id"])
    histories = {
        Path(p).stem.removesuffix("_history"): read_table(p, ["epoch", "train_loss", "val_loss"])
        for p in inputs.histories
    }
    metrics = read_metrics(inputs.metrics)
    relations = read_json(inputs.relations, ("mass_edges", "tng100", "within_galaxy", "bands"), "relations file")
    card = read_json(inputs.model_card, ("channels", "npix", "fov_rhalf", "radius"), "model card")
    try:
        summaries = h5py.File(inputs.summaries, "r")
    except (FileNotFoundError, OSError) as err:
        raise InputError(f"{inputs.summaries}: not a readable HDF5 file ({err})") from None

    def show(name: str, fig: Figure, alt: str) -> str:
        return embed(save_figure(fig, figure_files[name]), alt)

    per_galaxy = plan.drop_duplicates(["snapshot", "subhalo_id"])["exsitu_total"].to_numpy()
    counts = split.groupby("subset").agg(maps=("galaxy_id", "size"), galaxies=("galaxy_id", "nunique"))
    data_table = pd.DataFrame(
        {
            "value": [
                len(catalog),
                catalog["galaxy_id"].nunique(),
                len(plan),
                metrics["n_maps"],
                metrics["n_galaxies"],
                metrics["n_pixels"],
                metrics.get("n_samples"),
                100 * metrics["exact_01_share"],
            ]
        },
        index=[
            "selected subhalos (all snapshots)",
            "distinct galaxies",
            "maps (projections)",
            "test maps evaluated",
            "test galaxies (each counts once)",
            "test galaxy pixels",
            "posterior samples per map",
            "test galaxy pixels with true fraction exactly 0 or 1 [%]",
        ],
    )
    modes = metrics["modes"]
    with summaries:
        index = summaries["examples/index"][()]
        mask = summaries["mask"][()]
        means = {mode: summaries[f"mean/{mode}"][()].astype(np.float32) for mode in modes}
        labels = [
            f"subhalo {s} snap {n}, total {t:.2f}"
            for s, n, t in zip(
                summaries["subhalo_id"][index], summaries["snapshot"][index], summaries["exsitu_total"][index]
            )
        ]
        fig2 = figures.example_posteriors(
            summaries["examples/conditions"][()],
            metrics["channels"],
            summaries["truth"][()][index].astype(np.float32),
            {mode: mean[index] for mode, mean in means.items()},
            summaries["std/flow"][()][index].astype(np.float32),
            mask=mask[index],
            labels=labels,
        )
        integrated_true = summaries["integrated/true"][()]
        integrated = {name: summaries[f"integrated/{name}"][()] for name in ("flow", "deterministic", "lookup")}
        radial = figures.radial_profile(summaries["radial/radius"][()], summaries["radial/exsitu"][()])

    times = stage_times(inputs.benchmarks)
    flow = modes["flow"]
    baselines = metrics["baselines"]
    few = (
        f"<p><b>Warning:</b> only {metrics['n_galaxies']} test galaxies: the bootstrap intervals are wide and "
        "unreliable. Use more galaxies (mock.n_galaxies) or a larger test share.</p>"
        if metrics["few_galaxies"]
        else ""
    )
    parts = [
        "<h1>exsitu-sbi run report</h1>",
        f"<p>Posterior 2D maps of the ex-situ stellar mass fraction from the observable maps "
        f"({html.escape(', '.join(metrics['channels']))}), with a conditional VAE and a conditional normalizing "
        "flow on its latent space (Angeloudi et al. 2023). All fractions are ex-situ stellar mass fractions in "
        "[0, 1]; MAE and CRPS are per galaxy pixel of the test set. Every test galaxy counts once (its maps "
        "weighted 1/n_los); brackets are 95% intervals from a bootstrap over test galaxies.</p>",
        few,
        f"<p><b>Headline:</b> flow posterior mean MAE {interval(flow['mae'])}; per-pixel lookup baseline "
        f"{interval(baselines['lookup']['mae'])}; deterministic U-net {interval(baselines['deterministic']['mae'])}; "
        f"68% interval coverage {interval(flow['coverage']['0.68'], 3)}; TARP ATC "
        f"{interval(flow['tarp']['uniform']['atc'], 3)} (uniform references), "
        f"{interval(flow['tarp']['posterior']['atc'], 3)} (held-out posterior reference).</p>",
        "<h2>1. Data</h2>",
        table(data_table, "{:.0f}"),
        "<h3>Maps per split</h3>",
        table(counts, "{:.0f}"),
        "<h3>Total ex-situ fraction before and after balancing</h3>",
        show(
            "exsitu_distribution",
            figures.exsitu_distribution(per_galaxy, plan["exsitu_total"].to_numpy()),
            "ex-situ distribution",
        ),
        "<h3>The simulated galaxies against TNG100-1</h3>"
        "<p>The galaxies of the latest snapshot against the real TNG100-1 population at z = 0 (6477 galaxies above "
        "1e10 Msun; <code>exsitu/data/tng100_population.json</code> gives the source): each cell is "
        "<i>this simulation | TNG100-1</i>. With the built-in mock this checks that the stand-in for TNG100 has its "
        "population; with TNG data it checks the selection. "
        f"{'All checks hold.' if relations['tng100']['all_passed'] else 'Some checks are MISSED (below).'}</p>",
        table(tng_table(relations), "{:.3g}"),
        table(tng_checks_table(relations)),
        "<p>Kinematics and stellar populations against published relations, and how well metallicity and age "
        "tell in-situ from ex-situ stars, pooled over a bin and within each galaxy (overlap coefficient: 0 "
        "separates, 1 says nothing).</p>",
        table(relations_table(relations), "{:.3g}"),
        show("relation_exsitu_fraction", relations_figures.exsitu_fraction_figure(relations), "f_ex against M*"),
        show("relation_size", relations_figures.size_figure(relations), "half-mass radius against M*"),
        show("relation_dispersion", relations_figures.dispersion_figure(relations), "central dispersion against M*"),
        show("relation_exsitu_profile", relations_figures.exsitu_profile_figure(relations), "f_ex against radius"),
        show("relation_metallicity", relations_figures.metallicity_figure(relations), "in/ex-situ metallicities"),
        show("relation_within_galaxy", relations_figures.within_galaxy_figure(relations), "per-galaxy overlaps"),
        "<h2>2. Training</h2>",
        show("training_curves", figures.training_curves(histories), "training curves"),
        "<p>What the latent carries: the cVAE's validation KL per latent dimension at the kept epoch "
        f"({latent_summary(histories['cvae'])}). The KL weight is per map: the reconstruction term is the "
        "likelihood summed over a map's galaxy pixels, so <code>cvae.beta</code> means the same at every map "
        "size (see <code>exsitu.cvae</code>).</p>",
        show("latent_kl", figures.latent_kl(histories["cvae"]), "KL per latent dimension"),
        "<h2>3. Example test galaxies (cf. paper Fig. 2)</h2>",
        "<p>Columns: the condition maps (physical units), the true ex-situ map, the posterior mean for each "
        "sampling mode and the flow posterior's standard deviation.</p>",
        show("example_posteriors", fig2, "example posteriors"),
        "<h2>4. Residuals (cf. paper Fig. 3)</h2>",
        show("residuals", figures.residual_figures({**modes, **metrics["baselines"]}), "residuals"),
        "<h3>Galaxy-integrated (mass-weighted) ex-situ fraction</h3>",
        show("integrated_fraction", figures.integrated_scatter(integrated_true, integrated), "integrated fraction"),
        "<h2>5. Calibration</h2>",
        "<p>Left: galaxy-weighted share of galaxy pixels inside each central credible interval (randomized PIT, "
        "so pixels whose samples tie with the truth count fairly). Middle and right: TARP expected coverage of "
        "whole maps (Lemos et al. 2023) with uniform references (in ~10<sup>3</sup> dimensions this mostly tests "
        "the total variance) and with a held-out posterior sample as reference (tests the shape near the "
        "posterior); ATC &lt; 0 means too narrow, &gt; 0 too wide; bands are 95% bootstrap intervals. "
        "<code>flow_mean</code> draws the decoder's mean map per latent z: the spread the latent alone carries; "
        "<code>flow</code> adds the decoder's likelihood (the full predictive).</p>",
        f"<p>Every posterior here draws the decoder's residual with its standard deviations times "
        f"<b>{metrics['noise_scale']:.3f}</b>: the noise scale the <code>recalibrate</code> stage fitted on the "
        "validation maps (minimum of the energy score of the flow's full predictive; 1 means the likelihood as "
        "trained; <code>results/models/noise_scale.json</code> holds the score curve).</p>",
        show("calibration", figures.calibration_curves(modes), "calibration"),
        table(tarp_table(modes)),
        "<h3>Per-pixel coverage by stratum (flow posterior)</h3>",
        table(strata_table(flow["stratified_coverage"])),
        show("stratified_coverage", figures.stratified_coverage(flow["stratified_coverage"]), "coverage by stratum"),
        "<h3>Rank histogram of the galaxy-integrated ex-situ fraction</h3>"
        "<p>Rank of the true integrated fraction among the sampled maps' (SBC, Talts et al. 2018): flat when the "
        "posterior of the integrated fraction is calibrated, U-shaped when too narrow, peaked when too wide.</p>",
        show("rank_histogram", figures.rank_histograms(modes), "rank histograms"),
        "<h2>6. Comparison with the baselines</h2>",
        table(comparison_table(metrics)),
        "<p>The per-pixel lookup predicts each pixel from its own observables and the galaxy's stellar mass "
        "(k nearest training pixels, no spatial context): the floor that spatial context and the latent must "
        "beat. The radial baseline is the training-set mean ex-situ fraction against radius:</p>",
        show("radial_profile", radial, "radial profile"),
        "<h2>7. What the run cost</h2>",
        "<p>Wall time of each job from Snakemake's benchmark files, summed per stage; jobs that ran in "
        "parallel overlap, so the elapsed time of the run is shorter than the sum.</p>",
        table(times, "{:.1f}") if len(times) else "<p>No benchmark files found.</p>",
        "<h2>8. The model directory</h2>",
        f"<p><code>results/models/</code> holds the weights and <code>model.json</code>: conditioned on "
        f"{html.escape(', '.join(card['channels']))}; {card['npix']}x{card['npix']} maps over "
        f"{card['fov_rhalf']:g} {'projected' if card['radius'] == 'projected' else '3D'} half-mass radii; "
        f"{'mock IFU observations' if card.get('observe') else 'ideal projections'}. Apply it to an observed "
        "galaxy with <code>exsitu predict --model-dir results/models --out OUT.fits INPUT</code>.</p>",
        "<h2>9. Configuration</h2>",
        f"<pre>{html.escape(json.dumps(run_config, indent=2, sort_keys=True))}</pre>",
    ]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>exsitu-sbi report</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
