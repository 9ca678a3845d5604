"""Posterior sampling and evaluation cost, and the memory of the recalibrate and evaluate stages' work.

Run: ``python benchmarks/bench_sampling.py [--threads 2] [--repeats 3] [--npix 32 128]``: maps*samples/s
of ``exsitu.sample.sample_in_chunks`` in each mode (its default chunks and decoder passes, in the
sampling stages' channels-last layout, ``exsitu.sample.sampling_layout``; flow mode also in the default
layout, and the ratio), and of the per-chunk evaluation statistics of one posterior
(``exsitu.posterior_stats.PosteriorTally``), with the extrapolated time of the evaluate stage's
posteriors on the paper's test set. Untrained networks of the
default shape (speed does not depend on the weights) on random in-memory maps; the CPU always, the GPU
too when there is one.

``python benchmarks/bench_sampling.py --memory recalibrate --npix 128 --maps 24 --samples 16``: peak RSS of
the recalibrate stage's library calls (the two-scale fit streamed in chunks, then the residual
diagnostics) with the paper's network (32 base channels, rank 8) for ``--maps`` and twice as many
validation maps, each in a fresh process (``os.wait4``'s ru_maxrss), and their ratio: memory bounded
by a chunk grows little when the maps double. ``--memory evaluate`` does the same for the evaluate
stage's posteriors: every posterior of ``exsitu.evaluation.POSTERIORS`` sampled chunk by chunk
(``exsitu.evaluation.CHUNK_ELEMENTS``) into its ``PosteriorTally``, then the bootstrap summaries (the
baselines and the HDF5 writing are left out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from bench_training import fake_maps

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.cvae import CVAE, CVAEConfig
from exsitu.dataset import MapSet
from exsitu.evaluation import BOOTSTRAP_REPLICATES, POSTERIORS, predictives_of
from exsitu.evaluation import CHUNK_ELEMENTS as EVALUATE_CHUNK
from exsitu.flow import FlowConfig, LatentFlow
from exsitu.likelihood import LOGIT_EPS
from exsitu.posterior_stats import PosteriorTally
from exsitu.recalibration import CHUNK_ELEMENTS as RECALIBRATE_CHUNK
from exsitu.recalibration import fit_noise_scales
from exsitu.residual_diagnostics import diagnose
from exsitu.sample import MODES, maps_in_budget, predictives_in_chunks, sample_in_chunks, sampling_layout
from exsitu.settings import RecalibrateSettings

PAPER_TEST_MAPS = 3637  # 15% of the paper's 24248 maps
K = 100
FOV_RHALF = 4.0  # maps.fov_rhalf


def median_seconds(work: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def models(
    device: torch.device, npix: int, base_channels: int = 16, stages_layout: bool = True
) -> tuple[CVAE, LatentFlow]:
    """Untrained cVAE and flow of the default shape; the cVAE in the sampling stages' layout unless told not."""
    torch.manual_seed(0)
    config = CVAEConfig(npix=npix, latent_dim=10, base_channels=base_channels)
    cvae = CVAE(config).to(device).eval()
    if stages_layout:
        sampling_layout(cvae)
    flow = LatentFlow(FlowConfig(latent_dim=10, context_dim=config.summary_dim))
    flow.set_standardisation(torch.randn(4096, 10), torch.randn(4096, config.summary_dim))
    return cvae, flow.to(device).eval()


def bench(device: torch.device, npix: int, repeats: int) -> dict[str, float]:
    cvae, flow = models(device, npix)
    n_maps = (32 if npix <= 32 else 4) * (8 if device.type == "cuda" else 1)
    conditions, exsitu, mask = fake_maps(n_maps, npix)
    seeds = np.arange(n_maps)
    rates: dict[str, float] = {}

    def draw(mode: str, model: CVAE = cvae) -> torch.Tensor:
        return torch.cat([s for _, s in sample_in_chunks(model, conditions, K, mode, seeds=seeds, exsitu=exsitu,
                                                         flow=flow)])  # fmt: skip

    for mode in MODES:
        rates[mode] = n_maps * K / median_seconds(lambda mode=mode: draw(mode), repeats, device)
        print(f"{device.type} {npix}x{npix} sampling {mode:14s}: {rates[mode]:10.0f} maps*samples/s")
    default_layout = models(device, npix, stages_layout=False)[0]
    default_rate = n_maps * K / median_seconds(lambda: draw("flow", default_layout), repeats, device)
    print(
        f"{device.type} {npix}x{npix} sampling flow, default layout: {default_rate:10.0f} maps*samples/s "
        f"(channels-last / default: {rates['flow'] / default_rate:.2f}x)"
    )
    samples = draw("flow").numpy()
    truth, galaxy = exsitu[:, 0].numpy(), mask[:, 0].numpy()

    def statistics_only() -> None:
        PosteriorTally(FOV_RHALF, LOGIT_EPS).add(
            samples, truth, galaxy, galaxy.astype(np.float64), np.random.default_rng(0)
        )

    stats_s = median_seconds(statistics_only, repeats, torch.device("cpu"))
    # evaluate decodes each mode once (flow and flow_mean share their latents and decoding), then computes the
    # statistics of every posterior on the CPU.
    per_map = sum(K / rates[mode] for mode in MODES) + len(POSTERIORS) * stats_s / n_maps
    rates["evaluate"] = K / per_map
    print(f"{device.type} {npix}x{npix} statistics of one posterior: {n_maps * K / stats_s:10.0f} maps*samples/s")
    print(
        f"{device.type} {npix}x{npix} evaluate, {len(POSTERIORS)} posteriors + statistics: {per_map:.3f} s per map -> "
        f"~{per_map * PAPER_TEST_MAPS / 60:.0f} min for the paper's {PAPER_TEST_MAPS} test maps at K={K}"
    )
    return rates


def paper_maps(n_maps: int, npix: int) -> MapSet:
    """``n_maps`` random maps of two lines of sight per galaxy, as a subset in memory."""
    conditions, exsitu, mask = fake_maps(n_maps, npix)
    table = pd.DataFrame({"galaxy_id": np.arange(n_maps) // 2, "log_mstar": 10.0 + 0.01 * np.arange(n_maps)})
    return MapSet(conditions, exsitu, mask, table, np.where(mask[:, 0].numpy(), 8.0, 0.0).astype(np.float32))


def recalibrate_child(n_maps: int, npix: int, n_samples: int) -> None:
    """The recalibrate stage's work on ``n_maps`` random maps with the paper's network (run in a child)."""
    cvae, flow = models(torch.device("cpu"), npix, base_channels=32)
    val = paper_maps(n_maps, npix)
    settings = RecalibrateSettings(enabled=True, n_samples=n_samples, seed=0, method="coverage")
    chunk = maps_in_budget(n_samples, npix, RECALIBRATE_CHUNK)
    start = time.perf_counter()
    fit = fit_noise_scales(cvae, flow, val.chunks(chunk), val.table, settings)
    diagnose(cvae, flow, val.chunks(chunk), val.table, 0, fit.noise)
    print(f"  {n_maps} maps: {time.perf_counter() - start:.0f} s", flush=True)


def evaluate_child(n_maps: int, npix: int, n_samples: int) -> None:
    """The evaluate stage's posteriors on ``n_maps`` random maps with the paper's network (run in a child)."""
    cvae, flow = models(torch.device("cpu"), npix, base_channels=32)
    test = paper_maps(n_maps, npix)
    tallies = {name: PosteriorTally(FOV_RHALF) for name, _, _ in POSTERIORS}
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for chunk in test.chunks(maps_in_budget(n_samples, npix, EVALUATE_CHUNK)):
        truth, mask = chunk.exsitu[:, 0].numpy().astype(np.float64), chunk.mask[:, 0].numpy()
        weights = np.where(mask, 10.0 ** chunk.log_sigma.astype(np.float64), 0.0)
        for mode in MODES:  # as evaluate does: one decoding per mode serves all its predictives
            _, drawn = next(
                predictives_in_chunks(
                    cvae, chunk.conditions, n_samples, mode, seeds=chunk.table.index.to_numpy(), flow=flow,
                    exsitu=chunk.exsitu, maps_per_chunk=len(chunk),
                    predictives=predictives_of(mode),
                )
            )  # fmt: skip
            for name, m, predictive in POSTERIORS:
                if m == mode:
                    tallies[name].add(drawn[predictive].numpy(), truth, mask, weights, rng)
    boot = GalaxyBootstrap(test.table["galaxy_id"].to_numpy(), n_replicates=BOOTSTRAP_REPLICATES)
    for tally in tallies.values():
        tally.summary(boot, test.table["log_mstar"].to_numpy())
    print(f"  {n_maps} maps: {time.perf_counter() - start:.0f} s", flush=True)


def stage_memory(stage: str, n_maps: int, npix: int, n_samples: int, threads: int) -> None:
    """Peak RSS of a stage's work (``recalibrate`` or ``evaluate``) for n and 2n maps, each in a fresh process."""
    peaks = []
    for n in (n_maps, 2 * n_maps):
        args = ["--child", str(n), "--memory", stage, "--npix", str(npix), "--samples", str(n_samples)]
        child = subprocess.Popen([sys.executable, __file__, *args, "--threads", str(threads)])
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            raise SystemExit(f"the child for {n} maps failed ({status})")
        peaks.append(usage.ru_maxrss / 1024)  # kB -> MB
        print(f"{stage} {npix}x{npix}, 32 channels, K={n_samples}, {n} maps: peak RSS {peaks[-1]:.0f} MB")
    print(f"peak RSS ratio for twice the maps: {peaks[1] / peaks[0]:.3f}")


#: The stages whose memory ``--memory`` measures, and the work of each in a child process.
MEMORY = {"recalibrate": recalibrate_child, "evaluate": evaluate_child}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--npix", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--memory", choices=MEMORY, help="peak RSS of this stage's work instead")
    parser.add_argument("--maps", type=int, default=24, help="validation or test maps of --memory")
    parser.add_argument("--samples", type=int, default=16, help="samples per map of --memory")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        MEMORY[args.memory](args.child, args.npix[0], args.samples)
        return
    if args.memory:
        stage_memory(args.memory, args.maps, args.npix[0], args.samples, args.threads)
        return
    for npix in args.npix:
        cpu = bench(torch.device("cpu"), npix, args.repeats)
        if torch.cuda.is_available():
            gpu = bench(torch.device("cuda"), npix, args.repeats)
            print(f"GPU / CPU ratios {npix}x{npix}: " + ", ".join(f"{k} {gpu[k] / cpu[k]:.1f}x" for k in cpu))


if __name__ == "__main__":
    main()
