"""Assemble one snapshot of the mock universe: FoF groups, subhalos and star particles in
TNG's order and code units.

TNG orders particles group by group; inside a group, subhalo by subhalo (central first),
then the group's "fuzz" (FoF members bound to no subhalo); after the last group come the
particles in no group. The offsets file then gives each subhalo's contiguous slice, which
is what the readers rely on, so the mock keeps exactly that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from exsitu.mock.galaxies import GalaxyModel, make_particles
from exsitu.mock.particles import Particles, half_mass_radius
from exsitu.units import ZSUN, birth_scale_factor, cosmology, length_to_code, mass_to_code, velocity_to_code

WIND_SHARE = 0.01  # PartType4 entries that are wind particles (GFM_StellarFormationTime <= 0)


@dataclass(frozen=True)
class Member:
    """A subhalo to place: its model, group, whether central, SubhaloFlag and main-galaxy index."""

    model: GalaxyModel
    group: int
    central: bool
    flag: int
    galaxy: int  # index of the z=0 main galaxy it belongs to, -1 for extras (no tree)
    offset_kpc: tuple[float, float, float] = (0.0, 0.0, 0.0)  # from the group centre (satellites)
    vel_kms: tuple[float, float, float] = (0.0, 0.0, 0.0)  # peculiar velocity of the subhalo


@dataclass
class Snapshot:
    """One snapshot in code units, particles in TNG order (only PartType4 exists in the mock)."""

    a: float
    h: float
    box: float  # ckpc/h
    subhalo: dict[str, np.ndarray] = field(default_factory=dict)
    group: dict[str, np.ndarray] = field(default_factory=dict)
    stars: dict[str, np.ndarray] = field(default_factory=dict)
    insitu: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    subhalo_offset: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    group_offset: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    galaxy_of_subhalo: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def _winds(rng: np.random.Generator, stars: Particles) -> Particles:
    """Wind particles: PartType4 entries that are gas in flight, placed among the stars."""
    n = max(1, int(round(WIND_SHARE * len(stars))))
    pick = rng.integers(len(stars), size=n)
    return Particles(
        pos=stars.pos[pick] + rng.normal(0.0, 1.0, (n, 3)),
        vel=stars.vel[pick] + rng.normal(0.0, 100.0, (n, 3)),
        mass=np.full(n, stars.mass[0]),
        age=-rng.uniform(0.01, 0.6, n),  # stands for the negative "formation time" of winds
        metallicity=np.full(n, ZSUN),
        insitu=np.full(n, -1, np.int8),
    )


def _diffuse(rng: np.random.Generator, n: int, scale_kpc: float, mass: float) -> Particles:
    """Old stars bound to no subhalo (group fuzz or the unbound background)."""
    return Particles(
        pos=rng.normal(0.0, scale_kpc, (n, 3)),
        vel=rng.normal(0.0, 150.0, (n, 3)),
        mass=np.full(n, mass),
        age=rng.uniform(6.0, 11.0, n),
        metallicity=ZSUN * 10 ** rng.normal(-0.5, 0.2, n),
        insitu=np.full(n, -1, np.int8),
    )


def build_snapshot(
    members: list[Member],
    group_centres_kpc: np.ndarray,
    group_vel_kms: np.ndarray,
    a: float,
    *,
    h: float,
    box: float,
    t_now_gyr: float,
    age_shift_gyr: float,
    seed: int,
    omega0: float,
    omega_lambda: float,
) -> Snapshot:
    """Place ``members`` in their groups and lay out the snapshot in TNG order and code units.

    ``group_centres_kpc`` are group positions in physical kpc at this snapshot and
    ``group_vel_kms`` their peculiar velocities; the periodic box is ``box`` ckpc/h.
    """
    rng = np.random.default_rng(seed)
    # Groups ordered by stellar mass (TNG orders by length); central first, then satellites by mass.
    group_mass: dict[int, float] = {}
    for m in members:
        group_mass[m.group] = group_mass.get(m.group, 0.0) + 10**m.model.log_mstar
    group_order = sorted(group_mass, key=lambda g: -group_mass[g])
    snap = Snapshot(a=a, h=h, box=box)
    columns: dict[str, list] = {k: [] for k in ("pos", "vel", "mass", "age", "Z", "insitu", "initial")}
    sub_rows: list[dict] = []
    grp_rows: list[dict] = []

    def emit(p: Particles, centre_kpc: np.ndarray, vel_kms: np.ndarray, sft: np.ndarray) -> None:
        columns["pos"].append(np.mod(length_to_code(p.pos + centre_kpc, a, h), box))
        columns["vel"].append(velocity_to_code(p.vel + vel_kms, a))
        columns["mass"].append(mass_to_code(p.mass, h))
        columns["initial"].append(mass_to_code(p.mass, h) * rng.uniform(1.1, 1.6, len(p)))
        columns["age"].append(sft)
        columns["Z"].append(p.metallicity)
        columns["insitu"].append(p.insitu)

    cosmo = cosmology({"HubbleParam": h, "Omega0": omega0, "OmegaLambda": omega_lambda})
    n_written = 0
    for gi, g in enumerate(group_order):
        subs = sorted((m for m in members if m.group == g), key=lambda m: (not m.central, -m.model.log_mstar))
        centre = np.asarray(group_centres_kpc[g], dtype=np.float64)
        g_start = n_written
        first_sub = len(sub_rows)
        for m in subs:
            stars = make_particles(m.model, t_now_gyr, age_shift_gyr)
            winds = _winds(rng, stars)
            sub_centre = centre + np.asarray(m.offset_kpc)
            sub_vel = np.asarray(group_vel_kms[g]) + np.asarray(m.vel_kms)
            sft_stars = birth_scale_factor(stars.age, a, cosmo)
            both = Particles.concat([stars, winds])
            emit(both, sub_centre, sub_vel, np.concatenate([sft_stars, winds.age]))
            rhalf = half_mass_radius(stars.pos, stars.mass)
            in_rad = np.linalg.norm(stars.pos, axis=1) < 2.0 * rhalf
            mstar = stars.mass.sum()
            sub_rows.append(
                dict(
                    n=len(both),
                    start=n_written,
                    mstar=mstar,
                    mwind=winds.mass.sum(),
                    minrad=stars.mass[in_rad].sum(),
                    rhalf=rhalf,
                    pos=np.mod(length_to_code(sub_centre, a, h), box),
                    vel=sub_vel,
                    flag=m.flag,
                    grnr=gi,
                    galaxy=m.galaxy,
                )
            )
            n_written += len(both)
        fuzz = _diffuse(rng, 20, 80.0, 10 ** subs[0].model.log_mstar / 5000.0)
        emit(fuzz, centre, np.asarray(group_vel_kms[g]), birth_scale_factor(fuzz.age, a, cosmo))
        n_written += len(fuzz)
        grp_rows.append(
            dict(start=g_start, n=n_written - g_start, first=first_sub, nsubs=len(subs), pos=centre, mass=group_mass[g])
        )
    unbound = _diffuse(rng, 200, 1.0, 1e6)
    unbound.pos = rng.uniform(0.0, box * a / h, (200, 3))
    emit(unbound, np.zeros(3), np.zeros(3), birth_scale_factor(unbound.age, a, cosmo))

    snap.stars = {
        "Coordinates": np.concatenate(columns["pos"]),
        "Velocities": np.concatenate(columns["vel"]).astype(np.float32),
        "Masses": np.concatenate(columns["mass"]).astype(np.float32),
        "GFM_InitialMass": np.concatenate(columns["initial"]).astype(np.float32),
        "GFM_StellarFormationTime": np.concatenate(columns["age"]).astype(np.float32),
        "GFM_Metallicity": np.concatenate(columns["Z"]).astype(np.float32),
    }
    n_total = snap.stars["Masses"].size
    snap.stars["ParticleIDs"] = rng.permutation(n_total).astype(np.uint64) + 1
    snap.insitu = np.concatenate(columns["insitu"]).astype(np.int8)

    n_sub = len(sub_rows)
    len_type = np.zeros((n_sub, 6), np.int32)
    len_type[:, 4] = [r["n"] for r in sub_rows]
    mass_type = np.zeros((n_sub, 6), np.float32)
    mass_type[:, 4] = mass_to_code(np.array([r["mstar"] for r in sub_rows]), h)
    mass_type[:, 0] = mass_to_code(np.array([r["mwind"] for r in sub_rows]), h)  # winds count as gas
    in_rad_type = np.zeros((n_sub, 6), np.float32)
    in_rad_type[:, 4] = mass_to_code(np.array([r["minrad"] for r in sub_rows]), h)
    rhalf_type = np.zeros((n_sub, 6), np.float32)
    rhalf_type[:, 4] = length_to_code(np.array([r["rhalf"] for r in sub_rows]), a, h)
    snap.subhalo = {
        "SubhaloLenType": len_type,
        "SubhaloLen": len_type.sum(axis=1),
        "SubhaloMassType": mass_type,
        "SubhaloMass": mass_type.sum(axis=1),
        "SubhaloMassInRadType": in_rad_type,
        "SubhaloHalfmassRadType": rhalf_type,
        "SubhaloHalfmassRad": rhalf_type[:, 4].copy(),
        "SubhaloPos": np.array([r["pos"] for r in sub_rows], np.float32),
        "SubhaloVel": np.array([r["vel"] for r in sub_rows], np.float32),
        "SubhaloFlag": np.array([r["flag"] for r in sub_rows], np.uint8),
        "SubhaloGrNr": np.array([r["grnr"] for r in sub_rows], np.int32),
    }
    snap.subhalo_offset = np.array([r["start"] for r in sub_rows], np.int64)
    snap.galaxy_of_subhalo = np.array([r["galaxy"] for r in sub_rows], np.int64)
    n_grp = len(grp_rows)
    g_len = np.zeros((n_grp, 6), np.int32)
    g_len[:, 4] = [r["n"] for r in grp_rows]
    snap.group = {
        "GroupLenType": g_len,
        "GroupLen": g_len.sum(axis=1),
        "GroupFirstSub": np.array([r["first"] for r in grp_rows], np.int32),
        "GroupNsubs": np.array([r["nsubs"] for r in grp_rows], np.int32),
        "GroupPos": np.array([np.mod(length_to_code(r["pos"], a, h), box) for r in grp_rows], np.float32),
        "GroupMass": mass_to_code(np.array([r["mass"] for r in grp_rows]), h).astype(np.float32),
    }
    snap.group_offset = np.array([r["start"] for r in grp_rows], np.int64)
    return snap
