"""How much of the predictive lies at the clip, against how often the truth does: a reliability table of a run's
test samples.

With ``cvae.hurdle`` a posterior sample of a pixel is exactly 0 when drawn at the low clip. For every galaxy
pixel of the run's test maps this takes the share of its saved flow samples at or below the clip
(``cvae.logit_eps``) as its predicted probability of the low clip, bins the pixels by it and prints, per bin,
the pixels, the mean predicted probability and the share of those pixels whose true fraction is at or below
the clip, and the expected calibration error (ECE) over the bins, overall and between predicted 0.2 and
0.8. A calibrated predictive puts the two on the diagonal. ``recalibrate.clip_classes``
(``exsitu.hurdle_calibration``) is fitted to do that on the validation maps; this checks it on the test maps.
Every pixel counts once (the evaluation weighs galaxies by 1/n_los).

    python benchmarks/bench_clip_reliability.py --run . [--samples results/evaluation/samples.h5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import torch

from exsitu.dataset import DatasetFiles
from exsitu.modelcard import load_model_dir

#: Bin edges of the predicted probability of the low clip.
EDGES = (0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0)


def reliability(predicted: np.ndarray, observed: np.ndarray) -> list[tuple[float, float, int, float, float]]:
    """Per bin of ``EDGES`` (the last one closed): (low edge, high edge, pixels, mean predicted, observed share)."""
    rows = []
    for i, (low, high) in enumerate(zip(EDGES[:-1], EDGES[1:])):
        inside = (predicted >= low) & ((predicted < high) | (i == len(EDGES) - 2))
        if inside.any():
            rows.append((low, high, int(inside.sum()), float(predicted[inside].mean()), float(observed[inside].mean())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="finished run directory (holds results/)")
    parser.add_argument("--samples", type=Path, help="the test maps' samples (default: the run's samples.h5)")
    args = parser.parse_args()
    res = args.run / "results"
    model = load_model_dir(res / "models", torch.device("cpu"))
    card = model.card
    maps = sorted(str(p) for p in (res / ("maps" if card.observe is None else "observed")).glob("shard_*.h5"))
    data = DatasetFiles(maps, str(res / "dataset/split.csv"), str(res / "dataset/normalisation.json"), card.channels)
    with h5py.File(args.samples or res / "evaluation/samples.h5") as h5:  # test-subset order, as the evaluation
        samples = h5["samples"][()]
    test = data.load("test")
    truth, mask = test.exsitu[:, 0].numpy(), test.mask[:, 0].numpy()
    maps_, y, x = np.nonzero(mask)
    clip = model.cvae.cfg.logit_eps
    predicted = (samples[maps_, :, y, x] <= clip).mean(axis=1)
    observed = truth[mask] <= clip
    print(f"{args.samples or res / 'evaluation/samples.h5'}: {len(samples)} test maps, {len(predicted)} galaxy pixels")
    print(f"all pixels: predicted {predicted.mean():.3f}, observed {observed.mean():.3f} at the low clip")
    rows = reliability(predicted, observed)
    for low, high, n, pred, obs in rows:
        print(f"predicted [{low:.2f}, {high:.2f}): {n:7d} pixels, predicted {pred:.3f}, observed {obs:.3f}")
    # The expected calibration error (Guo et al. 2017, ICML): the pixel-weighted mean gap between the two columns.
    gap = sum(n * abs(pred - obs) for _, _, n, pred, obs in rows) / len(predicted)
    middle = [(n, abs(pred - obs)) for low, high, n, pred, obs in rows if low >= 0.2 and high <= 0.8]
    middle_gap = sum(n * g for n, g in middle) / max(sum(n for n, _ in middle), 1)
    print(f"ECE {gap:.4f}; between predicted 0.2 and 0.8 {middle_gap:.3f}")


if __name__ == "__main__":
    main()
