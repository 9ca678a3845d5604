"""Which torch device a stage runs on: ``auto`` picks CUDA when present, never fails without one."""

from __future__ import annotations

import logging

import torch

from exsitu.io import InputError

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> torch.device:
    """Return the device for ``requested`` (config key ``device``: auto | cpu | cuda).

    ``auto`` gives CUDA when a GPU is visible, else the CPU. ``cuda`` without a GPU
    falls back to the CPU with a warning, so a laptop run of a cluster config still works.
    """
    if requested not in DEVICE_CHOICES:
        raise InputError(f"config key 'device' must be one of {', '.join(DEVICE_CHOICES)}, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        log.warning("device 'cuda' was requested but no GPU is available: training on the CPU")
    return torch.device("cpu")
