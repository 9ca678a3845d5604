"""The mock universe in the exact IllustrisTNG on-disk layout (stage ``simulate_mock``).

The latest snapshot holds ``n_galaxies`` galaxies above 1e10 Msun (centrals and
satellites), plus subhalos the selection must reject (SubhaloFlag=0, below the mass cut);
each earlier snapshot holds their main progenitors, linked by a SubLink tree. Cosmology
and box are TNG100's. Deterministic for ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exsitu.io import InputError
from exsitu.mock.galaxies import GalaxyModel, draw_galaxy, draw_population, progenitor
from exsitu.mock.population import min_log_mstar
from exsitu.mock.tng_layout import write_snapshot, write_tree
from exsitu.mock.universe import Member, build_snapshot
from exsitu.units import tng_cosmology

log = logging.getLogger(__name__)

BOX = 75000.0  # TNG100's box [ckpc/h]
REDSHIFT = {99: 0.0, 91: 0.1, 84: 0.2, 78: 0.3, 72: 0.4, 67: 0.5}  # TNG snapshot -> redshift
EDGE_SHARE = 0.05  # groups placed on the box boundary, so readers must wrap periodically


def _members(rng: np.random.Generator, mains: list[GalaxyModel]) -> tuple[list[Member], int]:
    """Group membership of the main galaxies and of the extras the selection must reject.

    A galaxy whose history makes it a satellite joins the group of a more massive central (at least
    0.3 dex more massive when there is one); the most massive satellites may find none and stay centrals.
    """
    n = len(mains)
    order = np.argsort([-m.log_mstar for m in mains])
    members: list[Member] = []
    centrals: list[tuple[int, float]] = []  # (group, log mass)

    def satellite(model: GalaxyModel, host: int, flag: int, galaxy: int) -> Member:
        offset = rng.normal(size=3)
        offset *= rng.uniform(100.0, 300.0) / np.linalg.norm(offset)
        return Member(model, host, False, flag, galaxy, tuple(offset), tuple(rng.normal(0.0, 200.0, 3)))

    for i in order:
        hosts = [g for g, lm in centrals if lm > mains[i].log_mstar + 0.3] or [
            g for g, lm in centrals if lm > mains[i].log_mstar
        ]
        if hosts and mains[i].is_satellite:
            members.append(satellite(mains[i], int(rng.choice(hosts)), 1, int(i)))
        else:
            centrals.append((len(centrals), mains[i].log_mstar))
            members.append(Member(mains[i], len(centrals) - 1, True, 1, int(i)))
    groups = [g for g, _ in centrals]
    low = min_log_mstar()
    for _ in range(max(1, n // 10)):  # non-cosmological clumps: above the cut but SubhaloFlag=0
        members.append(satellite(draw_galaxy(rng, rng.uniform(low, 10.6), True, low), int(rng.choice(groups)), 0, -1))
    for _ in range(max(2, n // 5)):  # dwarfs below the mass cut
        members.append(satellite(draw_galaxy(rng, rng.uniform(8.7, 9.9), True), int(rng.choice(groups)), 1, -1))
    return members, len(centrals)


@dataclass(frozen=True)
class _Frame:
    """What every snapshot of one universe shares besides TNG's cosmology: its groups' comoving centres [kpc] and
    peculiar velocities [km/s], and the seed."""

    centres: np.ndarray
    group_vel: np.ndarray
    seed: int


def _write_one(root: Path, frame: _Frame, snaps: list[int], k: int, members: list[Member]) -> np.ndarray:
    """Build and write snapshot ``snaps[k]`` of ``members``; returns its galaxy_of_subhalo (-1: an extra)."""
    num = snaps[k]
    z = REDSHIFT[num]
    a = 1.0 / (1.0 + z)
    cosmo = tng_cosmology()
    h, omega0, omega_lambda = cosmo.H0.value / 100.0, float(cosmo.Om0), float(cosmo.Ode0)
    t_now = float(cosmo.age(z).to_value("Gyr"))
    snap = build_snapshot(
        members, frame.centres * a, frame.group_vel, a, h=h, box=BOX, t_now_gyr=t_now,
        age_shift_gyr=float(cosmo.age(0.0).to_value("Gyr")) - t_now, seed=frame.seed * 1000 + num, omega0=omega0,
        omega_lambda=omega_lambda,
    )  # fmt: skip
    gal = snap.galaxy_of_subhalo
    rows = np.full(gal.size, -1, np.int64)
    rows[gal >= 0] = gal[gal >= 0] * len(snaps) + k
    write_snapshot(root, num, snap, omega0, omega_lambda, rows)
    log.info("snapshot %d (z=%.2f): %d subhalos, %d PartType4 entries", num, z, gal.size, snap.insitu.size)
    return gal


def simulate(root: Path, snapshots: Sequence[int], n_galaxies: int, seed: int, workers: int = 1) -> None:
    """Write the mock universe under ``root`` (``root/output`` is the TNG basepath).

    ``workers``: processes that build the snapshots side by side (at most one per snapshot); the universe
    written is the same for any number.
    """
    unknown = [s for s in snapshots if s not in REDSHIFT]
    if unknown:
        raise InputError(f"--snapshots {unknown}: the mock knows snapshots {sorted(REDSHIFT)} only")
    snaps = sorted(set(snapshots), reverse=True)
    rng = np.random.default_rng(seed)
    mains = draw_population(rng, n_galaxies)
    members, n_groups = _members(rng, mains)
    h = tng_cosmology().H0.value / 100.0
    centres = rng.uniform(0.0, BOX / h, (n_groups, 3))  # comoving kpc
    edge = rng.uniform(size=n_groups) < EDGE_SHARE
    centres[edge, 0] = rng.uniform(-2.0, 2.0, edge.sum()) % (BOX / h)
    group_vel = rng.normal(0.0, 150.0, (n_groups, 3))
    frame = _Frame(centres, group_vel, seed)
    # Each earlier snapshot holds the progenitors of the next later one's galaxies (drawn from rng in snapshot
    # order; extras are redrawn as-is). A snapshot then depends on its members and its own seed only, so the
    # snapshots can be built in any order, or at once.
    members_at = [members]
    for _ in snaps[1:]:
        members_at.append(
            [
                Member(progenitor(m.model, rng), m.group, m.central, m.flag, m.galaxy, m.offset_kpc, m.vel_kms)
                if m.galaxy >= 0
                else m
                for m in members_at[-1]
            ]
        )
    tasks = [(root, frame, snaps, k, members_at[k]) for k in range(len(snaps))]
    if workers > 1 and len(snaps) > 1:
        with ProcessPoolExecutor(min(workers, len(snaps))) as pool:
            galaxies = list(pool.map(_write_one, *zip(*tasks)))
    else:
        galaxies = [_write_one(*task) for task in tasks]
    # Tree rows: per main galaxy, its nodes from the latest snapshot backwards (main branch).
    tree_subfind = np.full((n_galaxies, len(snaps)), -1, np.int64)
    for k, gal in enumerate(galaxies):
        tree_subfind[gal[gal >= 0], k] = np.flatnonzero(gal >= 0)
    _write_tree(root, snaps, tree_subfind, [gal.size for gal in galaxies])


def _write_tree(root: Path, snaps: list[int], subfind: np.ndarray, n_subhalos: list[int]) -> None:
    """One main branch per z=0 galaxy; the tree ID of a node is its row number."""
    n_gal, n_snaps = subfind.shape
    row = np.arange(n_gal * n_snaps).reshape(n_gal, n_snaps)
    root_row = row[:, :1].repeat(n_snaps, axis=1)
    leaf = row[:, -1:].repeat(n_snaps, axis=1)
    first_prog = np.where(np.arange(n_snaps) < n_snaps - 1, row + 1, -1)
    descendant = np.where(np.arange(n_snaps) > 0, row - 1, -1)
    tree = {
        "SubhaloID": row.ravel(),
        "SubfindID": subfind.ravel(),
        "SnapNum": np.tile(np.asarray(snaps, np.int16), n_gal),
        "DescendantID": descendant.ravel(),
        "FirstProgenitorID": first_prog.ravel(),
        "NextProgenitorID": np.full(row.size, -1, np.int64),
        "MainLeafProgenitorID": leaf.ravel(),
        "LastProgenitorID": leaf.ravel(),
        "RootDescendantID": root_row.ravel(),
    }
    last = {}
    for k, num in enumerate(snaps):
        values = np.full(n_subhalos[k], -1, np.int64)
        values[subfind[:, k]] = leaf[:, k]
        last[num] = values
    write_tree(root, tree, last)
