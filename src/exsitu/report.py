"""Stage ``report``: one self-contained HTML file (figures embedded as base64 PNG, no
external URLs or scripts) summarising a run: configuration and data, training curves,
example posteriors (the paper's Fig. 2), residuals (Fig. 3a/3b), calibration, the
baseline comparison and the per-stage wall time from Snakemake's benchmark TSVs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from exsitu import figures
from exsitu.io import InputError, atomic_output, read_json, read_table, run_stage, stage_parser

log = logging.getLogger("exsitu.report")

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


def embed(fig: Figure, alt: str) -> str:
    """An <img> holding ``fig`` as a base64 PNG; closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
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


def comparison_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """All modes and baselines side by side: MAE, CRPS, coverage, ATC, integrated scatter."""
    rows = {}
    for group in ("modes", "baselines"):
        for name, block in metrics[group].items():
            rows[f"{name} ({'posterior' if group == 'modes' else 'baseline'})"] = {
                "MAE per pixel": block["mae"],
                "CRPS": block.get("crps"),
                "coverage 68%": block.get("coverage", {}).get("0.68"),
                "coverage 95%": block.get("coverage", {}).get("0.95"),
                "TARP ATC": block.get("tarp_atc"),
                "integrated: scatter": block["integrated"]["scatter"],
                "integrated: bias": block["integrated"]["bias"],
            }
    return pd.DataFrame.from_dict(rows, orient="index")


def build_report(args: Any) -> str:
    """Assemble the HTML text of the report from the stage inputs."""
    run_config = json.loads(args.run_config) if args.run_config else {}
    catalog = read_table(args.catalog, ["snapshot", "subhalo_id", "galaxy_id"])
    plan = read_table(args.plan, ["snapshot", "subhalo_id", "galaxy_id", "exsitu_total"])
    split = read_table(args.split, ["subset", "galaxy_id"])
    histories = {Path(p).stem.removesuffix("_history"): read_table(p, ["epoch", "train_loss", "val_loss"]) for p in args.histories}
    metrics = read_metrics(args.metrics)
    try:
        summaries = h5py.File(args.summaries, "r")
    except (FileNotFoundError, OSError) as err:
        raise InputError(f"{args.summaries}: not a readable HDF5 file ({err})") from None

    per_galaxy = plan.drop_duplicates(["snapshot", "subhalo_id"])["exsitu_total"].to_numpy()
    counts = split.groupby("subset").agg(maps=("galaxy_id", "size"), galaxies=("galaxy_id", "nunique"))
    data_table = pd.DataFrame(
        {"value": [len(catalog), catalog["galaxy_id"].nunique(), len(plan), metrics["n_maps"], metrics["n_pixels"], metrics.get("n_samples")]},
        index=["selected subhalos (all snapshots)", "distinct galaxies", "maps (projections)", "test maps evaluated",
               "test galaxy pixels", "posterior samples per map"],
    )
    modes = metrics["modes"]
    with summaries:
        index = summaries["examples/index"][()]
        mask = summaries["mask"][()]
        means = {mode: summaries[f"mean/{mode}"][()].astype(np.float32) for mode in modes}
        labels = [f"subhalo {s} snap {n}, total {t:.2f}" for s, n, t in zip(
            summaries["subhalo_id"][index], summaries["snapshot"][index], summaries["exsitu_total"][index])]
        fig2 = figures.example_posteriors(
            summaries["examples/conditions"][()], summaries["truth"][()][index].astype(np.float32),
            {mode: mean[index] for mode, mean in means.items()},
            summaries["std/flow"][()][index].astype(np.float32), mask[index], labels,
        )
        integrated_true = summaries["integrated/true"][()]
        integrated = {name: summaries[f"integrated/{name}"][()] for name in ("flow", "deterministic", "radial")}
        radial = figures.radial_profile(summaries["radial/radius"][()], summaries["radial/exsitu"][()])

    times = stage_times(args.benchmarks)
    flow = modes.get("flow", {})
    parts = [
        "<h1>exsitu-sbi run report</h1>",
        "<p>Posterior 2D maps of the ex-situ stellar mass fraction from 5 observable maps, with a conditional VAE "
        "and a conditional normalizing flow on its latent space (Angeloudi et al. 2023). All fractions are ex-situ "
        "stellar mass fractions in [0, 1]; MAE and CRPS are per galaxy pixel of the test set.</p>",
        f"<p><b>Headline:</b> flow-sampled posterior MAE {flow.get('mae', float('nan')):.4f}, "
        f"68% interval coverage {flow.get('coverage', {}).get('0.68', float('nan')):.3f}, "
        f"deterministic baseline MAE {metrics['baselines']['deterministic']['mae']:.4f}, "
        f"radial-profile baseline MAE {metrics['baselines']['radial']['mae']:.4f}.</p>",
        "<h2>1. Data</h2>", table(data_table, "{:.0f}"), "<h3>Maps per split</h3>", table(counts, "{:.0f}"),
        "<h3>Total ex-situ fraction before and after balancing</h3>",
        embed(figures.exsitu_distribution(per_galaxy, plan["exsitu_total"].to_numpy()), "ex-situ distribution"),
        "<h2>2. Training</h2>", embed(figures.training_curves(histories), "training curves"),
        "<h2>3. Example test galaxies (cf. paper Fig. 2)</h2>",
        "<p>Columns: the 5 condition maps (physical units), the true ex-situ map, the posterior mean for each "
        "sampling mode and the flow posterior's standard deviation.</p>",
        embed(fig2, "example posteriors"),
        "<h2>4. Residuals (cf. paper Fig. 3)</h2>",
        embed(figures.residual_figures({**modes, **metrics["baselines"]}), "residuals"),
        "<h3>Galaxy-integrated (mass-weighted) ex-situ fraction</h3>",
        embed(figures.integrated_scatter(integrated_true, integrated), "integrated fraction"),
        "<h2>5. Calibration</h2>",
        "<p>Left: observed fraction of galaxy pixels inside each central credible interval (randomized PIT, so "
        "pixels whose samples tie with the truth at 0 count fairly). Right: TARP expected coverage of whole maps "
        "(Lemos et al. 2023); ATC &lt; 0 means too narrow, &gt; 0 too wide.</p>",
        embed(figures.calibration_curves(modes), "calibration"),
        "<h2>6. Comparison with the baselines</h2>", table(comparison_table(metrics)),
        "<p>The radial baseline is the training-set mean ex-situ fraction against radius:</p>", embed(radial, "radial profile"),
        "<h2>7. What the run cost</h2>",
        "<p>Wall time of each job from Snakemake's benchmark files, summed per stage; jobs that ran in "
        "parallel overlap, so the elapsed time of the run is shorter than the sum.</p>",
        table(times, "{:.1f}") if len(times) else "<p>No benchmark files found.</p>",
        "<h2>8. Configuration</h2>", f"<pre>{html.escape(json.dumps(run_config, indent=2, sort_keys=True))}</pre>",
    ]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>exsitu-sbi report</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="subhalos.csv")
    parser.add_argument("--plan", required=True, help="projections.csv")
    parser.add_argument("--split", required=True, help="split.csv")
    parser.add_argument("--histories", nargs="+", required=True, help="training history CSVs")
    parser.add_argument("--metrics", required=True, help="metrics.json")
    parser.add_argument("--summaries", required=True, help="summaries.h5")
    parser.add_argument("--benchmarks", required=True, help="directory of Snakemake benchmark TSVs")
    parser.add_argument("--run-config", default="", help="the full config as JSON, shown in the report")
    parser.add_argument("--out", required=True, help="report.html")
    args = parser.parse_args(argv)
    text = build_report(args)
    with atomic_output(args.out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("wrote %s (%.1f kB)", args.out, len(text) / 1024)


if __name__ == "__main__":
    run_stage(main)
