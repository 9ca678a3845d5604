"""Projection kernel vs a straightforward scipy.stats.binned_statistic_2d version of the
same six maps: one galaxy of 1e6 particles, 8 lines of sight, one core.

Prints particles*projections per second for both (median of interleaved repeats, measured
side by side in this run), their ratio, and the kernel's peak memory (tracemalloc, numpy
allocations) for one 1e6-particle galaxy.

    python benchmarks/bench_projection.py [--particles 1000000] [--los 8] [--npix 128] [--repeats 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads its BLAS

import argparse
import time
import tracemalloc

import numpy as np
from scipy.stats import binned_statistic_2d

from exsitu.projection import project
from exsitu.sightlines import random_rotations
from exsitu.units import ZSUN


def galaxy(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A rotating exponential disc inside a hot halo, physical units (kpc, km/s, Msun, Gyr)."""
    r = rng.gamma(2.0, 3.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    pos = np.stack([r * np.cos(phi), r * np.sin(phi), rng.normal(0, 0.5, n)], axis=1)
    vel = np.stack([-200 * np.sin(phi), 200 * np.cos(phi), np.zeros(n)], axis=1) + rng.normal(0, 40, (n, 3))
    return dict(
        pos=pos,
        vel=vel,
        mass=rng.uniform(1e5, 2e5, n),
        age=rng.uniform(0.1, 13.0, n),
        metallicity=ZSUN * 10 ** rng.normal(0, 0.3, n),
        exsitu_flag=rng.uniform(size=n) < 0.3,
    )


def scipy_maps(g: dict[str, np.ndarray], rotations: np.ndarray, fov: float, npix: int) -> np.ndarray:
    """The obvious version: one binned_statistic_2d 'sum' per weighted quantity per line of sight."""
    half = fov / 2
    out = np.zeros((len(rotations), 6, npix, npix))
    m = g["mass"]
    for k, rot in enumerate(rotations):
        x, y, v = g["pos"] @ rot[0], g["pos"] @ rot[1], g["vel"] @ rot[2]
        sums = [
            binned_statistic_2d(x, y, w, "sum", bins=npix, range=[[-half, half], [-half, half]]).statistic.T
            for w in (m, m * v, m * v**2, m * g["age"], m * g["metallicity"], m * g["exsitu_flag"])
        ]
        sm = sums[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            vmean = sums[1] / sm
            out[k] = np.nan_to_num(
                [
                    np.log10(sm / (fov / npix) ** 2),
                    vmean,
                    np.sqrt(np.maximum(sums[2] / sm - vmean**2, 0)),
                    sums[3] / sm,
                    np.log10(sums[4] / sm / ZSUN),
                    sums[5] / sm,
                ],
                neginf=0.0,
            )
    return out


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--los", type=int, default=8)
    parser.add_argument("--npix", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    g = galaxy(args.particles, rng)
    rotations = random_rotations(rng, args.los)
    fov = 40.0

    def kernel():
        return project(
            g["pos"], g["vel"], g["mass"], g["age"], g["metallicity"], g["exsitu_flag"], rotations, fov, args.npix
        )

    cond, ex, mask = kernel()
    ref = scipy_maps(g, rotations, fov, args.npix)
    agree = np.allclose(cond, ref[:, :5] * mask, atol=1e-3, rtol=1e-4) and np.allclose(ex[:, 0], ref[:, 5], atol=1e-5)

    # Interleaved, so that load from other processes hits both alike.
    pairs = [(seconds(kernel), seconds(lambda: scipy_maps(g, rotations, fov, args.npix))) for _ in range(args.repeats)]
    t_kernel, t_scipy = np.median(pairs, axis=0)
    work = args.particles * args.los
    tracemalloc.start()
    kernel()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"galaxy: {args.particles} particles, {args.los} lines of sight, {args.npix}x{args.npix} pixels, one core")
    print(f"maps agree with the scipy version: {agree}")
    print(f"kernel  (np.bincount):          {t_kernel:8.3f} s  {work / t_kernel:12.3e} particle-projections/s")
    print(f"scipy   (binned_statistic_2d):  {t_scipy:8.3f} s  {work / t_scipy:12.3e} particle-projections/s")
    print(f"speed-up: {t_scipy / t_kernel:.1f}x (target >= 20x)")
    print(f"kernel peak memory (numpy allocations, inputs excluded): {peak / 2**20:.0f} MiB (target < 1024 MiB)")


if __name__ == "__main__":
    main()
