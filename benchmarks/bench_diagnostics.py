"""The new diagnostics on a real pipeline run: galaxy-weighted TARP (uniform and held-out-posterior
references), stratified coverage, rank histogram of the integrated fraction, the per-pixel lookup
baseline against the cVAE posterior mean and the deterministic baseline, and their timings.

Point it at the outputs of a finished run (maps, split, normalisation, checkpoints):

    PYTHONPATH=src python benchmarks/bench_diagnostics.py --maps results/maps/shard_*.h5 \\
        --split results/dataset/split.csv --stats results/dataset/normalisation.json \\
        --cvae results/checkpoints/cvae.pt --flow results/checkpoints/flow.pt \\
        --baseline results/checkpoints/baseline.pt [--n-samples 100] [--fov-rhalf 4]

Prints one line per number; every interval is a 95% galaxy-bootstrap percentile interval.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from exsitu.bootstrap import GalaxyBootstrap, per_map_totals
from exsitu.calibration import randomized_pit, rank_histogram, stratified_coverage, tarp_credibility, tarp_summary
from exsitu.checkpoint import load_model
from exsitu.dataset import CHANNELS, DatasetFiles, MapSet, read_stats
from exsitu.lookup import fit_pixel_lookup, log_stellar_mass
from exsitu.sample import posterior_samples, predict_baseline


def masses(subset: MapSet, centre: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-pixel mass weights 10^log_sigma (N, P, P), log10 M* per map) of a subset."""
    k = CHANNELS.index("mass")
    mask = subset.mask[:, 0].numpy()
    log_sigma = subset.conditions[:, k].numpy().astype(np.float64) * scale[k] + centre[k]
    return np.where(mask, 10.0**log_sigma, 0.0), log_stellar_mass(log_sigma, mask, subset.table["fov_kpc"].to_numpy())


def mae_estimate(
    boot: GalaxyBootstrap, prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray, versus: np.ndarray | None = None
) -> str:
    """Per-pixel MAE, galaxy-weighted, with interval, and the plain pixel mean; with ``versus``, the paired
    difference MAE(prediction) - MAE(versus) on the same bootstrap replicates."""
    map_index = np.nonzero(mask)[0]
    error = np.abs(prediction - truth)[mask]
    if versus is not None:
        error = error - np.abs(versus - truth)[mask]
    est = boot.ratio(
        per_map_totals(error, map_index, len(mask)), per_map_totals(np.ones_like(error), map_index, len(mask))
    )
    return f"{est.value:.4f} [{est.low:.4f}, {est.high:.4f}] (pixel-weighted {error.mean():.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("split", "stats", "cvae", "flow", "baseline"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--maps", nargs="+", required=True)
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--fov-rhalf", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    centre, scale = read_stats(args.stats)
    data = DatasetFiles(args.maps, args.split, args.stats)
    train, test = data.load("train"), data.load("test")
    truth, mask = test.exsitu[:, 0].numpy(), test.mask[:, 0].numpy()
    weights, log_mstar = masses(test, centre, scale)
    _, train_log_mstar = masses(train, centre, scale)
    galaxy_id = test.table["galaxy_id"].to_numpy()

    start = time.perf_counter()
    boot = GalaxyBootstrap(galaxy_id, n_replicates=1000, seed=args.seed)
    n_los = np.bincount(boot.galaxy_index)
    print(f"test set: {len(test)} maps of {boot.n_galaxies} galaxies, {n_los.min()}-{n_los.max()} lines of sight each")

    start = time.perf_counter()
    lookup = fit_pixel_lookup(
        train.conditions.numpy(), train.exsitu[:, 0].numpy(), train.mask[:, 0].numpy(), train_log_mstar, seed=args.seed
    )
    fitted = time.perf_counter()
    lookup_map = lookup.predict(test.conditions.numpy(), mask, log_mstar)
    print(
        f"lookup: fit {fitted - start:.2f} s on {int(train.mask.sum())} training pixels (tree of {lookup.tree.n}), "
        f"predict {time.perf_counter() - fitted:.2f} s for {int(mask.sum())} test pixels"
    )

    device = torch.device("cpu")
    cvae, flow, baseline = (load_model(p, device) for p in (args.cvae, args.flow, args.baseline))
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    credibility: dict[str, list[np.ndarray]] = {"uniform": [], "posterior": []}
    pit, integrated_pit, mean = [], [], []
    start = time.perf_counter()
    tarp_seconds = 0.0
    for first in range(0, len(test), 32):
        last = min(len(test), first + 32)
        samples = posterior_samples(
            cvae, test.conditions[first:last], args.n_samples, "flow", flow=flow, batch_size=512, generator=generator
        ).numpy()
        t0 = time.perf_counter()
        for reference, values in credibility.items():
            values.append(tarp_credibility(samples, truth[first:last], rng, reference, mask[first:last]))
        tarp_seconds += time.perf_counter() - t0
        chunk_mask, w = mask[first:last], weights[first:last]
        pit.append(randomized_pit(np.moveaxis(samples, 1, -1)[chunk_mask], truth[first:last][chunk_mask], rng))
        f_samples = (samples * w[:, None]).sum(axis=(-2, -1)) / w.sum(axis=(-2, -1))[:, None]
        f_true = (truth[first:last] * w).sum(axis=(-2, -1)) / w.sum(axis=(-2, -1))
        integrated_pit.append(randomized_pit(f_samples, f_true, rng))
        mean.append(samples.mean(axis=1))
    print(
        f"flow sampling + diagnostics: {time.perf_counter() - start:.1f} s, "
        f"of which TARP (both references) {tarp_seconds:.1f} s"
    )

    for reference, values in credibility.items():
        s = tarp_summary(np.concatenate(values), boot)
        unweighted = tarp_summary(np.concatenate(values), GalaxyBootstrap(np.arange(len(test)), n_replicates=1000))
        print(
            f"TARP {reference:9s}: ATC {s.atc.value:+.3f} [{s.atc.low:+.3f}, {s.atc.high:+.3f}], KS p {s.ks_pvalue:.2g}"
            f" | maps as independent: ATC {unweighted.atc.value:+.3f} "
            f"[{unweighted.atc.low:+.3f}, {unweighted.atc.high:+.3f}]"
        )
    ranks = rank_histogram(np.concatenate(integrated_pit), boot)
    print(f"integrated-fraction ranks: fractions {np.round(ranks.fraction, 3).tolist()}, KS p {ranks.ks_pvalue:.2g}")
    for stratum in stratified_coverage(np.concatenate(pit), truth, mask, log_mstar, boot, fov_rhalf=args.fov_rhalf):
        c = stratum.coverage["0.68"]
        print(
            f"coverage68 {stratum.by:6s} {stratum.label:32s} {c.value:.3f} [{c.low:.3f}, {c.high:.3f}]"
            f"  pixels {stratum.n_pixels:7d} maps {stratum.n_maps:4d} galaxies {stratum.n_galaxies:3d}"
        )
    deterministic = predict_baseline(baseline, test.conditions).numpy()
    print(f"MAE flow posterior mean : {mae_estimate(boot, np.concatenate(mean), truth, mask)}")
    print(f"MAE deterministic       : {mae_estimate(boot, deterministic, truth, mask)}")
    print(f"MAE per-pixel lookup    : {mae_estimate(boot, lookup_map, truth, mask)}")
    print(f"MAE flow - lookup       : {mae_estimate(boot, np.concatenate(mean), truth, mask, lookup_map)}")
    print(f"MAE deterministic - lookup: {mae_estimate(boot, deterministic, truth, mask, lookup_map)}")

    rng = np.random.default_rng(1)
    many = rng.integers(0, 300, size=1000)
    start = time.perf_counter()
    GalaxyBootstrap(many, n_replicates=1000).mean(rng.normal(size=(1000, 51)))
    print(f"bootstrap: 1000 replicates of a 51-value statistic over 1000 maps in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
