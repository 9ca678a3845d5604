"""Load one subset (train / val / test) of the map shards as normalised in-memory tensors.

Reads the data stages' outputs: ``results/maps/shard_K.h5`` (the map contract in DESIGN.md),
``results/dataset/split.csv`` and ``results/dataset/normalisation.json``. The whole subset is
held in memory: the models train on it without a DataLoader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
import torch

from exsitu.io import InputError, read_json, read_table

CHANNELS = ("mass", "velocity", "dispersion", "age", "metallicity")
SPLIT_COLUMNS = ("shard", "row", "subhalo_id", "snapshot", "galaxy_id", "exsitu_total", "fov_kpc", "subset")
SUBSETS = ("train", "val", "test")


@dataclass
class MapSet:
    """A subset of the maps, in memory, in the row order of ``table``.

    conditions: (N, 5, P, P) float32, each channel standardised with the training-set mean and
        std over galaxy pixels (dimensionless), exactly 0 outside the mask.
    exsitu: (N, 1, P, P) float32 ex-situ stellar mass fraction per pixel, in [0, 1].
    mask: (N, 1, P, P) bool, pixels with galaxy light.
    table: the split.csv rows of these maps, same order (index reset).
    """

    conditions: torch.Tensor
    exsitu: torch.Tensor
    mask: torch.Tensor
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.table)


def read_stats(stats_json: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of the conditions over training galaxy pixels, physical units."""
    stats = read_json(stats_json, ("channels", "mean", "std"), "normalisation file")
    if tuple(stats["channels"]) != CHANNELS:
        raise InputError(f"{stats_json}: 'channels' must be {list(CHANNELS)}, got {stats['channels']}")
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    if mean.shape != (5,) or std.shape != (5,):
        raise InputError(f"{stats_json}: 'mean' and 'std' must hold 5 numbers each")
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


def _shard_index(map_files: Sequence[str]) -> dict[int, str]:
    """Map each shard number (the file's ``shard`` attribute) to its file."""
    index: dict[int, str] = {}
    for path in map_files:
        try:
            with h5py.File(path, "r") as f:
                if "shard" not in f.attrs:
                    raise InputError(f"{path}: attribute 'shard' is missing")
                index[int(f.attrs["shard"])] = path
        except OSError as err:
            raise InputError(f"{path}: cannot open as HDF5 ({err})") from None
    return index


def _read_rows(path: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """conditions, exsitu, mask of ``rows`` (in the given order) from one shard file."""
    with h5py.File(path, "r") as f:
        for name in ("conditions", "exsitu", "mask"):
            if name not in f:
                raise InputError(f"{path}: dataset '{name}' is missing")
        n, channels = f["conditions"].shape[:2]
        if channels != 5 or f["exsitu"].shape[:2] != (n, 1) or f["mask"].shape[:2] != (n, 1):
            raise InputError(
                f"{path}: shapes conditions {f['conditions'].shape}, exsitu {f['exsitu'].shape}, "
                f"mask {f['mask'].shape} do not follow (N,5,P,P), (N,1,P,P), (N,1,P,P)"
            )
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise InputError(f"{path}: split.csv asks for row {rows.max()} but the shard holds {n} maps")
        # h5py wants increasing indices: read sorted, then put back in the split's order.
        order = np.argsort(rows, kind="stable")
        unique, inverse = np.unique(rows[order], return_inverse=True)
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        take = inverse[back]
        return tuple(f[name][unique][take] for name in ("conditions", "exsitu", "mask"))  # type: ignore[return-value]


def load_subset(map_files: Sequence[str], split_csv: str, stats_json: str, subset: str) -> MapSet:
    """Load the ``subset`` maps listed in ``split_csv`` from the shard files, normalised.

    Conditions are standardised per channel with ``stats_json`` (training galaxy pixels) and
    set to exactly 0 outside the mask; that is how the models tell background from galaxy.
    """
    mean, std = read_stats(stats_json)
    table = read_split(split_csv, subset)
    shards = _shard_index(map_files)
    unknown = sorted(set(table["shard"].astype(int)) - set(shards))
    if unknown:
        raise InputError(f"{split_csv}: shards {unknown} are listed but no --maps file has that 'shard' attribute")
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    positions: list[np.ndarray] = []
    for shard, group in table.groupby("shard", sort=True):
        parts.append(_read_rows(shards[int(shard)], group["row"].to_numpy(np.int64)))
        positions.append(group.index.to_numpy())
    where = np.argsort(np.concatenate(positions), kind="stable")
    conditions, exsitu, mask = (np.concatenate([p[i] for p in parts])[where] for i in range(3))
    mask = mask.astype(bool)
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
    )
