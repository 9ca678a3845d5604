"""The pipeline's stages: one module per Snakemake rule, each with a ``main(argv)``.

A stage only parses its command line, builds the typed settings (``exsitu.settings``) and
calls library functions; everything it computes lives in the library beside this package.
Run a stage as ``exsitu <stage>`` or ``python -m exsitu.stages.<stage>``; ``--help`` lists
its flags. The stages and their file contracts are described in ``docs/design.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from exsitu.device import DEVICE_CHOICES
from exsitu.io import InputError

#: Stage modules in pipeline order, one per Snakemake rule.
STAGES: tuple[str, ...] = (
    "simulate_mock", "select", "tag", "plan", "project", "observe", "split", "relations", "model_card",
    "train_cvae", "train_flow", "recalibrate", "train_baseline", "fit_baselines", "predict_baselines",
    "evaluate", "report", "predict_catalogue",
)  # fmt: skip
#: Commands for users that are not pipeline rules.
TOOLS: tuple[str, ...] = ("predict",)


def parse_settings(text: str) -> dict[str, Any]:
    """Parse the ``--settings`` JSON object a rule passes: ``{section: {key: value}}``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--settings is not valid JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise InputError(f"--settings must be a JSON object, got {text!r}")
    return value


def stage_parser(module_file: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a stage module (pass its ``__file__``), with the flag every stage shares (``--settings``)."""
    parser = argparse.ArgumentParser(prog=f"exsitu {Path(module_file).stem}", description=(doc or "").strip())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--settings",
        type=parse_settings,
        default={},
        help="JSON object {section: {key: value}} with the config sections the stage reads (as the rule passes them)",
    )
    return parser


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``--maps``, ``--split``, ``--stats``: the data set a model stage reads (``exsitu.dataset.DatasetFiles``)."""
    parser.add_argument("--maps", nargs="+", required=True, help="map shards (results/maps or results/observed)")
    parser.add_argument("--split", required=True, help="results/dataset/split.csv")
    parser.add_argument("--stats", required=True, help="results/dataset/normalisation.json")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (config key ``device``) for the stages that run a network."""
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto: CUDA when present")


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a stage's main with logging set up; turn an InputError into one clear line.

    The exit status is 1 for bad input (message on stderr, prefixed ``error:``), so a
    Snakemake rule fails with the message in its log instead of a traceback.
    """
    logging.basicConfig(
        level=os.environ.get("EXSITU_LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        main(argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
