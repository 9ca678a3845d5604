"""Time ``exsitu predict``: one galaxy from the command line (interpreter start, model loading,
reading, regridding, K samples, writing FITS + PNG), and many galaxies in one call (``--out-dir``,
the model loaded once, a catalogue written at the end): the per-galaxy time is the slope between
a call with one galaxy and a call with all of them, the rest is start-up and model loading. And
sampling alone with one galaxy per network call and with several (does batching galaxies help?).

Galaxies are test maps of a finished run written in the generic FITS layout on a grid of 0.5"
spaxels (twice as fine as the model grid, so the regridding works for real). The many-galaxy
calls draw K samples and write their summaries (``--summaries-only``, as the predict_catalogue
target does). Issue 16's target: at most 0.3 s per galaxy plus one model load, 100 galaxies,
K = 100, 2 cores. Run after ``snakemake --cores 2`` (any config):

    python benchmarks/bench_predict.py --run . --galaxies 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from astropy.io import fits

from exsitu.dataset import DatasetFiles
from exsitu.modelcard import TrainedModel, load_model_dir
from exsitu.predict import predict_maps
from exsitu.regrid import PixelGrid, regrid_mean
from exsitu.scalars import scalar_values

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fits_factories import write_generic  # noqa: E402 (the test suite's writer of the documented layout)

SPAXEL = 0.5  # arcsec
UPSAMPLE = 2  # spaxels per model pixel side


def test_maps(run: Path, n: int) -> tuple[TrainedModel, np.ndarray, np.ndarray, pd.DataFrame]:
    """The run's model and ``n`` test maps (cycling through them if there are fewer) on the model
    grid: conditions (n, C, P, P) in physical units, mask (n, P, P) and their split.csv rows (the
    galaxy scalars)."""
    res = run / "results"
    model = load_model_dir(res / "models", torch.device("cpu"))
    card = model.card
    shards = sorted(str(p) for p in (res / ("observed" if card.observe else "maps")).glob("shard_*.h5"))
    stats = json.loads((res / "dataset" / "normalisation.json").read_text())
    keep = [stats["channels"].index(c) for c in card.channels]
    mean = np.asarray(stats["mean"])[keep][:, None, None]
    std = np.asarray(stats["std"])[keep][:, None, None]
    test = DatasetFiles(shards, str(res / "dataset" / "split.csv"), str(res / "dataset" / "normalisation.json"),
                        card.channels).load("test")  # fmt: skip
    which = np.arange(n) % len(test)
    conditions = (test.conditions[which].numpy() * std + mean).astype(np.float32)
    return model, conditions, test.mask[which, 0].numpy(), test.table.iloc[which]


def write_galaxies(run: Path, out: Path, n: int) -> list[Path]:
    """``n`` test maps of ``run`` as generic-layout FITS files."""
    model, conditions, masks, rows = test_maps(run, n)
    card = model.card
    p = card.npix
    model_px, spax = PixelGrid.square(p, p * SPAXEL * UPSAMPLE), PixelGrid.square(p * UPSAMPLE, p * SPAXEL * UPSAMPLE)
    re = p * SPAXEL * UPSAMPLE / card.fov_rhalf / (4.0 / 3.0 if card.radius == "3d" else 1.0)
    paths = []
    for i, (physical, mask, mstar) in enumerate(zip(conditions, masks, rows["log_mstar"])):
        fine = regrid_mean(physical, model_px, spax)
        fine_mask = regrid_mean(mask.astype(float), model_px, spax) > 0.5
        maps = {c: np.where(fine_mask, fine[j], np.nan) for j, c in enumerate(card.channels)}
        spaxel_masks = {c: (~fine_mask).astype(np.int32) for c in card.channels}
        centre = (p * UPSAMPLE / 2 - 0.5,) * 2
        paths.append(
            write_generic(
                out / f"gal{i}.fits",
                maps,
                re_arcsec=re,
                redshift=0.03,
                psf_fwhm=2.5,
                masks=spaxel_masks,
                centre_xy=centre,
                primary_cards={"LOGMSTAR": float(mstar)},  # for a model conditioned on log_mstar
            )  # fmt: skip
        )
    return paths


def time_batching(run: Path, k: int, n: int = 16) -> None:
    """Sampling alone: ``n`` galaxies through the network one per call, and several per call."""
    model, conditions, mask, rows = test_maps(run, n)
    scalars = scalar_values(rows, model.card.scalars)  # (n, 0) and ignored for a model without scalars
    predict_maps(model, conditions[:1], mask[:1], k, seed=0, scalars=scalars[:1])  # warm-up
    times = {}
    for per_call in (1, 4, n):
        start = time.perf_counter()
        for i in range(0, n, per_call):
            part = slice(i, i + per_call)
            predict_maps(model, conditions[part], mask[part], k, seed=0, scalars=scalars[part])
        times[per_call] = (time.perf_counter() - start) / n
    print(
        f"sampling alone, K={k}, s per galaxy with 1, 4, {n} galaxies per network call: "
        + ", ".join(f"{t:.3f}" for t in times.values())
    )


def timed_cli(*args: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``exsitu predict`` call (which must succeed); CPU is user + system
    time of the process, what the wall time would be on idle cores with one torch thread."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["exsitu", "predict", *args], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=".", help="workflow directory with a finished run")
    parser.add_argument("--galaxies", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = Path(args.run)
    model_dir = str(run / "results" / "models")
    with tempfile.TemporaryDirectory() as tmp:
        galaxies = Path(tmp) / "galaxies"
        galaxies.mkdir()
        files = write_galaxies(run, galaxies, args.galaxies)
        k = str(args.samples)
        cli = [timed_cli("--model-dir", model_dir, "--out", f"{tmp}/cli{r}.fits", "--samples", k, str(files[0]))[0]
               for r in range(args.repeats)]  # fmt: skip
        with fits.open(f"{tmp}/cli0.fits") as hdul:
            usable = int(np.isfinite(hdul["MEAN"].data).sum())
        print(
            f"exsitu predict, one galaxy, K={args.samples} (start-up, model loading, FITS + PNG out): "
            f"median {statistics.median(cli):.2f} s of {args.repeats} ({', '.join(f'{t:.2f}' for t in cli)}); "
            f"{usable} spaxels predicted, torch threads {torch.get_num_threads()}"
        )
        batch = ["--model-dir", model_dir, "--samples", k, "--summaries-only"]
        one = [timed_cli(*batch, "--out-dir", f"{tmp}/one{r}", str(files[0])) for r in range(args.repeats)]
        many = timed_cli(*batch, "--out-dir", f"{tmp}/many", str(galaxies))
        start = time.perf_counter()
        load_model_dir(model_dir, torch.device("cpu"))
        loading = time.perf_counter() - start
        for which, label in ((0, "wall"), (1, "CPU")):
            fixed = statistics.median(t[which] for t in one)
            per_galaxy = (many[which] - fixed) / (len(files) - 1)
            print(
                f"exsitu predict --out-dir, K={args.samples}, {label} time: one galaxy {fixed:.2f} s (median of "
                f"{args.repeats}), {len(files)} galaxies {many[which]:.2f} s -> {per_galaxy:.3f} s per galaxy "
                f"(FITS + PNG + catalogue row) after {fixed - per_galaxy:.2f} s of start-up and model loading; "
                f"{'meets' if per_galaxy <= 0.3 else 'misses'} issue 16's 0.3 s per galaxy"
            )
        time_batching(run, args.samples)
        print(
            f"load_model_dir alone: {loading:.2f} s; torch threads {torch.get_num_threads()}; load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs (another job's work slows the "
            "wall time, and torch's threads spin on busy cores: OMP_NUM_THREADS=1 on a shared machine)"
        )


if __name__ == "__main__":
    main()
