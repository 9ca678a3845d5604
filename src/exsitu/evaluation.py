"""Calibrated test-set metrics of the posterior sampling modes and three baselines (stage ``evaluate``)
-> metrics.json, summaries.h5 and samples.h5.

Every test galaxy counts once: each map is weighted 1 / n_los of its galaxy, and every headline
number carries a 95% interval from a bootstrap over test galaxies (``exsitu.bootstrap``). Fractions
are dimensionless ex-situ stellar mass fractions in [0, 1].

metrics.json:

- ``n_maps``, ``n_pixels``, ``n_galaxies`` (test maps, their galaxy pixels, distinct galaxies);
  ``n_samples``, ``seed``; ``interval_level`` (0.95); ``weighting``; ``few_galaxies`` (true when
  fewer than 10 test galaxies back the intervals); ``exact_01_share``: share of galaxy pixels whose
  true fraction is exactly 0 or 1.
- ``modes.<mode>`` for ``reconstruction`` (z from the encoder given the truth, the lower bound),
  ``prior`` (z ~ N(0, 1)), ``flow`` (z from the conditional flow), each drawn from the full
  predictive, and ``flow_mean`` (flow z, decoder mean map per z: what the latent alone carries):
  - the point-estimate block below, for the posterior mean map;
  - ``mean_std``: mean posterior standard deviation per galaxy pixel (galaxy-weighted);
  - ``coverage``: {"0.1", ..., "0.9", "0.68", "0.95"} -> {value, low, high}: galaxy-weighted share
    of galaxy pixels whose truth lies in the central credible interval (randomized PIT);
  - ``coverage_curve``: {"nominal", "observed"} on 51 levels;
  - ``crps``: {value, low, high} per galaxy pixel;
  - ``tarp``: {"uniform", "posterior"} -> TARP of whole maps with uniform references and with a
    held-out posterior sample as reference: ``alpha``, ``ecp`` (+ band), ``atc`` {value, low,
    high}, ``ks_statistic``, ``ks_pvalue``; ``tarp_atc`` repeats the uniform ATC value;
  - ``stratified_coverage``: list of strata (by truth, stellar-mass tercile, r / r_half) with
    ``coverage`` {level: {value, low, high}}, ``n_pixels``, ``n_maps``, ``n_galaxies``;
  - ``rank_histogram``: SBC rank histogram of the galaxy-integrated fraction (``edges``,
    ``fraction``, ``n_maps``, ``ks_pvalue``).
- ``baselines.deterministic`` (condition encoder + decoder, no latent), ``baselines.radial``
  (training-set mean fraction vs r / r_half) and ``baselines.lookup`` (k-NN on each pixel's own
  observables and the galaxy's mass, no spatial context): the point-estimate block.
- Point-estimate block: ``mae`` {value, low, high}; ``residuals`` (prediction - truth on galaxy
  pixels, descriptive, unweighted, Fig. 3a: ``mean``, ``std``, ``median``, ``p16``, ``p84``,
  ``hist_edges``, ``hist_counts``); ``residual_vs_truth`` (Fig. 3b, per truth bin); ``integrated``
  (galaxy-integrated mass-weighted fraction per map, predicted minus true: ``mae``, ``bias``,
  ``scatter`` as {value, low, high}, and ``pearson_r``).

summaries.h5: ``truth``, ``mask`` (N, P, P); ``mean/<mode>``, ``std/<mode>`` (N, P, P) float16;
``baseline/<name>`` (N, P, P) float16; ``integrated/true`` and ``integrated/<mode or baseline>``
(N,); ``subhalo_id``, ``snapshot``, ``galaxy_id``, ``exsitu_total``, ``map_weight`` (N,);
``radial/radius`` [r_half], ``radial/exsitu``; ``examples/index`` (E,), ``examples/conditions``
(E, C, P, P) in physical units (attr ``channels``), ``examples/samples/<mode>`` (E, k, P, P).

samples.h5 (``evaluate.n_saved_samples`` = K > 0): the flow mode's posterior samples of every test
map, ``samples`` (N, K, P, P) float16, with ``truth`` (N, P, P) float16, ``mask`` (N, P, P) bool,
``subhalo_id``, ``snapshot``, ``galaxy_id`` (N,). It is written while sampling, chunk by chunk, and
renamed into place at the end. Size: N x K x P^2 x 2 bytes: 11.9 GB for the paper's 3637 test maps
at K = 100 and P = 128, which is why config/paper.yaml keeps K = 10.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from exsitu.bootstrap import MIN_GALAXIES, Estimate, GalaxyBootstrap, per_map_totals
from exsitu.calibration import (
    COVERAGE_LEVELS,
    crps,
    expected_coverage_curve,
    randomized_pit,
    rank_histogram,
    stratified_coverage,
    tarp_credibility,
    tarp_summary,
)
from exsitu.dataset import DatasetFiles, MapSet, channel_index, read_stats
from exsitu.io import atomic_output
from exsitu.lookup import fit_pixel_lookup, log_stellar_mass
from exsitu.radial import fit_radial_profile
from exsitu.sample import MAPS_PER_CALL, MODES, decode_batch, posterior_samples, predict_baseline
from exsitu.settings import EvaluateSettings

log = logging.getLogger(__name__)

N_EXAMPLES = 4
EXAMPLE_SAMPLES = 3
TRUTH_BINS = np.linspace(0.0, 1.0, 11)
RESIDUAL_BINS = np.linspace(-1.0, 1.0, 81)
#: (name in metrics.json, sampling mode, predictive) of every posterior that is evaluated.
POSTERIORS: tuple[tuple[str, str, str], ...] = (
    *((mode, mode, "full") for mode in MODES),
    ("flow_mean", "flow", "mean"),
)
BOOTSTRAP_REPLICATES = 1000


def _quantiles(values: np.ndarray) -> dict[str, float]:
    p16, median, p84 = np.percentile(values, [16, 50, 84])
    return {"median": float(median), "p16": float(p16), "p84": float(p84)}


def integrated_fraction(maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Galaxy-integrated mass-weighted ex-situ fraction of maps (N, ..., P, P); weights (N, P, P) [Msun/kpc^2]."""
    w = weights.reshape(weights.shape[0], *([1] * (maps.ndim - 3)), *weights.shape[1:])
    return (maps * w).sum(axis=(-2, -1)) / w.sum(axis=(-2, -1))


def _to_dict(e: Estimate) -> dict[str, float]:
    return e.to_dict()


def point_metrics(
    prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray, weights: np.ndarray, boot: GalaxyBootstrap
) -> dict[str, Any]:
    """The point-estimate block of metrics.json for predicted maps (N, P, P) against the truth."""
    residual = (prediction - truth)[mask]
    map_index = np.nonzero(mask)[0]
    n_maps = len(truth)
    pixels = np.bincount(map_index, minlength=n_maps).astype(np.float64)
    abs_sum = np.bincount(map_index, weights=np.abs(residual), minlength=n_maps)
    hist, _ = np.histogram(np.clip(residual, -1, 1), RESIDUAL_BINS)
    which = np.digitize(truth[mask], TRUTH_BINS[1:-1])
    binned: dict[str, list] = {
        "edges": TRUTH_BINS.tolist(),
        "count": [],
        "mean": [],
        "median": [],
        "p16": [],
        "p84": [],
    }
    for b in range(len(TRUTH_BINS) - 1):
        in_bin = residual[which == b]
        binned["count"].append(int(in_bin.size))
        stats = (
            {"mean": float(in_bin.mean()), **_quantiles(in_bin)}
            if in_bin.size
            else dict.fromkeys(("mean", "median", "p16", "p84"))
        )
        for key, value in stats.items():
            binned[key].append(value)
    predicted, true = integrated_fraction(prediction, weights), integrated_fraction(truth, weights)
    delta = predicted - true
    ones = np.ones(n_maps)
    scatter = boot.statistic(lambda n, s1, s2: np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0)), ones, delta, delta**2)

    def pearson(n, x, y, xx, yy, xy):  # weighted totals, each (1 + replicates,)
        cov = xy / n - x * y / n**2
        return cov / np.sqrt((xx / n - (x / n) ** 2) * (yy / n - (y / n) ** 2))

    r = boot.statistic(pearson, ones, predicted, true, predicted**2, true**2, predicted * true)
    return {
        "mae": _to_dict(boot.ratio(abs_sum, pixels)),
        "residuals": {
            "mean": float(residual.mean()),
            "std": float(residual.std()),
            **_quantiles(residual),
            "hist_edges": RESIDUAL_BINS.tolist(),
            "hist_counts": hist.tolist(),
        },
        "residual_vs_truth": binned,
        "integrated": {
            "mae": _to_dict(boot.mean(np.abs(delta))),
            "bias": _to_dict(boot.mean(delta)),
            "scatter": _to_dict(scatter),
            "pearson_r": _to_dict(r) if true.std() > 0 else None,
        },
    }


@dataclass
class PosteriorAccumulator:
    """Per-chunk statistics of one posterior, gathered so that no (N, K, P, P) array is held."""

    mean: list[np.ndarray] = field(default_factory=list)
    std: list[np.ndarray] = field(default_factory=list)
    pit: list[np.ndarray] = field(default_factory=list)
    crps: list[np.ndarray] = field(default_factory=list)
    tarp: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"uniform": [], "posterior": []})
    integrated_pit: list[np.ndarray] = field(default_factory=list)

    def add(
        self, samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, weights: np.ndarray, rng: np.random.Generator
    ) -> None:
        """Summarise samples (n, K, P, P) of n maps with their truth, mask and mass weights (n, P, P)."""
        self.mean.append(samples.mean(axis=1))
        self.std.append(samples.std(axis=1))
        pixels = np.moveaxis(samples, 1, -1)[mask]  # (galaxy pixels, K)
        self.pit.append(randomized_pit(pixels, truth[mask], rng).astype(np.float32))
        self.crps.append(crps(pixels, truth[mask]))
        for reference, values in self.tarp.items():
            values.append(tarp_credibility(samples, truth, rng, reference=reference, mask=mask))
        sampled = integrated_fraction(samples, weights)  # (n, K)
        self.integrated_pit.append(randomized_pit(sampled, integrated_fraction(truth, weights), rng))

    def metrics(self, truth: np.ndarray, mask: np.ndarray, weights: np.ndarray, context: dict) -> dict[str, Any]:
        """The mode's block of metrics.json (``context``: bootstrap, log_mstar, fov_rhalf)."""
        boot: GalaxyBootstrap = context["bootstrap"]
        mean, std, pit = np.concatenate(self.mean), np.concatenate(self.std), np.concatenate(self.pit)
        map_index = np.nonzero(mask)[0]
        n_maps = len(truth)
        pixels = np.bincount(map_index, minlength=n_maps).astype(np.float64)
        half_width = np.abs(pit.astype(np.float64) - 0.5)
        hits = np.stack(
            [np.bincount(map_index, weights=half_width <= level / 2, minlength=n_maps) for level in COVERAGE_LEVELS], 1
        )
        coverage = boot.ratio(hits, pixels)
        weights_px = boot.map_weights[map_index]
        nominal, _ = expected_coverage_curve(pit)
        observed = [float(np.sum(weights_px * (half_width <= a / 2)) / weights_px.sum()) for a in nominal]
        tarp = {ref: tarp_summary(np.concatenate(v), boot).to_dict() for ref, v in self.tarp.items()}
        strata = stratified_coverage(
            pit, truth, mask, context["log_mstar"], boot, fov_rhalf=context["fov_rhalf"], levels=(0.68, 0.95)
        )
        return {
            **point_metrics(mean, truth, mask, weights, boot),
            "mean_std": _to_dict(boot.ratio(per_map_totals(std[mask], map_index, n_maps), pixels)),
            "coverage": {f"{level:g}": _to_dict(e) for level, e in zip(COVERAGE_LEVELS, coverage)},
            "coverage_curve": {"nominal": nominal.tolist(), "observed": observed},
            "crps": _to_dict(boot.ratio(per_map_totals(np.concatenate(self.crps), map_index, n_maps), pixels)),
            "tarp": tarp,
            "tarp_atc": tarp["uniform"]["atc"]["value"],
            "stratified_coverage": [s.to_dict() for s in strata],
            "rank_histogram": rank_histogram(np.concatenate(self.integrated_pit), boot).to_dict(),
        }


def physical_conditions(test: MapSet, mean: np.ndarray, std: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Condition maps (len(index), C, P, P) back in physical units, 0 outside the galaxy.

    ``mean``, ``std``: the normalisation statistics (C,) of the test set's channels."""
    cond = test.conditions[index].numpy()
    mask = test.mask[index].numpy()
    return np.where(mask, cond * std[None, :, None, None] + mean[None, :, None, None], 0.0).astype(np.float32)


def example_indices(exsitu_total: np.ndarray, n: int = N_EXAMPLES) -> np.ndarray:
    """Test maps at evenly spaced quantiles of the total ex-situ fraction, for Fig. 2."""
    order = np.argsort(exsitu_total, kind="stable")
    return np.unique(order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)])


def _map_log_mstar(maps: MapSet) -> np.ndarray:
    """log10 M* [Msun] inside each map's field of view (the lookup's and the mass terciles' galaxy mass)."""
    return log_stellar_mass(maps.log_sigma, maps.mask[:, 0].numpy(), maps.table["fov_kpc"].to_numpy())


def _json_ready(value: Any) -> Any:
    """NaN and inf (empty strata, undefined correlations) become null: metrics.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def evaluate(
    data: DatasetFiles,
    models: Mapping[str, torch.nn.Module],
    settings: EvaluateSettings,
    fov_rhalf: float,
    samples_path: str | os.PathLike | None = None,
    noise_scale: float = 1.0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate the trained ``models`` (keys cvae, flow, baseline; all on one device) on the test set.

    ``fov_rhalf`` is the maps' field of view in half-mass radii (config ``maps.fov_rhalf``), for
    the radial baseline and the radius strata. With ``samples_path`` and ``settings.n_saved_samples``
    > 0 the flow posterior samples are written there (samples.h5, atomically). ``noise_scale`` is the
    recalibrated factor on the decoder's residual std (``exsitu.recalibration``), applied in every
    posterior. Returns (metrics, arrays for summaries.h5), see the module doc.
    """
    n_samples, seed = settings.n_samples, settings.seed
    cvae, flow, baseline = models["cvae"], models["flow"], models["baseline"]
    device = next(cvae.parameters()).device
    test = data.load("test")
    train = data.load("train")

    truth = test.exsitu[:, 0].numpy()
    mask = test.mask[:, 0].numpy()
    # Pixels have equal area within a map, so surface densities are the mass weights.
    weights = np.where(mask, 10.0 ** test.log_sigma.astype(np.float64), 0.0)
    boot = GalaxyBootstrap(test.table["galaxy_id"].to_numpy(), n_replicates=BOOTSTRAP_REPLICATES, seed=seed)
    context = {"bootstrap": boot, "log_mstar": _map_log_mstar(test), "fov_rhalf": fov_rhalf}
    examples = example_indices(test.table["exsitu_total"].to_numpy())

    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    accumulators = {name: PosteriorAccumulator() for name, _, _ in POSTERIORS}
    example_samples: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in POSTERIORS}
    keep = settings.n_saved_samples if samples_path is not None else 0
    with ExitStack() as files:
        saved = files.enter_context(_SamplesFile(samples_path, test, min(keep, n_samples))) if keep else None
        for name, mode, predictive in POSTERIORS:
            # Each posterior starts from the seed, so exsitu predict reproduces the flow samples of given maps.
            generator.manual_seed(seed)
            for start in range(0, len(test), MAPS_PER_CALL):
                stop = min(len(test), start + MAPS_PER_CALL)
                samples = posterior_samples(
                    cvae, test.conditions[start:stop], n_samples, mode,
                    exsitu=test.exsitu[start:stop] if mode == "reconstruction" else None,
                    flow=flow if mode == "flow" else None, predictive=predictive, noise_scale=noise_scale,
                    batch_size=decode_batch(device), generator=generator,
                ).numpy()  # fmt: skip
                accumulators[name].add(samples, truth[start:stop], mask[start:stop], weights[start:stop], rng)
                mine = examples[(examples >= start) & (examples < stop)] - start
                example_samples[name].append(samples[mine, :EXAMPLE_SAMPLES])
                if saved is not None and name == "flow":
                    saved.write(start, samples)
            log.info("posterior %s: %d maps x %d samples done", name, len(test), n_samples)

    deterministic = predict_baseline(baseline, test.conditions).numpy()
    train_mask = train.mask[:, 0].numpy()
    profile = fit_radial_profile(train.exsitu[:, 0].numpy(), train_mask, fov_rhalf)
    radial = profile.predict(mask)
    lookup = fit_pixel_lookup(
        train.conditions.numpy(), train.exsitu[:, 0].numpy(), train_mask, _map_log_mstar(train), seed=seed
    ).predict(test.conditions.numpy(), mask, context["log_mstar"], workers=-1)
    baselines = {"deterministic": deterministic, "radial": radial, "lookup": lookup}

    exact = (truth[mask] == 0) | (truth[mask] == 1)
    metrics: dict[str, Any] = {
        "n_maps": int(len(test)),
        "n_pixels": int(mask.sum()),
        "n_galaxies": boot.n_galaxies,
        "n_samples": n_samples,
        "seed": seed,
        "noise_scale": noise_scale,
        "interval_level": boot.level,
        "weighting": "each test galaxy counts once: maps weighted 1 / n_los; intervals from a galaxy bootstrap",
        "few_galaxies": boot.n_galaxies < MIN_GALAXIES,
        "exact_01_share": float(exact.mean()),
        "channels": list(test.channels),
        "modes": {name: acc.metrics(truth, mask, weights, context) for name, acc in accumulators.items()},
        "baselines": {name: point_metrics(pred, truth, mask, weights, boot) for name, pred in baselines.items()},
    }
    mean_c, std_c = read_stats(data.stats)
    channel_pos = channel_index(test.channels)
    arrays: dict[str, np.ndarray] = {
        "truth": truth.astype(np.float16),
        "mask": mask,
        "map_weight": boot.map_weights,
        "integrated/true": integrated_fraction(truth, weights),
        "radial/radius": profile.radius,
        "radial/exsitu": profile.exsitu,
        "examples/index": examples,
        "examples/conditions": physical_conditions(test, mean_c[channel_pos], std_c[channel_pos], examples),
    }
    for name, prediction in baselines.items():
        arrays[f"baseline/{name}"] = prediction.astype(np.float16)
        arrays[f"integrated/{name}"] = integrated_fraction(prediction, weights)
    for column in ("subhalo_id", "snapshot", "galaxy_id", "exsitu_total"):
        arrays[column] = test.table[column].to_numpy()
    for name, acc in accumulators.items():
        mean = np.concatenate(acc.mean)
        arrays[f"mean/{name}"] = mean.astype(np.float16)
        arrays[f"std/{name}"] = np.concatenate(acc.std).astype(np.float16)
        arrays[f"integrated/{name}"] = integrated_fraction(mean, weights)
        arrays[f"examples/samples/{name}"] = np.concatenate(example_samples[name]).astype(np.float16)
    return _json_ready(metrics), arrays


class _SamplesFile:
    """samples.h5 written chunk by chunk into a temporary file, renamed into place on success."""

    def __init__(self, path: str | os.PathLike, test: MapSet, k: int) -> None:
        self.path, self.test, self.k = path, test, k

    def __enter__(self) -> _SamplesFile:
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        self.h5 = h5py.File(tmp, "w")
        n, p = len(self.test), self.test.mask.shape[-1]
        self.samples = self.h5.create_dataset(
            "samples", shape=(n, self.k, p, p), dtype=np.float16, chunks=(1, self.k, p, p), compression="gzip"
        )
        self.h5["samples"].attrs["description"] = "flow-mode posterior samples of the ex-situ fraction per test map"
        self.h5.create_dataset("truth", data=self.test.exsitu[:, 0].numpy().astype(np.float16), compression="gzip")
        self.h5.create_dataset("mask", data=self.test.mask[:, 0].numpy(), compression="gzip")
        for column in ("subhalo_id", "snapshot", "galaxy_id"):
            self.h5.create_dataset(column, data=self.test.table[column].to_numpy())
        return self

    def write(self, start: int, samples: np.ndarray) -> None:
        self.samples[start : start + len(samples)] = samples[:, : self.k].astype(np.float16)

    def __exit__(self, *exc: Any) -> None:
        self.h5.close()
        self._atomic.__exit__(*exc)


def write_outputs(metrics: dict[str, Any], arrays: dict[str, np.ndarray], metrics_json: str, summaries_h5: str) -> None:
    """Write metrics.json and summaries.h5 (each atomically)."""
    with atomic_output(summaries_h5) as tmp, h5py.File(tmp, "w") as h5:
        for name, value in arrays.items():
            h5.create_dataset(name, data=value, compression="gzip" if value.ndim >= 2 else None)
        h5["examples/conditions"].attrs["channels"] = metrics["channels"]
    with atomic_output(metrics_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False))
    for name, m in metrics["modes"].items():
        log.info(
            "%s: MAE %.4f, coverage68 %.3f, CRPS %.4f, ATC uniform %.3f, ATC posterior %.3f",
            name, m["mae"]["value"], m["coverage"]["0.68"]["value"], m["crps"]["value"],
            m["tarp"]["uniform"]["atc"]["value"], m["tarp"]["posterior"]["atc"]["value"],
        )  # fmt: skip
    log.info(
        "baselines MAE: %s",
        ", ".join(f"{name} {b['mae']['value']:.4f}" for name, b in metrics["baselines"].items()),
    )
