"""Galaxy scalars: names, units and the config key, the split table's values, and the scalars of observed maps
on the tiny observed run (the projected radius and the drawn redshift)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from exsitu.io import InputError
from exsitu.scalars import SCALARS, check_scalar_names, map_scalars, scalar_values
from exsitu.settings import ConditionSettings, schema


def test_the_config_key_knows_exactly_the_scalars_and_keeps_their_canonical_order() -> None:
    conditions = schema()["properties"]["conditions"]["properties"]["scalars"]
    assert conditions["items"]["enum"] == list(SCALARS)
    assert set(conditions["default"]) <= set(SCALARS)
    assert ConditionSettings.from_config({}).scalars == ("log_mstar", "log_rhalf_kpc")
    assert ConditionSettings.from_config({"scalars": ["redshift", "log_mstar"]}).scalars == ("log_mstar", "redshift")
    assert ConditionSettings.from_config({"scalars": []}).scalars == ()
    with pytest.raises(InputError, match=r"config key 'conditions\.scalars\.0': 'mass' is not one of"):
        ConditionSettings.from_config({"scalars": ["mass"]})
    with pytest.raises(InputError, match=r"'conditions\.scalars'"):
        check_scalar_names(["redshift", "redshift"])
    assert all(s.description for s in SCALARS.values()) and SCALARS["log_mstar"].unit == "log10 Msun"


def test_values_come_from_the_split_table_in_canonical_order() -> None:
    # Asked in another order (as config.yaml lists them), the columns still follow SCALARS, the order of
    # every model's scalar axis: a benchmark that passed config order fed the networks swapped scalars.
    table = pd.DataFrame({"log_mstar": [10.2, 11.0], "log_rhalf_kpc": [0.5, 0.9], "redshift": [0.0, 0.1]})
    np.testing.assert_array_equal(scalar_values(table, ["redshift", "log_mstar"]), [[10.2, 0.0], [11.0, 0.1]])
    assert scalar_values(table, []).shape == (2, 0)
    with pytest.raises(InputError, match=r"lacks the galaxy scalar columns \['log_mstar'\].*rerun"):
        scalar_values(table.drop(columns="log_mstar"), ["log_mstar"])
    with pytest.raises(InputError, match="unknown galaxy scalars"):
        scalar_values(table, ["sfr"])
    with pytest.raises(InputError, match="NaN or inf"):
        scalar_values(table.assign(redshift=[0.0, np.nan]), ["redshift"])
    values = map_scalars(np.array([1e10, 1e11]), np.array([2.0, 10.0]), np.array([0.0, 0.1]))
    np.testing.assert_allclose(values["log_mstar"], [10.0, 11.0])
    np.testing.assert_allclose(values["log_rhalf_kpc"], [np.log10(2.0), 1.0])
    assert all(v.dtype == np.float64 for v in values.values())


def test_observed_maps_carry_the_projected_radius_and_the_drawn_redshift(tiny_observed_run: Path) -> None:
    res = tiny_observed_run / "results"
    split = pd.read_csv(res / "dataset" / "split.csv")
    catalog = pd.read_csv(res / "catalog" / "subhalos.csv").set_index(["snapshot", "subhalo_id"])
    for path in sorted((res / "observed").glob("shard_*.h5")):
        with h5py.File(path) as f, h5py.File(res / "maps" / path.name) as ideal:
            shard = int(f.attrs["shard"])
            rows = split[split["shard"] == shard].sort_values("row")
            assert len(rows) == len(f["redshift"])
            np.testing.assert_allclose(rows["redshift"], f["redshift"][()])
            assert np.all((rows["redshift"] >= 0.01) & (rows["redshift"] <= 0.15))  # observe.redshift
            np.testing.assert_allclose(rows["log_rhalf_kpc"], np.log10(f["rproj_kpc"][()]), rtol=1e-6)
            np.testing.assert_allclose(10 ** rows["log_rhalf_kpc"] * 4, f["fov_kpc"][()], rtol=1e-5)
            # The catalogue mass stays; the ideal maps hold the snapshot's redshift and the 3D radius.
            galaxies = catalog.loc[list(zip(rows["snapshot"], rows["subhalo_id"]))]
            np.testing.assert_allclose(rows["log_mstar"], np.log10(galaxies["stellar_mass"]), rtol=1e-12)
            np.testing.assert_allclose(ideal["log_rhalf_kpc"][()], np.log10(galaxies["rhalf_kpc"]), rtol=1e-12)
            assert set(np.round(ideal["redshift"][()], 6)) <= {0.0, 0.1}
