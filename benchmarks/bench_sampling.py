"""Posterior sampling and evaluation cost: maps*samples/s of ``exsitu.sample.posterior_samples``
in each mode, and of the whole per-chunk evaluation (sampling + coverage/CRPS/TARP statistics),
with the extrapolated time of the evaluate stage on the paper's test set.

Run: ``python benchmarks/bench_sampling.py [--threads 2] [--repeats 3] [--npix 32 128]``.
Untrained networks of the default shape (speed does not depend on the weights) on random
in-memory maps; the CPU always, the GPU too when there is one. Prints medians over repeats
and GPU/CPU ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_training import fake_maps

from exsitu.cvae import CVAE, CVAEConfig
from exsitu.evaluation import ModeAccumulator
from exsitu.flow import FlowConfig, LatentFlow
from exsitu.sample import MODES, posterior_samples

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


def bench(device: torch.device, npix: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    config = CVAEConfig(npix=npix, latent_dim=10, base_channels=16)
    cvae = CVAE(config).to(device).eval()
    flow = LatentFlow(FlowConfig(latent_dim=10, context_dim=config.summary_dim))
    flow.set_standardisation(torch.randn(4096, 10), torch.randn(4096, config.summary_dim))
    flow = flow.to(device).eval()
    n_maps = (32 if npix <= 32 else 4) * (8 if device.type == "cuda" else 1)
    conditions, exsitu, mask = fake_maps(n_maps, npix)
    batch = 1024 if device.type == "cuda" else 256
    rates: dict[str, float] = {}
    for mode in MODES:

        def draw(mode: str = mode) -> torch.Tensor:
            return posterior_samples(cvae, conditions, K, mode, exsitu=exsitu, flow=flow, batch_size=batch)

        rates[mode] = n_maps * K / median_seconds(draw, repeats, device)
        print(f"{device.type} {npix}x{npix} sampling {mode:14s}: {rates[mode]:10.0f} maps*samples/s")
    samples = posterior_samples(cvae, conditions, K, "flow", flow=flow, batch_size=batch).numpy()
    truth, galaxy = exsitu[:, 0].numpy(), mask[:, 0].numpy()

    def statistics_only() -> None:
        ModeAccumulator().add(samples, truth, galaxy, np.random.default_rng(0))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--npix", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for npix in args.npix:
        cpu = bench(torch.device("cpu"), npix, args.repeats)
        if torch.cuda.is_available():
            gpu = bench(torch.device("cuda"), npix, args.repeats)
            print(f"GPU / CPU ratios {npix}x{npix}: " + ", ".join(f"{k} {gpu[k] / cpu[k]:.1f}x" for k in cpu))


if __name__ == "__main__":
    main()
