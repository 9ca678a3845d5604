"""Read one subset (train / val / test) of the map shards as normalised tensors: whole, or in chunks.

Reads the data stages' outputs: ``results/maps/shard_K.h5`` (the map contract in docs/design.md),
``results/dataset/split.csv`` and ``results/dataset/normalisation.json``.

Memory is bounded by what the caller keeps, never by a temporary copy of the subset: ``load``
reads shard by shard into preallocated arrays of the requested dtype, ``chunks`` holds one chunk
at a time. The training stages hold their subsets as float16 (``load(subset, torch.float16)``);
at 128^2 pixels and five channels a map then costs 17 bytes per pixel (conditions 5 x 2, target
2, mask 1, ``log_sigma`` 4), so 100 000 maps take 100 000 x 16 384 x 17 B = 27.9 GB, plus one
shard read (100 000 maps in 64 shards: 1 563 maps x 16 384 x 25 B = 0.64 GB as stored, about
four times that while it is normalised): about 30 GB, which leaves a 64 GB node room for the
model, the CUDA context and the loop's pinned batches. (A float32 copy would be 47.5 GB.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from exsitu.contracts import CHANNELS, N_CHANNELS, SPLIT_COLUMNS, SUBSETS, read_map_rows, shard_index
from exsitu.io import InputError, read_json, read_table
from exsitu.scalars import scalar_values

#: dtypes ``DatasetFiles.load`` can hold the conditions and the target in.
LOAD_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


@dataclass
class MapSet:
    """A subset of the maps (or a chunk of one), in memory, in the row order of ``table``.

    conditions: (N, C, P, P) float32 or float16, the model's ``channels`` (a subset of
        ``contracts.CHANNELS``, in contract order), each standardised with the training-set mean
        and std over galaxy pixels (dimensionless), exactly 0 outside the mask.
    exsitu: (N, 1, P, P), same dtype, ex-situ stellar mass fraction per pixel, in [0, 1].
    mask: (N, 1, P, P) bool, pixels with galaxy light.
    table: the split.csv rows of these maps, same order; its index is the row number within the
        subset (0..N-1 for a whole subset, the chunk's offset onwards for a chunk).
    log_sigma: (N, P, P) float32 log10 stellar surface density [Msun/kpc^2] (0 outside the mask),
        kept whatever the conditioning channels: it is the mass weight of every map statistic
        (float32 whatever the dtype: ``10 ** log_sigma`` overflows float16).
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

    def chunks(self, n: int) -> Iterator[MapSet]:
        """These maps as consecutive chunks of ``n`` (the in-memory twin of ``DatasetFiles.chunks``): each
        chunk's ``table`` keeps these maps' row numbers in its index."""
        for start in range(0, len(self), n):
            rows = slice(start, start + n)
            yield MapSet(
                conditions=self.conditions[rows], exsitu=self.exsitu[rows], mask=self.mask[rows],
                table=self.table.iloc[rows], log_sigma=self.log_sigma[rows], channels=self.channels,
            )  # fmt: skip

    def scalars(self, names: Sequence[str]) -> torch.Tensor | None:
        """(N, S) float32 galaxy scalars ``names`` of these maps (``exsitu.scalars``), None without names."""
        return torch.as_tensor(scalar_values(self.table, names), dtype=torch.float32) if names else None


@dataclass(frozen=True)
class DatasetFiles:
    """The data stages' outputs a model stage reads: map shards, split table, normalisation statistics."""

    maps: Sequence[str]
    split: str
    stats: str
    channels: Sequence[str] = CHANNELS

    def table(self, subset: str) -> pd.DataFrame:
        """The split.csv rows of ``subset`` (index 0..N-1), without reading any map."""
        return read_split(self.split, subset)

    def load(self, subset: str, dtype: torch.dtype = torch.float32) -> MapSet:
        """The normalised maps of ``subset`` (train | val | test), conditions and target as ``dtype``.

        Peak memory: the result plus one shard's maps of the subset while they are normalised.
        """
        return _Reader(self).read(self.table(subset), dtype)

    def chunks(self, subset: str, maps_per_chunk: int) -> Iterator[MapSet]:
        """The maps of ``subset`` in split-table order, ``maps_per_chunk`` at a time, float32.

        Each chunk's ``table`` keeps the subset-wide row numbers as its index, so
        ``chunk.table.index[0]`` is the chunk's offset in the subset.
        """
        if maps_per_chunk < 1:
            raise InputError(f"maps_per_chunk must be >= 1, got {maps_per_chunk}")
        table = self.table(subset)
        reader = _Reader(self)
        for start in range(0, len(table), maps_per_chunk):
            yield reader.read(table.iloc[start : start + maps_per_chunk], torch.float32)


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


class _Reader:
    """What every read of one ``DatasetFiles`` shares: kept channels, their statistics, the shard files."""

    def __init__(self, files: DatasetFiles) -> None:
        self.files = files
        self.keep = channel_index(files.channels)
        mean, std = read_stats(files.stats)
        self.mean = mean[self.keep][None, :, None, None]
        self.std = std[self.keep][None, :, None, None]
        self.shards = shard_index(files.maps)

    def read(self, rows: pd.DataFrame, dtype: torch.dtype) -> MapSet:
        """The maps of the split rows ``rows``, in their order, normalised; one shard in memory at a time.

        Conditions are standardised and set to exactly 0 outside the mask: that is how the
        models tell background from galaxy.
        """
        if dtype not in LOAD_DTYPES:
            raise InputError(f"maps can be held as {list(LOAD_DTYPES)}, not {dtype}")
        split_csv, subset = self.files.split, rows["subset"].iloc[0]
        unknown = sorted(set(rows["shard"].astype(int)) - set(self.shards))
        if unknown:
            raise InputError(f"{split_csv}: shards {unknown} are listed but no --maps file has that 'shard' attribute")
        out: dict[str, np.ndarray] = {}
        for shard, where in rows.groupby("shard", sort=True).indices.items():
            cond, exsitu, mask = read_map_rows(self.shards[int(shard)], rows["row"].to_numpy(np.int64)[where])
            if not out:  # the map size is known once the first shard is read
                npix, n = cond.shape[-1], len(rows)
                out = {
                    "conditions": np.empty((n, len(self.keep), npix, npix), LOAD_DTYPES[dtype]),
                    "exsitu": np.empty((n, 1, npix, npix), LOAD_DTYPES[dtype]),
                    "mask": np.empty((n, 1, npix, npix), bool),
                    "log_sigma": np.empty((n, npix, npix), np.float32),
                }
            mask = mask.astype(bool)
            out["log_sigma"][where] = np.where(mask[:, 0], cond[:, CHANNELS.index("mass")], 0.0)
            cond = (cond[:, self.keep].astype(np.float32) - self.mean) / self.std
            cond *= mask
            cond = cond.astype(LOAD_DTYPES[dtype])
            if not np.all(np.isfinite(cond)):
                raise InputError(f"{split_csv}: the '{subset}' conditions hold NaN or inf on galaxy pixels")
            if np.any((exsitu < 0) | (exsitu > 1)) or not np.all(np.isfinite(exsitu)):
                raise InputError(f"{split_csv}: the '{subset}' ex-situ maps hold values outside [0, 1]")
            out["conditions"][where], out["exsitu"][where], out["mask"][where] = cond, exsitu, mask
        return MapSet(
            conditions=torch.from_numpy(out["conditions"]),
            exsitu=torch.from_numpy(out["exsitu"]),
            mask=torch.from_numpy(out["mask"]),
            table=rows,
            log_sigma=out["log_sigma"],
            channels=tuple(CHANNELS[i] for i in self.keep),
        )
