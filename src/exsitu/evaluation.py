"""Calibrated test-set metrics of the three posterior sampling modes and the two baselines
(stage ``evaluate``) -> metrics.json + per-map summaries.h5.

metrics.json schema (fractions are dimensionless ex-situ mass fractions in [0, 1]):

- ``n_maps``, ``n_pixels``: test maps and their galaxy pixels (inside ``mask``);
  ``n_samples``, ``seed``: posterior samples per map and the sampling seed.
- ``modes.<mode>`` for mode in ``reconstruction`` (z from the encoder given the truth, the
  lower bound), ``prior`` (z ~ N(0, 1)), ``flow`` (z from the conditional flow):
  - ``mae``: mean absolute residual per galaxy pixel of the posterior mean;
  - ``mean_std``: mean posterior standard deviation per galaxy pixel;
  - ``coverage``: {"0.1", ..., "0.9", "0.68", "0.95"} -> observed fraction of galaxy pixels
    whose truth lies in the central credible interval of that level (randomized PIT, so
    ties at 0 are handled);
  - ``coverage_curve``: {"nominal": [...], "observed": [...]} on 51 levels in [0, 1];
  - ``crps``: mean CRPS per galaxy pixel;
  - ``tarp_atc``: TARP area (2 * integral over a in [0.5, 1] of ECP - a; 0 calibrated,
    < 0 too narrow), with ``tarp`` = {"alpha": [...], "ecp": [...]} on whole flattened maps;
  - plus the point-estimate block below, for the posterior mean.
- ``baselines.deterministic`` (same condition encoder + decoder, no latent) and
  ``baselines.radial`` (training-set mean fraction vs r / rhalf): the point-estimate block.
- Point-estimate block: ``mae``; ``residuals`` (prediction - truth on galaxy pixels, Fig. 3a:
  ``mean``, ``std``, ``median``, ``p16``, ``p84``, ``hist_edges``, ``hist_counts``);
  ``residual_vs_truth`` (Fig. 3b: truth bins ``edges`` and per bin ``count``, ``mean``,
  ``median``, ``p16``, ``p84`` of the residual; null where a bin is empty);
  ``integrated`` (galaxy-integrated mass-weighted fraction, predicted vs true per map:
  ``mae``, ``bias``, ``scatter`` = std of predicted - true, ``pearson_r``).

summaries.h5: ``truth``, ``mask`` (N, P, P); ``mean/<mode>``, ``std/<mode>`` (N, P, P) float16;
``baseline/deterministic``, ``baseline/radial`` (N, P, P) float16; ``integrated/true`` and
``integrated/<mode or baseline>`` (N,); ``subhalo_id``, ``snapshot``, ``galaxy_id``,
``exsitu_total`` (N,); ``radial/radius`` [rhalf], ``radial/exsitu``; ``examples/index`` (E,),
``examples/conditions`` (E, C, P, P) in physical units (attr ``channels``) and
``examples/samples/<mode>`` (E, k, P, P) for the report's Fig. 2.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from exsitu.calibration import (
    COVERAGE_LEVELS,
    central_coverage,
    crps,
    expected_coverage_curve,
    randomized_pit,
    tarp_curve,
    tarp_ranks,
)
from exsitu.contracts import CHANNELS
from exsitu.dataset import DatasetFiles, MapSet, read_stats
from exsitu.io import atomic_output
from exsitu.radial import fit_radial_profile
from exsitu.sample import MODES, posterior_samples, predict_baseline
from exsitu.settings import EvaluateSettings

log = logging.getLogger(__name__)

N_EXAMPLES = 4
EXAMPLE_SAMPLES = 3
TRUTH_BINS = np.linspace(0.0, 1.0, 11)
RESIDUAL_BINS = np.linspace(-1.0, 1.0, 81)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    p16, median, p84 = np.percentile(values, [16, 50, 84])
    return {"median": float(median), "p16": float(p16), "p84": float(p84)}


def integrated_fraction(maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Galaxy-integrated mass-weighted ex-situ fraction of maps (N, ..., P, P); weights (N, P, P)."""
    w = weights.reshape(weights.shape[0], *([1] * (maps.ndim - 3)), *weights.shape[1:])
    return (maps * w).sum(axis=(-2, -1)) / w.sum(axis=(-2, -1))


def point_metrics(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """The point-estimate block of metrics.json for predicted maps (N, P, P) against the truth."""
    residual = (prediction - truth)[mask]
    true_pix = truth[mask]
    hist, _ = np.histogram(np.clip(residual, -1, 1), RESIDUAL_BINS)
    which = np.digitize(true_pix, TRUTH_BINS[1:-1])
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
    return {
        "mae": float(np.abs(residual).mean()),
        "residuals": {
            "mean": float(residual.mean()),
            "std": float(residual.std()),
            **_quantiles(residual),
            "hist_edges": RESIDUAL_BINS.tolist(),
            "hist_counts": hist.tolist(),
        },
        "residual_vs_truth": binned,
        "integrated": {
            "mae": float(np.abs(delta).mean()),
            "bias": float(delta.mean()),
            "scatter": float(delta.std()),
            "pearson_r": float(np.corrcoef(predicted, true)[0, 1]) if len(true) > 1 and true.std() > 0 else None,
        },
    }


@dataclass
class ModeAccumulator:
    """Per-chunk statistics of one sampling mode, gathered so that no (N, K, P, P) array is held."""

    mean: list[np.ndarray] = field(default_factory=list)
    std: list[np.ndarray] = field(default_factory=list)
    pit: list[np.ndarray] = field(default_factory=list)
    crps: list[np.ndarray] = field(default_factory=list)
    tarp: list[np.ndarray] = field(default_factory=list)

    def add(self, samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
        self.mean.append(samples.mean(axis=1))
        self.std.append(samples.std(axis=1))
        pixels = np.moveaxis(samples, 1, -1)[mask]  # (galaxy pixels, K)
        self.pit.append(randomized_pit(pixels, truth[mask], rng))
        self.crps.append(crps(pixels, truth[mask]))
        self.tarp.append(tarp_ranks(samples.reshape(*samples.shape[:2], -1), truth.reshape(len(truth), -1), rng))

    def metrics(self, truth: np.ndarray, mask: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
        mean, std, pit = np.concatenate(self.mean), np.concatenate(self.std), np.concatenate(self.pit)
        nominal, observed = expected_coverage_curve(pit)
        alpha, ecp, atc = tarp_curve(np.concatenate(self.tarp))
        return {
            **point_metrics(mean, truth, mask, weights),
            "mean_std": float(std[mask].mean()),
            "coverage": {f"{level:g}": float(v) for level, v in zip(COVERAGE_LEVELS, central_coverage(pit))},
            "coverage_curve": {"nominal": nominal.tolist(), "observed": observed.tolist()},
            "crps": float(np.concatenate(self.crps).mean()),
            "tarp_atc": atc,
            "tarp": {"alpha": alpha.tolist(), "ecp": ecp.tolist()},
        }


def physical_conditions(test: MapSet, mean: np.ndarray, std: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Condition maps (len(index), C, P, P) back in physical units, 0 outside the galaxy.

    ``mean``, ``std``: the per-channel normalisation statistics (C,) of ``read_stats``."""
    cond = test.conditions[index].numpy()
    mask = test.mask[index].numpy()
    return np.where(mask, cond * std[None, :, None, None] + mean[None, :, None, None], 0.0).astype(np.float32)


def example_indices(exsitu_total: np.ndarray, n: int = N_EXAMPLES) -> np.ndarray:
    """Test maps at evenly spaced quantiles of the total ex-situ fraction, for Fig. 2."""
    order = np.argsort(exsitu_total, kind="stable")
    return np.unique(order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)])


def evaluate(
    data: DatasetFiles, models: Mapping[str, torch.nn.Module], settings: EvaluateSettings, fov_rhalf: float
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate the trained ``models`` (keys cvae, flow, baseline; all on one device) on the test set.

    ``fov_rhalf`` is the maps' field of view in half-mass radii (config ``maps.fov_rhalf``), for
    the radial-profile baseline. Returns (metrics, arrays for summaries.h5), see the module doc.
    """
    n_samples, seed = settings.n_samples, settings.seed
    cvae, flow, baseline = models["cvae"], models["flow"], models["baseline"]
    device = next(cvae.parameters()).device
    test = data.load("test")
    train = data.load("train")

    truth = test.exsitu[:, 0].numpy()
    mask = test.mask[:, 0].numpy()
    # Pixels have equal area within a map, so surface densities are the mass weights.
    centre, scale = read_stats(data.stats)
    mass = CHANNELS.index("mass")
    log_sigma = test.conditions[:, mass].numpy().astype(np.float64) * scale[mass] + centre[mass]
    weights = np.where(mask, 10.0**log_sigma, 0.0)
    examples = example_indices(test.table["exsitu_total"].to_numpy())

    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    accumulators = {mode: ModeAccumulator() for mode in MODES}
    example_samples: dict[str, np.ndarray] = {}
    chunk = 64  # maps per sampling call: bounds memory at chunk * K * P^2 floats
    # (map, sample) pairs per decoder pass; the sampler's default of 64 ran ~3x slower on CPU.
    decode_batch = 2048 if device.type == "cuda" else 512
    for mode in MODES:
        for start in range(0, len(test), chunk):
            stop = min(len(test), start + chunk)
            samples = posterior_samples(
                cvae,
                test.conditions[start:stop],
                n_samples,
                mode,
                exsitu=test.exsitu[start:stop] if mode == "reconstruction" else None,
                flow=flow if mode == "flow" else None,
                batch_size=decode_batch,
                generator=generator,
            ).numpy()
            accumulators[mode].add(samples, truth[start:stop], mask[start:stop], rng)
            mine = examples[(examples >= start) & (examples < stop)] - start
            example_samples.setdefault(mode, np.zeros((0, EXAMPLE_SAMPLES, *truth.shape[1:]), np.float32))
            example_samples[mode] = np.concatenate([example_samples[mode], samples[mine, :EXAMPLE_SAMPLES]])
        log.info("mode %s: %d maps x %d samples done", mode, len(test), n_samples)

    deterministic = predict_baseline(baseline, test.conditions).numpy()
    profile = fit_radial_profile(train.exsitu[:, 0].numpy(), train.mask[:, 0].numpy(), fov_rhalf)
    radial = profile.predict(mask)

    metrics: dict[str, Any] = {
        "n_maps": int(len(test)),
        "n_pixels": int(mask.sum()),
        "n_samples": n_samples,
        "seed": seed,
        "modes": {mode: acc.metrics(truth, mask, weights) for mode, acc in accumulators.items()},
        "baselines": {
            "deterministic": point_metrics(deterministic, truth, mask, weights),
            "radial": point_metrics(radial, truth, mask, weights),
        },
    }
    arrays: dict[str, np.ndarray] = {
        "truth": truth.astype(np.float16),
        "mask": mask,
        "baseline/deterministic": deterministic.astype(np.float16),
        "baseline/radial": radial.astype(np.float16),
        "integrated/true": integrated_fraction(truth, weights),
        "integrated/deterministic": integrated_fraction(deterministic, weights),
        "integrated/radial": integrated_fraction(radial, weights),
        "radial/radius": profile.radius,
        "radial/exsitu": profile.exsitu,
        "examples/index": examples,
        "examples/conditions": physical_conditions(test, centre, scale, examples),
    }
    for column in ("subhalo_id", "snapshot", "galaxy_id", "exsitu_total"):
        arrays[column] = test.table[column].to_numpy()
    for mode, acc in accumulators.items():
        mean = np.concatenate(acc.mean)
        arrays[f"mean/{mode}"] = mean.astype(np.float16)
        arrays[f"std/{mode}"] = np.concatenate(acc.std).astype(np.float16)
        arrays[f"integrated/{mode}"] = integrated_fraction(mean, weights)
        arrays[f"examples/samples/{mode}"] = example_samples[mode].astype(np.float16)
    return metrics, arrays


def write_outputs(metrics: dict[str, Any], arrays: dict[str, np.ndarray], metrics_json: str, summaries_h5: str) -> None:
    """Write metrics.json and summaries.h5 (each atomically)."""
    with atomic_output(summaries_h5) as tmp, h5py.File(tmp, "w") as h5:
        for name, value in arrays.items():
            h5.create_dataset(name, data=value, compression="gzip" if value.ndim >= 2 else None)
        h5["examples/conditions"].attrs["channels"] = list(CHANNELS)
    with atomic_output(metrics_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    for mode, m in metrics["modes"].items():
        log.info(
            "%s: MAE %.4f, coverage68 %.3f, CRPS %.4f, ATC %.3f",
            mode, m["mae"], m["coverage"]["0.68"], m["crps"], m["tarp_atc"],
        )  # fmt: skip
    log.info(
        "baselines: deterministic MAE %.4f, radial MAE %.4f",
        metrics["baselines"]["deterministic"]["mae"], metrics["baselines"]["radial"]["mae"],
    )  # fmt: skip
