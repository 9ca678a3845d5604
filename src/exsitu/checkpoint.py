"""Model files and training checkpoints: what they hold and how they are read back safely.

A model file (``results/models/{cvae,flow,baseline}.pt``) is a plain dict
``{"format", "kind", "hparams", "state_dict", "meta"}``: ``kind`` is cvae | flow | baseline,
``hparams`` the shape-fixing hyperparameters (the model is rebuilt from them), ``meta`` free
JSON-like facts (settings, best epoch). Everything is read with ``torch.load(weights_only=True)``,
so no pickled code ever runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exsitu.baseline import Baseline
from exsitu.cvae import CVAE, CVAEConfig
from exsitu.flow import FlowConfig, LatentFlow
from exsitu.io import InputError, atomic_output

FORMAT = "exsitu-model-1"
MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "cvae": (CVAE, CVAEConfig),
    "baseline": (Baseline, CVAEConfig),
    "flow": (LatentFlow, FlowConfig),
}


def build_model(kind: str, hparams: dict[str, Any]) -> nn.Module:
    """A fresh (untrained) model of ``kind`` with the given hyperparameters."""
    model_cls, config_cls = MODELS[kind]
    return model_cls(config_cls(**hparams))


def read_file(path: str | os.PathLike, what: str = "model") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of ``path`` with one clear error for any failure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises pickle, zip and runtime errors for damaged files
        raise InputError(f"{path}: not a readable {what} file (corrupt or truncated?): {err}") from None
    if not isinstance(content, dict):
        raise InputError(f"{path}: not an exsitu {what} file (holds {type(content).__name__})")
    return content


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (its current weights) atomically as a model file."""
    content = {
        "format": FORMAT,
        "kind": model.kind,
        "hparams": model.hparams(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    with atomic_output(path) as tmp:
        torch.save(content, tmp)


def _checked_content(path: str) -> dict[str, Any]:
    """The content of a model file whose format and kind this exsitu knows."""
    content = read_file(path)
    if content.get("format") != FORMAT or content.get("kind") not in MODELS:
        raise InputError(
            f"{path}: not an exsitu model file (format {content.get('format')!r}, kind {content.get('kind')!r})"
        )
    return content


def _rebuild(content: dict[str, Any], path: str, device: torch.device) -> nn.Module:
    try:
        model = build_model(content["kind"], content["hparams"])
        model.load_state_dict(content["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise InputError(
            f"{path}: the {content['kind']} weights do not match its hyperparameters {content.get('hparams')}: {err}"
        ) from None
    return model.to(device).eval()


def load_model(path: str, device: torch.device) -> torch.nn.Module:
    """Rebuild the cVAE, flow or baseline stored in ``path`` on ``device``, in eval mode.

    A corrupt file, a file that is not an exsitu model, or weights that do not fit the stored
    hyperparameters raise ``InputError`` naming the file.
    """
    return _rebuild(_checked_content(path), path, device)


def load_models(paths: Mapping[str, str], device: torch.device) -> dict[str, nn.Module]:
    """Rebuild the model in each file on ``device``, in eval mode, checking that it is of the kind asked for.

    Args:
        paths: kind expected (cvae | flow | baseline) -> model file.
        device: where the models go.

    Returns:
        kind -> model, in the order of ``paths``.

    Raises:
        InputError: a file that :func:`load_model` refuses, or one holding another kind of model
            (naming the file, the kind found and the kind expected).
    """
    models = {}
    for kind, path in paths.items():
        if kind not in MODELS:
            raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODELS)}")
        content = _checked_content(str(path))
        if content["kind"] != kind:
            raise InputError(f"{path}: holds a {content['kind']} model, expected the {kind}")
        models[kind] = _rebuild(content, str(path), device)
    return models
