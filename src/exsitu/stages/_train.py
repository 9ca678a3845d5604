"""The one code path of the three training stages (train_cvae, train_flow, train_baseline).

Each stage supplies a ``build`` function that turns the loaded train/val maps into a
:class:`Training` (the model, its data tensors, optimiser settings and loss options); this
module parses the shared flags, loads the data, fits and writes the outputs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from exsitu.dataset import DatasetFiles, MapSet
from exsitu.device import resolve_device
from exsitu.settings import ConditionSettings, TrainSettings, section_of
from exsitu.stages import add_device_argument, stage_parser
from exsitu.training import fit, save_outputs


@dataclass
class Training:
    """One training run as a stage sets it up."""

    model: nn.Module
    train: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...]
    settings: TrainSettings
    loss_options: dict[str, Any] = field(default_factory=dict)
    epoch_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None
    amp: bool = True


Build = Callable[[argparse.Namespace, MapSet, MapSet, torch.device], Training]


def training_parser(module_file: str, doc: str | None) -> argparse.ArgumentParser:
    """The flags every training stage takes (see workflow/rules/model.smk)."""
    parser = stage_parser(module_file, doc)
    parser.add_argument("--maps", nargs="+", required=True, help="map shards results/maps/shard_K.h5")
    parser.add_argument("--split", required=True, help="results/dataset/split.csv")
    parser.add_argument("--stats", required=True, help="results/dataset/normalisation.json")
    add_device_argument(parser)
    parser.add_argument("--checkpoint", required=True, help="per-epoch checkpoint, resumed when the stage reruns")
    parser.add_argument("--model", required=True, help="model file (best epoch)")
    parser.add_argument("--history", required=True, help="per-epoch history CSV")
    return parser


def run_training(parser: argparse.ArgumentParser, build: Build, argv: Sequence[str] | None) -> None:
    """Parse the flags, load the train/val maps, build the run, fit it and write model + history."""
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    data = DatasetFiles(
        args.maps, args.split, args.stats, section_of(args.settings, ConditionSettings, required=False).channels
    )
    train, val = data.load("train"), data.load("val")
    run = build(args, train, val, device)
    result = fit(
        run.model, run.train, run.val, run.settings, device, args.checkpoint,
        loss_options=run.loss_options, amp=run.amp, epoch_metrics=run.epoch_metrics,
    )  # fmt: skip
    save_outputs(args.model, args.history, run.model, result, {"settings": args.settings})
