"""Calibrated test-set metrics of the posteriors and of every baseline (stage ``evaluate``)
-> metrics.json, summaries.h5 and samples.h5.

Three steps: :func:`read_inputs` gathers what the evaluation needs (:class:`EvaluationInputs`),
:func:`compute` streams the test maps chunk by chunk, samples every posterior and scores every
baseline's predictions of them (made before, by ``predict_baselines``: ``exsitu.baseline_maps``), and
keeps per-map statistics only (``exsitu.posterior_stats``,
``exsitu.point_metrics``; the per-map maps go to summaries.h5 and the samples to samples.h5 as they
are made), and :func:`summarise` turns them into metrics.json. Memory is bounded by a chunk
(:data:`CHUNK_ELEMENTS`), not by the number of test maps.

Every test galaxy counts once: each map is weighted 1 / n_los of its galaxy, and every headline
number carries a 95% interval from a bootstrap over test galaxies (``exsitu.bootstrap``); ratios of
two methods use a paired bootstrap (the same galaxies in both). Fractions are dimensionless ex-situ
stellar mass fractions in [0, 1]. Every method is scored with its median: the per-pixel posterior
median for the posteriors, the median prediction of each baseline (the deterministic U-net's is
the sigmoid of its mean logit, the median of its logit likelihood); posterior means are reported too.

metrics.json:

- ``n_maps``, ``n_pixels``, ``n_galaxies``, ``n_samples``, ``seed``, ``interval_level`` (0.95),
  ``weighting`` (how maps are weighted), ``training_prior`` (``plan.weighting`` the models were
  trained with), ``flow_context`` (``flow.context``: what the flow is conditioned on), ``few_galaxies``
  (fewer than 10 test galaxies back the intervals), ``exact_01_share``
  (galaxy pixels whose true fraction is exactly 0 or 1), ``channels``, ``scalars``, ``noise`` (the
  recalibrated scales applied to every posterior), ``likelihood`` (family, degrees of freedom, clip),
  ``apertures`` (name -> radius in half-mass radii, null: the whole field), ``profile_edges``,
  ``mass_bins``;
- ``modes.<posterior>`` for ``reconstruction`` (z from the encoder given the truth, the lower
  bound), ``prior`` (z ~ N(0, 1)), ``flow`` (z from the conditional flow), each drawn from the full
  predictive, and ``flow_mean`` (flow z, the decoder's mean map per z: what the latent alone
  carries): the block of :meth:`exsitu.posterior_stats.PosteriorTally.summary`;
- ``baselines.<name>`` for ``deterministic`` (the U-net: condition encoder and decoder without a
  latent), ``radial`` (the training-set median against r / r_half), ``lookup`` (k-NN on each pixel's
  observables and the galaxy scalars) and ``trees`` (gradient-boosted trees on each pixel with galaxy
  context, ``exsitu.trees``): the point-estimate block of ``exsitu.point_metrics``; the trees also
  ``coverage_68`` of their 16-84% quantile interval;
- ``comparisons``: ratios with paired-bootstrap intervals, per-pixel MAE (posterior median) of the
  flow over each baseline and over the prior, reconstruction over flow, and the RMS of the
  integrated fraction of the flow over each baseline per aperture.

summaries.h5 (one row per test map): ``truth``, ``mask`` (N, P, P); ``median/<posterior>``,
``mean/<posterior>``, ``std/<posterior>`` and ``baseline/<name>`` (N, P, P) float16;
``functionals/true/<name>`` (N,) and ``functionals/<posterior>/<name>`` (N, 3: p16, p50, p84);
``integrated/<method>/<aperture>`` (N,) the point estimates; ``subhalo_id``, ``snapshot``,
``galaxy_id``, ``exsitu_total``, ``log_mstar``, ``map_weight`` (N,); ``radial/radius`` [r_half],
``radial/exsitu`` (the radial baseline); ``examples/index`` (E,), ``examples/conditions`` (E, C, P, P)
in physical units (attr ``channels``), ``examples/samples/<posterior>`` (E, k, P, P).

samples.h5 (``evaluate.n_saved_samples`` = K > 0): the flow posterior's samples of every test map,
``samples`` (N, K, P, P) float16, with ``truth`` (N, P, P) float16, ``mask`` (N, P, P) bool,
``subhalo_id``, ``snapshot``, ``galaxy_id`` (N,). Size: N x K x P^2 x 2 bytes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from exsitu.baseline_maps import BASELINES, BaselineMaps
from exsitu.bootstrap import MIN_GALAXIES, GalaxyBootstrap, galaxy_weights
from exsitu.calibration import map_generators
from exsitu.cvae import CVAE
from exsitu.dataset import DatasetFiles, MapSet, channel_index, read_stats
from exsitu.flow import LatentFlow
from exsitu.functionals import APERTURES, PROFILE_EDGES, functional_names, integrated_fractions, map_functionals
from exsitu.hdf5_rows import Hdf5Rows
from exsitu.io import atomic_output
from exsitu.likelihood import NoiseScales
from exsitu.point_metrics import MASS_BINS, PointTally, paired_ratio, rms_ratio
from exsitu.posterior_stats import PosteriorTally
from exsitu.sample import MODES, maps_in_budget, predictives_in_chunks
from exsitu.settings import EvaluateSettings

log = logging.getLogger(__name__)

N_EXAMPLES = 4
EXAMPLE_SAMPLES = 3
#: (name in metrics.json, sampling mode, predictive) of every posterior that is evaluated.
POSTERIORS: tuple[tuple[str, str, str], ...] = (
    *((mode, mode, "full") for mode in MODES),
    ("flow_mean", "flow", "mean"),
)
BOOTSTRAP_REPLICATES = 1000
#: Floats of one chunk's samples (maps x samples x pixels): 16 MB as float32, whatever the map size. No figure
#: depends on it (:func:`compute`); on the 2-core development CPU the default run's evaluate took 65.0-65.7 s in
#: chunks of 16 MB against 67.3-69.1 s in chunks of 64 MB.
CHUNK_ELEMENTS = 2**22


def predictives_of(mode: str) -> list[str]:
    """The predictives of ``POSTERIORS`` drawn in sampling ``mode``: one decoding of its latents serves them all."""
    return [predictive for _, m, predictive in POSTERIORS if m == mode]


@dataclass(frozen=True)
class EvaluationInputs:
    """Everything the evaluation reads: the test data, the trained models and how to use them."""

    data: DatasetFiles
    cvae: CVAE
    flow: LatentFlow
    baseline_maps: str | os.PathLike  # every baseline's predictions of the test maps (baseline_maps.h5)
    settings: EvaluateSettings
    fov_rhalf: float  # the maps' field of view in half-mass radii (maps.fov_rhalf)
    noise: NoiseScales  # recalibrated noise scales, applied to every posterior
    scalars: tuple[str, ...] = ()  # galaxy scalars the networks are conditioned on (conditions.scalars)
    training_prior: str = "natural"  # plan.weighting the models were trained with


def physical_conditions(maps: MapSet, mean: np.ndarray, std: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Condition maps (len(index), C, P, P) of ``maps`` back in physical units, 0 outside the galaxy.

    ``mean``, ``std``: the normalisation statistics (C,) of the maps' channels."""
    cond = maps.conditions[index].numpy()
    mask = maps.mask[index].numpy()
    return np.where(mask, cond * std[None, :, None, None] + mean[None, :, None, None], 0.0).astype(np.float32)


def example_indices(exsitu_total: np.ndarray, n: int = N_EXAMPLES) -> np.ndarray:
    """Test maps at evenly spaced quantiles of the total ex-situ fraction, for Fig. 2."""
    order = np.argsort(exsitu_total, kind="stable")
    return np.unique(order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)])


def _json_ready(value: Any) -> Any:
    """NaN and inf (empty strata, undefined correlations) become null: metrics.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


@dataclass
class Evaluation:
    """What :func:`compute` gathered: the tallies of every posterior and baseline and the per-map context."""

    table: pd.DataFrame
    posteriors: dict[str, PosteriorTally]
    baselines: dict[str, PointTally]
    true_integrated: dict[str, list[np.ndarray]] = field(default_factory=lambda: {a: [] for a in APERTURES})
    trees_hits: list[np.ndarray] = field(default_factory=list)
    n_pixels: int = 0
    exact_01: int = 0
    channels: tuple[str, ...] = ()


def _chunks(inputs: EvaluationInputs) -> Iterator[MapSet]:
    npix = inputs.cvae.cfg.npix
    return inputs.data.chunks("test", maps_in_budget(inputs.settings.n_samples, npix, CHUNK_ELEMENTS))


def compute(
    inputs: EvaluationInputs, summaries_path: str | os.PathLike, samples_path: str | os.PathLike | None = None
) -> Evaluation:
    """Sample every posterior and predict with every baseline on the test maps, chunk by chunk.

    Map i of the test subset is sampled with seed ``evaluate.seed + i`` in every posterior, so its
    samples do not depend on the chunking, and ``exsitu predict`` with that seed on the same maps
    gives the same flow samples. The random numbers of its PITs and TARP references come from its own
    generator too, seeded with (the posterior's index in :data:`POSTERIORS`, ``evaluate.seed + i``), so no
    figure depends on the chunking. The per-map maps go to ``summaries_path`` and (with
    ``evaluate.n_saved_samples`` > 0) the flow samples to ``samples_path`` while they are made.
    """
    settings = inputs.settings
    table = inputs.data.table("test")
    n = len(table)
    examples = example_indices(table["exsitu_total"].to_numpy())
    result = Evaluation(
        table=table,
        posteriors={name: PosteriorTally(inputs.fov_rhalf, inputs.cvae.cfg.logit_eps) for name, _, _ in POSTERIORS},
        baselines={name: PointTally() for name in BASELINES},
    )
    example_rows: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in POSTERIORS}
    example_conditions: list[np.ndarray] = []
    mean_c, std_c = read_stats(inputs.data.stats)
    keep = min(settings.n_saved_samples, settings.n_samples) if samples_path is not None else 0
    with ExitStack() as files:
        # The baselines' maps are checked before any output is opened.
        baseline_maps = files.enter_context(BaselineMaps(inputs.baseline_maps, table))
        summaries = files.enter_context(Hdf5Rows(summaries_path, n))
        saved = files.enter_context(Hdf5Rows(samples_path, n)) if keep else None
        for chunk in _chunks(inputs):
            rows = chunk.table.index.to_numpy()
            start = int(rows[0])
            truth, mask = chunk.exsitu[:, 0].numpy().astype(np.float64), chunk.mask[:, 0].numpy()
            # Pixels have equal area within a map, so surface densities are the mass weights.
            weights = np.where(mask, 10.0 ** chunk.log_sigma.astype(np.float64), 0.0)
            scalars = chunk.scalars(inputs.scalars)
            result.channels = chunk.channels
            result.n_pixels += int(mask.sum())
            result.exact_01 += int(((truth[mask] == 0) | (truth[mask] == 1)).sum())
            # Once per chunk: every posterior's tally scores its samples against the same true functionals.
            true = map_functionals(truth, weights, inputs.fov_rhalf, inputs.cvae.cfg.logit_eps)
            for a in APERTURES:
                result.true_integrated[a].append(true[f"integrated_{a}"])
            mine = examples[(examples >= start) & (examples < start + len(chunk))] - start
            example_conditions.append(physical_conditions(chunk, *_channel_stats(mean_c, std_c, chunk.channels), mine))
            drawn: dict[str, dict[str, torch.Tensor]] = {}
            for stream, (name, mode, predictive) in enumerate(POSTERIORS):
                if mode not in drawn:  # the posteriors of one mode share its latent draws and one decoding
                    _, drawn[mode] = next(
                        predictives_in_chunks(
                            inputs.cvae, chunk.conditions, settings.n_samples, mode, seeds=settings.seed + rows,
                            predictives=predictives_of(mode),
                            flow=inputs.flow if mode == "flow" else None,
                            exsitu=chunk.exsitu if mode == "reconstruction" else None, scalars=scalars,
                            noise=inputs.noise, maps_per_chunk=len(chunk),
                        )
                    )  # fmt: skip
                samples = drawn[mode].pop(predictive).numpy()
                draws = map_generators(settings.seed + rows, stream)
                made = result.posteriors[name].add(samples, truth, mask, weights, draws, true)
                for key in ("median", "mean", "std"):
                    summaries.write(f"{key}/{name}", start, made[key], np.float16)
                for fname in functional_names():
                    summaries.write(f"functionals/{name}/{fname}", start, made[fname])
                example_rows[name].append(samples[mine, :EXAMPLE_SAMPLES].astype(np.float16))
                if saved is not None and name == "flow":
                    saved.write("samples", start, samples[:, :keep], np.float16)
            predictions = baseline_maps.rows(start, start + len(chunk))
            p16, p84 = predictions.pop("trees_interval")
            for name, prediction in predictions.items():
                integrated = integrated_fractions(prediction, weights, inputs.fov_rhalf)
                result.baselines[name].add(prediction, truth, mask, integrated)
                summaries.write(f"baseline/{name}", start, prediction, np.float16)
            inside = mask & (truth >= p16) & (truth <= p84)
            result.trees_hits.append(inside.sum(axis=(1, 2)).astype(np.float64))
            for key, values in (("truth", truth.astype(np.float16)), ("mask", mask)):
                summaries.write(key, start, values)
            for fname, value in true.items():
                summaries.write(f"functionals/true/{fname}", start, value)
            if saved is not None:
                saved.write("truth", start, truth.astype(np.float16))
                saved.write("mask", start, mask)
            log.info("evaluated test maps %d-%d of %d", start, start + len(chunk) - 1, n)
        _write_tables(summaries, table, result, baseline_maps.radial_profile())
        summaries.h5["examples/index"] = examples
        summaries.h5["examples/conditions"] = np.concatenate(example_conditions)
        summaries.h5["examples/conditions"].attrs["channels"] = list(result.channels)
        for name, rows_ in example_rows.items():
            summaries.h5[f"examples/samples/{name}"] = np.concatenate(rows_)
        if saved is not None:
            for column in ("subhalo_id", "snapshot", "galaxy_id"):
                saved.h5[column] = table[column].to_numpy()
            saved.h5["samples"].attrs["description"] = (
                "flow-mode posterior samples of the ex-situ fraction per test map"
            )
    return result


def _channel_stats(mean: np.ndarray, std: np.ndarray, channels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    keep = channel_index(channels)
    return mean[keep], std[keep]


def _write_tables(
    summaries: Hdf5Rows, table: pd.DataFrame, result: Evaluation, radial: tuple[np.ndarray, np.ndarray]
) -> None:
    """The per-map columns of summaries.h5 that are known once every chunk is done; ``radial``: the radial
    baseline's profile (radius [r_half], ex-situ fraction)."""
    boot_weights = galaxy_weights(table["galaxy_id"].to_numpy())[2]
    for column in ("subhalo_id", "snapshot", "galaxy_id", "exsitu_total", "log_mstar"):
        summaries.h5[column] = table[column].to_numpy()
    summaries.h5["map_weight"] = boot_weights
    summaries.h5["radial/radius"], summaries.h5["radial/exsitu"] = radial
    for name, tally in result.posteriors.items():
        for a, values in tally.median.per_map().items():
            if a.startswith("integrated/"):
                summaries.h5[f"integrated/{name}/{a.split('/', 1)[1]}"] = values
    for name, tally in result.baselines.items():
        for a, values in tally.per_map().items():
            if a.startswith("integrated/"):
                summaries.h5[f"integrated/{name}/{a.split('/', 1)[1]}"] = values
    for a, values in result.true_integrated.items():
        summaries.h5[f"integrated/true/{a}"] = np.concatenate(values)


def summarise(result: Evaluation, inputs: EvaluationInputs) -> dict[str, Any]:
    """metrics.json (see the module doc) from what :func:`compute` gathered."""
    table, settings = result.table, inputs.settings
    boot = GalaxyBootstrap(table["galaxy_id"].to_numpy(), n_replicates=BOOTSTRAP_REPLICATES, seed=settings.seed)
    log_mstar = table["log_mstar"].to_numpy(np.float64)
    true_integrated = {a: np.concatenate(v) for a, v in result.true_integrated.items()}
    modes = {name: tally.summary(boot, log_mstar) for name, tally in result.posteriors.items()}
    baselines = {name: tally.summary(boot, true_integrated, log_mstar) for name, tally in result.baselines.items()}
    pixels = result.baselines["trees"].per_map()["pixels"]
    baselines["trees"]["coverage_68"] = boot.ratio(np.concatenate(result.trees_hits), pixels).to_dict()
    cvae = inputs.cvae
    dof = cvae.decoder.dof()
    metrics: dict[str, Any] = {
        "n_maps": len(table),
        "n_pixels": result.n_pixels,
        "n_galaxies": boot.n_galaxies,
        "n_samples": settings.n_samples,
        "seed": settings.seed,
        "interval_level": boot.level,
        "weighting": "each test galaxy counts once: maps weighted 1 / n_los; intervals from a galaxy bootstrap",
        "training_prior": inputs.training_prior,
        "flow_context": inputs.flow.cfg.context,
        "few_galaxies": boot.n_galaxies < MIN_GALAXIES,
        "exact_01_share": result.exact_01 / max(result.n_pixels, 1),
        "channels": list(result.channels),
        "scalars": list(inputs.scalars),
        "noise": asdict(inputs.noise),
        "likelihood": {
            "family": cvae.cfg.likelihood,
            "dof": None if dof is None else float(dof.detach()),
            "logit_eps": cvae.cfg.logit_eps,
            "clip_model": cvae.cfg.clip_model,
        },
        "apertures": dict(APERTURES),
        "profile_edges": list(PROFILE_EDGES),
        "mass_bins": list(MASS_BINS),
        "modes": modes,
        "baselines": baselines,
        "comparisons": comparisons(result, boot, true_integrated),
    }
    return _json_ready(metrics)


def comparisons(result: Evaluation, boot: GalaxyBootstrap, true: dict[str, np.ndarray]) -> dict[str, Any]:
    """Paired-bootstrap ratios: the flow's posterior-median MAE over every baseline's and the prior's,
    reconstruction over flow, and the RMS of the flow's integrated fraction over every baseline's."""

    def errors(point: PointTally) -> tuple[np.ndarray, np.ndarray]:
        per_map = point.per_map()
        return per_map["abs_error"], per_map["pixels"]

    flow = result.posteriors["flow"].median
    out: dict[str, Any] = {"mae_flow_over": {}, "integrated_rms_flow_over": {}}
    others = {name: tally for name, tally in result.baselines.items()}
    others["prior"] = result.posteriors["prior"].median
    for name, tally in others.items():
        out["mae_flow_over"][name] = paired_ratio(boot, errors(flow), errors(tally)).to_dict()
    for name, tally in result.baselines.items():
        out["integrated_rms_flow_over"][name] = {
            a: rms_ratio(boot, flow.per_map()[f"integrated/{a}"], tally.per_map()[f"integrated/{a}"], true[a]).to_dict()
            for a in APERTURES
        }
    out["mae_reconstruction_over_flow"] = paired_ratio(
        boot, errors(result.posteriors["reconstruction"].median), errors(flow)
    ).to_dict()
    return out


def write_metrics(metrics: dict[str, Any], metrics_json: str | os.PathLike) -> None:
    """Write metrics.json atomically and log the headline numbers."""
    with atomic_output(metrics_json) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False))
    for name, m in metrics["modes"].items():
        log.info(
            "%s: MAE (median) %.4f, coverage68 %.3f, coverage95 %.3f, ATC uniform %.3f, ATC posterior %.3f",
            name, m["point"]["median"]["mae"]["value"], m["coverage"]["0.68"]["value"], m["coverage"]["0.95"]["value"],
            m["tarp"]["uniform"]["atc"]["value"], m["tarp"]["posterior"]["atc"]["value"],
        )  # fmt: skip
    log.info(
        "baselines MAE: %s",
        ", ".join(f"{name} {b['mae']['value']:.4f}" for name, b in metrics["baselines"].items()),
    )
