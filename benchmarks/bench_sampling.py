"""Posterior sampling and evaluation cost, and the memory of the recalibrate stage's work.

Run: ``python benchmarks/bench_sampling.py [--threads 2] [--repeats 3] [--npix 32 128]``: maps*samples/s
of ``exsitu.sample.sample_in_chunks`` in each mode (its default chunks and decoder passes), and of the
per-chunk evaluation statistics (``exsitu.evaluation.PosteriorAccumulator``), with the extrapolated
time of the evaluate stage on the paper's test set. Untrained networks of the default shape (speed
does not depend on the weights) on random in-memory maps; the CPU always, the GPU too when there is one.

``python benchmarks/bench_sampling.py --recalibrate-memory --npix 128 --maps 24 --samples 16``: peak RSS of
the recalibrate stage's library calls (the two-scale fit streamed in chunks, then the residual
diagnostics) with the paper's network (32 base channels, rank 8) for ``--maps`` and twice as many
validation maps, each in a fresh process (``os.wait4``'s ru_maxrss), and their ratio: memory bounded
by a chunk grows little when the maps double.
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

from exsitu.cvae import CVAE, CVAEConfig
from exsitu.dataset import MapSet
from exsitu.evaluation import PosteriorAccumulator
from exsitu.flow import FlowConfig, LatentFlow
from exsitu.recalibration import fit_noise_scales, maps_per_chunk
from exsitu.residual_diagnostics import diagnose
from exsitu.sample import MODES, sample_in_chunks
from exsitu.settings import RecalibrateSettings

PAPER_TEST_MAPS = 3637  # 15% of the paper's 24248 maps
K = 100


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


def models(device: torch.device, npix: int, base_channels: int = 16) -> tuple[CVAE, LatentFlow]:
    torch.manual_seed(0)
    config = CVAEConfig(npix=npix, latent_dim=10, base_channels=base_channels)
    cvae = CVAE(config).to(device).eval()
    flow = LatentFlow(FlowConfig(latent_dim=10, context_dim=config.summary_dim))
    flow.set_standardisation(torch.randn(4096, 10), torch.randn(4096, config.summary_dim))
    return cvae, flow.to(device).eval()


def bench(device: torch.device, npix: int, repeats: int) -> dict[str, float]:
    cvae, flow = models(device, npix)
    n_maps = (32 if npix <= 32 else 4) * (8 if device.type == "cuda" else 1)
    conditions, exsitu, mask = fake_maps(n_maps, npix)
    seeds = np.arange(n_maps)
    rates: dict[str, float] = {}

    def draw(mode: str) -> torch.Tensor:
        return torch.cat([s for _, s in sample_in_chunks(cvae, conditions, K, mode, seeds=seeds, exsitu=exsitu,
                                                         flow=flow)])  # fmt: skip

    for mode in MODES:
        rates[mode] = n_maps * K / median_seconds(lambda mode=mode: draw(mode), repeats, device)
        print(f"{device.type} {npix}x{npix} sampling {mode:14s}: {rates[mode]:10.0f} maps*samples/s")
    samples = draw("flow").numpy()
    truth, galaxy = exsitu[:, 0].numpy(), mask[:, 0].numpy()

    def statistics_only() -> None:
        PosteriorAccumulator().add(samples, truth, galaxy, galaxy.astype(np.float64), np.random.default_rng(0))

    stats_s = median_seconds(statistics_only, repeats, torch.device("cpu"))
    # evaluate samples each of the 3 modes, then computes the statistics on the CPU.
    per_map = sum(K / rate for rate in rates.values()) + 3 * stats_s / n_maps
    rates["evaluate"] = K / per_map
    print(f"{device.type} {npix}x{npix} statistics (PIT, CRPS, TARP) : {n_maps * K / stats_s:10.0f} maps*samples/s")
    print(
        f"{device.type} {npix}x{npix} evaluate, 3 modes + statistics: {per_map:.3f} s per map -> "
        f"~{per_map * PAPER_TEST_MAPS / 60:.0f} min for the paper's {PAPER_TEST_MAPS} test maps at K={K}"
    )
    return rates


def recalibrate_child(n_maps: int, npix: int, n_samples: int) -> None:
    """The recalibrate stage's work on ``n_maps`` random maps with the paper's network (run in a child)."""
    cvae, flow = models(torch.device("cpu"), npix, base_channels=32)
    conditions, exsitu, mask = fake_maps(n_maps, npix)
    table = pd.DataFrame({"galaxy_id": np.arange(n_maps) // 2})
    val = MapSet(conditions, exsitu, mask, table, np.zeros((n_maps, npix, npix), np.float32))
    settings = RecalibrateSettings(enabled=True, n_samples=n_samples, seed=0)
    chunk = maps_per_chunk(n_samples, npix)
    start = time.perf_counter()
    fit = fit_noise_scales(cvae, flow, val.chunks(chunk), table, settings)
    diagnose(cvae, flow, val.chunks(chunk), table, 0, fit.noise)
    print(f"  {n_maps} maps: {time.perf_counter() - start:.0f} s", flush=True)


def recalibrate_memory(n_maps: int, npix: int, n_samples: int, threads: int) -> None:
    peaks = []
    for n in (n_maps, 2 * n_maps):
        args = ["--child", str(n), "--npix", str(npix), "--samples", str(n_samples), "--threads", str(threads)]
        child = subprocess.Popen([sys.executable, __file__, *args])
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            raise SystemExit(f"the child for {n} maps failed ({status})")
        peaks.append(usage.ru_maxrss / 1024)  # kB -> MB
        print(f"recalibrate {npix}x{npix}, 32 channels, K={n_samples}, {n} maps: peak RSS {peaks[-1]:.0f} MB")
    print(f"peak RSS ratio for twice the maps: {peaks[1] / peaks[0]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--npix", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--recalibrate-memory", action="store_true", help="peak RSS of recalibrate's work instead")
    parser.add_argument("--maps", type=int, default=24, help="validation maps of --recalibrate-memory")
    parser.add_argument("--samples", type=int, default=16, help="flow samples per map of --recalibrate-memory")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        recalibrate_child(args.child, args.npix[0], args.samples)
        return
    if args.recalibrate_memory:
        recalibrate_memory(args.maps, args.npix[0], args.samples, args.threads)
        return
    for npix in args.npix:
        cpu = bench(torch.device("cpu"), npix, args.repeats)
        if torch.cuda.is_available():
            gpu = bench(torch.device("cuda"), npix, args.repeats)
            print(f"GPU / CPU ratios {npix}x{npix}: " + ", ".join(f"{k} {gpu[k] / cpu[k]:.1f}x" for k in cpu))


if __name__ == "__main__":
    main()
