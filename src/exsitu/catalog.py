"""The subhalo catalogue of galaxies to map, read from the TNG group catalogues (stage ``select``).

Keeps SubhaloFlag == 1 subhalos whose stellar mass (``selection.mass_field``, PartType4
column) exceeds ``selection.min_stellar_mass`` [Msun] at every configured snapshot.
``galaxy_id`` is the SubLink RootDescendantID, so a z=0 galaxy and its progenitors share
it; without trees each subhalo is its own galaxy (with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import illustris_python as il
import numpy as np
import pandas as pd

from exsitu.io import InputError
from exsitu.settings import SelectionSettings
from exsitu.units import length_to_physical_kpc, mass_to_msun

log = logging.getLogger(__name__)

STARS = 4
COLUMNS = ["snapshot", "subhalo_id", "galaxy_id", "stellar_mass", "rhalf_kpc", "is_central", "group_id"]
# Without a tree, galaxy ids must still be unique across snapshots.
NO_TREE_ID_BASE = 10**12


def check_basepath(basepath: str, snapshot: int) -> None:
    """Fail clearly when the TNG output tree for ``snapshot`` is not where it should be."""
    base = Path(basepath)
    if not base.is_dir():
        raise InputError(f"simulation basepath {basepath} does not exist (config 'simulation.basepath')")
    group0 = Path(il.groupcat.gcPath(basepath, snapshot, 0))
    if not group0.exists():
        raise InputError(f"snapshot {snapshot}: group catalogue {group0} not found under basepath {basepath}")
    snap0 = Path(il.snapshot.snapPath(basepath, snapshot, 0))
    if not snap0.exists():
        raise InputError(f"snapshot {snapshot}: particle file {snap0} not found under basepath {basepath}")


def read_header(basepath: str, snapshot: int) -> dict:
    """The snapshot Header (Time, HubbleParam, Omega0, OmegaLambda, BoxSize, NumPart_Total, ...)."""
    check_basepath(basepath, snapshot)
    with h5py.File(il.snapshot.snapPath(basepath, snapshot, 0), "r") as f:
        return dict(f["Header"].attrs.items())


def _galaxy_ids(basepath: str, snapshot: int, subhalo_ids: np.ndarray) -> np.ndarray | None:
    """SubLink RootDescendantID of each subhalo (its own tree ID if not in the tree); None without trees.

    Reads the offsets file's RowNum once and each tree chunk's RootDescendantID only at the
    rows needed: one loadTree call per subhalo would take minutes on the ~14k TNG100 galaxies.
    """
    try:
        il.sublink.treePath(basepath, "SubLink", 0)
    except ValueError:
        return None
    offsets = il.groupcat.offsetPath(basepath, snapshot)
    if not Path(offsets).exists():
        raise InputError(
            f"offsets file {offsets} not found: it links subhalos of snapshot {snapshot} to the SubLink tree"
        )
    with h5py.File(offsets, "r") as f:
        rows = f["Subhalo/SubLink/RowNum"][:][subhalo_ids]
    ids = NO_TREE_ID_BASE * (snapshot + 1) + subhalo_ids.astype(np.int64)
    chunk_start = il.sublink.subLinkOffsets(basepath, "SubLink", cache=False)
    in_tree = rows >= 0
    chunk = np.searchsorted(chunk_start, rows, side="right") - 1
    for k in np.unique(chunk[in_tree]):
        take = np.flatnonzero(in_tree & (chunk == k))
        local = rows[take] - chunk_start[k]
        order = np.argsort(local)  # h5py point selection wants increasing indices
        with h5py.File(il.sublink.treePath(basepath, "SubLink", int(k)), "r") as f:
            ids[take[order]] = f["RootDescendantID"][local[order]]
    return ids


def select_snapshot(basepath: str, snapshot: int, min_mass: float, mass_field: str) -> pd.DataFrame:
    """Catalogue rows of one snapshot (physical units, see COLUMNS)."""
    header = read_header(basepath, snapshot)
    a, h = float(header["Time"]), float(header["HubbleParam"])
    fields = [mass_field, "SubhaloFlag", "SubhaloHalfmassRadType", "SubhaloGrNr"]
    try:
        subs = il.groupcat.loadSubhalos(basepath, snapshot, fields=fields)
        first_sub = il.groupcat.loadHalos(basepath, snapshot, fields=["GroupFirstSub"])
    except KeyError as err:
        raise InputError(f"snapshot {snapshot}: group catalogue under {basepath} lacks field {err}") from None
    except Exception as err:  # noqa: BLE001 - illustris_python raises bare Exception for a missing field
        raise InputError(f"snapshot {snapshot}: cannot read group catalogue under {basepath}: {err}") from None
    if isinstance(subs, dict) and subs.get("count", 1) == 0:
        return pd.DataFrame(columns=COLUMNS)
    mass = mass_to_msun(subs[mass_field][:, STARS], h)
    keep = np.flatnonzero((subs["SubhaloFlag"] == 1) & (mass > min_mass))
    grnr = subs["SubhaloGrNr"][keep]
    table = pd.DataFrame(
        {
            "snapshot": snapshot,
            "subhalo_id": keep.astype(np.int64),
            "stellar_mass": mass[keep],
            "rhalf_kpc": length_to_physical_kpc(subs["SubhaloHalfmassRadType"][keep, STARS], a, h),
            "is_central": first_sub[grnr] == keep,
            "group_id": grnr.astype(np.int64),
        }
    )
    bad = table[~np.isfinite(table["rhalf_kpc"]) | (table["rhalf_kpc"] <= 0)]
    if len(bad):
        log.warning("snapshot %d: skipping %d subhalos with no valid stellar half-mass radius", snapshot, len(bad))
        table = table.drop(bad.index)
    galaxy = _galaxy_ids(basepath, snapshot, table["subhalo_id"].to_numpy())
    if galaxy is None:
        log.warning(
            "no SubLink tree found beside %s: each subhalo of snapshot %d is its own galaxy", basepath, snapshot
        )
        galaxy = NO_TREE_ID_BASE * (snapshot + 1) + table["subhalo_id"].to_numpy()
    table.insert(2, "galaxy_id", galaxy)
    return table[COLUMNS]


def select_catalog(basepath: str, snapshots: Sequence[int], settings: SelectionSettings) -> pd.DataFrame:
    """The selected subhalos of all ``snapshots`` (columns :data:`COLUMNS`); an empty selection is an error."""
    tables = [select_snapshot(basepath, s, settings.min_stellar_mass, settings.mass_field) for s in snapshots]
    for s, t in zip(snapshots, tables):
        log.info("snapshot %d: %d subhalos selected", s, len(t))
    catalog = pd.concat(tables, ignore_index=True)
    if catalog.empty:
        raise InputError(
            f"empty selection: no subhalo with SubhaloFlag==1 and {settings.mass_field} > "
            f"{settings.min_stellar_mass:g} Msun at snapshots {list(snapshots)} under {basepath}"
        )
    return catalog
