"""Star particles of one shard of the catalogue (stage ``tag``), in physical units, each
tagged in-situ or ex-situ (Rodriguez-Gomez et al. 2016, the StellarAssembly catalogue).

Catalogue row i belongs to shard i % n_shards. Per subhalo: wind particles dropped;
positions in physical kpc about SubhaloPos (periodic wrap); peculiar velocities in km/s
relative to SubhaloVel; current masses in Msun; ages in Gyr from the formation scale
factor with the simulation's own cosmology; metallicity as a mass fraction; ``exsitu``
true where InSitu == 0 (unassigned stars, InSitu == -1, count as not ex-situ).

Output HDF5: group ``particles`` (flat arrays pos, vel, mass, age, metallicity, exsitu)
and group ``galaxies`` (one row per subhalo: snapshot, subhalo_id, galaxy_id, rhalf_kpc,
stellar_mass, exsitu_total, redshift (the snapshot's, 1/Time - 1), start, count), rows of a galaxy
are particles[start:start+count].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import illustris_python as il
import numpy as np
import pandas as pd

from exsitu.catalog import read_header
from exsitu.io import InputError, atomic_output, read_table
from exsitu.units import (
    COSMOLOGY_KEYS,
    cosmology,
    length_to_physical_kpc,
    mass_to_msun,
    stellar_age_gyr,
    velocity_to_peculiar,
    wrap_periodic,
)

log = logging.getLogger(__name__)

STARS = 4
FIELDS = ["Coordinates", "Velocities", "Masses", "GFM_StellarFormationTime", "GFM_Metallicity"]
CATALOG_COLUMNS = ["snapshot", "subhalo_id", "galaxy_id", "rhalf_kpc", "stellar_mass"]


@dataclass
class TaggedStars:
    """One subhalo's stars in physical units about its centre (kpc, km/s, Msun, Gyr, mass fraction)."""

    pos: np.ndarray
    vel: np.ndarray
    mass: np.ndarray
    age: np.ndarray
    metallicity: np.ndarray
    exsitu: np.ndarray  # bool

    @property
    def exsitu_total(self) -> float:
        """Ex-situ share of the stellar mass."""
        return float(self.mass[self.exsitu].sum() / self.mass.sum())


def to_physical(
    raw: dict[str, np.ndarray], insitu: np.ndarray, centre: np.ndarray, bulk_vel: np.ndarray, header: dict
) -> TaggedStars:
    """Snapshot fields of one subhalo (code units) -> :class:`TaggedStars`; winds are dropped.

    ``centre`` is SubhaloPos [ckpc/h], ``bulk_vel`` SubhaloVel [km/s, already peculiar].
    """
    a, h, box = float(header["Time"]), float(header["HubbleParam"]), float(header["BoxSize"])
    stars = raw["GFM_StellarFormationTime"] > 0  # <= 0 marks wind particles
    dx = wrap_periodic(raw["Coordinates"][stars] - centre, box)
    return TaggedStars(
        pos=length_to_physical_kpc(dx, a, h),
        vel=velocity_to_peculiar(raw["Velocities"][stars], a) - bulk_vel,
        mass=mass_to_msun(raw["Masses"][stars], h),
        age=stellar_age_gyr(raw["GFM_StellarFormationTime"][stars], a, cosmology(header)),
        metallicity=np.asarray(raw["GFM_Metallicity"][stars], dtype=np.float64),
        exsitu=np.asarray(insitu)[stars] == 0,
    )


class SnapshotReader:
    """Reads subhalos' stars and their StellarAssembly slice from one snapshot on disk."""

    def __init__(self, basepath: str, snapshot: int) -> None:
        self.basepath, self.snapshot = basepath, snapshot
        self.header = read_header(basepath, snapshot)
        missing = [k for k in COSMOLOGY_KEYS if k not in self.header]
        if missing:
            raise InputError(f"snapshot {snapshot} under {basepath}: Header lacks {missing}")
        root = Path(basepath).parent / "postprocessing"
        self.offsets_file = root / "offsets" / f"offsets_{snapshot:03d}.hdf5"
        if not self.offsets_file.exists():
            raise InputError(
                f"offsets file {self.offsets_file} not found: it gives each subhalo's particle slice "
                f"in snapshot {snapshot}"
            )
        self.assembly_file = root / "StellarAssembly" / f"stars_{snapshot:03d}.hdf5"
        if not self.assembly_file.exists():
            raise InputError(
                f"StellarAssembly file {self.assembly_file} not found: it holds the in-situ/ex-situ "
                f"flags (InSitu) of snapshot {snapshot}"
            )
        n_stars = int(il.snapshot.getNumPart(self.header)[STARS])
        with h5py.File(self.assembly_file, "r") as f:
            if "InSitu" not in f:
                raise InputError(f"{self.assembly_file}: dataset 'InSitu' is missing")
            if f["InSitu"].shape[0] != n_stars:
                raise InputError(
                    f"{self.assembly_file}: InSitu has {f['InSitu'].shape[0]} entries but snapshot {snapshot} "
                    f"has {n_stars} PartType4 particles"
                )
        with h5py.File(self.offsets_file, "r") as f:
            self.star_offset = f["Subhalo/SnapByType"][:, STARS]
        cat = il.groupcat.loadSubhalos(basepath, snapshot, fields=["SubhaloPos", "SubhaloVel", "SubhaloLenType"])
        self.pos, self.vel, self.length = cat["SubhaloPos"], cat["SubhaloVel"], cat["SubhaloLenType"][:, STARS]

    def stars(self, subhalo_id: int) -> TaggedStars | None:
        """The subhalo's tagged stars, or None (with a warning) if it has none after dropping winds."""
        raw = il.snapshot.loadSubhalo(self.basepath, self.snapshot, subhalo_id, "stars", fields=FIELDS)
        if raw["count"] == 0:
            log.warning("snapshot %d subhalo %d: no PartType4 particles, skipped", self.snapshot, subhalo_id)
            return None
        lo = int(self.star_offset[subhalo_id])
        with h5py.File(self.assembly_file, "r") as f:
            insitu = f["InSitu"][lo : lo + int(self.length[subhalo_id])]
        tagged = to_physical(raw, insitu, self.pos[subhalo_id], self.vel[subhalo_id], self.header)
        if tagged.mass.size == 0:
            log.warning("snapshot %d subhalo %d: only wind particles, skipped", self.snapshot, subhalo_id)
            return None
        arrays = (tagged.pos, tagged.vel, tagged.mass, tagged.age, tagged.metallicity)
        if not all(np.all(np.isfinite(x)) for x in arrays):
            raise InputError(
                f"snapshot {self.snapshot} subhalo {subhalo_id}: NaN or inf in its star particle fields "
                f"under {self.basepath}"
            )
        return tagged


def read_catalog(path: str) -> pd.DataFrame:
    """The select stage's catalogue; fails naming the file and the missing columns."""
    table = read_table(path, CATALOG_COLUMNS, "catalogue")
    if table.empty:
        raise InputError(f"{path}: the catalogue is empty")
    return table


def tag_shard(basepath: str, catalog: pd.DataFrame, shard: int, n_shards: int, out: str) -> None:
    """Tag the shard's subhalos (catalogue rows ``shard::n_shards``) and write the compact particle file ``out``."""
    if not 0 <= shard < n_shards:
        raise InputError(f"--shard {shard} must be in [0, --n-shards {n_shards})")
    rows = catalog.iloc[shard::n_shards]
    readers = {s: SnapshotReader(basepath, int(s)) for s in rows["snapshot"].unique()}
    galaxies, parts = [], []
    start = 0
    for row in rows.itertuples():
        tagged = readers[row.snapshot].stars(int(row.subhalo_id))
        if tagged is None:
            continue
        parts.append(tagged)
        galaxies.append(
            (
                row.snapshot,
                row.subhalo_id,
                row.galaxy_id,
                row.rhalf_kpc,
                row.stellar_mass,
                tagged.exsitu_total,
                1.0 / float(readers[row.snapshot].header["Time"]) - 1.0,
                start,
                tagged.mass.size,
            )
        )
        start += tagged.mass.size
    if not galaxies:
        log.warning("shard %d of %d holds no galaxy", shard, n_shards)
    names = (
        "snapshot", "subhalo_id", "galaxy_id", "rhalf_kpc", "stellar_mass", "exsitu_total", "redshift",
        "start", "count",
    )  # fmt: skip
    dtypes = (np.int64, np.int64, np.int64, np.float64, np.float64, np.float64, np.float64, np.int64, np.int64)
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            {"shard": shard, "n_shards": n_shards, "basepath": str(basepath), "simulation": _simulation_name(basepath)}
        )
        g = f.create_group("galaxies")
        for k, (name, dtype) in enumerate(zip(names, dtypes)):
            g.create_dataset(name, data=np.array([r[k] for r in galaxies], dtype=dtype))
        p = f.create_group("particles")
        for name, dtype, width in (
            ("pos", np.float32, 3),
            ("vel", np.float32, 3),
            ("mass", np.float32, 0),
            ("age", np.float32, 0),
            ("metallicity", np.float32, 0),
            ("exsitu", bool, 0),
        ):
            empty = np.empty((0, width) if width else 0, dtype)
            data = np.concatenate([getattr(t, name) for t in parts]).astype(dtype) if parts else empty
            p.create_dataset(name, data=data)
    log.info("shard %d: %d galaxies, %d star particles", shard, len(galaxies), start)


def _simulation_name(basepath: str) -> str:
    """The simulation's directory name (e.g. TNG100-1, TNGmock): the parent of ``output``."""
    return Path(basepath).resolve().parent.name
