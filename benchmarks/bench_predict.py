"""Time ``exsitu predict``: one galaxy from the command line (interpreter start, model loading,
reading, regridding, K=100 samples, writing FITS + PNG), and the per-galaxy time over a batch of
galaxies with the model loaded once.

Galaxies are test maps of a finished run written in the generic FITS layout on a grid of 0.5"
spaxels (twice as fine as the model grid, so the regridding works for real). Run after
``snakemake --cores 2`` (any config):

    python benchmarks/bench_predict.py --run . --galaxies 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits

from exsitu.dataset import DatasetFiles
from exsitu.modelcard import load_model_dir
from exsitu.predict import predict_observation
from exsitu.regrid import PixelGrid, regrid_mean
from exsitu.sky import read_observation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fits_factories import write_generic  # noqa: E402 (the test suite's writer of the documented layout)

SPAXEL = 0.5  # arcsec
UPSAMPLE = 2  # spaxels per model pixel side


def write_galaxies(run: Path, out: Path, n: int) -> list[Path]:
    """The first ``n`` test maps of ``run`` as generic-layout FITS files (physical units)."""
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
    p = card.npix
    model_px, spax = PixelGrid.square(p, p * SPAXEL * UPSAMPLE), PixelGrid.square(p * UPSAMPLE, p * SPAXEL * UPSAMPLE)
    re = p * SPAXEL * UPSAMPLE / card.fov_rhalf / (4.0 / 3.0 if card.radius == "3d" else 1.0)
    paths = []
    for i in range(min(n, len(test))):
        mask = test.mask[i, 0].numpy()
        physical = test.conditions[i].numpy() * std + mean
        fine = regrid_mean(physical, model_px, spax)
        fine_mask = regrid_mean(mask.astype(float), model_px, spax) > 0.5
        maps = {c: np.where(fine_mask, fine[j], np.nan) for j, c in enumerate(card.channels)}
        masks = {c: (~fine_mask).astype(np.int32) for c in card.channels}
        centre = (p * UPSAMPLE / 2 - 0.5,) * 2
        paths.append(
            write_generic(
                out / f"gal{i}.fits", maps, re_arcsec=re, redshift=0.03, psf_fwhm=2.5, masks=masks, centre_xy=centre
            )  # fmt: skip
        )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=".", help="workflow directory with a finished run")
    parser.add_argument("--galaxies", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = Path(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_galaxies(run, Path(tmp), args.galaxies)
        model_dir = run / "results" / "models"
        cli = []
        for r in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(
                ["exsitu", "predict", "--model-dir", str(model_dir), "--out", f"{tmp}/cli{r}.fits",
                 "--samples", str(args.samples), str(files[0])],
                check=True, capture_output=True,
            )  # fmt: skip
            cli.append(time.perf_counter() - start)
        with fits.open(f"{tmp}/cli0.fits") as hdul:
            usable = int(np.isfinite(hdul["MEAN"].data).sum())
        print(
            f"exsitu predict, one galaxy, K={args.samples} (start-up, model loading, FITS + PNG out): "
            f"median {statistics.median(cli):.2f} s of {args.repeats} ({', '.join(f'{t:.2f}' for t in cli)}); "
            f"{usable} spaxels predicted, torch threads {torch.get_num_threads()}"
        )
        start = time.perf_counter()
        model = load_model_dir(model_dir, torch.device("cpu"))
        loaded = time.perf_counter()
        for path in files:
            predict_observation(model, read_observation(path, model.card.channels), args.samples, seed=0)
        done = time.perf_counter()
        print(
            f"batch of {len(files)} galaxies in one process: model loading {loaded - start:.2f} s, then "
            f"{(done - loaded) / len(files):.3f} s per galaxy (read, regrid, {args.samples} samples, regrid back)"
        )


if __name__ == "__main__":
    main()
