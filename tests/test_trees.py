"""The gradient-boosted-tree baseline and the fitted-baselines container: features, weights, quantiles,
and the fit_baselines stage on the tiny run's real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exsitu.dataset import DatasetFiles
from exsitu.fitted_baselines import FittedBaselines, load_baselines
from exsitu.io import InputError
from exsitu.priors import map_weights
from exsitu.scalars import scalar_values
from exsitu.stages.fit_baselines import main as fit_main
from exsitu.trees import TreeFeatures, fit_trees


def results_of(run: Path) -> dict[str, list[str] | str]:
    res = run / "results"
    return {
        "maps": sorted(str(p) for p in (res / "maps").glob("shard_*.h5")),
        "split": str(res / "dataset" / "split.csv"),
        "stats": str(res / "dataset" / "normalisation.json"),
    }


def fit_on(run: Path, out: Path, *flags: str) -> FittedBaselines:
    files = results_of(run)
    fit_main(
        [
            "--maps", *files["maps"], "--split", files["split"], "--stats", files["stats"], "--out", str(out),
            "--settings", '{"conditions": {"scalars": ["log_mstar", "log_rhalf_kpc"]}}', *flags,
        ]
    )  # fmt: skip
    return load_baselines(out)


@pytest.fixture(scope="module")
def fitted(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FittedBaselines]:
    """The baselines fitted on the tiny run's training maps with each prior."""
    out = tmp_path_factory.mktemp("baselines")
    return {
        "natural": fit_on(tiny_run, out / "natural.joblib"),
        "balanced": fit_on(tiny_run, out / "balanced.joblib", "--weighting", "balanced"),
    }


def test_fit_and_predict_on_the_tiny_run(fitted, tiny_run: Path) -> None:
    baselines = fitted["natural"]
    data = DatasetFiles(**results_of(tiny_run))
    train, test = data.load("train"), data.load("test")
    mask = test.mask[:, 0].numpy()
    truth = test.exsitu[:, 0].numpy()
    assert baselines.scalars == ("log_mstar", "log_rhalf_kpc") and baselines.weighting == "natural"
    # Fewer training pixels than the cap: the balanced prior keeps them all, the natural one a pixel of a
    # galaxy with n lines of sight with probability 1 / n (one map's worth per galaxy).
    assert fitted["balanced"].n_pixels == int(train.mask.sum())
    expected = (
        map_weights(train.table["galaxy_id"].to_numpy(), "natural") * train.mask.sum(dim=(1, 2, 3)).numpy()
    ).sum()
    assert abs(baselines.n_pixels - expected) < 4 * np.sqrt(expected) and baselines.n_pixels < train.mask.sum()
    predicted = baselines.predict(test.conditions.numpy(), mask, scalar_values(test.table, baselines.scalars))
    assert set(predicted.point) == {"radial", "lookup", "trees"} and set(predicted.interval) == {"trees"}
    for name, maps in [*predicted.point.items(), *zip(("p16", "p84"), predicted.interval["trees"])]:
        assert maps.shape == mask.shape and maps.dtype == np.float32, name
        assert np.all((maps >= 0) & (maps <= 1)) and np.all(maps[~mask] == 0), name
    p16, p84 = predicted.interval["trees"]
    median = predicted.point["trees"]
    assert np.all((p16 <= median) & (median <= p84))
    # Real intervals, not a point (0.8997 on the exact-draw mock's tiny run, whose galaxies hold more pixels near
    # f_ex = 0, where an honest interval can be narrower than 0.01).
    assert np.mean((p84 - p16)[mask] > 0.01) > 0.85
    # Better than one number for every pixel (the training pixels' median), on held-out galaxies.
    constant = float(np.median(train.exsitu[train.mask].numpy()))
    weights = map_weights(test.table["galaxy_id"].to_numpy(), "natural")
    per_map = [np.abs(median[i] - truth[i])[mask[i]].mean() for i in range(len(mask))]
    per_map_constant = [np.abs(constant - truth[i])[mask[i]].mean() for i in range(len(mask))]
    assert np.average(per_map, weights=weights) < np.average(per_map_constant, weights=weights)


def test_the_prior_changes_every_fit(fitted, tiny_run: Path) -> None:
    val = DatasetFiles(**results_of(tiny_run)).load("val")
    args = (val.conditions.numpy(), val.mask[:, 0].numpy(), scalar_values(val.table, fitted["natural"].scalars))
    natural, balanced = (fitted[k].predict(*args).point for k in ("natural", "balanced"))
    # The balanced prior counts every line of sight: galaxies with several lines of sight weigh more.
    for name in ("trees", "lookup", "radial"):
        assert not np.array_equal(natural[name], balanced[name]), name


def test_weights_move_the_median_to_the_heavier_population() -> None:
    # Two populations with the same feature distribution and different ex-situ fractions: the median follows
    # the weight. Judged on new pixels, where the trees' chance splits on noise average out.
    rng = np.random.default_rng(0)
    inputs = TreeFeatures(("age", "metallicity"), (), 4.0)

    def pixels(n: int) -> np.ndarray:
        return np.column_stack([rng.normal(size=(n, 2)), rng.uniform(0, 2, n), np.zeros((n, 2))])

    features, new = pixels(4000), pixels(500)
    target = np.where(np.arange(len(features)) % 2, 0.8, 0.2)
    heavy_low = np.where(target == 0.2, 3.0, 1.0)
    low = fit_trees(features, target, heavy_low, inputs).predict_features(new)
    high = fit_trees(features, target, 4.0 - heavy_low, inputs).predict_features(new)
    np.testing.assert_array_equal(fit_trees(features, target, heavy_low, inputs).predict_features(new), low)  # seeded
    assert np.mean(np.abs(low[:, 0] - 0.2) < 0.05) > 0.9 and np.mean(np.abs(high[:, 0] - 0.8) < 0.05) > 0.9
    # Ordered quantiles; the 84% quantile of a 3:1 mixture of 0.2 and 0.8 is 0.8.
    assert np.all((low[:, 1] <= low[:, 0]) & (low[:, 0] <= low[:, 2]))
    assert np.median(low[:, 2]) == pytest.approx(0.8, abs=0.05)


def test_features_are_the_pixel_its_radius_the_scalars_and_mass_weighted_map_means() -> None:
    inputs = TreeFeatures(("mass", "dispersion", "age"), ("log_mstar",), 4.0)
    assert inputs.names == ("mass", "dispersion", "age", "radius_rhalf", "log_mstar", "map_mean_dispersion",
                            "map_mean_age")  # fmt: skip
    conditions = np.zeros((1, 3, 4, 4))
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 0, 0] = mask[0, 1, 1] = True
    conditions[0, :, 0, 0] = [9.0, 100.0, 2.0]  # log10 surface density 9: ten times the other pixel's mass
    conditions[0, :, 1, 1] = [8.0, 210.0, 13.0]
    features = inputs.features(conditions, mask, np.array([[10.7]]))
    assert features.shape == (2, 7)
    np.testing.assert_allclose(features[:, :3], [[9.0, 100.0, 2.0], [8.0, 210.0, 13.0]])
    np.testing.assert_allclose(features[:, 3], [np.hypot(1.5, 1.5), np.hypot(0.5, 0.5)])  # pixel centres in r_half
    np.testing.assert_allclose(features[:, 4], 10.7)
    np.testing.assert_allclose(features[:, 5:], [[110.0, 3.0]] * 2)  # (10 x + y) / 11
    # Without the mass channel the map means weigh every galaxy pixel the same; no age: no age mean.
    kinematic = TreeFeatures(("velocity", "dispersion"), (), 4.0)
    assert kinematic.names == ("velocity", "dispersion", "radius_rhalf", "map_mean_dispersion")
    np.testing.assert_allclose(kinematic.features(conditions[:, :2], mask, np.zeros((1, 0)))[:, -1], 155.0)
    with pytest.raises(InputError, match="scalars"):
        inputs.features(conditions, mask, np.zeros((1, 2)))


def test_a_file_that_is_not_fitted_baselines_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_baselines(tmp_path / "missing.joblib")
    junk = tmp_path / "junk.joblib"
    junk.write_text("not a pickle")
    with pytest.raises(InputError, match="junk.joblib: not a fitted baselines file"):
        load_baselines(junk)
    with pytest.raises(InputError, match="'plan.weighting' must be one of"):
        map_weights(np.arange(3), "uniform")
