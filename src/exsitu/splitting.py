"""Train/val/test split of the maps, grouped by galaxy, and the per-channel normalisation
statistics of the training set (stage ``split``).

Galaxies (``galaxy_id``: all projections, both snapshots) are shuffled with
``split.seed`` and filled into train, val, test in turn until each holds its share of the
maps, so no galaxy is in two subsets. The statistics are the mean and standard deviation
of each condition channel over galaxy pixels (mask) of the training maps only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from exsitu.contracts import (
    CHANNELS,
    MAP_INDEX,
    N_CHANNELS,
    SUBSETS,
    open_shard,
    read_map_rows,
    shard_index,
    shard_number,
)
from exsitu.io import InputError
from exsitu.scalars import SCALARS
from exsitu.settings import SplitSettings

log = logging.getLogger(__name__)


def read_map_index(paths: Sequence[str]) -> pd.DataFrame:
    """One row per map of the shard files: shard, row and the per-map datasets ``contracts.MAP_INDEX``
    (subhalo_id, snapshot, galaxy_id, exsitu_total, fov_kpc and the galaxy scalars of ``exsitu.scalars``)."""
    tables = []
    for path in paths:
        with open_shard(path) as f:
            missing = [k for k in MAP_INDEX if k not in f]
            if missing and all(k in SCALARS for k in missing):
                raise InputError(
                    f"{path}: the galaxy scalar datasets {missing} are missing (a map shard written before galaxy "
                    "scalars existed: rerun the tag and project stages, and observe if enabled)"
                )
            if missing:
                raise InputError(f"{path}: not a map shard of the project stage (datasets {missing} are missing)")
            cols = {k: f[k][()] for k in MAP_INDEX}
            shard = shard_number(f)
        n = cols["subhalo_id"].shape[0]
        tables.append(pd.DataFrame({"shard": shard, "row": np.arange(n), **cols}))
    table = pd.concat(tables, ignore_index=True)
    if table.empty:
        raise InputError(f"the map shards {list(paths)} hold no maps")
    return table


def assign_subsets(galaxy_id: np.ndarray, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Subset name per map, grouped by ``galaxy_id``, map shares close to ``fractions``."""
    ids, counts = np.unique(galaxy_id, return_counts=True)
    order = np.random.default_rng(seed).permutation(ids.size)
    # A galaxy goes where the middle of its maps falls on the cumulative share axis.
    centre = (np.cumsum(counts[order]) - 0.5 * counts[order]) / counts.sum()
    edges = np.cumsum([fractions[s] for s in SUBSETS])
    which = np.minimum(np.searchsorted(edges, centre, side="right"), len(SUBSETS) - 1)
    subset_of = dict(zip(ids[order], np.asarray(SUBSETS)[which]))
    return np.array([subset_of[g] for g in galaxy_id])


def channel_stats(paths: Sequence[str], table: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Mean and std of each condition channel over mask pixels of the maps in ``table``."""
    total = np.zeros(N_CHANNELS)
    total_sq = np.zeros(N_CHANNELS)
    n_pix = 0
    shard_file = shard_index(paths)
    for shard, rows in table.groupby("shard"):
        cond, _, mask = read_map_rows(shard_file[int(shard)], np.sort(rows["row"].to_numpy()))
        cond, mask = cond.astype(np.float64), mask[:, 0]
        pix = cond.transpose(1, 0, 2, 3)[:, mask]  # (channels, galaxy pixels)
        total += pix.sum(axis=1)
        total_sq += (pix**2).sum(axis=1)
        n_pix += pix.shape[1]
    if n_pix == 0:
        raise InputError("the training maps hold no galaxy pixel (mask is empty everywhere)")
    mean = total / n_pix
    std = np.sqrt(np.maximum(total_sq / n_pix - mean**2, 0.0))
    if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
        raise InputError(f"training maps give non-finite means or zero spread per channel: mean {mean}, std {std}")
    return mean.tolist(), std.tolist()


def split_maps(paths: Sequence[str], settings: SplitSettings) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The split table (one row per map, column ``subset``) and the training normalisation statistics."""
    fractions = {s: float(getattr(settings, s)) for s in SUBSETS}
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise InputError(f"config keys split.train/val/test must sum to 1, got {fractions}")
    table = read_map_index(paths)
    table["subset"] = assign_subsets(table["galaxy_id"].to_numpy(), fractions, settings.seed)
    n_maps = {s: int((table["subset"] == s).sum()) for s in SUBSETS}
    for s in SUBSETS:
        if n_maps[s] == 0:
            raise InputError(
                f"split: the '{s}' subset is empty ({table['galaxy_id'].nunique()} galaxies, {len(table)} maps, "
                f"shares {fractions}); use more galaxies (mock.n_galaxies) or change split.{s}"
            )
    mean, std = channel_stats(paths, table[table["subset"] == "train"])
    log.info("maps per subset %s; galaxies %d", n_maps, table["galaxy_id"].nunique())
    return table, {"channels": list(CHANNELS), "mean": mean, "std": std, "n_maps": n_maps}
