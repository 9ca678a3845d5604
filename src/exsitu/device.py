"""Which torch device a stage runs on: ``auto`` picks CUDA when present; ``cuda`` insists on a GPU."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from exsitu.io import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> torch.device:
    """Return the device for ``requested`` (config key ``device``: auto | cpu | cuda).

    ``auto`` gives CUDA when a GPU is visible, else the CPU. ``cuda`` without a visible GPU is
    an ``InputError``: a cluster job whose GPU request silently failed must stop before any
    work, not train on the CPU for days. Stages call this first, before reading any data.
    """
    # Imported here, not at the top: every stage imports this module for its flag, and the CPU stages that
    # never touch a network (tag, project, select, ...) would each pay torch's ~1.5 s import.
    import torch

    if requested not in DEVICE_CHOICES:
        raise InputError(f"config key 'device' must be one of {', '.join(DEVICE_CHOICES)}, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        if torch.version.cuda is None:
            why = f"this torch {torch.__version__} is a CPU-only build"
        else:
            why = f"torch sees no GPU (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r})"
        raise InputError(
            f"config key 'device' is 'cuda' but {why}; ask the scheduler for a GPU (resources.<rule>.gpus), "
            "or set device to 'auto' (CUDA when present, else the CPU) or 'cpu'"
        )
    return torch.device("cpu")
