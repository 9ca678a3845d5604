"""Stage ``project``: the maps of one shard, following the plan's lines of sight.

Writes the map contract of DESIGN.md (conditions, exsitu, mask, subhalo_id, snapshot,
galaxy_id, los, rotation, fov_kpc, exsitu_total; attributes channels, units, simulation,
config_hash, shard, npix). The field of view is ``maps.fov_rhalf`` times the catalogue's
stellar half-mass radius.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import h5py
import numpy as np
import pandas as pd

from exsitu.io import InputError, atomic_output, log, read_table, require, run_stage, stage_parser
from exsitu.plan import ROTATION_COLUMNS
from exsitu.projection import CHANNELS, UNITS, project

PLAN_COLUMNS = ["snapshot", "subhalo_id", "shard", "los_index", *ROTATION_COLUMNS]


def config_hash(settings: dict) -> str:
    """Short stable hash of the map settings, stored with the maps."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_plan(path: str, shard: int) -> pd.DataFrame:
    """The plan rows of ``shard``, in plan order."""
    plan = read_table(path, PLAN_COLUMNS, "projection plan")
    return plan[plan["shard"] == shard].reset_index(drop=True)


def project_shard(particles: str, plan: pd.DataFrame, shard: int, npix: int, fov_rhalf: float, out: str, settings: dict) -> int:
    """Project every planned line of sight of the shard's galaxies into ``out``; returns the map count."""
    try:
        f = h5py.File(particles, "r")
    except OSError as err:
        raise InputError(f"{particles}: cannot open the particle shard ({err})") from None
    with f:
        if int(f.attrs.get("shard", -1)) != shard:
            raise InputError(f"{particles}: holds shard {f.attrs.get('shard')} but --shard is {shard}")
        gal = pd.DataFrame({k: f["galaxies"][k][()] for k in f["galaxies"]})
        simulation = str(f.attrs.get("simulation", "unknown"))
        parts = {k: f["particles"][k][()] for k in f["particles"]}
    index = {(int(s), int(i)): r for r, (s, i) in enumerate(zip(gal["snapshot"], gal["subhalo_id"]))}
    n = len(plan)
    p = int(npix)
    conditions = np.zeros((n, 5, p, p), np.float32)
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
                "config_hash": config_hash(settings),
                "shard": shard,
                "npix": p,
                "fov_rhalf": float(fov_rhalf),
            }
        )
    return n


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--particles", required=True, help="the tag stage's shard file")
    parser.add_argument("--plan", required=True, help="the plan stage's CSV")
    parser.add_argument("--shard", type=int, required=True)
    parser.add_argument("--out", required=True, help="map shard (HDF5)")
    args = parser.parse_args(argv)
    npix = int(require(args.settings, "npix", "maps"))
    fov_rhalf = float(require(args.settings, "fov_rhalf", "maps"))
    if npix < 1 or fov_rhalf <= 0:
        raise InputError(f"config keys maps.npix ({npix}) and maps.fov_rhalf ({fov_rhalf}) must be positive")
    plan = read_plan(args.plan, args.shard)
    n = project_shard(args.particles, plan, args.shard, npix, fov_rhalf, args.out, args.settings)
    log.info("shard %d: %d maps of %dx%d pixels", args.shard, n, npix, npix)


if __name__ == "__main__":
    run_stage(main)
