"""The maps of one shard, following the plan's lines of sight (stage ``project``).

Writes the map contract of docs/design.md (conditions, exsitu, mask, subhalo_id, snapshot,
galaxy_id, los, rotation, fov_kpc, exsitu_total; attributes channels, units, simulation,
config_hash, shard, npix). The field of view is ``maps.fov_rhalf`` times the catalogue's
stellar half-mass radius.
"""

from __future__ import annotations

import hashlib
import json
import logging

import h5py
import numpy as np
import pandas as pd

from exsitu.contracts import CHANNELS, N_CHANNELS, UNITS, open_shard
from exsitu.io import InputError, atomic_output, read_table
from exsitu.projection import project
from exsitu.settings import MapSettings
from exsitu.sightlines import ROTATION_COLUMNS

log = logging.getLogger(__name__)

PLAN_COLUMNS = ["snapshot", "subhalo_id", "shard", "los_index", *ROTATION_COLUMNS]


def config_hash(settings: dict) -> str:
    """Short stable hash of the map settings, stored with the maps."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_plan(path: str, shard: int) -> pd.DataFrame:
    """The plan rows of ``shard``, in plan order."""
    plan = read_table(path, PLAN_COLUMNS, "projection plan")
    return plan[plan["shard"] == shard].reset_index(drop=True)


def project_shard(particles: str, plan: pd.DataFrame, shard: int, settings: MapSettings, out: str) -> int:
    """Project every planned line of sight of the shard's galaxies into ``out``; returns the map count."""
    npix, fov_rhalf = settings.npix, settings.fov_rhalf
    with open_shard(particles, "particle shard") as f:
        if int(f.attrs.get("shard", -1)) != shard:
            raise InputError(f"{particles}: holds shard {f.attrs.get('shard')} but --shard is {shard}")
        gal = pd.DataFrame({k: f["galaxies"][k][()] for k in f["galaxies"]})
        simulation = str(f.attrs.get("simulation", "unknown"))
        parts = {k: f["particles"][k][()] for k in f["particles"]}
    index = {(int(s), int(i)): r for r, (s, i) in enumerate(zip(gal["snapshot"], gal["subhalo_id"]))}
    n = len(plan)
    p = int(npix)
    conditions = np.zeros((n, N_CHANNELS, p, p), np.float32)
    exsitu = np.zeros((n, 1, p, p), np.float32)
    mask = np.zeros((n, 1, p, p), bool)
    rotation = plan[ROTATION_COLUMNS].to_numpy(np.float64).reshape(n, 3, 3)
    fov = np.zeros(n, np.float32)
    galaxy_id = np.zeros(n, np.int64)
    exsitu_total = np.zeros(n, np.float32)
    for (snap, sub), rows in plan.groupby(["snapshot", "subhalo_id"], sort=False):
        if (int(snap), int(sub)) not in index:
            raise InputError(f"{particles}: the plan asks for snapshot {snap} subhalo {sub}, which this shard lacks")
        g = gal.iloc[index[(int(snap), int(sub))]]
        sl = slice(int(g["start"]), int(g["start"] + g["count"]))
        fov_kpc = float(fov_rhalf * g["rhalf_kpc"])
        at = rows.index.to_numpy()
        conditions[at], exsitu[at], mask[at] = project(
            parts["pos"][sl],
            parts["vel"][sl],
            parts["mass"][sl],
            parts["age"][sl],
            parts["metallicity"][sl],
            parts["exsitu"][sl],
            rotation[at],
            fov_kpc,
            p,
        )
        fov[at] = fov_kpc
        galaxy_id[at] = int(g["galaxy_id"])
        exsitu_total[at] = float(g["exsitu_total"])
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as h:
        h.create_dataset("conditions", data=conditions)
        h.create_dataset("exsitu", data=exsitu)
        h.create_dataset("mask", data=mask)
        h.create_dataset("subhalo_id", data=plan["subhalo_id"].to_numpy(np.int64))
        h.create_dataset("snapshot", data=plan["snapshot"].to_numpy(np.int64))
        h.create_dataset("galaxy_id", data=galaxy_id)
        h.create_dataset("los", data=rotation[:, 2, :].astype(np.float32))
        h.create_dataset("rotation", data=rotation)
        h.create_dataset("fov_kpc", data=fov)
        h.create_dataset("exsitu_total", data=exsitu_total)
        h.attrs.update(
            {
                "channels": list(CHANNELS),
                "units": list(UNITS),
                "exsitu_units": "mass fraction",
                "simulation": simulation,
                "config_hash": config_hash(settings.to_dict()),
                "shard": shard,
                "npix": p,
                "fov_rhalf": float(fov_rhalf),
            }
        )
    return n
