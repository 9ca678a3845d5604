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
from exsitu.cvae import CVAEConfig
from exsitu.dataset import DatasetFiles
from exsitu.settings import BaselineSettings, CVAESettings, TrainLoopSettings, section_of
from exsitu.stages import run_stage
from exsitu.stages._train import MAP_DTYPE, Training, map_tensors, run_training, training_parser


def build(args: argparse.Namespace, data: DatasetFiles, device: torch.device) -> Training:
    cvae = section_of(args.settings, CVAESettings)
    settings = section_of(args.settings, BaselineSettings).training(cvae)
    train, val = data.load("train", MAP_DTYPE), data.load("val", MAP_DTYPE)
    cfg = CVAEConfig.from_settings(cvae, int(train.conditions.shape[-1]), len(train.channels))
    torch.manual_seed(settings.seed)  # the initial weights are part of a seeded run
    return Training(
        model=Baseline(cfg),
        train=map_tensors(train),
        val=map_tensors(val),
        settings=settings,
        precision=section_of(args.settings, TrainLoopSettings, required=False).precision,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_training(training_parser(__file__, __doc__), build, argv)


if __name__ == "__main__":
    run_stage(main)
