"""Train the conditional MAF p(z | condition context) on the cVAE latents -> results/models/flow.pt.

The trained cVAE (``--cvae``) encodes every training and validation map into q(z | eps, theta),
``ENCODE_CHUNK`` maps at a time (memory is bounded by a chunk, not by the data set); the flow
learns from fresh draws of those Gaussians each epoch (never from their means alone),
conditioned on the condition encoder's summary vector (and, with ``flow.context: pooled``, its pooled
features; ``exsitu.flow.flow_context``). With ``flow.augment`` each training map is
encoded in all eight symmetries of the square (``exsitu.augment``): each is an equally valid map
with its own summary and latent, so the flow, which learns a 10-d conditional density from a few
thousand maps and overfits them, sees eight times the pairs at no simulation cost. The flow trains in fp32 whatever
``train.precision``: its loss is a log density whose log-determinants bfloat16 would round to
about three digits, and its small MLPs gain nothing from bfloat16.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from exsitu.augment import ELEMENTS, dihedral
from exsitu.checkpoint import load_models
from exsitu.cvae import CVAE
from exsitu.dataset import DatasetFiles
from exsitu.flow import FlowConfig, LatentFlow, context_dim
from exsitu.sample import encode
from exsitu.settings import ConditionSettings, FlowSettings, section_of
from exsitu.stages import run_stage
from exsitu.stages._train import Training, prior_weights, run_training, training_parser

#: Maps per encoder chunk: 256 maps of 128^2 with five channels are 0.1 GB as float32.
ENCODE_CHUNK = 256


def encode_subset(
    cvae: CVAE,
    data: DatasetFiles,
    subset: str,
    scalars: Sequence[str],
    elements: Sequence[int] = (0,),
    context: str = "summary",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(z | eps, theta) of every map of ``subset``, chunk by chunk: (mu, std, flow context) as ``encode`` gives them.

    elements: the symmetries of the square each map is encoded in (``exsitu.augment``; 0 is the
    identity); the rows are ordered element by element within a chunk.
    """
    parts = [
        encode(cvae, dihedral(chunk.conditions, e), dihedral(chunk.exsitu, e), chunk.scalars(scalars), context=context)
        for chunk in data.chunks(subset, ENCODE_CHUNK)
        for e in elements
    ]
    return tuple(torch.cat(column) for column in zip(*parts))


def _per_element(weights: torch.Tensor, n_elements: int) -> torch.Tensor:
    """Map weights in the row order of ``encode_subset``: each chunk's maps once per element."""
    return torch.cat([chunk.repeat(n_elements) for chunk in weights.split(ENCODE_CHUNK)])


def build(args: argparse.Namespace, data: DatasetFiles, device: torch.device) -> Training:
    settings = section_of(args.settings, FlowSettings)
    cvae = load_models({"cvae": args.cvae}, device)["cvae"]
    scalars = section_of(args.settings, ConditionSettings, required=False).scalars
    cfg = FlowConfig(
        latent_dim=cvae.cfg.latent_dim,
        context_dim=context_dim(settings.context, cvae.cfg.summary_dim, cvae.condition_encoder.widths),
        num_layers=settings.num_layers,
        hidden_features=settings.hidden_features,
        context=settings.context,
    )
    elements = range(ELEMENTS) if settings.augment else (0,)
    train_data = encode_subset(cvae, data, "train", scalars, elements, settings.context)
    val_mu, val_std, val_context = encode_subset(cvae, data, "val", scalars, context=settings.context)
    # Validation scores one fixed draw per map, so its loss is comparable from epoch to epoch.
    draws = torch.Generator().manual_seed(settings.seed)
    val_z = val_mu + val_std * torch.randn(val_mu.shape, generator=draws)
    torch.manual_seed(settings.seed)  # the initial weights are part of a seeded run
    flow = LatentFlow(cfg)
    mu, std, train_context = train_data
    flow.set_standardisation(mu + std * torch.randn(mu.shape, generator=draws), train_context)
    return Training(
        model=flow,
        train=train_data,
        val=(val_z, torch.zeros_like(val_std), val_context),
        settings=settings.training(),
        precision="fp32",
        train_weights=_per_element(prior_weights(data.table("train"), args.settings), len(elements)),
        val_weights=prior_weights(data.table("val"), args.settings),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = training_parser(__file__, __doc__)
    parser.add_argument("--cvae", required=True, help="trained cVAE model file (results/models/cvae.pt)")
    run_training(parser, build, argv)


if __name__ == "__main__":
    run_stage(main)
