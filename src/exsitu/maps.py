"""The maps of one shard: projected along the plan's lines of sight (stage ``project``), and
observed as an IFU survey would see them (stage ``observe``).

Writes the map contract of docs/design.md (conditions, exsitu, mask, subhalo_id, snapshot,
galaxy_id, los, rotation, fov_kpc, rproj_kpc, exsitu_total, and the galaxy scalars of
``exsitu.scalars``: log_mstar, log_rhalf_kpc, redshift; attributes channels, units,
simulation, config_hash, shard, npix, fov_rhalf, fov_radius). The field of view is
``maps.fov_rhalf`` times the catalogue's 3D stellar half-mass radius; :func:`observe_shard`
turns a shard into mock IFU observations scaled by the projected half-mass radius.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import h5py
import numpy as np
import pandas as pd

from exsitu.contracts import CHANNELS, MAP_IMAGES, MAP_INDEX, N_CHANNELS, UNITS, open_shard, shard_number
from exsitu.io import InputError, atomic_output, read_table
from exsitu.observe import observe_maps, projected_half_mass_radius
from exsitu.projection import project
from exsitu.scalars import map_scalars
from exsitu.settings import MapSettings, ObserveSettings, config_hash
from exsitu.sightlines import ROTATION_COLUMNS

log = logging.getLogger(__name__)

PLAN_COLUMNS = ["snapshot", "subhalo_id", "shard", "los_index", *ROTATION_COLUMNS]


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
        if "redshift" not in f["galaxies"]:
            raise InputError(
                f"{particles}: dataset 'galaxies/redshift' is missing (an older tag stage wrote it: rerun it)"
            )
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
    rproj = np.zeros(n, np.float32)
    galaxy_id = np.zeros(n, np.int64)
    exsitu_total = np.zeros(n, np.float32)
    # The galaxy's catalogue stellar mass [Msun], 3D half-mass radius [kpc] and snapshot redshift, per map.
    galaxy_scalars = np.zeros((n, 3))
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
            smoothing=settings.smoothing,
            neighbours=settings.kernel_neighbours,
        )
        fov[at] = fov_kpc
        # The observable analogue of Re, exact from all the galaxy's stars (the observe stage scales by it).
        rproj[at] = projected_half_mass_radius(parts["pos"][sl], parts["mass"][sl], rotation[at])
        galaxy_id[at] = int(g["galaxy_id"])
        exsitu_total[at] = float(g["exsitu_total"])
        galaxy_scalars[at] = g["stellar_mass"], g["rhalf_kpc"], g["redshift"]
    datasets = {
        "conditions": conditions, "exsitu": exsitu, "mask": mask,
        "subhalo_id": plan["subhalo_id"].to_numpy(np.int64), "snapshot": plan["snapshot"].to_numpy(np.int64),
        "galaxy_id": galaxy_id, "los": rotation[:, 2, :].astype(np.float32), "rotation": rotation,
        "fov_kpc": fov, "rproj_kpc": rproj, "exsitu_total": exsitu_total, **map_scalars(*galaxy_scalars.T),
    }  # fmt: skip
    attrs = {
        "channels": list(CHANNELS), "units": list(UNITS), "exsitu_units": "mass fraction", "simulation": simulation,
        "config_hash": config_hash(settings.to_dict()), "shard": shard, "npix": p, "fov_rhalf": float(fov_rhalf),
        "fov_radius": "3d", "smoothing": settings.smoothing,
    }  # fmt: skip
    write_map_shard(out, datasets, attrs)
    return n


def write_map_shard(out: str | os.PathLike, datasets: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Write one map shard (the map contract of docs/design.md) atomically."""
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as h:
        for name, value in datasets.items():
            h.create_dataset(name, data=value)
        h.attrs.update(attrs)


def observe_shard(maps: str, shard: int, settings: ObserveSettings, out: str) -> int:
    """Observe every ideal map of a shard (``exsitu.observe``) and write them, same contract, to ``out``.

    The observed maps cover ``fov_rhalf`` projected half-mass radii (``fov_kpc`` and the scalar
    ``log_rhalf_kpc`` are replaced; the scalar ``redshift`` becomes the drawn one); the ex-situ map
    stays the intrinsic one on the new grid. The shard adds per map
    ``redshift``, ``arcsec_per_kpc``, ``psf_fwhm_pix``, ``n_spaxels`` and ``n_bins``, and the
    observe settings as the attribute ``observe`` (JSON). Deterministic for ``settings.seed`` and
    the shard number. Returns the map count.
    """
    with open_shard(maps) as f:
        for name in (*MAP_IMAGES, *MAP_INDEX, "rproj_kpc"):
            if name not in f:
                raise InputError(f"{maps}: dataset '{name}' is missing (rerun the project stage)")
        if shard_number(f) != shard:
            raise InputError(f"{maps}: holds shard {shard_number(f)} but --shard is {shard}")
        datasets = {name: f[name][()] for name in f}
        attrs = dict(f.attrs)
    obs = observe_maps(
        datasets["conditions"], datasets["exsitu"], datasets["mask"], datasets["fov_kpc"], datasets["rproj_kpc"],
        fov_rhalf=float(attrs["fov_rhalf"]), settings=settings,
        rng=np.random.default_rng([settings.seed, shard]),
    )  # fmt: skip
    datasets.update(
        conditions=obs.conditions, exsitu=obs.exsitu, mask=obs.mask, fov_kpc=obs.fov_kpc.astype(np.float32),
        arcsec_per_kpc=obs.arcsec_per_kpc, psf_fwhm_pix=obs.psf_fwhm_pix, n_spaxels=obs.n_spaxels, n_bins=obs.n_bins,
        # Galaxy scalars as an observer has them: the projected radius (the maps' scale) and the drawn redshift;
        # log_mstar stays the catalogue's.
        log_rhalf_kpc=np.log10(datasets["rproj_kpc"].astype(np.float64)), redshift=obs.redshift.astype(np.float64),
    )  # fmt: skip
    attrs.update(fov_radius="projected", observe=json.dumps(settings.to_dict()))
    write_map_shard(out, datasets, attrs)
    return len(obs.conditions)
