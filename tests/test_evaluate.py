"""The evaluate stage: real models trained by the real stages on synthetic maps, then the
stage's CLI; and the schema of metrics.json from the tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_dataset import write_synthetic_dataset

from exsitu import evaluation, posterior_stats
from exsitu.baseline_maps import BaselineMaps
from exsitu.calibration import COVERAGE_LEVELS
from exsitu.checkpoint import load_model
from exsitu.contracts import CHANNELS
from exsitu.dataset import DatasetFiles
from exsitu.fitted_baselines import load_baselines
from exsitu.flow import CONTEXTS
from exsitu.functionals import APERTURES, PROFILE_EDGES, functional_names
from exsitu.io import InputError
from exsitu.likelihood import FAMILIES
from exsitu.point_metrics import MASS_BINS
from exsitu.posterior_stats import PosteriorTally
from exsitu.radial import pixel_radius, profile_from_pixels
from exsitu.sample import predict_baseline, sampling_layout
from exsitu.scalars import scalar_values
from exsitu.settings import ConditionSettings, section_of
from exsitu.spatial_scales import SMOOTHING_PIXELS
from exsitu.stages import (
    evaluate,
    fit_baselines,
    predict_baselines,
    recalibrate,
    train_baseline,
    train_cvae,
    train_flow,
)

POSTERIORS = ("reconstruction", "prior", "flow", "flow_mean")
BASELINES = ("deterministic", "radial", "lookup", "trees")


def check_estimate(e: dict | None, low: float = -1.0, high: float = 1.0) -> None:
    """An estimate with its galaxy-bootstrap interval: low <= value <= high, all inside [low, high]."""
    assert e is not None and set(e) == {"value", "low", "high"}
    assert low <= e["low"] <= e["value"] <= e["high"] <= high, e


def check_point(block: dict, n_maps: int, n_pixels: int) -> None:
    """The point-estimate block of ``exsitu.point_metrics`` (a posterior's median or mean, or a baseline)."""
    check_estimate(block["mae"], 0, 1)
    assert sum(block["residuals"]["hist_counts"]) == n_pixels
    assert sum(block["residual_vs_truth"]["count"]) == n_pixels
    assert set(block["integrated"]) == set(APERTURES)
    for aperture in block["integrated"].values():
        check_estimate(aperture["rms"], 0, 1)
        check_estimate(aperture["bias"])
        check_estimate(aperture["scatter"], 0, 1)
        check_estimate(aperture["mae"], 0, 1)
        assert aperture["rms"]["value"] >= max(aperture["scatter"]["value"], abs(aperture["bias"]["value"])) - 1e-12
        if aperture["pearson_r"] is not None:
            check_estimate(aperture["pearson_r"])
        assert [row["log_mstar"] for row in aperture["by_mass"]] == [list(b) for b in zip(MASS_BINS, MASS_BINS[1:])]
        assert sum(row["n_maps"] for row in aperture["by_mass"]) <= n_maps


def check_schema(metrics: dict) -> None:
    """The documented keys of metrics.json (``exsitu.evaluation``'s docstring), with values in their valid ranges."""
    n_maps, n_pixels = metrics["n_maps"], metrics["n_pixels"]
    assert n_maps >= 1 and n_pixels >= n_maps
    assert 1 <= metrics["n_galaxies"] <= n_maps and metrics["interval_level"] == 0.95
    assert metrics["few_galaxies"] == (metrics["n_galaxies"] < 10) and 0 <= metrics["exact_01_share"] <= 1
    assert metrics["training_prior"] in ("natural", "balanced") and "1 / n_los" in metrics["weighting"]
    assert metrics["flow_context"] in CONTEXTS
    noise = metrics["noise"]
    assert set(noise) == {"lowrank", "diagonal", "diagonal_slope", "clip_slope", "clip_low", "clip_high"}
    assert noise["lowrank"] > 0 and noise["diagonal"] > 0 and noise["clip_slope"] > 0
    assert metrics["likelihood"]["family"] in FAMILIES and metrics["apertures"] == dict(APERTURES)
    assert metrics["mass_bins"] == list(MASS_BINS) and metrics["profile_edges"] == list(PROFILE_EDGES)
    assert set(metrics["modes"]) == set(POSTERIORS) and set(metrics["baselines"]) == set(BASELINES)
    for name in POSTERIORS:
        block = metrics["modes"][name]
        for point in ("median", "mean"):
            check_point(block["point"][point], n_maps, n_pixels)
        check_estimate(block["crps"], 0, 1)
        check_estimate(block["mean_std"], 0, 1)
        assert set(block["coverage"]) == {f"{level:g}" for level in COVERAGE_LEVELS}
        values = [block["coverage"][f"{level:g}"]["value"] for level in COVERAGE_LEVELS]
        assert all(0 <= v <= 1 for v in values) and values == sorted(values)
        assert block["coverage_curve"]["observed"][-1] == pytest.approx(1.0)
        for reference in ("uniform", "posterior"):
            tarp = block["tarp"][reference]
            check_estimate(tarp["atc"])
            assert len(tarp["alpha"]) == len(tarp["ecp"]) == len(tarp["ecp_low"]) and 0 <= tarp["ks_pvalue"] <= 1
        strata: dict[str, list[dict]] = {}
        for stratum in block["strata"]:
            strata.setdefault(stratum["by"], []).append(stratum)
        assert set(strata) == {"median", "truth", "radius", "mass"}
        for by in ("median", "truth", "radius"):  # each partitions the galaxy pixels
            assert sum(s["n_pixels"] for s in strata[by]) == n_pixels, by
        assert len(strata["mass"]) == 3 and sum(s["n_maps"] for s in strata["mass"]) == n_maps
        assert set(block["functionals"]) == set(functional_names())
        for functional in block["functionals"].values():
            assert 0 <= functional["n_maps"] <= n_maps
            if functional["n_maps"] >= 2:
                assert set(functional["coverage"]) == {"0.68", "0.95"}
                assert sum(functional["rank_histogram"]["n_maps"]) == functional["n_maps"]
        for aperture in metrics["apertures"]:  # the integrated fractions by their posterior median partition the maps
            integrated = block["functionals"][f"integrated_{aperture}"]
            assert sum(b["n_maps"] for b in integrated["by_median"]) == integrated["n_maps"]
        check_estimate(block["scores"]["energy"], 0, math.inf)
        check_estimate(block["scores"]["variogram"], 0, math.inf)
        assert block["spread_by_scale"]["smoothing_pixels"] == SMOOTHING_PIXELS
        for scale in ("smooth", "rough"):
            check_estimate(block["spread_by_scale"][scale], 0, math.inf)
    for name in BASELINES:
        check_point(metrics["baselines"][name], n_maps, n_pixels)
    check_estimate(metrics["baselines"]["trees"]["coverage_68"], 0, 1)
    comparisons = metrics["comparisons"]
    assert set(comparisons["mae_flow_over"]) == {*BASELINES, "prior"}
    assert set(comparisons["integrated_rms_flow_over"]) == set(BASELINES)
    for ratio in [*comparisons["mae_flow_over"].values(), comparisons["mae_reconstruction_over_flow"]]:
        check_estimate(ratio, 0, math.inf)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("evaluate")
    data = write_synthetic_dataset(root / "data", n_maps=60, npix=16)
    cvae = {
        "latent_dim": 4,
        "beta": 7e-5,
        "epochs": 2,
        "batch_size": 16,
        "lr": 2e-3,
        "base_channels": 8,
        "patience": 5,
        "seed": 0,
    }
    flow = {"num_layers": 2, "hidden_features": 16, "epochs": 2, "batch_size": 64, "lr": 2e-3, "patience": 5, "seed": 0}
    common = ["--maps", *data["maps"], "--split", data["split"], "--stats", data["stats"], "--device", "cpu"]
    for stage, name, settings, extra in (
        (train_cvae, "cvae", {"cvae": cvae}, []),
        (train_flow, "flow", {"flow": flow}, ["--cvae", str(root / "cvae.pt")]),
        (train_baseline, "baseline", {"cvae": cvae, "baseline": {"epochs": cvae["epochs"]}}, []),
    ):
        stage.main(
            [
                *common,
                "--settings",
                json.dumps(settings),
                "--checkpoint",
                str(root / "ck" / f"{name}.pt"),
                "--model",
                str(root / f"{name}.pt"),
                "--history",
                str(root / f"{name}.csv"),
                *extra,
            ]
        )
    fit_baselines.main([*common[:-2], "--out", str(root / "baselines.joblib"), "--settings", "{}"])
    predict_baselines.main(
        [*common, "--baseline", str(root / "baseline.pt"), "--baselines", str(root / "baselines.joblib"),
         "--out", str(root / "baseline_maps.h5"), "--settings", "{}"]
    )  # fmt: skip
    noise_scale = root / "noise_scale.json"
    recalibrate.main(
        [*common, "--cvae", str(root / "cvae.pt"), "--flow", str(root / "flow.pt"), "--out", str(noise_scale),
         "--settings", json.dumps({"recalibrate": {"n_samples": 8}})]
    )  # fmt: skip
    args = [
        *common,
        "--noise-scale",
        str(noise_scale),
        "--cvae",
        str(root / "cvae.pt"),
        "--flow",
        str(root / "flow.pt"),
        "--baseline-maps",
        str(root / "baseline_maps.h5"),
        "--metrics",
        str(root / "out" / "metrics.json"),
        "--summaries",
        str(root / "out" / "summaries.h5"),
        "--samples",
        str(root / "out" / "samples.h5"),
    ]
    return root, {"args": args, "data": (data["maps"], data["split"], data["stats"])}


def run_evaluate(args: list[str], settings: dict) -> None:
    evaluate.main([*args, "--settings", json.dumps(settings)])


def galaxy_mean_abs_error(h5: h5py.File, prediction: np.ndarray) -> float:
    """Per-pixel MAE of (N, P, P) maps against summaries.h5's truth, each map weighted 1 / n_los."""
    weights = h5["map_weight"][()][:, None, None] * h5["mask"][()]
    return float((np.abs(prediction.astype(np.float64) - h5["truth"][()]) * weights).sum() / weights.sum())


def test_metrics_and_summaries(evaluated) -> None:
    root, ctx = evaluated
    settings = {"evaluate": {"n_samples": 12, "seed": 0, "n_saved_samples": 5}, "maps": {"fov_rhalf": 4}}
    run_evaluate(ctx["args"], settings)
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    check_schema(metrics)
    assert metrics["noise"] == json.loads((root / "noise_scale.json").read_text())["noise"]
    assert metrics["scalars"] == ["log_mstar", "log_rhalf_kpc"] and metrics["training_prior"] == "natural"
    with h5py.File(root / "out" / "samples.h5") as h5:
        n, p = metrics["n_maps"], h5["mask"].shape[-1]
        assert h5["samples"].shape == (n, 5, p, p) and h5["samples"].dtype == np.float16
        assert h5["truth"].shape == (n, p, p) and h5["mask"].dtype == bool and len(h5["galaxy_id"]) == n
        samples = h5["samples"][()].astype(np.float32)
        off_galaxy = ~h5["mask"][()][:, None]
        assert samples.min() >= 0 and samples.max() <= 1 and np.all(np.where(off_galaxy, samples, 0) == 0)
    with h5py.File(root / "out" / "summaries.h5") as h5:
        n = metrics["n_maps"]
        assert h5["truth"].shape[0] == n and h5["mask"].dtype == bool and h5["mask"][()].sum() == metrics["n_pixels"]
        for mode in POSTERIORS:
            for point in ("median", "mean"):
                assert h5[f"{point}/{mode}"].dtype == np.float16 and h5[f"{point}/{mode}"].shape == h5["truth"].shape
                mae = metrics["modes"][mode]["point"][point]["mae"]["value"]
                assert galaxy_mean_abs_error(h5, h5[f"{point}/{mode}"][()]) == pytest.approx(mae, abs=2e-3)  # float16
            assert h5[f"std/{mode}"].shape == h5["truth"].shape
            for name in functional_names():
                quantiles = h5[f"functionals/{mode}/{name}"][()]
                assert quantiles.shape == (n, 3) and h5[f"functionals/true/{name}"].shape == (n,)
                defined = np.isfinite(quantiles).all(axis=1)
                assert np.all(np.diff(quantiles[defined], axis=1) >= 0)  # p16 <= p50 <= p84
            for aperture in APERTURES:  # the point estimate of the integrated fraction is the posterior's median
                np.testing.assert_allclose(
                    h5[f"integrated/{mode}/{aperture}"][()], h5[f"functionals/{mode}/integrated_{aperture}"][()][:, 1]
                )
            assert h5[f"examples/samples/{mode}"].shape[0] == h5["examples/index"].shape[0]
        for name in BASELINES:
            mae = metrics["baselines"][name]["mae"]["value"]
            assert galaxy_mean_abs_error(h5, h5[f"baseline/{name}"][()]) == pytest.approx(mae, abs=2e-3)
            assert h5[f"integrated/{name}/fov"].shape == (n,)
        assert h5["examples/conditions"].shape[1] == len(CHANNELS)
        # Physical units: log10 surface density of a galaxy, not a standardised value near 0.
        conditions = h5["examples/conditions"][()]
        example_mask = h5["mask"][()][h5["examples/index"][()]]
        assert conditions[:, 0][example_mask].min() > 3
        assert len(h5["subhalo_id"]) == n and h5["radial/radius"].shape == h5["radial/exsitu"].shape


def test_same_seed_same_metrics_and_bad_settings(evaluated) -> None:
    root, ctx = evaluated
    settings = {"evaluate": {"n_samples": 4, "seed": 3, "n_saved_samples": 2}, "maps": {"fov_rhalf": 4}}
    run_evaluate(ctx["args"], settings)
    first = (root / "out" / "metrics.json").read_text()
    run_evaluate(ctx["args"], settings)
    assert (root / "out" / "metrics.json").read_text() == first
    before = (root / "out" / "metrics.json").stat().st_mtime_ns
    with pytest.raises(InputError, match="config key 'evaluate.n_samples'"):
        run_evaluate(ctx["args"], {**settings, "evaluate": {"n_samples": 1}})
    for bad in (-1, 2.5, "ten"):
        with pytest.raises(InputError, match="config key 'evaluate.n_saved_samples'"):
            run_evaluate(ctx["args"], {**settings, "evaluate": {"n_saved_samples": bad}})
    with pytest.raises(InputError, match="config key 'maps.fov_rhalf'"):
        run_evaluate(ctx["args"], {**settings, "maps": {"fov_rhalf": -1}})
    with pytest.raises(InputError, match="config section 'maps' is missing"):
        run_evaluate(ctx["args"], {"evaluate": settings["evaluate"]})
    assert (root / "out" / "metrics.json").stat().st_mtime_ns == before


def assert_same_numbers(a: object, b: object, where: str = "metrics") -> None:
    """Two JSON trees with the same keys, lists and strings, and numbers equal to float rounding
    (1e-5 relative, 1e-6 absolute)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_numbers(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert isinstance(b, (int, float)) and b == pytest.approx(a, rel=1e-5, abs=1e-6, nan_ok=True), where
    else:
        assert a == b, where


def test_no_figure_depends_on_the_chunking(evaluated, monkeypatch) -> None:
    """A map's samples and the random numbers of its PITs and TARP references are its own (seeded with its index),
    so chunks of two maps give the metrics of one chunk; only the decoding's rounding may differ."""
    root, ctx = evaluated
    k = 6
    settings = {"evaluate": {"n_samples": k, "seed": 5, "n_saved_samples": 0}, "maps": {"fov_rhalf": 4}}
    run_evaluate(ctx["args"], settings)
    whole = json.loads((root / "out" / "metrics.json").read_text())
    with h5py.File(root / "out" / "summaries.h5") as h5:
        p = h5["truth"].shape[-1]
    monkeypatch.setattr(evaluation, "CHUNK_ELEMENTS", 2 * k * p * p)
    run_evaluate(ctx["args"], settings)
    chunked = json.loads((root / "out" / "metrics.json").read_text())
    assert whole["n_maps"] >= 6  # three chunks or more
    assert_same_numbers(whole, chunked)


def test_baseline_maps_are_the_baselines_predictions_and_evaluate_scores_them(evaluated) -> None:
    """predict_baselines writes what the U-net and the fitted baselines predict for the test maps, row for row;
    evaluate's summaries hold those maps, and baseline maps of other rows are one clear error."""
    root, ctx = evaluated
    settings = {"evaluate": {"n_samples": 4, "seed": 3, "n_saved_samples": 0}, "maps": {"fov_rhalf": 4}}
    run_evaluate(ctx["args"], settings)
    data = DatasetFiles(*ctx["data"], CHANNELS)
    test = data.load("test")
    mask = test.mask[:, 0].numpy()
    fitted = load_baselines(root / "baselines.joblib")
    expected = fitted.predict(test.conditions.numpy(), mask, scalar_values(test.table, fitted.scalars)).point
    unet = sampling_layout(load_model(str(root / "baseline.pt"), torch.device("cpu")))
    scalars = section_of({}, ConditionSettings, required=False).scalars  # the stages' default, as trained
    expected["deterministic"] = predict_baseline(unet, test.conditions, test.scalars(scalars)).numpy()
    with h5py.File(root / "baseline_maps.h5") as maps, h5py.File(root / "out" / "summaries.h5") as summaries:
        assert list(maps["row"][()]) == list(test.table["row"]) and len(test.table) >= 6
        for name in BASELINES:
            np.testing.assert_array_equal(maps[name][()], expected[name], err_msg=name)
            np.testing.assert_array_equal(summaries[f"baseline/{name}"][()], maps[name][()].astype(np.float16))
        assert np.all(maps["trees_p16"][()] <= maps["trees_p84"][()])
    shuffled = test.table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    with pytest.raises(InputError, match="baseline_maps.h5: its rows are not the test maps"):
        with BaselineMaps(root / "baseline_maps.h5", shuffled):
            pass
    before = (root / "out" / "metrics.json").stat().st_mtime_ns
    missing = [str(root / "none.h5") if a.endswith("baseline_maps.h5") else a for a in ctx["args"]]
    with pytest.raises(InputError, match="none.h5: cannot read the baselines' test maps"):
        run_evaluate(missing, settings)
    assert (root / "out" / "metrics.json").stat().st_mtime_ns == before


def test_radial_profile_recovers_a_known_profile() -> None:
    rng = np.random.default_rng(0)
    radius = pixel_radius(16, 4.0)
    assert radius.min() == pytest.approx(np.hypot(0.125, 0.125))  # pixel centres, rhalf units
    mask = np.broadcast_to(radius < 2.0, (30, 16, 16)) & (rng.random((30, 16, 16)) < 0.9)
    truth = np.where(mask, np.clip(radius / 2.0, 0, 1) + rng.normal(0, 0.05, (30, 16, 16)), 0.0)
    profile = profile_from_pixels(np.broadcast_to(radius, mask.shape)[mask], truth[mask], None, 16, 4.0)
    predicted = profile.predict(mask)
    assert np.all(predicted[~mask] == 0)
    np.testing.assert_allclose(predicted[mask], np.clip(radius / 2.0, 0, 1)[None].repeat(30, 0)[mask], atol=0.05)


def test_tiny_run_metrics_schema(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "results" / "evaluation" / "metrics.json").read_text())
    check_schema(metrics)
    assert metrics["n_samples"] == 10  # tests/config/tiny.yaml
    assert metrics["training_prior"] == "natural" and metrics["channels"] == list(CHANNELS)
    assert (tiny_run / "results" / "evaluation" / "summaries.h5").stat().st_size > 0


def test_posterior_tally_in_slices_keeps_the_chunks_statistics_bit_for_bit(monkeypatch) -> None:
    """The per-map statistics are computed slice by slice (for the caches); every number must stay that of the
    whole chunk, random-number draws (PIT, TARP) included."""
    rng = np.random.default_rng(1)
    n, k, p = 7, 20, 16
    samples = rng.random((n, k, p, p)).astype(np.float32)
    samples[samples < 0.1] = 1e-3  # ties at the clip
    truth = rng.random((n, p, p))
    truth[truth < 0.1] = 1e-3
    mask = pixel_radius(p, 4.0) < 1.6 + 0.1 * np.arange(n)[:, None, None]
    weights = np.where(mask, rng.random((n, p, p)), 0.0)

    def tally() -> tuple[PosteriorTally, dict[str, np.ndarray]]:
        kept = PosteriorTally(4.0, 1e-3)
        return kept, kept.add(samples, truth, mask, weights, np.random.default_rng(0))

    whole, made = tally()
    monkeypatch.setattr(posterior_stats, "SLICE_ELEMENTS", 2 * k * p * p)  # slices of 2 maps: 4 slices
    sliced, made_sliced = tally()
    assert made.keys() == made_sliced.keys()
    for key in made:
        assert np.array_equal(made[key], made_sliced[key], equal_nan=True), key
    assert whole.columns.keys() == sliced.columns.keys()
    for key in whole.columns:
        assert np.array_equal(whole.per_map(key), sliced.per_map(key), equal_nan=True), key
