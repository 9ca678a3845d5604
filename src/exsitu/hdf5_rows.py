"""An HDF5 file written block of rows by block of rows, atomically: the per-map outputs of the streaming stages."""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np

from exsitu.io import atomic_output


class Hdf5Rows:
    """An HDF5 file written row block by row block into a temporary path, renamed into place on success."""

    def __init__(self, path: str | os.PathLike, n_rows: int) -> None:
        self.path, self.n_rows = path, n_rows

    def __enter__(self) -> Hdf5Rows:
        self._atomic = atomic_output(self.path)
        self.h5 = h5py.File(self._atomic.__enter__(), "w")
        return self

    def write(self, name: str, start: int, values: np.ndarray, dtype: Any = None) -> None:
        """Rows ``start:start + len(values)`` of dataset ``name`` (created with N rows on first use)."""
        values = np.asarray(values, dtype=dtype)
        if name not in self.h5:
            chunks = (1, *values.shape[1:]) if values.ndim >= 3 else None
            self.h5.create_dataset(
                name, shape=(self.n_rows, *values.shape[1:]), dtype=values.dtype, chunks=chunks,
                compression="gzip" if values.ndim >= 2 else None,
            )  # fmt: skip
        self.h5[name][start : start + len(values)] = values

    def __exit__(self, *exc: Any) -> None:
        self.h5.close()
        self._atomic.__exit__(*exc)
