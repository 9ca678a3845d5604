"""The one code path of the three training stages (train_cvae, train_flow, train_baseline).

Each stage supplies a ``build`` function that reads what it needs from the data set files and
turns it into a :class:`Training` (the model, its data tensors, optimiser settings, loss options,
per-map weights, batch transform and precision); this module parses the shared flags, resolves
the device before any work, fits and writes the outputs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from exsitu.augment import random_dihedral
from exsitu.cvae import CVAEConfig
from exsitu.dataset import DatasetFiles, MapSet
from exsitu.device import resolve_device
from exsitu.priors import map_weights
from exsitu.settings import (
    ConditionSettings,
    CVAESettings,
    PlanSettings,
    TrainLoopSettings,
    TrainSettings,
    section_of,
)
from exsitu.stages import add_dataset_arguments, add_device_argument, stage_parser
from exsitu.training import BatchTransform, fit, save_outputs

log = logging.getLogger(__name__)

#: dtype the map-based training stages hold their maps in (the loop casts each batch to float32
#: on the device): half the memory of float32, so 100 000 maps of 128^2 fit a 64 GB node.
MAP_DTYPE = torch.float16


@dataclass
class Training:
    """One training run as a stage sets it up (the keywords of ``exsitu.training.fit``)."""

    model: nn.Module
    train: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...]
    settings: TrainSettings
    loss_options: dict[str, Any] = field(default_factory=dict)
    beta_warmup_epochs: int = 0
    epoch_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None
    precision: str = "fp32"
    train_weights: torch.Tensor | None = None
    val_weights: torch.Tensor | None = None
    batch_transform: BatchTransform | None = None


Build = Callable[[argparse.Namespace, DatasetFiles, torch.device], Training]


def map_tensors(maps: MapSet, scalars: Sequence[str] = ()) -> tuple[torch.Tensor, ...]:
    """The batch tensors of the map models' ``loss``: conditions, ex-situ map, mask (and galaxy scalars)."""
    return (maps.conditions, maps.exsitu, maps.mask, *([] if not scalars else [maps.scalars(scalars)]))


def prior_weights(table: pd.DataFrame, sections: dict[str, Any]) -> torch.Tensor:
    """Per-map training weights (split rows ``table``) of the prior ``plan.weighting`` names (``exsitu.priors``)."""
    weighting = section_of(sections, PlanSettings, required=False).weighting
    return torch.as_tensor(map_weights(table["galaxy_id"].to_numpy(), weighting), dtype=torch.float32)


def map_model_training(
    sections: dict[str, Any],
    data: DatasetFiles,
    make_model: Callable[[CVAEConfig], nn.Module],
    settings: TrainSettings,
    **options: Any,
) -> Training:
    """The run of a map model (the cVAE or the deterministic baseline, both of the cvae section's network).

    Train and val are held as float16; the galaxy scalars (``conditions.scalars``) are standardised
    with the training maps' values; every map weighs what ``plan.weighting`` says; with
    ``cvae.augment`` every training batch gets the eight symmetries of the square. ``sections`` are the
    stage's ``--settings``; ``options`` are the remaining keywords of :class:`Training` (loss options,
    epoch metrics).
    """
    cvae = section_of(sections, CVAESettings)
    scalars = section_of(sections, ConditionSettings, required=False).scalars
    train, val = data.load("train", MAP_DTYPE), data.load("val", MAP_DTYPE)
    cfg = CVAEConfig.from_settings(cvae, int(train.conditions.shape[-1]), len(train.channels), len(scalars))
    torch.manual_seed(settings.seed)  # the initial weights are part of a seeded run
    model = make_model(cfg)
    if scalars:
        model.condition_encoder.set_scalar_standardisation(train.scalars(scalars))
    return Training(
        model=model,
        train=map_tensors(train, scalars),
        val=map_tensors(val, scalars),
        settings=settings,
        precision=section_of(sections, TrainLoopSettings, required=False).precision,
        train_weights=prior_weights(train.table, sections),
        val_weights=prior_weights(val.table, sections),
        batch_transform=random_dihedral if cvae.augment else None,
        **options,
    )


def training_parser(module_file: str, doc: str | None) -> argparse.ArgumentParser:
    """The flags every training stage takes (see workflow/rules/model.smk)."""
    parser = stage_parser(module_file, doc)
    add_dataset_arguments(parser)
    add_device_argument(parser)
    parser.add_argument("--checkpoint", required=True, help="per-epoch checkpoint, resumed when the stage reruns")
    parser.add_argument("--model", required=True, help="model file (best epoch)")
    parser.add_argument("--history", required=True, help="per-epoch history CSV")
    return parser


def run_training(parser: argparse.ArgumentParser, build: Build, argv: Sequence[str] | None) -> None:
    """Parse the flags, resolve the device, build the run from the data set, fit it and write model + history."""
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    # Set the CPU thread count explicitly (OMP_NUM_THREADS, which Snakemake sets from the rule's
    # threads): torch.set_num_threads also turns MKL's dynamic threading off, one of MKL's
    # conditions for run-to-run identical results, so a seeded run trains the same weights
    # locally and as a SLURM job. The log records the count, the other condition.
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    log.info("training on %s with %d CPU threads", device, threads)
    data = DatasetFiles(
        args.maps, args.split, args.stats, section_of(args.settings, ConditionSettings, required=False).channels
    )
    run = build(args, data, device)
    result = fit(
        run.model, run.train, run.val, run.settings, device, args.checkpoint,
        loss_options=run.loss_options, beta_warmup_epochs=run.beta_warmup_epochs, precision=run.precision,
        epoch_metrics=run.epoch_metrics,
        train_weights=run.train_weights, val_weights=run.val_weights, batch_transform=run.batch_transform,
    )  # fmt: skip
    save_outputs(args.model, args.history, run.model, result, {"settings": args.settings})
