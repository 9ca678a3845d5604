"""The evaluate stage: real models trained by the real stages on synthetic maps, then the
stage's CLI; and the schema of metrics.json from the tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_dataset import write_synthetic_dataset

from exsitu.calibration import COVERAGE_LEVELS
from exsitu.contracts import CHANNELS
from exsitu.io import InputError
from exsitu.radial import fit_radial_profile, pixel_radius
from exsitu.stages import evaluate, recalibrate, train_baseline, train_cvae, train_flow

POSTERIORS = ("reconstruction", "prior", "flow", "flow_mean")
BASELINES = ("deterministic", "radial", "lookup")


def check_estimate(e: dict, low: float = -1.0, high: float = 1.0) -> None:
    """An estimate with its galaxy-bootstrap interval: low <= value <= high, all inside [low, high]."""
    assert set(e) == {"value", "low", "high"}
    assert low <= e["low"] <= e["value"] <= e["high"] <= high, e


def check_schema(metrics: dict) -> None:
    """The documented keys of metrics.json, with values in their valid ranges."""
    assert metrics["n_maps"] >= 1 and metrics["n_pixels"] >= metrics["n_maps"]
    assert 1 <= metrics["n_galaxies"] <= metrics["n_maps"] and metrics["interval_level"] == 0.95
    assert 0 <= metrics["exact_01_share"] <= 1
    for name in POSTERIORS:
        block = metrics["modes"][name]
        check_estimate(block["mae"], 0, 1)
        check_estimate(block["crps"], 0, 1)
        assert set(block["coverage"]) == {f"{level:g}" for level in COVERAGE_LEVELS}
        values = [block["coverage"][f"{level:g}"]["value"] for level in COVERAGE_LEVELS]
        assert all(0 <= v <= 1 for v in values) and values == sorted(values)
        for reference in ("uniform", "posterior"):
            tarp = block["tarp"][reference]
            check_estimate(tarp["atc"], -0.75, 0.25)
            assert len(tarp["alpha"]) == len(tarp["ecp"]) == len(tarp["ecp_low"]) and 0 <= tarp["ks_pvalue"] <= 1
        assert block["tarp_atc"] == block["tarp"]["uniform"]["atc"]["value"]
        assert block["coverage_curve"]["observed"][-1] == pytest.approx(1.0)
        by_truth = {s["label"]: s for s in block["stratified_coverage"] if s["by"] == "truth"}
        exclusive = ("truth = 0", "0 < truth < 1", "truth = 1")
        assert sum(by_truth[label]["n_pixels"] for label in exclusive) == metrics["n_pixels"]
        hist = block["rank_histogram"]
        assert sum(hist["n_maps"]) == metrics["n_maps"] and sum(hist["fraction"]) == pytest.approx(1.0)
    for name in BASELINES:
        check_estimate(metrics["baselines"][name]["mae"], 0, 1)
    for block in [*metrics["modes"].values(), *metrics["baselines"].values()]:
        assert sum(block["residuals"]["hist_counts"]) == metrics["n_pixels"]
        assert sum(block["residual_vs_truth"]["count"]) == metrics["n_pixels"]
        assert block["integrated"]["scatter"]["value"] >= 0


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
        "--baseline",
        str(root / "baseline.pt"),
        "--metrics",
        str(root / "out" / "metrics.json"),
        "--summaries",
        str(root / "out" / "summaries.h5"),
        "--samples",
        str(root / "out" / "samples.h5"),
    ]
    return root, {"args": args}


def run_evaluate(args: list[str], settings: dict) -> None:
    evaluate.main([*args, "--settings", json.dumps(settings)])


def test_metrics_and_summaries(evaluated) -> None:
    root, ctx = evaluated
    settings = {"evaluate": {"n_samples": 12, "seed": 0, "n_saved_samples": 5}, "maps": {"fov_rhalf": 4}}
    run_evaluate(ctx["args"], settings)
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    check_schema(metrics)
    assert metrics["noise_scale"] == json.loads((root / "noise_scale.json").read_text())["noise_scale"]
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
            assert h5[f"mean/{mode}"].dtype == np.float16 and h5[f"std/{mode}"].shape == h5["truth"].shape
            mean = h5[f"mean/{mode}"][()].astype(np.float64)
            weights = h5["map_weight"][()][:, None, None] * h5["mask"][()]
            weighted = (np.abs(mean - h5["truth"][()]) * weights).sum() / weights.sum()
            assert weighted == pytest.approx(metrics["modes"][mode]["mae"]["value"], abs=2e-3)  # float16 storage
            assert h5[f"examples/samples/{mode}"].shape[0] == h5["examples/index"].shape[0]
        assert h5["examples/conditions"].shape[1] == len(CHANNELS)
        # Physical units: log10 surface density of a galaxy, not a standardised value near 0.
        conditions = h5["examples/conditions"][()]
        example_mask = h5["mask"][()][h5["examples/index"][()]]
        assert conditions[:, 0][example_mask].min() > 3
        assert len(h5["subhalo_id"]) == n


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


def test_radial_profile_recovers_a_known_profile() -> None:
    rng = np.random.default_rng(0)
    radius = pixel_radius(16, 4.0)
    assert radius.min() == pytest.approx(np.hypot(0.125, 0.125))  # pixel centres, rhalf units
    mask = np.broadcast_to(radius < 2.0, (30, 16, 16)) & (rng.random((30, 16, 16)) < 0.9)
    truth = np.where(mask, np.clip(radius / 2.0, 0, 1) + rng.normal(0, 0.05, (30, 16, 16)), 0.0)
    profile = fit_radial_profile(truth, mask, 4.0)
    predicted = profile.predict(mask)
    assert np.all(predicted[~mask] == 0)
    np.testing.assert_allclose(predicted[mask], np.clip(radius / 2.0, 0, 1)[None].repeat(30, 0)[mask], atol=0.05)


def test_tiny_run_metrics_schema(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "results" / "evaluation" / "metrics.json").read_text())
    check_schema(metrics)
    assert metrics["n_samples"] == 10  # tests/config/tiny.yaml
    assert (tiny_run / "results" / "evaluation" / "summaries.h5").stat().st_size > 0
