"""Galaxy scalars: the per-galaxy numbers an observer has besides the maps (config ``conditions.scalars``).

Every map shard carries them per map (datasets named as in :data:`SCALARS`, written by the project
stage from the particle shard's galaxy table and set again by the observe stage), and split.csv
carries them as columns, so a model stage gets them with the rows it loads:

- ``log_mstar``: log10 of the galaxy's total stellar mass [Msun], the catalogue's value
  (``selection.mass_field``), what photometry gives; the same for every line of sight.
- ``log_rhalf_kpc``: log10 [kpc] of the radius the map's field of view is scaled by,
  ``fov_kpc / maps.fov_rhalf``: the 3D stellar half-mass radius for ideal maps, the projected
  (circular) half-mass radius along the line of sight for observed maps (the analogue of Re).
- ``redshift``: the snapshot's redshift for ideal maps, the drawn redshift for observed maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from exsitu.io import InputError


@dataclass(frozen=True)
class Scalar:
    """One galaxy scalar: its unit and what it is."""

    unit: str
    description: str


#: The galaxy scalars, in their canonical order (a model's scalar axis follows it).
SCALARS: dict[str, Scalar] = {
    "log_mstar": Scalar("log10 Msun", "total stellar mass of the galaxy (the catalogue's, as photometry gives)"),
    "log_rhalf_kpc": Scalar(
        "log10 kpc", "half-mass radius the field of view is scaled by (3D for ideal maps, projected for observed maps)"
    ),
    "redshift": Scalar("", "the snapshot's redshift (ideal maps) or the drawn redshift (observed maps)"),
}


def check_scalar_names(names: Sequence[str], key: str = "conditions.scalars") -> tuple[str, ...]:
    """``names`` in the canonical order of :data:`SCALARS`; unknown or repeated names are one ``InputError``."""
    names = list(names)
    unknown = [n for n in names if n not in SCALARS]
    if unknown or len(set(names)) != len(names):
        raise InputError(f"config key '{key}': {names} must be distinct names among {list(SCALARS)}")
    return tuple(n for n in SCALARS if n in names)


def map_scalars(stellar_mass: np.ndarray, rhalf_kpc: np.ndarray, redshift: np.ndarray) -> dict[str, np.ndarray]:
    """The per-map scalar datasets of a map shard, float64 (N,) each, from physical quantities.

    stellar_mass [Msun], rhalf_kpc [kpc] (the radius the field of view is scaled by), redshift; each (N,).
    """
    return {
        "log_mstar": np.log10(np.asarray(stellar_mass, dtype=np.float64)),
        "log_rhalf_kpc": np.log10(np.asarray(rhalf_kpc, dtype=np.float64)),
        "redshift": np.asarray(redshift, dtype=np.float64),
    }


def scalar_values(table: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """(N, S) float64 values of the scalars ``names`` for the rows of split.csv ``table``, in canonical order.

    The columns follow :data:`SCALARS`, whatever the order of ``names``: a model's scalar axis follows
    it, so a caller that lists the scalars as config.yaml does gets the values the model was trained on.
    A name outside :data:`SCALARS`, a missing column (a split.csv from before the scalars: rerun the
    split stage) or a non-finite value is one ``InputError``. ``names`` may be empty: (N, 0).
    """
    unknown = [n for n in names if n not in SCALARS]
    if unknown:
        raise InputError(f"unknown galaxy scalars {unknown}; known: {list(SCALARS)}")
    names = [n for n in SCALARS if n in names]
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise InputError(
            f"the split table lacks the galaxy scalar columns {missing} (written before galaxy scalars "
            "existed: rerun the project and split stages)"
        )
    values = table[list(names)].to_numpy(np.float64).reshape(len(table), len(names))
    if not np.all(np.isfinite(values)):
        raise InputError(f"the galaxy scalars {list(names)} hold NaN or inf in the split table")
    return values
