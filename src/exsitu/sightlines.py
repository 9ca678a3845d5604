"""How many lines of sight each galaxy gets, and their orientations (stage ``plan``).

The galaxy ex-situ fractions are binned (``plan.n_bins`` equal bins on [0, 1]); a galaxy
in a bin with ``c`` galaxies gets round(min_los * c_max / c) projections, clipped to
[min_los, max_los], so rare (mostly high ex-situ) galaxies are seen from more sides and the
training set's ex-situ distribution is flatter. Orientations are isotropic random
rotations (Haar measure on SO(3)) from ``plan.seed``.

Output CSV, one row per (galaxy, line of sight): snapshot, subhalo_id, galaxy_id, shard,
los_index, n_los, exsitu_total and the rotation r00..r22 (rows: image x, image y, line of sight).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from exsitu.contracts import open_shard, shard_number
from exsitu.io import InputError
from exsitu.settings import PlanSettings

ROTATION_COLUMNS = [f"r{i}{j}" for i in range(3) for j in range(3)]


def lines_of_sight(exsitu_total: np.ndarray, min_los: int, max_los: int, n_bins: int) -> np.ndarray:
    """Projections per galaxy, inversely proportional to its ex-situ bin's population."""
    if not 1 <= min_los <= max_los:
        raise InputError(f"config keys plan.min_los ({min_los}) and plan.max_los ({max_los}) need 1 <= min <= max")
    bins = np.clip((np.asarray(exsitu_total) * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    per_bin = np.clip(np.round(min_los * counts.max() / np.maximum(counts, 1)), min_los, max_los)
    return per_bin[bins].astype(np.int64)


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rotation matrices uniform on SO(3) (QR of Gaussian matrices, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, 2, :] *= -1.0  # reflections -> rotations; Haar measure is preserved
    return q


def read_galaxies(paths: Sequence[str]) -> pd.DataFrame:
    """The per-galaxy tables of the tag stage's shard files, with the shard number."""
    tables = []
    for path in paths:
        with open_shard(path, "particle shard") as f:
            try:
                columns = {k: f["galaxies"][k][()] for k in ("snapshot", "subhalo_id", "galaxy_id", "exsitu_total")}
            except KeyError as err:
                raise InputError(f"{path}: not a particle shard file of the tag stage ({err})") from None
            tables.append(pd.DataFrame(columns).assign(shard=shard_number(f)))
    table = pd.concat(tables, ignore_index=True)
    if table.empty:
        raise InputError(f"no galaxies in the particle shards {list(paths)}")
    if not np.all(np.isfinite(table["exsitu_total"])):
        raise InputError(f"particle shards {list(paths)}: exsitu_total holds NaN")
    return table


def make_plan(galaxies: pd.DataFrame, settings: PlanSettings) -> pd.DataFrame:
    """One row per (galaxy, line of sight); deterministic for ``settings.seed`` and the galaxy order."""
    galaxies = galaxies.sort_values(["shard", "snapshot", "subhalo_id"]).reset_index(drop=True)
    n_los = lines_of_sight(galaxies["exsitu_total"].to_numpy(), settings.min_los, settings.max_los, settings.n_bins)
    rows = galaxies.loc[np.repeat(galaxies.index, n_los)].reset_index(drop=True)
    rows["los_index"] = np.concatenate([np.arange(k) for k in n_los])
    rows["n_los"] = np.repeat(n_los, n_los)
    rot = random_rotations(np.random.default_rng(settings.seed), len(rows)).reshape(-1, 9)
    rows[ROTATION_COLUMNS] = rot
    cols = ["snapshot", "subhalo_id", "galaxy_id", "shard", "los_index", "n_los", "exsitu_total"]
    return rows[cols + ROTATION_COLUMNS]
