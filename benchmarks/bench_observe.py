"""Mock IFU observation (exsitu.observe.observe_maps, MaNGA preset) of realistic map shards, one core.

Builds mock galaxies (the mock universe's galaxy model), projects each along ``--los`` random
lines of sight with the project stage's kernel (field 4 x the 3D half-mass radius), measures
the projected half-mass radius from the particles, then times ``observe_maps`` on the shard
at each ``--npix``. Prints seconds per projection, the time for the whole shard and the
extrapolation to ``--universe`` projections, plus what the observations were like (spaxels,
Voronoi bins, PSF size in output pixels, observed fraction of the map).

    python benchmarks/bench_observe.py [--galaxies 40] [--los 10] [--npix 32 128] [--universe 3000]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads its BLAS

import argparse
import time
from dataclasses import replace

import numpy as np

from exsitu.mock.galaxies import draw_population, make_particles
from exsitu.mock.particles import half_mass_radius
from exsitu.observe import observe_maps, projected_half_mass_radius, voronoi_bins
from exsitu.projection import project
from exsitu.settings import ObserveSettings
from exsitu.sightlines import random_rotations

PRESET = ObserveSettings.from_config({})
FOV_RHALF = 4.0


def shard(n_gal: int, n_los: int, npix_list: list[int], rng: np.random.Generator) -> dict:
    """Ideal maps of ``n_gal`` mock galaxies x ``n_los`` lines of sight at every npix, with fov and R_proj."""
    maps: dict = {p: ([], [], []) for p in npix_list}
    fov, rproj = [], []
    for model in draw_population(rng, n_gal):
        stars = make_particles(model, t_now_gyr=13.8, age_shift_gyr=0.0)
        rot = random_rotations(rng, n_los)
        r3d = half_mass_radius(stars.pos, stars.mass)
        for p in npix_list:
            for acc, arr in zip(
                maps[p],
                project(
                    stars.pos,
                    stars.vel,
                    stars.mass,
                    stars.age,
                    stars.metallicity,
                    stars.insitu == 0,
                    rot,
                    FOV_RHALF * r3d,
                    p,
                ),
            ):
                acc.append(arr)
        fov.append(np.full(n_los, FOV_RHALF * r3d))
        rproj.append(projected_half_mass_radius(stars.pos, stars.mass, rot))
    return {
        "maps": {p: tuple(np.concatenate(a) for a in maps[p]) for p in npix_list},
        "fov": np.concatenate(fov),
        "rproj": np.concatenate(rproj),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=40)
    parser.add_argument("--los", type=int, default=10)
    parser.add_argument("--npix", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--universe", type=int, default=3000, help="projections in the default mock universe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = shard(args.galaxies, args.los, args.npix, rng)
    n = data["fov"].size
    ratio = data["rproj"] / (data["fov"] / FOV_RHALF)
    print(f"{n} projections; R_proj / r_3D: median {np.median(ratio):.3f}, range {ratio.min():.3f}-{ratio.max():.3f}")
    voronoi_bins(np.arange(9.0) % 3, np.arange(9.0) // 3, np.full(9, 25.0), np.full(9, 5.0), 10.0)  # import vorbin now
    for label, settings in (("MaNGA preset", PRESET), ("no Voronoi", replace(PRESET, voronoi_snr=None))):
        for p in args.npix:
            cond, exsitu, mask = data["maps"][p]
            t0, c0 = time.perf_counter(), time.process_time()
            obs = observe_maps(
                cond, exsitu, mask, data["fov"], data["rproj"],
                fov_rhalf=FOV_RHALF, settings=settings, rng=np.random.default_rng(1),
            )  # fmt: skip
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            merged = 1.0 - obs.n_bins.sum() / max(obs.n_spaxels.sum(), 1)
            print(
                f"{label:12s} npix {p:4d}: {dt:7.2f} s wall ({cpu:7.2f} s CPU) for {n} projections = "
                f"{1e3 * dt / n:6.2f} ms each; {args.universe} projections -> {args.universe * dt / n:6.1f} s wall "
                f"({args.universe * cpu / n:6.1f} s CPU)"
            )
            print(
                f"{'':23s}z median {np.median(obs.redshift):.3f}; spaxels median {np.median(obs.n_spaxels):.0f} "
                f"(max {obs.n_spaxels.max()}); spaxels merged by Voronoi {100 * merged:.1f}%; "
                f"PSF FWHM median {np.median(obs.psf_fwhm_pix):.1f} px; observed fraction of the map "
                f"{obs.mask.mean():.3f} (ideal {mask.mean():.3f})"
            )


if __name__ == "__main__":
    main()
