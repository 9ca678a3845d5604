"""The population prior a model learns: how much each training map weighs.

The plan gives rare high-ex-situ galaxies more lines of sight (``plan.max_los``). Trained on every
map alike (``balanced``), a model learns a population tilted towards high ex-situ fractions; the
evaluation and real surveys see each galaxy once. With ``natural`` (the default) every map of a
galaxy weighs 1 / n_los of its galaxy, so each galaxy counts once in the losses and fits, the
prior the evaluation scores (``exsitu.bootstrap``). Config key ``plan.weighting``.
"""

from __future__ import annotations

import numpy as np

from exsitu.bootstrap import galaxy_weights
from exsitu.io import InputError

#: Values of ``plan.weighting``.
WEIGHTINGS: tuple[str, ...] = ("natural", "balanced")


def map_weights(galaxy_id: np.ndarray, weighting: str) -> np.ndarray:
    """Per-map training weights (N,): 1 / n_los of the galaxy (``natural``) or 1 (``balanced``)."""
    if weighting not in WEIGHTINGS:
        raise InputError(f"config key 'plan.weighting' must be one of {WEIGHTINGS}, got {weighting!r}")
    return galaxy_weights(galaxy_id)[2] if weighting == "natural" else np.ones(len(galaxy_id))
