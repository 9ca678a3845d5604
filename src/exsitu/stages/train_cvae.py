"""Train the conditional VAE on the training maps (ELBO, eq. 1 of the paper) -> results/models/cvae.pt.

Writes the best-epoch model, the per-epoch history (losses, KL per latent dimension, active
units, lr, seconds) and a checkpoint every epoch that a rerun resumes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from exsitu.cvae import CVAE, active_units
from exsitu.dataset import DatasetFiles
from exsitu.settings import CVAESettings, section_of
from exsitu.stages import run_stage
from exsitu.stages._train import Training, map_model_training, run_training, training_parser


def build(args: argparse.Namespace, data: DatasetFiles, device: torch.device) -> Training:
    settings = section_of(args.settings, CVAESettings)
    return map_model_training(
        args.settings,
        data,
        CVAE,
        settings.training(),
        loss_options={"beta": float(settings.beta), "free_bits": float(settings.free_bits)},
        beta_warmup_epochs=int(settings.kl_warmup_epochs),
        epoch_metrics=active_units,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_training(training_parser(__file__, __doc__), build, argv)


if __name__ == "__main__":
    run_stage(main)
