"""Write a mock snapshot in the IllustrisTNG on-disk layout that illustris_python reads.

Files per snapshot NNN, under ``root``:
``output/snapdir_NNN/snap_NNN.K.hdf5``, ``output/groups_NNN/fof_subhalo_tab_NNN.K.hdf5``,
``postprocessing/offsets/offsets_NNN.hdf5`` and ``postprocessing/StellarAssembly/stars_NNN.hdf5``;
the SubLink tree is ``postprocessing/trees/SubLink/tree_extended.0.hdf5``. Header attributes,
offset datasets and tree fields are the ones illustris_python's groupcat, snapshot and
sublink modules read.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from exsitu.mock.universe import Snapshot

N_TYPES = 6


def _chunks(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous (start, stop) ranges covering ``n`` items as evenly as possible."""
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return list(zip(edges[:-1], edges[1:]))


def _cosmo_attrs(snap: Snapshot, omega0: float, omega_lambda: float) -> dict:
    return {
        "Time": snap.a,
        "Redshift": 1.0 / snap.a - 1.0,
        "HubbleParam": snap.h,
        "Omega0": omega0,
        "OmegaLambda": omega_lambda,
        "OmegaBaryon": 0.0486,
        "BoxSize": snap.box,
    }


def write_snapshot(
    root: Path,
    num: int,
    snap: Snapshot,
    omega0: float,
    omega_lambda: float,
    tree_rows: np.ndarray,
    *,
    n_chunks: int = 3,
) -> None:
    """Write snapshot ``num``: particle chunks, group catalogue chunks, offsets and StellarAssembly.

    ``tree_rows[i]`` is subhalo i's row in the SubLink tree (also its tree SubhaloID), -1 if absent.
    """
    out = root / "output"
    cosmo = _cosmo_attrs(snap, omega0, omega_lambda)
    n_stars = snap.insitu.size

    snapdir = out / f"snapdir_{num:03d}"
    snapdir.mkdir(parents=True)
    star_chunks = _chunks(n_stars, n_chunks)
    total = np.zeros(N_TYPES, np.uint32)
    total[4] = n_stars
    for k, (lo, hi) in enumerate(star_chunks):
        with h5py.File(snapdir / f"snap_{num:03d}.{k}.hdf5", "w") as f:
            this = np.zeros(N_TYPES, np.int32)
            this[4] = hi - lo
            f.create_group("Header").attrs.update(
                {
                    **cosmo,
                    "NumPart_ThisFile": this,
                    "NumPart_Total": total,
                    "NumPart_Total_HighWord": np.zeros(N_TYPES, np.uint32),
                    "MassTable": np.zeros(N_TYPES),
                    "NumFilesPerSnapshot": n_chunks,
                }
            )
            stars = f.create_group("PartType4")
            for name, values in snap.stars.items():
                stars.create_dataset(name, data=values[lo:hi])

    groupdir = out / f"groups_{num:03d}"
    groupdir.mkdir(parents=True)
    n_sub = snap.subhalo["SubhaloLenType"].shape[0]
    n_grp = snap.group["GroupLenType"].shape[0]
    sub_chunks = _chunks(n_sub, n_chunks)
    grp_chunks = _chunks(n_grp, n_chunks)
    for k in range(n_chunks):
        (slo, shi), (glo, ghi) = sub_chunks[k], grp_chunks[k]
        with h5py.File(groupdir / f"fof_subhalo_tab_{num:03d}.{k}.hdf5", "w") as f:
            f.create_group("Header").attrs.update(
                {
                    **cosmo,
                    "Ngroups_ThisFile": ghi - glo,
                    "Ngroups_Total": n_grp,
                    "Nsubgroups_ThisFile": shi - slo,
                    "Nsubgroups_Total": n_sub,
                    "NumFiles": n_chunks,
                }
            )
            sub = f.create_group("Subhalo")
            if shi > slo:
                for name, values in snap.subhalo.items():
                    sub.create_dataset(name, data=values[slo:shi])
            grp = f.create_group("Group")
            if ghi > glo:
                for name, values in snap.group.items():
                    grp.create_dataset(name, data=values[glo:ghi])

    post = root / "postprocessing"
    (post / "offsets").mkdir(parents=True, exist_ok=True)
    with h5py.File(post / "offsets" / f"offsets_{num:03d}.hdf5", "w") as f:
        by_type = np.zeros((n_chunks, N_TYPES), np.int64)
        by_type[:, 4] = [lo for lo, _ in star_chunks]
        f["FileOffsets/SnapByType"] = by_type
        f["FileOffsets/Subhalo"] = np.array([lo for lo, _ in sub_chunks], np.int64)
        f["FileOffsets/Group"] = np.array([lo for lo, _ in grp_chunks], np.int64)
        sub_off = np.zeros((n_sub, N_TYPES), np.int64)
        sub_off[:, 4] = snap.subhalo_offset
        f["Subhalo/SnapByType"] = sub_off
        grp_off = np.zeros((n_grp, N_TYPES), np.int64)
        grp_off[:, 4] = snap.group_offset
        f["Group/SnapByType"] = grp_off
        rows = np.asarray(tree_rows, np.int64)
        f["Subhalo/SubLink/RowNum"] = rows
        f["Subhalo/SubLink/SubhaloID"] = rows  # tree IDs are row numbers in the single tree file
        f["Subhalo/SubLink/LastProgenitorID"] = np.full(n_sub, -1, np.int64)  # set by write_tree

    (post / "StellarAssembly").mkdir(parents=True, exist_ok=True)
    with h5py.File(post / "StellarAssembly" / f"stars_{num:03d}.hdf5", "w") as f:
        f["InSitu"] = snap.insitu


def write_tree(root: Path, tree: dict[str, np.ndarray], last_progenitor: dict[int, np.ndarray]) -> None:
    """Write the SubLink tree file and fill each snapshot's LastProgenitorID offsets.

    ``tree`` holds the SubLink columns (SubhaloID, SubfindID, SnapNum, DescendantID,
    FirstProgenitorID, NextProgenitorID, MainLeafProgenitorID, LastProgenitorID,
    RootDescendantID, SubhaloMassType); ``last_progenitor[snap]`` is per subhalo.
    """
    treedir = root / "postprocessing" / "trees" / "SubLink"
    treedir.mkdir(parents=True)
    with h5py.File(treedir / "tree_extended.0.hdf5", "w") as f:
        for name, values in tree.items():
            f.create_dataset(name, data=values)
    for num, values in last_progenitor.items():
        with h5py.File(root / "postprocessing" / "offsets" / f"offsets_{num:03d}.hdf5", "a") as f:
            f["Subhalo/SubLink/LastProgenitorID"][...] = values
