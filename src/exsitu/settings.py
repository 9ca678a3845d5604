"""Typed, validated settings: one frozen dataclass per config section.

The JSON schema shipped with the package (``exsitu/config.schema.yaml``, which
``workflow/schemas/config.schema.yaml`` links to) is the single place for types, ranges and
defaults. A section is validated against its part of the schema once, when a stage parses
it; errors name the key as the user wrote it (``baseline.lr``). Snakemake validates the
whole config against the same file before any job runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any, ClassVar, Self

import jsonschema
import yaml

from exsitu.contracts import CHANNELS
from exsitu.io import InputError
from exsitu.scalars import check_scalar_names


@cache
def schema() -> dict[str, Any]:
    """The config schema (parsed once)."""
    return yaml.safe_load(files("exsitu").joinpath("config.schema.yaml").read_text())


def section_schema(section: str) -> dict[str, Any]:
    """The schema of one top-level config section."""
    try:
        return schema()["properties"][section]
    except KeyError:
        raise InputError(f"config section '{section}' is not part of the schema") from None


def _with_defaults(section_schema_: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the schema's defaults filled in, nested objects included."""
    out = dict(values)
    for key, prop in section_schema_.get("properties", {}).items():
        if key not in out and "default" in prop:
            out[key] = prop["default"]
        if prop.get("type") == "object" and isinstance(out.get(key), Mapping):
            out[key] = _with_defaults(prop, out[key])
    return out


def validate_section(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` against the schema of ``section`` and fill in defaults.

    Raises ``InputError`` naming the offending key, e.g. ``config key 'baseline.lr': -1 is less
    than or equal to the minimum of 0``.
    """
    if not isinstance(values, Mapping):
        raise InputError(f"config section '{section}' must be a mapping, got {values!r}")
    sub = section_schema(section)
    filled = _with_defaults(sub, values)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(sub).iter_errors(filled))
    if error is not None:
        key = ".".join([section, *map(str, error.absolute_path)])
        raise InputError(f"config key '{key}': {error.message}")
    return filled


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of the section dataclasses: fields are the section's schema properties."""

    SECTION: ClassVar[str]

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> Self:
        """Validate a config section (schema types, ranges, defaults) and build the dataclass."""
        checked = validate_section(cls.SECTION, values)
        return cls(**{f.name: checked[f.name] for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_hash(config: Mapping[str, Any]) -> str:
    """Short stable hash of JSON config values (map shards and model.json record the settings they come from)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def section_of(sections: Mapping[str, Any], cls: type[Section], required: bool = True) -> Section:
    """Build ``cls`` from ``sections[cls.SECTION]`` (the ``--settings`` object of a stage).

    A missing section is an error, unless ``required`` is False: then it takes the schema's defaults.
    """
    if cls.SECTION not in sections and required:
        raise InputError(f"config section '{cls.SECTION}' is missing from --settings")
    return cls.from_config(sections.get(cls.SECTION, {}))


@dataclasses.dataclass(frozen=True)
class MockSettings(Section):
    SECTION = "mock"
    n_galaxies: int
    seed: int


@dataclasses.dataclass(frozen=True)
class SelectionSettings(Section):
    SECTION = "selection"
    min_stellar_mass: float  # Msun
    mass_field: str


@dataclasses.dataclass(frozen=True)
class PlanSettings(Section):
    SECTION = "plan"
    min_los: int
    max_los: int
    n_bins: int
    seed: int
    weighting: str  # the training prior (exsitu.priors): natural | balanced


@dataclasses.dataclass(frozen=True)
class MapSettings(Section):
    SECTION = "maps"
    npix: int
    fov_rhalf: float  # field of view in stellar half-mass radii
    n_shards: int
    smoothing: str  # adaptive | none
    kernel_neighbours: int


@dataclasses.dataclass(frozen=True)
class ConditionSettings(Section):
    """The observables the model is conditioned on: map channels in the contract's channel order, galaxy
    scalars (``exsitu.scalars``) in their canonical order."""

    SECTION = "conditions"
    channels: tuple[str, ...]
    scalars: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(c for c in CHANNELS if c in self.channels))
        object.__setattr__(self, "scalars", check_scalar_names(self.scalars))


@dataclasses.dataclass(frozen=True)
class ObserveSettings(Section):
    """The ``observe:`` config section; the schema's defaults are the MaNGA Primary preset.

    Types, ranges and defaults live in the config schema; ``ObserveSettings.from_config({})`` is
    the preset. Attributes:
        enabled: whether the pipeline observes its maps at all (false: ideal maps).
        redshift: (z_min, z_max) range the redshift is drawn from, uniform.
        spaxel_arcsec: spaxel side [arcsec] (MaNGA cubes: 0.5).
        psf_fwhm_arcsec: Gaussian PSF FWHM [arcsec] (MaNGA median 2.54, Law et al. 2016).
        snr_at_re: S/N per spaxel where the PSF-convolved surface density equals its mean at R_proj.
        min_snr: spaxels below this S/N are masked.
        voronoi_snr: Voronoi-bin target S/N, or None for no binning.
        coverage_re: footprint hexagon apothem in units of R_proj (MaNGA Primary 1.5, Secondary 2.5).
        ifu_arcsec: (smallest, largest) IFU vertex-to-vertex diameter [arcsec] (MaNGA's 19- and
            127-fibre bundles: 12.5 and 32.5, Drory et al. 2015, AJ 149, 77): z is drawn only where
            the footprint's diameter lies between them (the nearer end of ``redshift`` if it never
            does); None draws from the whole range.
        sigma_inst_kms: instrumental LOS dispersion [km/s] entering the kinematic errors.
        age_error_dex, metallicity_error_dex: 1-sigma errors [dex] at S/N = 10, scaling as 1/S/N.
        seed: seed of the redshifts and noise (the observe stage adds the shard number).
    """

    SECTION = "observe"
    enabled: bool
    redshift: tuple[float, float]
    spaxel_arcsec: float
    psf_fwhm_arcsec: float
    snr_at_re: float
    min_snr: float
    voronoi_snr: float | None
    coverage_re: float
    ifu_arcsec: tuple[float, float] | None
    sigma_inst_kms: float
    age_error_dex: float
    metallicity_error_dex: float
    seed: int

    def __post_init__(self) -> None:
        # Orderings the schema cannot express; pairs become tuples so the settings stay hashable.
        z = tuple(float(v) for v in self.redshift)
        if not z[0] <= z[1]:
            raise InputError(f"config key 'observe.redshift' must be [z_min, z_max] with z_min <= z_max, got {list(z)}")
        object.__setattr__(self, "redshift", z)
        if self.ifu_arcsec is not None:
            ifu = tuple(float(v) for v in self.ifu_arcsec)
            if not ifu[0] <= ifu[1]:
                raise InputError(f"config key 'observe.ifu_arcsec' must be [smallest, largest], got {list(ifu)}")
            object.__setattr__(self, "ifu_arcsec", ifu)


@dataclasses.dataclass(frozen=True)
class SplitSettings(Section):
    SECTION = "split"
    train: float
    val: float
    test: float
    seed: int


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one training stage."""

    epochs: int
    batch_size: int
    lr: float
    patience: int
    seed: int


#: Arithmetic of the training steps (config ``train.precision``).
PRECISIONS: tuple[str, ...] = ("bf16", "fp32")


@dataclasses.dataclass(frozen=True)
class TrainLoopSettings(Section):
    """Config section ``train``: how the training loop runs, shared by the cVAE and the baseline.

    precision: "bf16" (bfloat16 autocast where the device computes bfloat16 natively: CUDA, or a CPU with
    AVX512-BF16 or AMX; fp32 elsewhere) or "fp32".
    """

    SECTION = "train"
    precision: str


@dataclasses.dataclass(frozen=True)
class CVAESettings(Section):
    SECTION = "cvae"
    latent_dim: int
    beta: float  # KL weight per map: 1 is the ELBO (see exsitu.cvae.CVAE.loss)
    epochs: int
    batch_size: int
    lr: float
    base_channels: int
    rank: int  # factor maps of the correlated pixel residual (exsitu.likelihood)
    likelihood: str  # family of the map likelihood (exsitu.likelihood.FAMILIES)
    logit_eps: float  # clip of the fractions before the logit
    censored: bool  # pixels at or beyond the clip enter the likelihood censored (exsitu.likelihood)
    hurdle: bool  # a two-part likelihood: each pixel's probability of the clip, the family inside it
    free_bits: float  # nats per latent dimension
    kl_warmup_epochs: int  # the KL weight rises linearly to beta over these first training epochs (0: off)
    patience: int
    seed: int
    augment: bool  # the eight symmetries of the square on training batches (exsitu.augment)

    def training(self) -> TrainSettings:
        return _training(self)


@dataclasses.dataclass(frozen=True)
class FlowSettings(Section):
    SECTION = "flow"
    num_layers: int
    hidden_features: int
    epochs: int
    batch_size: int
    lr: float
    patience: int
    seed: int
    augment: bool  # encode each training map in the eight symmetries of the square (stages.train_flow)
    context: str  # what the flow is conditioned on (exsitu.flow.CONTEXTS)

    def training(self) -> TrainSettings:
        return _training(self)


def _training(section: CVAESettings | FlowSettings) -> TrainSettings:
    """The optimiser settings a model section holds."""
    return TrainSettings(section.epochs, section.batch_size, float(section.lr), section.patience, section.seed)


@dataclasses.dataclass(frozen=True)
class BaselineSettings(Section):
    """The deterministic baseline: the cVAE's network and optimiser unless a key here overrides it."""

    SECTION = "baseline"
    epochs: int
    batch_size: int | None
    lr: float | None
    patience: int | None
    seed: int | None

    def training(self, cvae: CVAESettings) -> TrainSettings:
        inherited = cvae.training()
        overrides = {k: v for k, v in self.to_dict().items() if v is not None}
        return dataclasses.replace(inherited, **overrides)


@dataclasses.dataclass(frozen=True)
class RecalibrateSettings(Section):
    """Config section ``recalibrate``: fit the decoder's noise scale on the validation maps."""

    SECTION = "recalibrate"
    enabled: bool
    n_samples: int
    seed: int
    method: str  # constrained | coverage | joint | scores (exsitu.recalibration)
    diagonal_slope: bool  # with any method but scores: fit NoiseScales.diagonal_slope to the posterior-median strata
    clip_classes: bool = True  # with cvae.hurdle: Platt-scale the clip classes first (exsitu.hurdle_calibration)


@dataclasses.dataclass(frozen=True)
class EvaluateSettings(Section):
    SECTION = "evaluate"
    n_samples: int
    seed: int
    n_saved_samples: int
