"""Mock galaxies built from assembly histories, in the spirit of particle tagging (Cooper et al. 2010).

A z=0 galaxy is its stellar mass, its dark halo, its size scale and its history
(:mod:`exsitu.mock.population`, :mod:`exsitu.mock.assembly`): the in-situ star formation of its
main progenitor and the satellites it accreted. Star particles are drawn from that history:

- in-situ stars are born when the history says: the halo's own star formation (its stellar-to-halo
  track) and bursts from the gas of gas-rich satellites at each coalescence. Their metallicity is
  the main progenitor's enrichment when each formed (old stars are metal poor), with the
  fluctuations of stochastic gas accretion (~0.1 dex over ~1 Gyr: Forbes et al. 2014, MNRAS 443,
  168), a dilution by the metal-poor gas of gas-rich mergers (TNG50 discs show such merger-driven
  drops of the central metallicity: Ratcliffe et al. 2024, A&A 690, A352), a radial gradient at the
  star's BIRTH radius, and 0.1 dex per star;
- in-situ disc: exponential, grown inside out: each star's birth scale length is the disc's when it
  formed, growing as (1+z)^-1 (Munoz-Mateos et al. 2007, ApJ 658, 1006; van der Wel et al. 2014);
  stars migrate radially from their birth radius, by ~1.4 disc scale lengths after 8 Gyr (the
  Milky Way's 3.6 kpc: Frankel et al. 2020, ApJ 896, 15), so metallicity at a given radius scatters
  as in real discs; hotter and thicker with age;
- in-situ bulge: compact and pressure supported with slow rotation, made of the OLDEST in-situ
  stars (with scatter, so bulge ages vary from galaxy to galaxy with the star formation history);
  the stars of merger-driven bursts form in the disc that the gas of a gas-rich merger rebuilds
  (Hopkins et al. 2009, ApJ 691, 1168);
- in-situ halo: disc stars heated by major and minor mergers (Zolotov et al. 2009, ApJ 702,
  1058; Purcell et al. 2010, MNRAS 404, 1711): old, metal rich for their radius, a flattened
  slowly rotating spheroid;
- ex-situ stars: the accreted satellites' own populations, placed by mass ratio and orbit
  (:mod:`exsitu.mock.debris`), including streams, shells and co-planar accreted discs.

Sizes follow r_1/2 = 0.015 R200 (Kravtsov 2013, ApJ 764, L31) of the galaxy's halo, times its spin
(:func:`size_factor`); velocities
come from the stars + NFW potential (:mod:`exsitu.mock.dynamics`).

All quantities are physical: kpc, km/s, Msun, Gyr, metallicity mass fraction; the
TNG-layout writer converts to code units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from exsitu.literature import SIZE_TO_R200, age_of_universe_gyr, r200_kpc, redshift_at_lookback
from exsitu.mock.assembly import (
    GRID,
    GRID_EDGES,
    STEP_GYR,
    History,
    Satellite,
    host_log_mstar,
    satellites,
    star_metallicities,
)
from exsitu.mock.debris import debris
from exsitu.mock.dynamics import Potential, frame, spheroid
from exsitu.mock.particles import Particles
from exsitu.mock.population import central_share, draw_assembly, min_log_mstar, sample_log_mstar
from exsitu.units import ZSUN

DISC_GRADIENT_DEX = -0.1  # per disc scale length (Sanchez et al. 2014, A&A 563, A49: ~ -0.1 dex / R_e)
BULGE_SCALE = 0.25  # Hernquist scale of the in-situ bulge / size scale, at the bulge's formation
HEATED_SCALE = 1.2  # Hernquist scale of the in-situ halo / disc scale length of the heated stars
SIZE_SCATTER = 0.3  # ln size at fixed halo mass and merger history (spin: Bullock et al. 2001, ~0.5 in all)
SPIN_UP, SPIN_DECAY_GYR = np.log(1.5), 6.0  # spin after a major merger, fading (Hetznecker & Burkert 2006)
TYPICAL_MERGERS = 0.8  # median of the merger term of size_factor for galaxies of 1e10-1e11 Msun
MIGRATION = 1.4  # radial migration [disc scale lengths] after 8 Gyr (Frankel et al. 2020)
BULGE_AGE_SPREAD = 0.15  # spread in formation order [share of the in-situ mass] of bulge membership
ACCRETION_NOISE_DEX, ACCRETION_NOISE_GYR = 0.1, 1.0  # metallicity fluctuations (Forbes et al. 2014)
DILUTION_DEX = 0.3  # metallicity drop of the gas after a major gas-rich merger, fading over DILUTION_GYR
DILUTION_GYR = 0.7
BURST_GYR = 0.3  # e-folding time of merger-driven star formation after coalescence
STAR_SCATTER_DEX = 0.1  # star-to-star metallicity scatter at fixed birth time and radius
DEBRIS_COMPONENTS = 4  # potential components the satellites' debris is lumped into


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
    bulge_fraction: float  # bulge share of the halo's own in-situ stars
    insitu_sfh: tuple[float, ...]  # the halo's own in-situ stars formed in each step of assembly.GRID [Msun]
    bursts: tuple[tuple[float, float, float], ...]  # merger-driven in-situ: (lookback [Gyr], mass [Msun], ratio)
    log_insitu_track: tuple[float, ...]  # log10 in-situ mass of the main progenitor on assembly.GRID [Msun]
    z_offset: float  # offset from the mass-metallicity relation [dex]
    spin: tuple[float, float, float]  # unit vector of the disc angular momentum
    satellite_since_gyr: float  # lookback time it fell into its present host; -1 for a central
    seed: int  # seeds the particle draw, so a model always gives the same particles

    @property
    def is_satellite(self) -> bool:
        return self.satellite_since_gyr >= 0.0


def particle_count(log_mstar: float) -> int:
    """Star particles for a galaxy at z=0: sub-linear in mass keeps massive galaxies affordable."""
    return int(np.clip(4000.0 * 10 ** (0.4 * (log_mstar - 10.0)), 300, 25000))


def draw_population(rng: np.random.Generator, n: int) -> list[GalaxyModel]:
    """``n`` z=0 galaxies above 1e10 Msun: TNG100's stellar mass function and central share."""
    log_m = sample_log_mstar(rng, n)
    satellite = rng.uniform(size=n) > central_share(log_m)
    return [draw_galaxy(rng, float(m), bool(s), min_log_mstar()) for m, s in zip(log_m, satellite)]


def draw_galaxy(
    rng: np.random.Generator, log_mstar: float, satellite: bool = False, floor_log_mstar: float = -np.inf
) -> GalaxyModel:
    """One z=0 galaxy of about the given mass (within 0.05 dex, not below ``floor_log_mstar``): its halo and
    assembly history, structure and spin, with scatter in each.

    The bulge share of the in-situ stars grows with mass (Gallazzi et al. 2005, MNRAS 362, 41).
    """
    assembly = draw_assembly(rng, log_mstar, satellite, floor_log_mstar)
    log_mstar = assembly.log_mstar  # the candidate's own (exsitu.mock.population)
    history = assembly.history
    spin = rng.normal(size=3)
    spin /= np.linalg.norm(spin)
    size = SIZE_TO_R200 * float(r200_kpc(assembly.log_mhalo)) * size_factor(rng, history)
    own = 10 ** np.asarray(history.log_insitu_track)
    sfh = np.maximum(own - np.append(own[1:], 0.0), 0.0)  # formed in each step; index 0 is the latest
    merged = history.merged & (history.gas > 0)
    bursts = tuple(
        (float(t), float(g), float(mu))
        for t, g, mu in zip(history.arrival[merged], history.gas[merged], history.mass_ratio[merged])
    )
    return GalaxyModel(
        log_mstar=log_mstar,
        exsitu_fraction=assembly.exsitu_fraction,
        satellites=satellites(rng, history, size, spin),
        log_mhalo=assembly.log_mhalo,
        size_kpc=size,
        disc_scale_kpc=float(size * rng.lognormal(0.0, 0.1)),
        bulge_fraction=float(np.clip(0.15 + 0.25 * (log_mstar - 10.0) + rng.normal(0.0, 0.1), 0.05, 0.85)),
        insitu_sfh=tuple(float(v) for v in sfh),
        bursts=bursts,
        log_insitu_track=tuple(float(v) for v in history.log_insitu_track),
        z_offset=float(rng.normal(0.0, 0.1)),
        spin=tuple(float(s) for s in spin),
        satellite_since_gyr=-1.0 if assembly.satellite_since_gyr is None else assembly.satellite_since_gyr,
        seed=int(rng.integers(2**31)),
    )


def size_factor(rng: np.random.Generator, history: History) -> float:
    """A galaxy's size over 0.015 R200: its halo's spin over the median.

    Disc sizes scale with the spin of their halo (Mo, Mao & White 1998, MNRAS 295, 319), which is
    lognormal (Bullock et al. 2001, ApJ 555, 240) and raised by mergers, by ~50% after a major
    merger, fading over a few Gyr (Vitvitska et al. 2002, ApJ 581, 799; Hetznecker & Burkert 2006,
    MNRAS 370, 1905): galaxies with more (and more recent) mergers are larger. A galaxy with the
    typical merger history (:data:`TYPICAL_MERGERS` major-merger equivalents) has the median size.
    """
    recent = np.where(
        history.merged, np.minimum(history.xi / 0.3, 1.0) * np.exp(-history.arrival / SPIN_DECAY_GYR), 0.0
    )
    return float(np.exp(rng.normal(0.0, SIZE_SCATTER) + SPIN_UP * (min(recent.sum(), 1.5) - TYPICAL_MERGERS)))


def progenitor(model: GalaxyModel, rng: np.random.Generator) -> GalaxyModel:
    """The same galaxy for an earlier snapshot: same history, a fresh particle realisation.

    What the progenitor lacks (stars born and satellites accreted since) is dropped by
    :func:`make_particles` from the snapshot's lookback time.
    """
    return replace(model, seed=int(rng.integers(2**31)))


def _insitu_births(rng: np.random.Generator, model: GalaxyModel, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Birth lookback times [Gyr] of ``n`` in-situ stars and whether each formed in a merger-driven burst."""
    sfh = np.asarray(model.insitu_sfh)
    burst_mass = np.array([b[1] for b in model.bursts])
    source = rng.choice(
        sfh.size + burst_mass.size, size=n, p=np.concatenate([sfh, burst_mass]) / (sfh.sum() + burst_mass.sum())
    )
    quiet = source < sfh.size
    age = np.empty(n)
    age[quiet] = GRID_EDGES[source[quiet]] + STEP_GYR * rng.uniform(size=int(quiet.sum()))
    arrival = np.array([b[0] for b in model.bursts])[source[~quiet] - sfh.size] if burst_mass.size else np.empty(0)
    age[~quiet] = np.maximum(arrival - rng.exponential(BURST_GYR, arrival.size), 0.0)
    return age, ~quiet


def _gas_metallicity_offsets(rng: np.random.Generator, model: GalaxyModel) -> np.ndarray:
    """Offsets [dex] of the star-forming gas's metallicity on assembly.GRID: accretion noise and merger dilution."""
    phi = np.exp(-STEP_GYR / ACCRETION_NOISE_GYR)
    noise = np.empty(GRID.size)
    noise[-1] = rng.normal(0.0, ACCRETION_NOISE_DEX)
    for k in range(GRID.size - 2, -1, -1):  # an AR(1) process forward in time: stationary, ~1 Gyr memory
        noise[k] = phi * noise[k + 1] + np.sqrt(1.0 - phi**2) * rng.normal(0.0, ACCRETION_NOISE_DEX)
    for arrival, _, ratio in model.bursts:
        after = GRID <= arrival
        noise[after] -= DILUTION_DEX * min(ratio / 0.25, 1.0) * np.exp(-(arrival - GRID[after]) / DILUTION_GYR)
    return noise


def _insitu_metallicity(
    rng: np.random.Generator, model: GalaxyModel, age: np.ndarray, gas: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """Log metallicity [dex] of in-situ stars born ``age`` Gyr ago: the main progenitor's enrichment then,
    the gas offsets of :func:`_gas_metallicity_offsets` (``gas``, on assembly.GRID), plus ``offset``."""
    z_form = redshift_at_lookback(age)
    log_m = host_log_mstar(model.log_insitu_track, age)
    history = star_metallicities(np.array(model.log_mstar), np.zeros(1), log_m, z_form, np.zeros(age.size, int))
    fluctuation = np.interp(age, GRID, gas)
    return history + fluctuation + model.z_offset + offset + rng.normal(0.0, STAR_SCATTER_DEX, age.size)


def _bulge_scale(model: GalaxyModel, mean_age: float) -> float:
    """Hernquist scale [kpc] of the bulge: compact, as galaxies were when it formed.

    Sizes at fixed mass grow as (1+z)^-1 to (1+z)^-1.5 (van der Wel et al. 2014, ApJ 788, 28): the
    dense cores of today's massive galaxies are the compact galaxies of z ~ 2 (two-phase
    assembly, Oser et al. 2010, ApJ 725, 2312).
    """
    return BULGE_SCALE * model.size_kpc / (1.0 + float(redshift_at_lookback(mean_age)))


def _potential(model: GalaxyModel, bulge_age: float) -> Potential:
    """The z=0 galaxy's potential: bulge, disc (as a sphere of its half-mass radius) and the satellites'
    debris, lumped into :data:`DEBRIS_COMPONENTS` shells of similar radius (each component costs every
    dispersion and circular-speed evaluation a term)."""
    m_in = 10**model.log_mstar * (1.0 - model.exsitu_fraction)
    masses = [m_in * model.bulge_fraction, m_in * (1.0 - model.bulge_fraction)]
    scales = [_bulge_scale(model, bulge_age), 0.7 * model.disc_scale_kpc]
    if model.satellites:
        sat_mass = np.array([10**s.log_mass for s in model.satellites])
        log_scale = np.log10([s.radius_kpc / 2.414 for s in model.satellites])
        group = np.digitize(log_scale, np.quantile(log_scale, np.linspace(0, 1, DEBRIS_COMPONENTS + 1)[1:-1]))
        for g in np.unique(group):
            mine = group == g
            masses.append(float(sat_mass[mine].sum()))
            scales.append(float(10 ** np.average(log_scale[mine], weights=sat_mass[mine])))
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
    arrived = np.array([s.arrival_gyr > age_shift_gyr for s in model.satellites], bool)
    n_in = n - n_ex
    age, burst = _insitu_births(rng, model, n_in)
    # The bulge: the oldest in-situ stars (by the share of the in-situ mass formed before them, with
    # scatter); the gas of gas-rich mergers settles back into a disc (Hopkins et al. 2009, ApJ 691, 1168).
    formed_before = np.argsort(np.argsort(-age)) / max(n_in, 1)
    in_bulge = ~burst & (formed_before + rng.normal(0.0, BULGE_AGE_SPREAD, n_in) < model.bulge_fraction)
    bulge_age = float(age[in_bulge].mean()) if in_bulge.any() else float(age.mean())
    gas = _gas_metallicity_offsets(rng, model)
    pot = _potential(model, bulge_age)
    axis = np.asarray(model.spin)
    rot = frame(axis)
    parts = []
    t0 = age_of_universe_gyr()

    # In-situ disc, inside out: birth radii from the disc of each star's time, then radial migration.
    d_age = age[~in_bulge]
    n_disc = d_age.size
    rd = model.disc_scale_kpc * 1.15 / (1.0 + redshift_at_lookback(d_age))
    r_birth = rng.gamma(2.0, rd)
    phi_birth = rng.uniform(0.0, 2 * np.pi, n_disc)
    migration = MIGRATION * model.disc_scale_kpc * np.sqrt(d_age / 8.0)
    x = r_birth * np.cos(phi_birth) + rng.normal(size=n_disc) * migration
    y = r_birth * np.sin(phi_birth) + rng.normal(size=n_disc) * migration
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    local = np.stack([x, y, rng.laplace(0.0, (0.04 + 0.2 * d_age / t0) * rd)], axis=1)
    v_c = pot.circular_speed(r)
    sigma = v_c * (0.05 + 0.25 * d_age / t0)
    v_phi = np.maximum(v_c - sigma**2 / np.maximum(v_c, 1.0), 0.0)  # asymmetric drift
    vloc = np.stack([-v_phi * np.sin(phi), v_phi * np.cos(phi), np.zeros(n_disc)], axis=1)
    vloc += rng.normal(size=(n_disc, 3)) * (sigma[:, None] * np.array([1.0, 0.7, 0.6]))
    log_z = _insitu_metallicity(rng, model, d_age, gas, DISC_GRADIENT_DEX * (r_birth / model.disc_scale_kpc - 1.0))
    disc = Particles(local @ rot, vloc @ rot, np.empty(0), d_age, ZSUN * 10**log_z, np.ones(n_disc, np.int8))

    # In-situ halo: disc stars older than the last merger with mass ratio > 1/10 are heated by it.
    heating = [s for s in model.satellites if s.kind in ("major", "minor") and s.arrival_gyr > age_shift_gyr]
    if heating:
        share = min(0.7, 1.5 * sum(s.mass_ratio for s in heating))
        hot = (d_age > min(s.arrival_gyr for s in heating)) & (rng.uniform(size=n_disc) < share)
        k = int(hot.sum())
        scale = np.full(k, HEATED_SCALE * rd[hot].mean()) if k else np.empty(0)
        disc.pos[hot], disc.vel[hot] = spheroid(
            rng, pot, scale, np.tile(axis, (k, 1)), np.full(k, 0.6), rotation=np.full(k, 0.4), beta=0.2
        )
    parts.append(disc)

    # In-situ bulge: compact, metal rich for its age (+0.1 dex), pressure supported with slow rotation.
    b_age = age[in_bulge]
    n_bulge = b_age.size
    pos, vel = spheroid(
        rng,
        pot,
        np.full(n_bulge, _bulge_scale(model, bulge_age)),
        np.tile(axis, (n_bulge, 1)),
        np.full(n_bulge, 0.75),
        rotation=np.full(n_bulge, rng.uniform(0.1, 0.5)),
        beta=0.0,
    )
    log_z = _insitu_metallicity(rng, model, b_age, gas, np.full(n_bulge, 0.1))
    parts.append(Particles(pos, vel, np.empty(0), b_age, ZSUN * 10**log_z, np.ones(n_bulge, np.int8)))

    sats = [s for s, a in zip(model.satellites, arrived) if a]
    parts.append(
        debris(
            rng,
            sats,
            counts[arrived],
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
