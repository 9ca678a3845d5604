"""Mock galaxies built from assembly histories, in the spirit of particle tagging (Cooper et al. 2010).

A z=0 galaxy is its stellar mass, its dark halo, its size scale and its history: the
in-situ star formation of its main progenitor and the satellites it accreted
(:mod:`exsitu.mock.assembly`). Star particles are drawn from that history:

- in-situ disc: exponential, grown inside out: each star's scale length is the disc's when it
  formed, growing as (1+z)^-1 (Munoz-Mateos et al. 2007, ApJ 658, 1006; van der Wel et al. 2014);
  hotter and thicker with age; metallicity of the main progenitor when each star
  formed (so old in-situ stars are metal poor) with a negative radial gradient;
- in-situ bulge: compact, old, metal rich for its age, pressure supported with slow rotation;
- in-situ halo: disc stars heated by major and minor mergers (Zolotov et al. 2009, ApJ 702,
  1058; Purcell et al. 2010, MNRAS 404, 1711): old, metal rich for their radius, a flattened
  slowly rotating spheroid;
- ex-situ stars: the accreted satellites' own populations, placed by mass ratio and orbit
  (:mod:`exsitu.mock.debris`), including streams, shells and co-planar accreted discs.

Sizes follow r_1/2 = 0.015 R200 (Kravtsov 2013, ApJ 764, L31) of the halo from the stellar
to halo mass relation, which gives TNG-like sizes for massive galaxies (Genel et al. 2018,
MNRAS 474, 3976); velocities come from the stars + NFW potential (:mod:`exsitu.mock.dynamics`).

All quantities are physical: kpc, km/s, Msun, Gyr, metallicity mass fraction; the
TNG-layout writer converts to code units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from exsitu.mock.assembly import (
    SIZE_TO_R200,
    T0_GYR,
    Satellite,
    draw_history,
    halo_mass,
    host_mass,
    r200_kpc,
    redshift_at_lookback,
    star_metallicities,
)
from exsitu.mock.debris import debris
from exsitu.mock.dynamics import Potential, frame, spheroid
from exsitu.mock.particles import Particles
from exsitu.units import ZSUN

SF_START_GYR = T0_GYR - 0.9  # lookback of the first in-situ stars (z ~ 6)
DISC_GRADIENT_DEX = -0.1  # per disc scale length (Sanchez et al. 2014, A&A 563, A49: ~ -0.1 dex / R_e)
HALO_MASS_SCATTER_DEX = 0.15  # at fixed stellar mass (Behroozi et al. 2013)
BULGE_SCALE = 0.25  # Hernquist scale of the in-situ bulge / size scale, at the bulge's formation
HEATED_SCALE = 1.2  # Hernquist scale of the in-situ halo / disc scale length of the heated stars
SIZE_SCATTER = 0.15  # lognormal, on top of the halo-mass scatter (Kravtsov 2013: ~0.2 dex in total)


@dataclass(frozen=True)
class GalaxyModel:
    """One mock galaxy's z=0 properties and history (physical units).

    A progenitor at an earlier snapshot is the same model seen ``age_shift_gyr`` before z=0
    (see :func:`make_particles`), with its own particle realisation (``seed``).
    """

    log_mstar: float  # log10 z=0 stellar mass [Msun]
    exsitu_fraction: float  # ex-situ share of the z=0 stellar mass
    satellites: tuple[Satellite, ...]  # what it accreted
    log_mhalo: float  # log10 M200 [Msun]
    size_kpc: float  # size scale: 0.015 R200
    disc_scale_kpc: float
    bulge_fraction: float  # bulge share of the in-situ mass
    insitu_age_gyr: float  # mean z=0 age of the in-situ disc stars
    z_offset: float  # offset from the mass-metallicity relation [dex]
    spin: tuple[float, float, float]  # unit vector of the disc angular momentum
    seed: int  # seeds the particle draw, so a model always gives the same particles


def particle_count(log_mstar: float) -> int:
    """Star particles for a galaxy at z=0: sub-linear in mass keeps massive galaxies affordable."""
    return int(np.clip(4000.0 * 10 ** (0.4 * (log_mstar - 10.0)), 300, 25000))


def draw_population(rng: np.random.Generator, n: int) -> list[GalaxyModel]:
    """``n`` z=0 galaxies above 1e10 Msun with a falling mass function up to ~1e12 Msun."""
    log_m = np.empty(0)
    while log_m.size < n:  # truncated exponential in log M: a falling mass function
        draw = 10.02 + rng.exponential(0.45, size=2 * n)
        log_m = np.concatenate([log_m, draw[draw < 12.2]])
    return [draw_galaxy(rng, float(lm)) for lm in log_m[:n]]


def draw_galaxy(rng: np.random.Generator, log_mstar: float) -> GalaxyModel:
    """One z=0 galaxy of the given mass, its halo, structure and assembly history, with scatter in each.

    In-situ disc stars are younger in low-mass galaxies and the bulge share grows with mass
    (downsizing: Gallazzi et al. 2005, MNRAS 362, 41).
    """
    dm = log_mstar - 10.0
    spin = rng.normal(size=3)
    spin /= np.linalg.norm(spin)
    log_mhalo = halo_mass(log_mstar) + float(rng.normal(0.0, HALO_MASS_SCATTER_DEX))
    size = SIZE_TO_R200 * r200_kpc(log_mhalo) * float(rng.lognormal(0.0, SIZE_SCATTER))
    fex, sats = draw_history(rng, log_mstar, size, spin)
    return GalaxyModel(
        log_mstar=log_mstar,
        exsitu_fraction=fex,
        satellites=sats,
        log_mhalo=log_mhalo,
        size_kpc=size,
        disc_scale_kpc=float(1.0 * size * rng.lognormal(0.0, 0.1)),
        bulge_fraction=float(np.clip(0.15 + 0.25 * dm + rng.normal(0.0, 0.1), 0.05, 0.85)),
        insitu_age_gyr=float(np.clip(5.5 + 1.8 * dm + rng.normal(0.0, 1.0), 3.0, 10.5)),
        z_offset=float(rng.normal(0.0, 0.1)),
        spin=tuple(float(s) for s in spin),
        seed=int(rng.integers(2**31)),
    )


def progenitor(model: GalaxyModel, rng: np.random.Generator) -> GalaxyModel:
    """The same galaxy for an earlier snapshot: same history, a fresh particle realisation.

    What the progenitor lacks (stars born and satellites accreted since) is dropped by
    :func:`make_particles` from the snapshot's lookback time.
    """
    return replace(model, seed=int(rng.integers(2**31)))


def _ages(rng: np.random.Generator, n: int, mean_age: float, concentration: float) -> np.ndarray:
    """z=0 ages [Gyr] from a Beta-distributed star formation history since ``SF_START_GYR``."""
    m = np.clip(mean_age / SF_START_GYR, 0.05, 0.95)
    return SF_START_GYR * rng.beta(concentration * m, concentration * (1.0 - m), n)


def _insitu_metallicity(
    rng: np.random.Generator, model: GalaxyModel, age: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """Log metallicity [dex] of in-situ stars of z=0 ``age``: the main progenitor's enrichment, plus ``offset``."""
    z_form = redshift_at_lookback(age)
    log_m = np.log10(host_mass(10**model.log_mstar, z_form))
    history = star_metallicities(np.array(model.log_mstar), np.zeros(1), log_m, z_form, np.zeros(age.size, int))
    return history + model.z_offset + offset + rng.normal(0.0, 0.1, age.size)


def _bulge_age(model: GalaxyModel) -> float:
    """Mean z=0 age [Gyr] of the bulge: it formed early, in the first, dissipative phase."""
    return min(model.insitu_age_gyr + 3.0, 11.5)


def _bulge_scale(model: GalaxyModel) -> float:
    """Hernquist scale [kpc] of the bulge: compact, as galaxies were when it formed.

    Sizes at fixed mass grow as (1+z)^-1 to (1+z)^-1.5 (van der Wel et al. 2014, ApJ 788, 28): the
    dense cores of today's massive galaxies are the compact galaxies of z ~ 2 (two-phase
    assembly, Oser et al. 2010, ApJ 725, 2312).
    """
    return BULGE_SCALE * model.size_kpc / (1.0 + float(redshift_at_lookback(_bulge_age(model))))


def _potential(model: GalaxyModel) -> Potential:
    """The z=0 galaxy's potential: bulge, disc (as a sphere of its half-mass radius) and each satellite's debris."""
    m_in = 10**model.log_mstar * (1.0 - model.exsitu_fraction)
    masses = [m_in * model.bulge_fraction, m_in * (1.0 - model.bulge_fraction)]
    scales = [_bulge_scale(model), 0.7 * model.disc_scale_kpc]
    masses += [10**s.log_mass for s in model.satellites]
    scales += [s.radius_kpc / 2.414 for s in model.satellites]
    return Potential(np.array(masses), np.array(scales), model.log_mhalo)


def make_particles(model: GalaxyModel, t_now_gyr: float, age_shift_gyr: float) -> Particles:
    """Star particles of ``model`` seen ``age_shift_gyr`` before z=0 (bound stars only; winds are added by the writer).

    Stars born and satellites accreted after that time are left out; ages are shifted to the
    snapshot and none is older than ``t_now_gyr`` (the Universe at the snapshot) minus 0.2 Gyr.
    Every particle has the z=0 galaxy's particle mass, so a progenitor has fewer particles.
    """
    rng = np.random.default_rng(model.seed)
    n = particle_count(model.log_mstar)
    m_particle = 10**model.log_mstar / n
    sat_mass = np.array([10**s.log_mass for s in model.satellites])
    n_ex = int(round(n * model.exsitu_fraction)) if model.satellites else 0
    counts = rng.multinomial(n_ex, sat_mass / sat_mass.sum()) if n_ex else np.zeros(len(model.satellites), int)
    arrived = np.array([s.infall_gyr > age_shift_gyr for s in model.satellites], bool)
    n_in = n - n_ex
    n_bulge = int(round(n_in * model.bulge_fraction))
    n_disc = n_in - n_bulge
    pot = _potential(model)
    axis = np.asarray(model.spin)
    rot = frame(axis)
    parts = []

    # In-situ disc, inside out: the scale length grows as stars get younger; old stars are hotter and thicker.
    age = _ages(rng, n_disc, model.insitu_age_gyr, 4.0)
    rd = model.disc_scale_kpc * 1.15 / (1.0 + redshift_at_lookback(age))
    r = rng.gamma(2.0, rd)
    phi = rng.uniform(0.0, 2 * np.pi, n_disc)
    local = np.stack([r * np.cos(phi), r * np.sin(phi), rng.laplace(0.0, (0.04 + 0.2 * age / T0_GYR) * rd)], axis=1)
    v_c = pot.circular_speed(r)
    sigma = v_c * (0.05 + 0.25 * age / T0_GYR)
    v_phi = np.maximum(v_c - sigma**2 / np.maximum(v_c, 1.0), 0.0)  # asymmetric drift
    vloc = np.stack([-v_phi * np.sin(phi), v_phi * np.cos(phi), np.zeros(n_disc)], axis=1)
    vloc += rng.normal(size=(n_disc, 3)) * (sigma[:, None] * np.array([1.0, 0.7, 0.6]))
    log_z = _insitu_metallicity(rng, model, age, DISC_GRADIENT_DEX * (r / model.disc_scale_kpc - 1.0))
    disc = Particles(local @ rot, vloc @ rot, np.empty(0), age, ZSUN * 10**log_z, np.ones(n_disc, np.int8))

    # In-situ halo: disc stars older than the last merger with mass ratio > 1/10 are heated by it.
    heating = [s for s in model.satellites if s.kind in ("major", "minor") and s.infall_gyr > age_shift_gyr]
    if heating:
        share = min(0.7, 1.5 * sum(s.mass_ratio for s in heating))
        hot = (age > min(s.infall_gyr for s in heating)) & (rng.uniform(size=n_disc) < share)
        k = int(hot.sum())
        scale = np.full(k, HEATED_SCALE * rd[hot].mean()) if k else np.empty(0)
        disc.pos[hot], disc.vel[hot] = spheroid(
            rng, pot, scale, np.tile(axis, (k, 1)), np.full(k, 0.6), rotation=np.full(k, 0.4), beta=0.2
        )
    parts.append(disc)

    # In-situ bulge: compact, old, metal rich, pressure supported with slow rotation.
    age = _ages(rng, n_bulge, _bulge_age(model), 6.0)
    pos, vel = spheroid(
        rng,
        pot,
        np.full(n_bulge, _bulge_scale(model)),
        np.tile(axis, (n_bulge, 1)),
        np.full(n_bulge, 0.75),
        rotation=np.full(n_bulge, rng.uniform(0.1, 0.5)),
        beta=0.0,
    )
    log_z = _insitu_metallicity(rng, model, age, np.full(n_bulge, 0.1))
    parts.append(Particles(pos, vel, np.empty(0), age, ZSUN * 10**log_z, np.ones(n_bulge, np.int8)))

    sats = [s for s, a in zip(model.satellites, arrived) if a]
    parts.append(
        debris(
            rng,
            sats,
            counts[arrived],
            model.log_mstar,
            age_shift_gyr,
            pot,
            disc_axis=axis,
            disc_scale_kpc=model.disc_scale_kpc,
        )  # fmt: skip
    )
    out = Particles.concat(parts)
    out.mass = np.full(len(out), m_particle)
    out = out.take(out.age > age_shift_gyr)  # stars not yet born at the snapshot
    out.age = np.clip(out.age - age_shift_gyr, 0.05, t_now_gyr - 0.2)
    return out
