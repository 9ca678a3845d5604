"""Two runs of the pipeline on the same test maps, compared pair by pair: run B over run A.

When two configurations share the universe, the split seed and the test share (``split.test``), their test maps
are the same, and a paired galaxy bootstrap (``exsitu.bootstrap.GalaxyBootstrap``: the same galaxies in both in
every replicate) separates a change of the method from the luck of the test set. From each run's saved flow
samples (``results/evaluation/samples.h5``, ``evaluate.n_saved_samples`` draws in float16) it prints B / A for

- the per-pixel MAE of the samples' median (``exsitu.point_metrics.paired_ratio``);
- the RMS error of the integrated ex-situ fraction, here of the samples' mean map with equal pixel weights
  (``exsitu.functionals.integrated_fraction``; the stellar mass is not saved, so not the mass-weighted fraction of
  metrics.json; ``exsitu.point_metrics.rms_ratio``);
- the energy and variogram scores of the samples (``exsitu.recalibration.sample_scores``).

Below 1, run B is the better. Used for "A larger validation set" in the README.

    python benchmarks/bench_paired_runs.py RUN_A RUN_B [--replicates 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import torch

from exsitu.bootstrap import GalaxyBootstrap
from exsitu.functionals import integrated_fraction
from exsitu.io import InputError
from exsitu.point_metrics import paired_ratio, rms_ratio
from exsitu.recalibration import sample_scores

#: The datasets that name a test map: two runs are paired only when these agree row by row.
MAP_KEYS = ("galaxy_id", "subhalo_id", "snapshot")
CHUNK = 50  # maps scored at once (50 x 100 draws x 32 x 32 float32 is ~20 MB)


def per_map_figures(run: Path) -> dict[str, np.ndarray]:
    """Per test map of ``run``: its identity (:data:`MAP_KEYS`), absolute error summed over galaxy pixels, pixel
    count, true and sampled integrated fraction (pixel means), energy and variogram scores."""
    path = run / "results" / "evaluation" / "samples.h5"
    if not path.is_file():
        raise InputError(f"{path}: no saved samples (run evaluate with evaluate.n_saved_samples > 0)")
    with h5py.File(path, "r") as f:
        out = {key: f[key][()] for key in MAP_KEYS}
        samples, truth, mask = f["samples"], f["truth"][()].astype(np.float32), f["mask"][()]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("abs_error", "predicted", "energy", "variogram")}
        for start in range(0, len(truth), CHUNK):
            part = slice(start, start + CHUNK)
            draws, m = samples[part].astype(np.float32), mask[part]
            parts["abs_error"].append((np.abs(np.median(draws, axis=1) - truth[part]) * m).sum((1, 2)))
            parts["predicted"].append(integrated_fraction(draws.mean(1), m.astype(np.float64)))
            scores = sample_scores(torch.from_numpy(draws), torch.from_numpy(truth[part]), torch.from_numpy(m))
            parts["energy"].append(scores["energy"].numpy())
            parts["variogram"].append(scores["variogram"].numpy())
    out.update({k: np.concatenate(v) for k, v in parts.items()})
    out["pixels"] = mask.sum((1, 2)).astype(np.float64)
    out["true"] = integrated_fraction(truth, mask.astype(np.float64))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    try:
        a, b = per_map_figures(args.run_a), per_map_figures(args.run_b)
    except InputError as err:
        raise SystemExit(str(err)) from None
    for key in MAP_KEYS:
        if a[key].shape != b[key].shape or (a[key] != b[key]).any():
            raise SystemExit(f"{args.run_a} and {args.run_b} hold different test maps ({key} differs): nothing to pair")
    boot = GalaxyBootstrap(a["galaxy_id"], n_replicates=args.replicates)
    ones = np.ones(boot.n_maps)
    ratios = {
        "per-pixel MAE (sample median)": paired_ratio(
            boot, (b["abs_error"], b["pixels"]), (a["abs_error"], a["pixels"])
        ),
        "integrated RMS (pixel mean)": rms_ratio(boot, b["predicted"], a["predicted"], a["true"]),
        "energy score": paired_ratio(boot, (b["energy"], ones), (a["energy"], ones)),
        "variogram score": paired_ratio(boot, (b["variogram"], ones), (a["variogram"], ones)),
    }
    print(f"{args.run_b} over {args.run_a}: {boot.n_galaxies} test galaxies, {boot.n_maps} maps")
    for name, estimate in ratios.items():
        print(f"  {name}: {estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]")


if __name__ == "__main__":
    main()
