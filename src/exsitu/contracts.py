"""The data contracts between stages, in one place: channels, subsets, file layouts, the shard reader.

Every stage and library module imports these names instead of spelling them again; the
contracts are described for humans in ``docs/design.md`` ("File contracts").
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import h5py
import numpy as np

from exsitu.io import InputError
from exsitu.scalars import SCALARS

#: Observable condition channels, in the order of the ``conditions`` axis of every map file.
CHANNELS: tuple[str, ...] = ("mass", "velocity", "dispersion", "age", "metallicity")
#: Units of :data:`CHANNELS`, same order.
UNITS: tuple[str, ...] = ("log10 Msun/kpc^2", "km/s", "km/s", "Gyr", "log10 Z/Zsun (Zsun=0.0127)")
N_CHANNELS = len(CHANNELS)

#: Subsets of ``results/dataset/split.csv``, in the order the split fills them.
SUBSETS: tuple[str, ...] = ("train", "val", "test")
#: Columns of split.csv: the map index, then its galaxy scalars (``exsitu.scalars``), then the subset.
SPLIT_COLUMNS: tuple[str, ...] = (
    "shard", "row", "subhalo_id", "snapshot", "galaxy_id", "exsitu_total", "fov_kpc", *SCALARS, "subset",
)  # fmt: skip

#: Image datasets of a map shard (``results/maps/shard_K.h5``): (N, C, P, P) arrays.
MAP_IMAGES: tuple[str, ...] = ("conditions", "exsitu", "mask")
#: Per-map datasets of a map shard that index the maps, (N,) each, the galaxy scalars (``exsitu.scalars``) last.
MAP_INDEX: tuple[str, ...] = ("subhalo_id", "snapshot", "galaxy_id", "exsitu_total", "fov_kpc", *SCALARS)


@contextmanager
def open_shard(path: str | os.PathLike, what: str = "map shard") -> Iterator[h5py.File]:
    """Open a shard file read-only; a missing or unreadable file is one clear ``InputError``."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"{path}: cannot open the {what} as HDF5 ({err})") from None
    with f:
        yield f


def shard_number(f: h5py.File) -> int:
    """The ``shard`` attribute every shard file carries."""
    if "shard" not in f.attrs:
        raise InputError(f"{f.filename}: attribute 'shard' is missing")
    return int(f.attrs["shard"])


def shard_index(map_files: Sequence[str]) -> dict[int, str]:
    """Map each shard number (the file's ``shard`` attribute) to its file."""
    index: dict[int, str] = {}
    for path in map_files:
        with open_shard(path) as f:
            index[shard_number(f)] = path
    return index


def read_map_rows(path: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``conditions``, ``exsitu`` and ``mask`` of ``rows`` (in the given order) from one map shard."""
    with open_shard(path) as f:
        for name in MAP_IMAGES:
            if name not in f:
                raise InputError(f"{path}: dataset '{name}' is missing")
        n, channels = f["conditions"].shape[:2]
        if channels != N_CHANNELS or f["exsitu"].shape[:2] != (n, 1) or f["mask"].shape[:2] != (n, 1):
            raise InputError(
                f"{path}: shapes conditions {f['conditions'].shape}, exsitu {f['exsitu'].shape}, "
                f"mask {f['mask'].shape} do not follow (N,{N_CHANNELS},P,P), (N,1,P,P), (N,1,P,P)"
            )
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise InputError(f"{path}: split.csv asks for row {rows.max()} but the shard holds {n} maps")
        # h5py wants increasing indices: read sorted, then put back in the requested order.
        order = np.argsort(rows, kind="stable")
        unique, inverse = np.unique(rows[order], return_inverse=True)
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        take = inverse[back]
        return tuple(f[name][unique][take] for name in MAP_IMAGES)  # type: ignore[return-value]
