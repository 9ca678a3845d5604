"""Do the noise scales chosen on the validation maps carry over to the test maps? The recalibration's grid on both.

``recalibrate`` chooses the (low-rank, diagonal) noise scales on the ~75 validation galaxies of the default run
(``exsitu.recalibration``); the evaluation then scores them on the ~115 test galaxies. This scores the same grid
on the run's TEST maps (``fit_noise_scales`` with the run's settings: draws, seed, clip classes), reads the
validation grid from the run's ``noise_scale.json``, and for each way of choosing a pair along the coverage curve
(the pairs whose validation pixels are covered at 68% and 95%: ``coverage_curve``) prints

- the pair chosen on the validation maps and the validation maps' integrated-fraction coverage there;
- what the TEST grid gives at that pair: per-pixel coverage at 68% / 95%, integrated coverage at 68% / 95%;
- the pair the same rule would choose on the test maps, and its test integrated coverage (an oracle: how much of
  a miss is the transfer from 75 galaxies to 115 others, and how much the rule itself).

The rules: ``constrained`` (lowest ES / min ES + VS / min VS), ``energy`` (lowest energy score), ``variogram``
(lowest variogram score), ``joint`` (integrated coverage matched; the default since 2026-12-07 night). Coverage
here is the grid's (the recalibration's draws per map), not the evaluation's 100, so it differs from metrics.json by
the draws' noise.

    python benchmarks/bench_recalibration_transfer.py --run . [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from exsitu.dataset import DatasetFiles
from exsitu.io import read_json
from exsitu.likelihood import NoiseScales
from exsitu.modelcard import load_model_dir
from exsitu.recalibration import (
    CHUNK_ELEMENTS,
    COVERAGE_TARGETS,
    _bilinear,
    constrained_scales,
    coverage_curve,
    coverage_matched_scales,
    fit_noise_scales,
)
from exsitu.sample import maps_in_budget
from exsitu.settings import RecalibrateSettings


class Grid:
    """A fit's surfaces (lowrank x diagonal on its scales): energy, variogram, pixel and integrated coverage."""

    def __init__(self, fit: dict) -> None:
        self.scales = np.asarray(fit["scales"], dtype=np.float64)
        self.energy = np.asarray(fit["energy_score"])
        self.variogram = np.asarray(fit["variogram_score"])
        self.pixels = np.array([fit["pixel_coverage"][str(level)] for level in COVERAGE_TARGETS])
        self.integrated = np.array([fit["integrated_coverage"][str(level)] for level in COVERAGE_TARGETS])

    def at(self, surface: np.ndarray, pair: NoiseScales) -> float:
        """``surface`` interpolated linearly in log scale at ``pair``."""
        return _bilinear(np.log(self.scales), surface, np.log(pair.lowrank), np.log(pair.diagonal))

    def rules(self) -> dict[str, NoiseScales]:
        """Each rule's pair on this grid (``constrained`` and ``joint`` as ``recalibrate`` computes them)."""
        curve = coverage_curve(self.scales, self.pixels)
        return {
            "constrained": constrained_scales(self.scales, self.energy, self.variogram, self.pixels),
            "energy": min(curve, key=lambda pair: self.at(self.energy, pair)),
            "variogram": min(curve, key=lambda pair: self.at(self.variogram, pair)),
            "joint": coverage_matched_scales(self.scales, self.pixels, self.integrated),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="finished run directory (holds results/)")
    parser.add_argument("--seed", type=int, default=0, help="the run's recalibrate.seed (map i drawn with seed + i)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    res = args.run / "results"
    validation_fit = read_json(res / "models/noise_scale.json", ("scales", "n_samples"), "noise-scale file")
    model = load_model_dir(res / "models", torch.device("cpu"))
    card = model.card
    maps = sorted(str(p) for p in (res / ("maps" if card.observe is None else "observed")).glob("shard_*.h5"))
    data = DatasetFiles(maps, str(res / "dataset/split.csv"), str(res / "dataset/normalisation.json"), card.channels)
    settings = RecalibrateSettings(
        enabled=True, n_samples=int(validation_fit["n_samples"]), seed=args.seed, method=validation_fit["method"],
        diagonal_slope=False, clip_classes=bool(validation_fit.get("clip_class_fit")),
    )  # fmt: skip
    chunk = maps_in_budget(settings.n_samples, model.cvae.cfg.npix, CHUNK_ELEMENTS)
    test_fit = fit_noise_scales(
        model.cvae, model.flow, lambda: data.chunks("test", chunk), data.table("test"), settings, scalars=card.scalars
    ).to_dict()
    validation, test = Grid(validation_fit), Grid(test_fit)
    print(f"{args.run}: {validation_fit['n_galaxies']} validation galaxies, {test_fit['n_galaxies']} test galaxies, "
          f"{settings.n_samples} draws per map")  # fmt: skip
    oracles = test.rules()
    for name, pair in validation.rules().items():
        oracle = oracles[name]
        print(
            f"{name:11s} validation pair ({pair.lowrank:.3f}, {pair.diagonal:.3f}): validation integrated 68% "
            f"{validation.at(validation.integrated[0], pair):.3f} | test pixels 68% / 95% "
            f"{test.at(test.pixels[0], pair):.3f} / {test.at(test.pixels[1], pair):.3f}, integrated 68% / 95% "
            f"{test.at(test.integrated[0], pair):.3f} / {test.at(test.integrated[1], pair):.3f} | on the test maps "
            f"({oracle.lowrank:.3f}, {oracle.diagonal:.3f}): integrated 68% {test.at(test.integrated[0], oracle):.3f}"
        )


if __name__ == "__main__":
    main()
