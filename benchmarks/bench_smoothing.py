"""Adaptive particle smoothing vs the binned kernel vs scipy.stats.binned_statistic_2d: one
galaxy of 1e6 particles, 8 lines of sight, 128x128 pixels, one core.

Prints particle-projections per second for all three (median of interleaved repeats), the
adaptive/binned cost ratio (target <= 5), the adaptive kernel's peak memory for the galaxy
(tracemalloc, numpy allocations, inputs excluded; target < 1 GiB) and the process's peak RSS.
Then, on mock galaxies (exsitu.mock, 32x32 maps of a 4 r_half field, as the pipeline makes
them): the share of galaxy pixels whose ex-situ fraction is exactly 0 or 1, with and without
smoothing, the mask coverage, the time per galaxy, and the grid k-NN radius against the exact one (cKDTree).

    python benchmarks/bench_smoothing.py [--particles 1000000] [--los 8] [--npix 128] [--repeats 5]
                                         [--neighbours 32] [--mocks 20] [--exact-knn]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads its BLAS

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_projection import galaxy, scipy_maps, seconds

from exsitu.literature import age_of_universe_gyr
from exsitu.mock.galaxies import draw_population, make_particles
from exsitu.mock.particles import half_mass_radius
from exsitu.projection import project
from exsitu.sightlines import random_rotations
from exsitu.smoothing import MAX_DENSITY_CELLS, smoothing_lengths


def speed(args: argparse.Namespace) -> None:
    """Timings and memory on one large galaxy."""
    rng = np.random.default_rng(0)
    g = galaxy(args.particles, rng)
    rotations = random_rotations(rng, args.los)
    fov = 40.0
    inputs = (g["pos"], g["vel"], g["mass"], g["age"], g["metallicity"], g["exsitu_flag"], rotations, fov, args.npix)

    def adaptive():
        return project(*inputs, smoothing="adaptive", neighbours=args.neighbours)

    def binned():
        return project(*inputs, smoothing="none")

    adaptive(), binned()  # warm up
    # Interleaved, so that load from other processes hits all alike.
    runs = np.array(
        [
            (seconds(adaptive), seconds(binned), seconds(lambda: scipy_maps(g, rotations, fov, args.npix)))
            for _ in range(args.repeats)
        ]
    )
    t_adaptive, t_binned, t_scipy = np.median(runs, axis=0)
    ratios = runs[:, 0] / runs[:, 1]
    tracemalloc.start()
    adaptive()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    work = args.particles * args.los
    print(f"galaxy: {args.particles} particles, {args.los} lines of sight, {args.npix}x{args.npix} pixels, one core")
    print(
        f"adaptive (k={args.neighbours}):          {t_adaptive:8.3f} s  "
        f"{work / t_adaptive:12.3e} particle-projections/s"
    )
    print(f"binned   (smoothing='none'):    {t_binned:8.3f} s  {work / t_binned:12.3e} particle-projections/s")
    print(f"scipy    (binned_statistic_2d): {t_scipy:8.3f} s  {work / t_scipy:12.3e} particle-projections/s")
    print(
        f"adaptive / binned cost: {t_adaptive / t_binned:.2f}x (ratio of medians; per-repeat ratios "
        f"{np.round(ratios, 2).tolist()}, median {np.median(ratios):.2f}; target <= 5x)"
    )
    print(f"adaptive vs scipy: {t_scipy / t_adaptive:.1f}x faster")
    print(f"adaptive peak memory (numpy allocations, inputs excluded): {peak / 2**20:.0f} MiB (target < 1024 MiB)")
    print(
        "process peak RSS (everything, scipy peer included): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB"
    )
    if args.exact_knn:
        t_knn = seconds(lambda: cKDTree(g["pos"]).query(g["pos"], k=[args.neighbours], workers=1))
        print(
            f"exact k-NN radius (cKDTree build + query, workers=1): {t_knn:.2f} s = "
            f"{t_knn / t_binned:.1f}x the binned kernel"
        )


def realism(args: argparse.Namespace) -> None:
    """Pixel statistics of the pipeline's mock galaxies, binned vs smoothed."""
    rng = np.random.default_rng(1)
    p = 32
    modes = ("none", "adaptive")
    exact01 = {mode: [] for mode in modes}
    coverage = {mode: [] for mode in modes}
    per_pixel, h_ratio = [], []
    elapsed = dict.fromkeys(modes, 0.0)
    for model in draw_population(rng, args.mocks):
        parts = make_particles(model, age_of_universe_gyr(), 0.0)
        fov = 4.0 * half_mass_radius(parts.pos, parts.mass)
        rotations = random_rotations(rng, 4)
        inputs = (parts.pos, parts.vel, parts.mass, parts.age, parts.metallicity, parts.insitu == 0, rotations, fov, p)
        for mode in modes:
            t0 = time.perf_counter()
            _, ex, mask = project(*inputs, smoothing=mode, neighbours=args.neighbours)
            elapsed[mode] += time.perf_counter() - t0
            f = ex[mask]
            exact01[mode].append(np.mean((f == 0) | (f == 1)))
            coverage[mode].append(mask.mean())
            if mode == "none":
                for rot in rotations:
                    x, y = parts.pos @ rot[0], parts.pos @ rot[1]
                    counts = np.histogram2d(x, y, bins=p, range=[[-fov / 2, fov / 2]] * 2)[0]
                    per_pixel.append(np.median(counts[counts > 0]))
        cells = min(2 * p, MAX_DENSITY_CELLS)
        h = smoothing_lengths(parts.pos, args.neighbours, 2 * fov / cells, cells)
        exact = cKDTree(parts.pos).query(parts.pos, k=[args.neighbours])[0][:, 0]
        h_ratio.append(np.log10(h / exact)[np.isfinite(h)])
    h_ratio = np.concatenate(h_ratio)
    print(f"\nmock galaxies: {args.mocks} (exsitu.mock), 4 lines of sight each, {p}x{p} maps of a 4 r_half field")
    print(f"median star particles per occupied pixel (binned): {np.median(per_pixel):.1f}")
    for mode in modes:
        print(
            f"{mode:8s}: galaxy pixels with ex-situ fraction exactly 0 or 1: {np.mean(exact01[mode]):6.1%} "
            f"(galaxies' median {np.median(exact01[mode]):6.1%}); "
            f"mask covers {np.mean(coverage[mode]):5.1%} of the field"
        )
    print(
        f"time per galaxy (4 lines of sight): binned {elapsed['none'] / args.mocks * 1e3:.1f} ms, "
        f"adaptive {elapsed['adaptive'] / args.mocks * 1e3:.1f} ms"
    )
    print(
        f"grid k-NN radius / exact (k={args.neighbours}, itself counted): median {np.median(h_ratio):+.3f} dex, "
        f"16-84% [{np.percentile(h_ratio, 16):+.3f}, {np.percentile(h_ratio, 84):+.3f}] dex"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--los", type=int, default=8)
    parser.add_argument("--npix", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--neighbours", type=int, default=32)
    parser.add_argument("--mocks", type=int, default=20)
    parser.add_argument("--exact-knn", action="store_true", help="also time the exact k-NN radius (slow)")
    args = parser.parse_args()
    speed(args)
    realism(args)


if __name__ == "__main__":
    main()
