"""A self-contained model directory: the trained weights plus ``model.json``, everything needed
to apply them to maps made elsewhere (a laptop, an observed galaxy).

``model.json`` holds the file-contract version, the conditioning channels in model order with
their units, the normalisation statistics of those channels (physical units), the map size, the
field-of-view definition (``fov_rhalf`` half-mass radii, projected or 3D), the ``observe``
settings the training maps were made with (null for ideal maps), the config hash, the noise
scale of the decoder's residual (``exsitu.recalibration``), the galaxy scalars the networks are
conditioned on (``scalars``, in model order; empty for a model of maps alone) and the model files. Copy the
directory anywhere; :func:`load_model_dir` rebuilds the models from it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from exsitu import __version__
from exsitu.checkpoint import load_models
from exsitu.contracts import CHANNELS, UNITS
from exsitu.cvae import CVAE
from exsitu.flow import LatentFlow
from exsitu.io import InputError, atomic_output
from exsitu.likelihood import NoiseScales
from exsitu.sample import sampling_layout

log = logging.getLogger(__name__)

MODEL_CARD = "model.json"
#: Version of the model-directory contract; a directory written under another one is refused.
CARD_FORMAT = "exsitu-model-dir-2"
#: The radius the field of view is scaled by: the projection's projected half-mass radius (the
#: observable analogue of Re, used when observe is on) or the 3D stellar half-mass radius.
RADII = ("projected", "3d")


@dataclass(frozen=True)
class ModelCard:
    """What ``model.json`` says about a trained model (see the module doc)."""

    channels: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, physical units (contracts.UNITS)
    std: tuple[float, ...]
    npix: int
    fov_rhalf: float
    radius: str  # one of RADII
    observe: dict[str, Any] | None
    config_hash: str
    noise: dict[str, float]  # NoiseScales: the residual's factors and the clip classes' calibration (recalibrate)
    #: galaxy scalars the networks are conditioned on, in model order (exsitu.scalars; none: maps alone)
    scalars: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=lambda: {"cvae": "cvae.pt", "flow": "flow.pt"})
    units: tuple[str, ...] = ()
    format: str = CARD_FORMAT
    exsitu_version: str = __version__

    def __post_init__(self) -> None:
        if not self.units:
            object.__setattr__(self, "units", tuple(UNITS[CHANNELS.index(c)] for c in self.channels))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @property
    def noise_scales(self) -> NoiseScales:
        """The recalibrated noise scales of the decoder's residual."""
        return NoiseScales(**self.noise)


def write_model_card(path: str | os.PathLike, card: ModelCard) -> None:
    """Write ``model.json`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(card.to_json())


def read_model_card(model_dir: str | os.PathLike) -> ModelCard:
    """The :class:`ModelCard` of ``model_dir``; a missing, unreadable or foreign card is one clear error."""
    path = Path(model_dir) / MODEL_CARD
    if not path.is_file():
        raise InputError(f"{model_dir}: no {MODEL_CARD}; --model-dir must be a model directory (results/models)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise InputError(
            f"{path}: model directory format {found!r}, this exsitu ({__version__}) reads {CARD_FORMAT!r}; "
            "retrain, or use the exsitu version that wrote it"
        )
    try:
        card = ModelCard(**{**data, "channels": tuple(data["channels"]), "mean": tuple(data["mean"]),
                            "std": tuple(data["std"]), "units": tuple(data.get("units", ())),
                            "scalars": tuple(data.get("scalars", ()))})  # fmt: skip
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: incomplete model card ({err})") from None
    unknown = [c for c in card.channels if c not in CHANNELS]
    if unknown or len(card.mean) != len(card.channels) or len(card.std) != len(card.channels):
        raise InputError(f"{path}: channels {list(card.channels)} and their mean/std do not match the contract")
    if not all(isinstance(s, str) and s for s in card.scalars) or len(set(card.scalars)) != len(card.scalars):
        raise InputError(f"{path}: scalars must be distinct scalar names, got {list(card.scalars)}")
    if card.radius not in RADII:
        raise InputError(f"{path}: radius must be one of {RADII}, got {card.radius!r}")
    NoiseScales.from_record(card.noise, path)  # validates the factors
    return card


@dataclass
class TrainedModel:
    """A model directory loaded for inference: its card, the cVAE and the latent flow."""

    card: ModelCard
    cvae: CVAE
    flow: LatentFlow
    directory: Path


def load_model_dir(model_dir: str | os.PathLike, device: torch.device) -> TrainedModel:
    """Read ``model.json`` and rebuild the cVAE and flow it names, on ``device``, in eval mode."""
    card = read_model_card(model_dir)
    missing = [kind for kind in ("cvae", "flow") if kind not in card.files]
    if missing:
        raise InputError(f"{Path(model_dir) / MODEL_CARD}: 'files' names no {' and no '.join(missing)} model file")
    models = load_models({kind: str(Path(model_dir) / card.files[kind]) for kind in ("cvae", "flow")}, device)
    cvae, flow = sampling_layout(models["cvae"]), models["flow"]
    if cvae.cfg.n_channels != len(card.channels):
        raise InputError(
            f"{model_dir}: the cVAE takes {cvae.cfg.n_channels} channels but model.json lists {card.channels}"
        )
    if cvae.cfg.npix != card.npix:
        raise InputError(f"{model_dir}: the cVAE works on {cvae.cfg.npix}^2 maps but model.json says {card.npix}")
    return TrainedModel(card, cvae, flow, Path(model_dir))
