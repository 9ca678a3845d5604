"""Train the conditional MAF p(z | condition summary) on the cVAE latents -> results/models/flow.pt.

The trained cVAE (``--cvae``) encodes every training and validation map into q(z | eps, theta),
``ENCODE_CHUNK`` maps at a time (memory is bounded by a chunk, not by the data set); the flow
learns from fresh draws of those Gaussians each epoch (never from their means alone),
conditioned on the condition encoder's summary vector. The flow trains in fp32 whatever
``train.precision``: its loss is a log density whose log-determinants bfloat16 would round to
about three digits, and its small MLPs gain nothing from bfloat16.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from exsitu.checkpoint import load_models
from exsitu.cvae import CVAE
from exsitu.dataset import DatasetFiles
from exsitu.flow import FlowConfig, LatentFlow
from exsitu.sample import encode
from exsitu.settings import ConditionSettings, FlowSettings, section_of
from exsitu.stages import run_stage
from exsitu.stages._train import Training, prior_weights, run_training, training_parser

#: Maps per encoder chunk: 256 maps of 128^2 with five channels are 0.1 GB as float32.
ENCODE_CHUNK = 256


def encode_subset(
    cvae: CVAE, data: DatasetFiles, subset: str, scalars: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(z | eps, theta) of every map of ``subset``, chunk by chunk: (mu, std, summary) as ``encode`` gives them."""
    parts = [
        encode(cvae, chunk.conditions, chunk.exsitu, chunk.scalars(scalars))
        for chunk in data.chunks(subset, ENCODE_CHUNK)
    ]
    mu, std, summary = (torch.cat(column) for column in zip(*parts))
    return mu, std, summary


def build(args: argparse.Namespace, data: DatasetFiles, device: torch.device) -> Training:
    settings = section_of(args.settings, FlowSettings)
    cvae = load_models({"cvae": args.cvae}, device)["cvae"]
    scalars = section_of(args.settings, ConditionSettings, required=False).scalars
    cfg = FlowConfig(
        latent_dim=cvae.cfg.latent_dim,
        context_dim=cvae.cfg.summary_dim,
        num_layers=settings.num_layers,
        hidden_features=settings.hidden_features,
    )
    train_data = encode_subset(cvae, data, "train", scalars)
    val_mu, val_std, val_summary = encode_subset(cvae, data, "val", scalars)
    # Validation scores one fixed draw per map, so its loss is comparable from epoch to epoch.
    draws = torch.Generator().manual_seed(settings.seed)
    val_z = val_mu + val_std * torch.randn(val_mu.shape, generator=draws)
    torch.manual_seed(settings.seed)  # the initial weights are part of a seeded run
    flow = LatentFlow(cfg)
    mu, std, summary = train_data
    flow.set_standardisation(mu + std * torch.randn(mu.shape, generator=draws), summary)
    return Training(
        model=flow,
        train=train_data,
        val=(val_z, torch.zeros_like(val_std), val_summary),
        settings=settings.training(),
        precision="fp32",
        train_weights=prior_weights(data.table("train"), args.settings),
        val_weights=prior_weights(data.table("val"), args.settings),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = training_parser(__file__, __doc__)
    parser.add_argument("--cvae", required=True, help="trained cVAE model file (results/models/cvae.pt)")
    run_training(parser, build, argv)


if __name__ == "__main__":
    run_stage(main)
