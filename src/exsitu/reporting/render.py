"""The report's HTML (step 3 of 3: read, compute, render): one self-contained file, every figure embedded as
base64 PNG (no external URLs or scripts), and every figure also written to its own PNG and SVG file.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from exsitu.io import InputError, atomic_output
from exsitu.reporting.compute import FIGURES, ReportContent
from exsitu.reporting.tables import latent_summary

FIGURE_FORMATS = (".png", ".svg")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1400px; margin: 2em auto; color: #222; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
tbody th { white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


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


def html_table(frame: pd.DataFrame) -> str:
    """An HTML table of ``frame`` (index as first column; floats to 4 significant digits), escaped, scrolling
    sideways when wide."""
    if frame.empty:
        return "<p>(nothing to show)</p>"
    return f'<div class="table">{frame.to_html(float_format="{:.4g}".format, na_rep="–", border=0)}</div>'


class _Page:
    """The report's parts in order: headings, paragraphs (escaped unless given as HTML), tables and figures."""

    def __init__(self, content: ReportContent, images: Mapping[str, Path]) -> None:
        self.content, self.images, self.parts = content, images, []

    def heading(self, level: int, text: str) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text, quote=False)}</p>")

    def html(self, markup: str) -> None:
        self.parts.append(markup)

    def table(self, name: str) -> None:
        self.parts.append(html_table(self.content.tables[name]))

    def figure(self, name: str, alt: str) -> None:
        self.parts.append(embed(self.images[name], alt))


def _introduction(page: _Page) -> None:
    metrics = page.content.data.metrics
    page.heading(1, "exsitu-sbi run report")
    page.text(
        f"Posterior 2D maps of the ex-situ stellar mass fraction from the observable maps "
        f"({', '.join(metrics['channels'])}) and the galaxy scalars ({', '.join(metrics['scalars']) or 'none'}), with "
        "a conditional VAE and a conditional normalizing flow on its latent space (Angeloudi et al. 2023). All "
        "fractions are ex-situ stellar mass fractions in [0, 1]; MAE and CRPS are per galaxy pixel of the test set. "
        "Every test galaxy counts once (its maps weighted 1/n_los); brackets are 95% intervals from a bootstrap over "
        f"test galaxies. The models were trained with the '{metrics['training_prior']}' prior (plan.weighting)."
    )
    if metrics["few_galaxies"]:
        page.html(
            f"<p><b>Warning:</b> only {metrics['n_galaxies']} test galaxies: the bootstrap intervals are wide and "
            "unreliable. Use more galaxies (mock.n_galaxies) or a larger test share.</p>"
        )
    page.html(f"<p><b>Headline:</b> {html.escape(page.content.headline, quote=False)}</p>")


def _data(page: _Page) -> None:
    relations = page.content.data.relations
    page.heading(2, "1. Data")
    page.table("data")
    page.heading(3, "Maps per split")
    page.table("split")
    page.heading(3, "Total ex-situ fraction before and after balancing")
    page.figure("exsitu_distribution", "ex-situ distribution")
    page.heading(3, "The simulated galaxies against TNG100-1")
    page.text(
        "The galaxies of the latest snapshot against the real TNG100-1 population at z = 0 (6477 galaxies above "
        "1e10 Msun; exsitu/data/tng100_population.json gives the source): each cell is 'this simulation | "
        "TNG100-1'. With the built-in mock this checks that the stand-in for TNG100 has its population (Mock "
        "against TNG/Illustris); with TNG data it checks the selection. "
        f"{'All checks hold.' if relations['tng100']['all_passed'] else 'Some checks are MISSED (below).'}"
    )
    page.table("tng")
    page.table("tng_checks")
    page.text(
        "Kinematics and stellar populations against published relations, and how well metallicity and age tell "
        "in-situ from ex-situ stars, pooled over a bin and within each galaxy (overlap coefficient: 0 separates, 1 "
        "says nothing)."
    )
    page.table("relations")
    for name, alt in (
        ("relation_exsitu_fraction", "f_ex against M*"), ("relation_size", "half-mass radius against M*"),
        ("relation_dispersion", "central dispersion against M*"), ("relation_exsitu_profile", "f_ex against radius"),
        ("relation_metallicity", "in/ex-situ metallicities"), ("relation_within_galaxy", "per-galaxy overlaps"),
    ):  # fmt: skip
        page.figure(name, alt)


def _training(page: _Page) -> None:
    page.heading(2, "2. Training")
    page.figure("training_curves", "training curves")
    page.text(
        "What the latent carries: the cVAE's validation KL per latent dimension at the kept epoch "
        f"({latent_summary(page.content.data.histories['cvae'])}). The KL weight is per map: the reconstruction term "
        "is the likelihood summed over a map's galaxy pixels, so cvae.beta means the same at every map size (see "
        "exsitu.cvae)."
    )
    page.figure("latent_kl", "KL per latent dimension")


def _examples(page: _Page) -> None:
    page.heading(2, "3. Example test galaxies (cf. paper Fig. 2)")
    page.text(
        "Columns: the condition maps (physical units), the true ex-situ map, the per-pixel posterior median of each "
        "posterior (reconstruction: z from the encoder given the truth, the lower bound; prior: z ~ N(0, 1); flow: "
        "z from the conditional flow; flow_mean: the decoder's mean map per flow z) and the flow posterior's "
        "standard deviation."
    )
    page.figure("example_posteriors", "example posteriors")
    page.heading(2, "4. Residuals (cf. paper Fig. 3)")
    page.text(
        "Predicted minus true fraction on the test galaxy pixels, of every posterior's per-pixel median and every "
        "baseline's median prediction."
    )
    page.figure("residuals", "residuals")


def _accuracy(page: _Page) -> None:
    metrics = page.content.data.metrics
    page.heading(2, "5. Accuracy and the baselines")
    page.text(
        "Every method scored with its median (posteriors: the per-pixel posterior median, and the mean for "
        "comparison; baselines: their median prediction). The baselines: deterministic, the U-net (condition "
        "encoder and decoder without a latent; the sigmoid of its mean logit); radial, the training-set median "
        "against r / r_half (below); lookup, k nearest training pixels in observables and galaxy scalars; trees, "
        "gradient-boosted trees on each pixel's observables and radius with galaxy context. The integrated fraction "
        "is the mass-weighted ex-situ fraction inside the aperture; bias is predicted minus true; scatter the "
        "standard deviation of that difference."
    )
    page.table("accuracy")
    page.text(
        f"Paired ratios (the same bootstrap galaxies in numerator and denominator; < 1: the first method is better). "
        f"The models were trained with the '{metrics['training_prior']}' prior (plan.weighting); each test galaxy "
        "counts once (its maps weighted 1/n_los)."
    )
    page.table("comparisons")
    page.text("The targets of the deep model against the baselines (issue 14), on this run:")
    page.table("targets")
    page.figure("radial_profile", "radial profile")


def _integrated(page: _Page) -> None:
    page.heading(2, "6. The integrated fraction by stellar mass")
    page.text(
        "RMS, bias and scatter of the integrated ex-situ fraction per stellar-mass bin (log10 M* of the galaxy's "
        "catalogue mass), for the flow posterior median and every baseline. Bins marked '(few)' (open markers in "
        "the figure) hold fewer galaxies than a bootstrap interval needs: read them as indications only."
    )
    page.table("by_mass")
    page.figure("integrated_by_mass", "integrated fraction by stellar mass")
    page.text(
        "Predicted against true integrated fraction per test map: the flow posterior's median with its 16-84% "
        "posterior interval, and the tree baseline."
    )
    page.figure("integrated_fraction", "integrated fraction, predicted against true")


def _calibration(page: _Page) -> None:
    page.heading(2, "7. Calibration")
    page.text(
        "Left: galaxy-weighted share of galaxy pixels inside each central credible interval (randomized PIT, so "
        "pixels whose samples tie with the truth count fairly). Middle and right: TARP expected coverage of whole "
        "maps (Lemos et al. 2023) with uniform references (in ~10^3 dimensions this mostly tests the total "
        "variance) and with a held-out posterior sample as reference (tests the shape near the posterior); ATC < 0 "
        "means too narrow, > 0 too wide; bands are 95% bootstrap intervals."
    )
    page.figure("calibration", "calibration")
    page.table("calibration")
    page.heading(3, "Per-pixel coverage by stratum (the targets)")
    page.text(
        "Strata by the posterior median, by the test galaxies' stellar-mass tercile and by radius: a calibrated "
        "posterior covers at the nominal level in each. The table is the flow posterior's ('(small)': fewer "
        "galaxy pixels than a stratum needs to be judged); the figure shows every posterior."
    )
    page.table("strata")
    page.figure("stratified_coverage", "coverage by stratum")
    page.heading(3, "Coverage by true value")
    page.text(
        "Coverage by true value is expected to bend even for a right posterior: a Bayes-optimal posterior is pulled "
        "towards the prior, so it under-covers rare true values; the strata by posterior median above are the test."
    )
    page.figure("coverage_by_truth", "coverage by true value")
    page.heading(3, "Functionals: integrated fractions, radial profile, gradient and the shares at the clip")
    page.text(
        "Coverage of the central 68% and 95% intervals of quantities computed from whole sampled maps: the "
        "integrated fraction in the field of view and in 1 and 2 r_half, the fraction in each radial ring, the "
        "gradient (inner minus outer), and the mass share of the map at the likelihood's clip (f <= eps: no ex-situ "
        "particle reaches the pixel; f >= 1 - eps: no in-situ one), which tells whether the samples put the right "
        "amount of a map at 0 and 1 together. Rank histograms (SBC, Talts et al. 2018) are flat when calibrated, "
        "U-shaped when too narrow, peaked when too wide, and lean right when the truth lies above the samples; "
        "the KS p-value tests their uniformity."
    )
    page.table("functionals")
    page.figure("functional_ranks", "rank histograms of the functionals")
    page.text(
        "The integrated fraction in the field of view by its posterior median: a calibrated posterior covers at the "
        "nominal level in every bin and misses as often below as above. A bin whose truths fall mostly below its "
        "intervals is one whose sampled maps are biased high there, which the pooled coverage and rank histogram mix "
        "with the other bins."
    )
    page.table("functional_by_median")
    page.heading(3, "Whole-map scores and the likelihood")
    page.text(
        "Energy score (strictly proper; in ~10^3 dimensions mostly the total variance) and variogram score of "
        "order 1/2 (the spread of differences between pixels, which the correlations set), per test map. Then "
        "the squared distance of the truth from the samples over the samples' distance from each other, E|y - X|^2 "
        "/ E|X - X'|^2, of each map's smooth part (a Gaussian average over the galaxy's pixels) and of the rough "
        "rest: 1 at every scale for a calibrated posterior; above 1 where the samples lack spread at that scale, "
        "below where they have too much (exsitu.spatial_scales)."
    )
    page.table("scores")
    page.table("likelihood")


def _diagnostics(page: _Page) -> None:
    page.heading(2, "8. Residual diagnostics")
    page.text(
        "The truth's residual under the decoder's likelihood on the validation maps, with z from the encoder given "
        "the truth (reconstruction) or from the flow, as trained and at the recalibrated noise scales "
        "(results/models/noise_scale.json). u: marginal scores, N(0, 1) under a right model whatever the "
        "correlations; joint: jointly whitened residuals e; within map: e with each map's own scale divided out "
        "(kurtosis above the model's here is per-pixel tails); M/n: each map's Mahalanobis distance per pixel "
        "(spread wider than the model's is per-map tails). Brackets: a right model's values."
    )
    page.table("diagnostics")
    page.text(page.content.tails)
    page.figure("residual_tails", "residual tails by bin")
    page.figure("mahalanobis_per_pixel", "Mahalanobis distance per pixel")
    page.heading(3, "By true fraction")
    page.table("diagnostics_by_truth")
    page.heading(3, "By the likelihood's median (the calibration view)")
    page.table("diagnostics_by_prediction")


def _run(page: _Page, run_config: Mapping[str, Any]) -> None:
    card = page.content.data.card
    page.heading(2, "9. What the run cost")
    page.text(
        "Wall time of each job from Snakemake's benchmark files, summed per stage, and the peak resident memory "
        "(max_rss) of its largest job; jobs that ran in parallel overlap, so the elapsed time of the run is shorter "
        "than the sum."
    )
    page.table("cost")
    page.heading(2, "10. The model directory")
    page.text(
        "results/models/ holds the weights and model.json. Apply it to an observed galaxy with exsitu predict "
        "--model-dir results/models --out OUT.fits INPUT"
        + (
            "; the galaxy scalars come from the file where it can (R1/2 from the DAP header's Re and redshift) "
            "or from flags (e.g. --log-mstar)."
            if card.get("scalars")
            else "."
        )
    )
    page.table("model")
    page.heading(2, "11. Configuration")
    page.html(f"<pre>{html.escape(json.dumps(run_config, indent=2, sort_keys=True))}</pre>")


def render_report(content: ReportContent, images: Mapping[str, Path], run_config: Mapping[str, Any]) -> str:
    """The report's HTML text from its content and the PNG file of each figure (``images``: name -> path)."""
    page = _Page(content, images)
    for section in (_introduction, _data, _training, _examples, _accuracy, _integrated, _calibration, _diagnostics):
        section(page)
    _run(page, run_config)
    body = "\n".join(page.parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>exsitu-sbi report</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
