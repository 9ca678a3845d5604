"""Train the deterministic baseline (the cVAE's condition encoder and decoder, no latent)
-> results/models/baseline.pt, for the evaluation's baseline comparison.

It takes the cvae section's network and optimiser settings; keys set in the baseline
section (epochs, batch_size, lr, patience, seed) override them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from exsitu.baseline import Baseline
from exsitu.dataset import DatasetFiles
from exsitu.settings import BaselineSettings, CVAESettings, section_of
from exsitu.stages import run_stage
from exsitu.stages._train import Training, map_model_training, run_training, training_parser


def build(args: argparse.Namespace, data: DatasetFiles, device: torch.device) -> Training:
    cvae = section_of(args.settings, CVAESettings)
    return map_model_training(args.settings, data, Baseline, section_of(args.settings, BaselineSettings).training(cvae))


def main(argv: Sequence[str] | None = None) -> None:
    run_training(training_parser(__file__, __doc__), build, argv)


if __name__ == "__main__":
    run_stage(main)
