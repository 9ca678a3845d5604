"""The report stage: the HTML of the tiny end-to-end run is self-contained, holds every section and figure, and
its tables show exactly what metrics.json and noise_scale.json hold; the residual-diagnostics paragraph follows
the numbers; benchmark TSVs become per-stage times and peak memory; bad input fails clearly, writing nothing."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import matplotlib.image
import pytest
from conftest import snakemake

from exsitu import reporting
from exsitu.io import InputError
from exsitu.reporting import compute, tables
from exsitu.reporting.render import html_table
from exsitu.stages import report


def report_paths(workdir: Path) -> reporting.ReportPaths:
    """The files the report rule reads in a finished workflow directory."""
    results = workdir / "results"
    return reporting.ReportPaths(
        catalog=results / "catalog" / "subhalos.csv",
        plan=results / "catalog" / "projections.csv",
        split=results / "dataset" / "split.csv",
        histories=tuple(results / "models" / f"{m}_history.csv" for m in ("cvae", "flow", "baseline")),
        metrics=results / "evaluation" / "metrics.json",
        summaries=results / "evaluation" / "summaries.h5",
        benchmarks=results / "benchmarks",
        relations=results / "catalog" / "relations.json",
        model_card=results / "models" / "model.json",
        noise_scale=results / "models" / "noise_scale.json",
    )


@pytest.fixture(scope="module")
def tiny_report(tiny_run: Path) -> tuple[reporting.ReportData, dict, str]:
    """What the tiny run's report read, its tables (recomputed from the files) and its HTML."""
    data = reporting.read_report_inputs(report_paths(tiny_run))
    return data, compute.report_tables(data), (tiny_run / "results" / "report.html").read_text()


def test_tiny_run_report_is_self_contained(tiny_run: Path, tiny_report) -> None:
    text = tiny_report[2]
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # No external resources or scripts: it must render offline, from one file.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.IGNORECASE)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    images = re.findall(r"<img [^>]*>", text)
    assert len(images) == len(reporting.FIGURES)
    for tag in images:
        data = re.search(r'src="data:image/png;base64,([^"]+)"', tag)
        assert data, f"image not embedded as PNG: {tag[:80]}"
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data.group(1))), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01  # not blank
    headings = re.findall(r"<h2>([^<]+)</h2>", text)
    for section in ("Data", "Training", "Fig. 2", "Fig. 3", "Accuracy and the baselines", "by stellar mass",
                    "Calibration", "Residual diagnostics", "cost", "model directory", "Configuration"):  # fmt: skip
        assert any(section in h for h in headings), (section, headings)
    for phrase in ("Mock against TNG/Illustris", "held-out posterior reference", "pulled towards the prior",
                   "exactly 0 or 1", "model.json", "each test galaxy counts once", "'natural' prior"):  # fmt: skip
        assert phrase in text, phrase
    # Every figure is a file of its own (PNG embedded above, SVG for papers), in the order of FIGURES.
    positions = []
    for name in reporting.FIGURES:
        png = tiny_run / "results" / "figures" / f"{name}.png"
        positions.append(text.index(base64.b64encode(png.read_bytes()).decode()))
        assert (png.with_suffix(".svg")).read_text().lstrip().startswith(("<?xml", "<svg"))
    assert positions == sorted(positions)
    for stage in ("train_cvae", "evaluate", "project"):  # from results/benchmarks/**/*.tsv
        assert f"<th>{stage}</th>" in text


def test_the_headline_reads_the_spread_by_scale_from_its_intervals() -> None:
    # The MaNGA preset under recalibrate.method: coverage, and a calibrated smooth part.
    sentence = compute.spread_by_scale_sentence(
        {"smoothing_pixels": 1.5, "smooth": {"value": 0.87, "low": 0.80, "high": 0.95},
         "rough": {"value": 2.53, "low": 2.32, "high": 2.76}}
    )  # fmt: skip
    assert "rough part 2.530" in sentence and "(the samples lack spread there)" in sentence
    assert "(the samples spread more than the truth does)" in sentence
    calibrated = compute.spread_by_scale_sentence(
        {"smoothing_pixels": 1.5, "smooth": {"value": 1.0, "low": 0.9, "high": 1.1},
         "rough": {"value": 0.98, "low": 0.9, "high": 1.05}}
    )  # fmt: skip
    assert "lack" not in calibrated and "more than" not in calibrated


def test_the_headline_flags_a_decoder_that_ignores_its_latent() -> None:
    # A collapsed model's ratio (1.000 on universe 2027 of the exact-draw mock without the warm-up), a working one's.
    collapsed = compute.latent_use_sentence({"value": 1.000, "low": 0.999, "high": 1.001})
    assert "1.000" in collapsed and "posterior collapse" in collapsed
    used = compute.latent_use_sentence({"value": 0.606, "low": 0.55, "high": 0.66})
    assert "0.606" in used and "collapse" not in used


def test_report_tables_show_the_metrics(tiny_report) -> None:
    data, made, text = tiny_report
    metrics, diagnostics = data.metrics, data.noise_scale["diagnostics"]
    # Every table of the report is in the HTML as computed from the files (the report's own benchmark came after).
    before = data.benchmarks[data.benchmarks["stage"] != "report"]
    for name, frame in (made | {"cost": tables.stage_costs(before)}).items():
        assert html_table(frame) in text, name
    flow = metrics["modes"]["flow"]
    mae = flow["point"]["median"]["mae"]
    cell = made["accuracy"].loc["flow (posterior median)", ("per pixel", "MAE")]
    assert cell == f"{mae['value']:.4f} [{mae['low']:.4f},\u00a0{mae['high']:.4f}]"
    trees = metrics["baselines"]["trees"]["integrated"]["fov"]
    assert (
        made["accuracy"]
        .loc["trees (baseline)", ("integrated, field of view", "rms")]
        .startswith(f"{trees['rms']['value']:.3f} [")
    )
    assert made["accuracy"].loc["trees (baseline)", ("per pixel", "CRPS")] == "–"  # baselines have no CRPS
    assert len(made["accuracy"]) == 2 * len(metrics["modes"]) + len(metrics["baselines"])
    ratio = metrics["comparisons"]["mae_flow_over"]["trees"]
    assert made["comparisons"].loc["flow / trees", "MAE per pixel"] == tables.interval(ratio, 3)
    assert made["targets"].loc["flow / trees: MAE per pixel", "verdict"] == (
        "holds" if ratio["value"] <= 0.85 and ratio["high"] < 0.95 else "MISSED"
    )
    # By stellar mass: every method and bin, few-galaxy bins flagged.
    first_bin = trees["by_mass"][0]
    lo, hi = first_bin["log_mstar"]
    row = made["by_mass"].loc[(f"log M* {lo:g}-{hi:g}", "trees")]
    assert row[("", "galaxies")] == f"{first_bin['n_galaxies']}{' (few)' if first_bin['few_galaxies'] else ''}"
    assert row[("integrated, field of view", "bias")] == tables.interval(first_bin.get("bias"), 3)
    assert len(made["by_mass"]) == (1 + len(metrics["baselines"])) * len(trees["by_mass"])
    # Calibration: TARP, strata that are targets (no truth strata), functionals, scores, likelihood.
    atc = flow["tarp"]["posterior"]["atc"]
    assert made["calibration"].loc["flow", "TARP ATC, posterior reference"] == tables.interval(atc, 3)
    assert set(made["strata"].index.get_level_values("by")) == {"median", "mass", "radius"}
    integrated = flow["functionals"]["integrated_fov"]["coverage"]["0.95"]
    assert made["functionals"].loc[("flow", "integrated, field of view"), "coverage 95%"] == tables.interval(
        integrated, 3
    )
    assert len(made["functionals"]) == len(metrics["modes"]) * len(flow["functionals"])
    first_bin = flow["functionals"]["integrated_fov"]["by_median"][0]
    row = made["functional_by_median"].loc[("flow", first_bin["label"])]
    assert row["truth below the 68% interval"] == tables.interval(first_bin["below"], 3)
    assert made["scores"].loc["flow", "variogram score"] == tables.interval(flow["scores"]["variogram"])
    assert made["scores"].loc["flow", "error / spread, rough part"] == tables.interval(
        flow["spread_by_scale"]["rough"], 3
    )
    assert compute.spread_by_scale_sentence(flow["spread_by_scale"]) in text  # the headline
    assert compute.latent_use_sentence(metrics["comparisons"]["mae_reconstruction_over_flow"]) in text
    assert made["likelihood"].loc["likelihood family", "value"] == metrics["likelihood"]["family"]
    clip_row = made["likelihood"].loc["pixels at the clip enter as (cvae.censored, cvae.hurdle)", "value"]
    assert metrics["likelihood"]["clip_model"] == "hurdle" and clip_row == tables.CLIP_MODELS["hurdle"]
    assert made["data"].loc["the flow's context (flow.context)", "value"] == metrics["flow_context"]
    # Residual diagnostics, as trained and recalibrated, reconstruction and flow z.
    block = diagnostics["recalibrated"]["flow"]
    assert (
        made["diagnostics"]
        .loc["recalibrated, flow", "within map"]
        .startswith(tables.number(block["joint_within_map"]["kurtosis"]))
    )
    assert len(made["diagnostics"]) == 4
    assert made["diagnostics_by_truth"].loc[block["by_truth"][0]["label"], ("recalibrated, flow", "mean e^2")] == (
        tables.number(block["by_truth"][0]["joint_mean_square"])
    )
    assert compute.tails_paragraph(diagnostics) in text
    # Cost with peak memory from the benchmark TSVs.
    rss = data.benchmarks.loc[data.benchmarks["stage"] == "evaluate", "max_rss"].max()
    assert made["cost"].loc["evaluate", "peak RSS [MB]"] == pytest.approx(rss)
    assert ", ".join(data.card["scalars"]) in made["model"].loc["galaxy scalars", "value"]


def test_tails_paragraph_follows_the_numbers(tiny_report) -> None:
    diagnostics = copy.deepcopy(tiny_report[0].noise_scale["diagnostics"])
    flow = diagnostics["recalibrated"]["flow"]
    m = flow["mahalanobis_per_pixel"]
    # A model whose M/n spread matches its own and whose within-map kurtosis is its own: no tails to report.
    m["quantiles"] = dict(m["expected_quantiles"])
    diagnostics["recalibrated"]["reconstruction"]["mahalanobis_per_pixel"]["quantiles"] = dict(m["expected_quantiles"])
    flow["joint_within_map"]["kurtosis"] = flow["expected_joint_kurtosis"]
    calm = compute.tails_paragraph(diagnostics)
    assert "little sign of per-map tails" in calm and "few more outlying pixels" in calm
    assert "about right" in calm
    # Per-map spread 5x the model's and heavy tails within maps.
    e = m["expected_quantiles"]
    m["quantiles"] = {q: e["0.5"] + 5 * (v - e["0.5"]) for q, v in e.items()}
    flow["joint_within_map"]["kurtosis"] = flow["expected_joint_kurtosis"] + 3
    heavy = compute.tails_paragraph(diagnostics)
    assert "live per map" in heavy and "per-pixel tails" in heavy and "5.0 times as wide" in heavy


def test_stage_costs_sum_sharded_stages_and_keep_peak_memory(tmp_path: Path) -> None:
    (tmp_path / "tag").mkdir()
    for name, seconds, rss in (("tag/shard_0.tsv", 1.5, 100), ("tag/shard_1.tsv", 2.5, 300), ("split.tsv", 4.0, 50)):
        (tmp_path / name).write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:0{int(seconds)}\t{rss}\n")
    (tmp_path / "empty.tsv").write_text("s\th:m:s\n")
    times = tables.stage_costs(reporting.read_benchmarks(tmp_path))
    assert times.loc["tag", "jobs"] == 2 and times.loc["tag", "total wall time [s]"] == pytest.approx(4.0)
    assert times.loc["tag", "longest job [s]"] == pytest.approx(2.5)
    assert times.loc["tag", "peak RSS [MB]"] == pytest.approx(300)
    assert times.loc["all stages", "total wall time [s]"] == pytest.approx(8.0)
    assert times.loc["all stages", "peak RSS [MB]"] == pytest.approx(300)
    assert "empty" not in times.index


def _main_args(tmp_path: Path, catalog: Path, **given: str) -> list[str]:
    missing = str(tmp_path / "missing")
    figures = [str(tmp_path / "figures" / f"{name}.{ext}") for name in reporting.FIGURES for ext in ("png", "svg")]
    files = {"plan": missing, "split": missing, "histories": missing, "metrics": missing, "summaries": missing,
             "relations": missing, "model-card": missing, "noise-scale": missing} | given  # fmt: skip
    args = ["--catalog", str(catalog), "--benchmarks", str(tmp_path), "--report", str(tmp_path / "report.html")]
    for flag, value in files.items():
        args += [f"--{flag}", value]
    return [*args, "--figures", *figures]


def test_bad_catalog_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    catalog = tmp_path / "subhalos.csv"
    catalog.write_text("snapshot,subhalo_id\n99,1\n")
    with pytest.raises(InputError, match=r"subhalos.csv: columns \['galaxy_id'\] are missing"):
        report.main(_main_args(tmp_path, catalog))
    assert list(tmp_path.iterdir()) == [catalog]


def test_metrics_of_the_old_shape_are_a_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    paths = report_paths(tiny_run)
    metrics = json.loads(Path(paths.metrics).read_text())
    del metrics["comparisons"]
    stale = tmp_path / "metrics.json"
    stale.write_text(json.dumps(metrics))
    given = {"plan": str(paths.plan), "split": str(paths.split), "histories": str(paths.histories[0]),
             "metrics": str(stale)}  # fmt: skip
    with pytest.raises(InputError, match=r"metrics.json: key 'comparisons' is missing"):
        report.main(_main_args(tmp_path, Path(paths.catalog), **given))
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "figures").exists()


def test_snakemake_report_zip_holds_the_figures(tiny_run: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wf"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    snakemake(workdir, "--report", "report.zip")
    with zipfile.ZipFile(workdir / "report.zip") as archive:
        figures = [n for n in archive.namelist() if n.endswith(".png")]
    names = {Path(n).stem for n in figures}
    assert set(reporting.FIGURES) <= names, sorted(set(reporting.FIGURES) - names)
