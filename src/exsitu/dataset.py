"""Load one subset (train / val / test) of the map shards as normalised in-memory tensors.

Reads the data stages' outputs: ``results/maps/shard_K.h5`` (the map contract in docs/design.md),
``results/dataset/split.csv`` and ``results/dataset/normalisation.json``. The whole subset is
held in memory: the models train on it without a DataLoader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from exsitu.contracts import CHANNELS, N_CHANNELS, SPLIT_COLUMNS, SUBSETS, read_map_rows, shard_index
from exsitu.io import InputError, read_json, read_table


@dataclass
class MapSet:
    """A subset of the maps, in memory, in the row order of ``table``.

    conditions: (N, C, P, P) float32, the model's ``channels`` (a subset of ``contracts.CHANNELS``, in
        contract order), each standardised with the training-set mean and std over galaxy
        pixels (dimensionless), exactly 0 outside the mask.
    exsitu: (N, 1, P, P) float32 ex-situ stellar mass fraction per pixel, in [0, 1].
    mask: (N, 1, P, P) bool, pixels with galaxy light.
    table: the split.csv rows of these maps, same order (index reset).
    log_sigma: (N, P, P) float32 log10 stellar surface density [Msun/kpc^2] (0 outside the mask),
        kept whatever the conditioning channels: it is the mass weight of every map statistic.
    channels: the conditioning channels, in the order of the ``conditions`` axis.
    """

    conditions: torch.Tensor
    exsitu: torch.Tensor
    mask: torch.Tensor
    table: pd.DataFrame
    log_sigma: np.ndarray
    channels: tuple[str, ...] = CHANNELS

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True)
class DatasetFiles:
    """The data stages' outputs a model stage reads: map shards, split table, normalisation statistics."""

    maps: Sequence[str]
    split: str
    stats: str
    channels: Sequence[str] = CHANNELS

    def load(self, subset: str) -> MapSet:
        """The normalised maps of ``subset`` (train | val | test)."""
        return load_subset(self.maps, self.split, self.stats, subset, self.channels)


def read_stats(stats_json: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of the conditions over training galaxy pixels, physical units."""
    stats = read_json(stats_json, ("channels", "mean", "std"), "normalisation file")
    if tuple(stats["channels"]) != CHANNELS:
        raise InputError(f"{stats_json}: 'channels' must be {list(CHANNELS)}, got {stats['channels']}")
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    if mean.shape != (N_CHANNELS,) or std.shape != (N_CHANNELS,):
        raise InputError(f"{stats_json}: 'mean' and 'std' must hold {N_CHANNELS} numbers each")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise InputError(f"{stats_json}: 'mean' must be finite and 'std' finite and > 0, got {mean}, {std}")
    return mean, std


def read_split(split_csv: str, subset: str) -> pd.DataFrame:
    """The rows of ``split_csv`` that belong to ``subset``; an empty subset is an error."""
    if subset not in SUBSETS:
        raise InputError(f"subset must be one of {SUBSETS}, got {subset!r}")
    table = read_table(split_csv, SPLIT_COLUMNS, "split file")
    rows = table[table["subset"] == subset].reset_index(drop=True)
    if rows.empty:
        raise InputError(f"{split_csv}: the '{subset}' subset is empty (no rows with subset == {subset!r})")
    return rows


def channel_index(channels: Sequence[str]) -> list[int]:
    """Positions of ``channels`` on the contract's channel axis (config ``conditions.channels``)."""
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown or not channels:
        raise InputError(f"config key 'conditions.channels': {list(channels)} must be a non-empty subset of {CHANNELS}")
    return [CHANNELS.index(c) for c in channels]


def load_subset(
    map_files: Sequence[str], split_csv: str, stats_json: str, subset: str, channels: Sequence[str] = CHANNELS
) -> MapSet:
    """Load the ``subset`` maps listed in ``split_csv`` from the shard files, normalised.

    Only ``channels`` are kept as conditions. They are standardised per channel with
    ``stats_json`` (training galaxy pixels) and set to exactly 0 outside the mask; that is how
    the models tell background from galaxy.
    """
    keep = channel_index(channels)
    mean, std = read_stats(stats_json)
    table = read_split(split_csv, subset)
    shards = shard_index(map_files)
    unknown = sorted(set(table["shard"].astype(int)) - set(shards))
    if unknown:
        raise InputError(f"{split_csv}: shards {unknown} are listed but no --maps file has that 'shard' attribute")
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    positions: list[np.ndarray] = []
    for shard, group in table.groupby("shard", sort=True):
        parts.append(read_map_rows(shards[int(shard)], group["row"].to_numpy(np.int64)))
        positions.append(group.index.to_numpy())
    where = np.argsort(np.concatenate(positions), kind="stable")
    conditions, exsitu, mask = (np.concatenate([p[i] for p in parts])[where] for i in range(3))
    mask = mask.astype(bool)
    log_sigma = np.where(mask[:, 0], conditions[:, CHANNELS.index("mass")], 0.0).astype(np.float32)
    conditions = conditions[:, keep]
    mean, std = mean[keep], std[keep]
    conditions = (conditions.astype(np.float32) - mean[None, :, None, None]) / std[None, :, None, None]
    conditions *= mask
    exsitu = exsitu.astype(np.float32)
    if not np.all(np.isfinite(conditions)):
        raise InputError(f"{split_csv}: the '{subset}' conditions hold NaN or inf on galaxy pixels")
    if np.any((exsitu < 0) | (exsitu > 1)) or not np.all(np.isfinite(exsitu)):
        raise InputError(f"{split_csv}: the '{subset}' ex-situ maps hold values outside [0, 1]")
    return MapSet(
        conditions=torch.from_numpy(np.ascontiguousarray(conditions)),
        exsitu=torch.from_numpy(np.ascontiguousarray(exsitu)),
        mask=torch.from_numpy(np.ascontiguousarray(mask)),
        table=table,
        log_sigma=log_sigma,
        channels=tuple(CHANNELS[i] for i in keep),
    )
