"""Every baseline's prediction of the test maps, made once (stage ``predict_baselines``) -> baseline_maps.h5.

The baselines (the deterministic U-net, ``exsitu.baseline``; the radial profile, the k-NN lookup and the
gradient-boosted trees, ``exsitu.fitted_baselines``) do not depend on the cVAE, the flow or the noise
scales. So their test maps are predicted as soon as they are trained, while the cVAE still trains, and
``evaluate`` scores these maps (:class:`BaselineMaps`) instead of predicting them after the flow; a rerun of
the recalibration or the evaluation does not predict them again.

baseline_maps.h5, one row per test map in the order of the test subset of split.csv:

- ``deterministic``, ``radial``, ``lookup``, ``trees`` (N, P, P): each baseline's median ex-situ fraction
  (dimensionless, in [0, 1]; 0 outside the galaxy), in the dtype it was predicted in;
- ``trees_p16``, ``trees_p84`` (N, P, P): the trees' 16-84% interval;
- ``shard``, ``row`` (N,): which map of the map shards the row is (split.csv's columns);
- ``radial_profile/radius`` [r_half] and ``radial_profile/exsitu``: the radial baseline's profile.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import h5py
import numpy as np
import pandas as pd

from exsitu.baseline import Baseline
from exsitu.dataset import DatasetFiles
from exsitu.fitted_baselines import FittedBaselines
from exsitu.hdf5_rows import Hdf5Rows
from exsitu.io import InputError
from exsitu.sample import maps_in_budget, predict_baseline
from exsitu.scalars import scalar_values

log = logging.getLogger(__name__)

#: The baselines, in the order metrics.json and the report list them.
BASELINES: tuple[str, ...] = ("deterministic", "radial", "lookup", "trees")
#: The datasets of the trees' 16-84% interval.
TREES_INTERVAL: tuple[str, str] = ("trees_p16", "trees_p84")
#: Pixels (maps x P^2) predicted per pass: the fitted baselines hold ~100 bytes of features per pixel, so a pass
#: stays near 0.1 GB whatever the map size.
PASS_PIXELS = 2**20
#: Pixels of one U-net batch: 256 maps of 32^2 (the sampler's batch), 16 of the paper's 128^2, whose activations
#: take tens of MB per map.
UNET_BATCH_PIXELS = 2**18
#: The split.csv columns that name a map.
MAP_KEY: tuple[str, ...] = ("shard", "row")


def predict_test_maps(
    data: DatasetFiles,
    baseline: Baseline,
    fitted: FittedBaselines,
    scalars: tuple[str, ...],
    path: str | os.PathLike,
    workers: int = 1,
) -> int:
    """Predict every test map with every baseline and write baseline_maps.h5 (schema above) to ``path``.

    ``baseline`` is the trained U-net (in the sampler's layout, ``exsitu.sample.sampling_layout``), ``fitted``
    the fitted non-spatial baselines, ``scalars`` the galaxy scalars the U-net is conditioned on
    (conditions.scalars); ``workers``: threads of the lookup's tree query. Returns the number of test maps.
    """
    table = data.table("test")
    with Hdf5Rows(path, len(table)) as out:
        for chunk in data.chunks("test", maps_in_budget(1, fitted.npix, PASS_PIXELS)):
            start = int(chunk.table.index[0])
            mask = chunk.mask[:, 0].numpy()
            context = scalar_values(chunk.table, fitted.scalars)
            predicted = fitted.predict(chunk.conditions.numpy(), mask, context, workers=workers)
            deterministic = predict_baseline(
                baseline, chunk.conditions, chunk.scalars(scalars), maps_in_budget(1, fitted.npix, UNET_BATCH_PIXELS)
            )
            out.write("deterministic", start, deterministic.numpy())
            for name, values in predicted.point.items():
                out.write(name, start, values)
            for name, values in zip(TREES_INTERVAL, predicted.interval["trees"], strict=True):
                out.write(name, start, values)
            log.info("predicted test maps %d-%d of %d", start, start + len(chunk) - 1, len(table))
        for column in MAP_KEY:
            out.h5[column] = table[column].to_numpy()
        out.h5["radial_profile/radius"] = fitted.radial.radius
        out.h5["radial_profile/exsitu"] = fitted.radial.exsitu
    return len(table)


class BaselineMaps:
    """baseline_maps.h5 opened for reading, checked against the test maps it must describe.

    Use as a context manager; :meth:`rows` gives a block of rows as :meth:`predict_test_maps` wrote them.
    """

    def __init__(self, path: str | os.PathLike, table: pd.DataFrame) -> None:
        self.path, self.table = path, table

    def __enter__(self) -> BaselineMaps:
        try:
            self.h5 = h5py.File(self.path, "r")
        except (FileNotFoundError, OSError) as err:
            raise InputError(f"{self.path}: cannot read the baselines' test maps ({err})") from None
        try:
            self._check()
        except InputError:
            self.h5.close()
            raise
        return self

    def _check(self) -> None:
        missing = [name for name in (*BASELINES, *TREES_INTERVAL, *MAP_KEY) if name not in self.h5]
        if missing:
            raise InputError(f"{self.path}: datasets {missing} are missing (not written by predict_baselines)")
        for column in MAP_KEY:
            if not np.array_equal(self.h5[column][:], self.table[column].to_numpy()):
                raise InputError(
                    f"{self.path}: its rows are not the test maps of the split ({column} differs): "
                    "run predict_baselines again on this split"
                )

    def rows(self, start: int, stop: int) -> dict[str, Any]:
        """Rows ``start:stop``: every baseline's median maps, and the trees' interval as ``trees_interval``."""
        out: dict[str, Any] = {name: self.h5[name][start:stop] for name in BASELINES}
        out["trees_interval"] = tuple(self.h5[name][start:stop] for name in TREES_INTERVAL)
        return out

    def radial_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """The radial baseline's profile: radius [r_half] and ex-situ fraction."""
        return self.h5["radial_profile/radius"][:], self.h5["radial_profile/exsitu"][:]

    def __exit__(self, *exc: Any) -> None:
        self.h5.close()
