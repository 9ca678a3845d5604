"""Assembly histories of mock galaxies: the dark halo's growth and mergers, and what they bring in stars.

A galaxy's ex-situ stars are the stars of the satellites it accreted; how many there are follows
from the halo physics, not from a drawn ex-situ fraction (:mod:`exsitu.mock.population` chooses
the halo and history of a galaxy of given stellar mass):

1. The host halo is grown backwards in time with the mean accretion rate of Fakhouri, Ma &
   Boylan-Kolchin 2010 (eq. 2), times a per-galaxy factor (earlier or later forming haloes).
2. Its own (in-situ) stars grow along the stellar-to-halo mass relation of the time (Kravtsov et
   al. 2018 at z = 0, evolved as Behroozi et al. 2013) until the galaxy quenches (at ~10^10.5 Msun,
   as TNG's kinetic AGN feedback does; :func:`insitu_track`).
3. Haloes fall in at the rate of Fakhouri et al. 2010 (eq. 1) per unit redshift and halo mass
   ratio xi, drawn as Poisson events on a time grid. Each satellite's stellar mass at infall is
   the stellar-to-halo mass relation at its redshift, with 0.2 dex of scatter (0.35 in dwarf haloes).
4. A satellite sinks by dynamical friction and coalesces after the merging time of
   Boylan-Kolchin, Ma & Quataert 2008 for its mass ratio and orbit (circularity and orbital
   energy drawn per satellite); all its stars are then ex-situ stars of the host. A satellite that
   has not coalesced by the snapshot has lost the share of its stars that its time in the host is
   of its merging time (the host's "stripped" ex-situ stars: Rodriguez-Gomez et al. 2016 find ~10%
   of the ex-situ mass there; this model gives 9%).
5. Star-forming satellites keep forming stars after infall for the delay of Wetzel et al. 2013
   (2-4 Gyr, longer at low mass), from the gas they brought (Tacconi et al. 2018), until they
   quench or coalesce; those stars are ex-situ too. The gas a star-forming satellite still has when
   it coalesces becomes IN-SITU stars of the host (:data:`MERGER_GAS_TO_STARS`).
6. A galaxy that is itself a satellite today stops accreting new satellites when it falls into its
   host (companions that fell in earlier still coalesce).

The merger mix that results, for all ex-situ stars of a population by stellar mass ratio at infall,
is 59-65% major, 14-20% minor, 12% very minor and 9-10% stripped (1000-1500 galaxies of seeds 3, 5
and 6): more from major mergers than the ~50 / 20 / 20 / 10% Rodriguez-Gomez et al. 2016 find in
Illustris (50 / 23 / 18 / 9% with the approximate halo draw used before 2026-12-07, which favoured
the median halo over the smaller haloes that a major merger lifts to a given stellar mass).

Calibrated against the TNG100-1 population (``exsitu/data/tng100_population.json``), once, on
large mock populations of seeds other than the default universe's, within the ranges the physics
allows: the quenching mass and the in-situ growth after it (:data:`QUENCH_LOG_MSTAR`,
:data:`QUENCHED_GROWTH`), the share of merger gas turned into stars (:data:`MERGER_GAS_TO_STARS`),
the in-situ scatter (:data:`exsitu.mock.population.INSITU_SCATTER_DEX`) and the debris radii
(:data:`DEPOSIT_SCALE`). Everything else is taken from the cited relations as published. When the
halo draw of :mod:`exsitu.mock.population` was made exact (2026-12-07), the quenching mass was scanned
again, the other four left as they were (``python benchmarks/bench_population.py --universes 8
--first-seed 300 --quench-log-mstar Q``, 6000 galaxies; pooled deviation from TNG100 in units of the
tolerances, RMS / worst): 1.14 / 3.53 at 10^10.35, the value the approximate draw had been calibrated
to, 0.56 / 1.47 at 10^10.45, 0.56 / 1.59 at 10^10.5, 0.41 / 1.48 at 10^10.55 (a first scan on seeds
301-303 ranked 10^10.5 first: 0.43 against 0.56 and 0.47). The scans do not separate 10^10.45-10^10.55;
10^10.5 is where the quenched fraction of TNG100 centrals rises (Donnari et al. 2021).

Units: Gyr (lookback times unless named otherwise), Msun, kpc, km/s; metallicity in dex relative
to solar."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from exsitu.literature import (
    KRAVTSOV_2018,
    MZR_SCATTER_DEX,
    ShmrParameters,
    halo_growth_rate,
    halo_merger_rate,
    log_mstar_of_halo,
    lookback_of_redshift,
    main_sequence_ssfr,
    merging_time_gyr,
    redshift_at_lookback,
    satellite_quenching_delay_gyr,
    stellar_metallicity,
)

#: Lookback-time grid of the assembly history [Gyr]: step edges, 0 to ~z = 5.
STEP_GYR = 0.25
GRID_EDGES = np.arange(0.0, 12.5 + STEP_GYR / 2, STEP_GYR)
GRID = 0.5 * (GRID_EDGES[1:] + GRID_EDGES[:-1])
#: Halo mass ratios drawn (log-spaced bin edges); below 1e-3 satellites bring no stars worth a particle.
XI_EDGES = np.geomspace(1e-3, 1.0, 25)
#: The stellar-to-halo mass relation of hosts and satellites (z = 0 parameters; evolved as Behroozi et al. 2013).
#: The dwarf slope sets most of the ex-situ fraction of 10^10-10^10.5 Msun galaxies, which TNG100 lies between
#: this relation and Behroozi et al. 2013's (``benchmarks/bench_population.py --shmr``, which swaps it).
SHMR: ShmrParameters = KRAVTSOV_2018
SHMR_SCATTER_DEX = 0.2  # satellites' stellar mass at fixed halo mass (Behroozi et al. 2013)
SHMR_SCATTER_DWARF_DEX = 0.35  # ... rising in dwarf haloes of 1e10 Msun (Garrison-Kimmel et al. 2017, MNRAS 464, 3108)
GROWTH_SCATTER = 0.3  # lognormal, per galaxy, on the mean halo growth rate (formation-time scatter)
MERGER_GAS_TO_STARS = 0.8  # share of a coalescing satellite's cold gas that the host turns into stars
QUENCH_LOG_MSTAR = 10.5  # in-situ stellar mass [log Msun] at which a galaxy's own star formation stops
QUENCH_SCATTER_DEX = 0.1
QUENCHED_GROWTH = 0.2  # in-situ growth past the quenching mass, share of the relation's
MIN_DEPOSIT = 1e-4  # satellites bringing less than this share of the host's mass are dropped
DEPOSIT_SCALE = 3.5  # debris half-mass radius / size scale for mass ratio 1 at z = 0
COPLANAR_CHANCE = 0.2  # a recent minor/major merger on a prograde orbit in the disc plane (accreted disc)
MAJOR, MINOR = 0.25, 0.1  # stellar mass ratios at infall that separate major, minor and very minor mergers


@dataclass(frozen=True)
class Satellite:
    """One accreted satellite: what it brought and how it fell in.

    ``log_mass`` is the stellar mass [log Msun] it deposited; ``log_mstar_sat`` its own stellar mass when it
    stopped forming stars [log Msun] (more than it deposited if it survives); ``mass_ratio`` its stellar mass over the
    host's at infall; ``infall_gyr`` the lookback time of infall into the host's halo; ``arrival_gyr``
    when its stars joined the host (coalescence; infall for a surviving, stripped satellite);
    ``quench_gyr`` when its star formation stopped (infall or later); ``start_gyr`` when it began;
    ``sfh_shape`` > 1 skews its star formation late, < 1 early; ``z_offset`` its offset from the
    mass-metallicity relation [dex]; ``z_gradient`` its internal metallicity gradient [dex from its
    most bound to its least bound stars]; ``axis`` the unit normal of its orbital plane (host
    frame); ``eccentricity`` of its orbit; ``radius_kpc`` the half-mass radius of its debris once
    phase mixed; ``coplanar`` marks debris that settles into an accreted disc in the host's disc plane.
    """

    kind: str
    log_mass: float
    log_mstar_sat: float
    mass_ratio: float
    infall_gyr: float
    arrival_gyr: float
    quench_gyr: float
    start_gyr: float
    sfh_shape: float
    z_offset: float
    z_gradient: float
    axis: tuple[float, float, float]
    eccentricity: float
    radius_kpc: float
    coplanar: bool


@dataclass(frozen=True)
class History:
    """A galaxy's assembly history, before it is given a stellar mass: what fell in and its own star formation.

    Arrays have one entry per accreted satellite: ``deposit`` the stellar mass it brought [Msun],
    ``mass_ratio`` its stellar mass over the host's at infall, ``infall``, ``arrival`` and ``quench``
    lookback times [Gyr] (see :class:`Satellite`), ``merged`` whether it coalesced (else its stars
    were stripped while it survives), ``xi`` its halo mass ratio at infall, ``mstar_sat`` its own stellar mass when it
    stopped forming stars [Msun], ``gas`` the cold gas it brought on coalescence [Msun], which
    becomes in-situ stars of the host after its arrival. ``log_insitu_track`` is log10 of the main progenitor's in-situ
    stellar mass [Msun] at the lookback times :data:`GRID`, at the median of the stellar-to-halo
    relation (shift it by the galaxy's offset); ``formation_gyr`` when the halo had half its mass.
    """

    log_mhalo: float
    deposit: np.ndarray
    mass_ratio: np.ndarray
    infall: np.ndarray
    arrival: np.ndarray
    quench: np.ndarray
    merged: np.ndarray
    gas: np.ndarray
    xi: np.ndarray
    mstar_sat: np.ndarray
    log_insitu_track: np.ndarray
    formation_gyr: float

    @property
    def merger_gas(self) -> float:
        """Cold gas brought by coalescing satellites [Msun]: in-situ stars formed after each arrival."""
        return float(self.gas.sum())

    @property
    def accreted(self) -> float:
        """Total accreted stellar mass [Msun]."""
        return float(self.deposit.sum())

    def kinds(self) -> np.ndarray:
        """Merger class of each satellite: major, minor, very_minor (coalesced, by mass ratio) or stripped."""
        by_ratio = np.where(
            self.mass_ratio >= MAJOR, "major", np.where(self.mass_ratio >= MINOR, "minor", "very_minor")
        )
        return np.where(self.merged, by_ratio, "stripped")


def host_log_mstar(track: tuple[float, ...] | np.ndarray, lookback_gyr: np.ndarray | float) -> np.ndarray:
    """log10 M* [Msun] of the main progenitor at ``lookback_gyr`` from its track on :data:`GRID`."""
    return np.interp(np.asarray(lookback_gyr, dtype=np.float64), GRID, np.asarray(track))


def halo_track(rng: np.random.Generator | None, log_mhalo: float) -> np.ndarray:
    """log10 M200 [Msun] of the main progenitor halo at :data:`GRID` (backwards from ``log_mhalo`` today).

    The mean growth rate dM/dt = -A(t) M^1.1 (lookback t) integrates exactly:
    M(t)^-0.1 = M(0)^-0.1 + 0.1 s integral_0^t A dt', with ``s`` the galaxy's growth-speed factor
    (lognormal, :data:`GROWTH_SCATTER`; 1 without ``rng``: the median track).
    """
    speed = 1.0 if rng is None else float(rng.lognormal(0.0, GROWTH_SCATTER))
    return (-10.0 * np.log10(10 ** (-0.1 * log_mhalo) + 0.1 * speed * _growth_integral())).astype(np.float64)


@functools.cache
def _growth_integral() -> np.ndarray:
    """integral_0^t A(t') dt' at each lookback of :data:`GRID` (A: the mean halo growth rate over M^1.1)."""
    fine = np.linspace(0.0, GRID[-1], 2000)
    rate = halo_growth_rate(1.0, redshift_at_lookback(fine))
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(fine))])
    return np.interp(GRID, fine, cumulative)


def formation_gyr(halo: np.ndarray) -> float:
    """Lookback time [Gyr] at which a halo track (on :data:`GRID`) had half its mass today."""
    return float(np.interp(halo[0] - np.log10(2.0), halo[::-1], GRID[::-1]))


def insitu_track(rng: np.random.Generator, halo: np.ndarray, z_grid: np.ndarray) -> np.ndarray:
    """log10 of the in-situ stellar mass [Msun] along the halo track ``halo`` (on :data:`GRID`), before scatter.

    The in-situ stars grow along the stellar-to-halo mass relation of the time until the galaxy
    quenches. In TNG the kinetic mode of AGN feedback quenches a galaxy once its black hole passes
    ~10^8.2 Msun (Weinberger et al. 2017, MNRAS 465, 3291; Zinger et al. 2020, MNRAS 499, 768), so
    the quenched fraction of TNG galaxies rises sharply at M* ~ 10^10.5 Msun (Donnari et al. 2021,
    MNRAS 500, 4004): past :data:`QUENCH_LOG_MSTAR` (drawn per galaxy with
    :data:`QUENCH_SCATTER_DEX`) only :data:`QUENCHED_GROWTH` of the relation's growth continues.
    """
    along = 10 ** log_mstar_of_halo(halo, z_grid, SHMR)
    quench = 10 ** (QUENCH_LOG_MSTAR + rng.normal(0.0, QUENCH_SCATTER_DEX))
    growth = np.maximum(np.diff(along[::-1], prepend=0.0), 0.0)  # forward in time, oldest first
    growth = np.where(np.cumsum(growth) - growth > quench, QUENCHED_GROWTH * growth, growth)
    return np.log10(np.maximum(np.cumsum(growth)[::-1], 1.0))


def _quiescent_at_infall(rng: np.random.Generator, log_mstar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Whether satellites were already quenched when they fell in: the quiescent fraction of centrals
    rises with mass, half at ~10^10.6 Msun today and at higher mass earlier (Peng et al. 2010, ApJ 721, 193)."""
    centre = 10.6 + 0.3 * z
    return rng.uniform(size=log_mstar.size) < 1.0 / (1.0 + np.exp(-(log_mstar - centre) / 0.25))


def draw_history(
    rng: np.random.Generator,
    log_mhalo: float,
    satellite_since_gyr: float | None = None,
) -> History:
    """The assembly history of a galaxy in a halo of ``log_mhalo`` today (module doc).


    ``satellite_since_gyr`` is the lookback time it fell into its present host (None for a central):
    no satellite falls in after it, though companions that fell in earlier still coalesce.
    Satellite properties that only matter for the particles (orbits, debris radii, populations) are
    drawn by :func:`satellites`.
    """
    halo = halo_track(rng, log_mhalo)
    z_grid = redshift_at_lookback(GRID)
    track = insitu_track(rng, halo, z_grid)
    formation = formation_gyr(halo)

    # Infall events: Poisson counts per (time step, mass-ratio bin), placed uniformly inside both.
    dz = np.diff(redshift_at_lookback(GRID_EDGES))
    xi_mid = np.sqrt(XI_EDGES[1:] * XI_EDGES[:-1])
    expected = halo_merger_rate(10 ** halo[:, None], xi_mid[None, :], z_grid[:, None]) * np.diff(XI_EDGES)
    n_events = rng.poisson(expected * dz[:, None])
    step, xi_bin = (np.repeat(i, n_events[n_events > 0]) for i in np.nonzero(n_events))
    n = step.size
    log_xi = np.log10(XI_EDGES[xi_bin]) + rng.uniform(size=n) * np.diff(np.log10(XI_EDGES))[xi_bin]
    infall = GRID[step] + (rng.uniform(size=n) - 0.5) * STEP_GYR
    z_in = redshift_at_lookback(infall)
    log_msat_halo = halo[step] + log_xi
    scatter = np.interp(log_msat_halo, [10.0, 11.5], [SHMR_SCATTER_DWARF_DEX, SHMR_SCATTER_DEX])
    log_ms = log_mstar_of_halo(log_msat_halo, z_in, SHMR) + rng.normal(0.0, 1.0, n) * scatter

    # Orbits (circularity and orbital energy as in Boylan-Kolchin et al. 2008) set when each coalesces.
    merge_time = merging_time_gyr(10**log_xi, z_in, rng.uniform(0.2, 1.0, n), rng.uniform(0.5, 1.0, n))
    arrival = infall - merge_time
    stop = 0.0 if satellite_since_gyr is None else float(satellite_since_gyr)
    merged = arrival > 0.0

    # Star formation after infall, from the gas the satellite brought, until it quenches or coalesces.
    quenched = _quiescent_at_infall(rng, log_ms, z_in)
    delay = satellite_quenching_delay_gyr(log_ms) * rng.lognormal(0.0, 0.2, n)
    quench = np.where(quenched, infall, np.maximum(infall - delay, np.maximum(arrival, 0.0)))
    growth = 1.0 + _post_infall_growth(log_ms, z_in, infall - quench)
    # A star-forming satellite that coalesces brings the gas it has not turned into stars; the host turns it
    # into IN-SITU stars soon after (merger-driven star formation, e.g. Mihos & Hernquist 1996, ApJ 464, 641).
    wet = merged & ~quenched
    gas = np.where(wet, 10**log_ms * np.maximum(gas_to_stars(log_ms, z_in) + 1.0 - growth, 0.0), 0.0)
    gas *= MERGER_GAS_TO_STARS
    # A survivor has lost the share of its stars that its time in the host is of its merging time.
    share = np.where(merged, 1.0, np.clip(infall / merge_time, 0.0, 1.0))
    deposit = 10**log_ms * growth * share * (infall > stop)

    keep = deposit > 0.0
    return History(
        log_mhalo=log_mhalo,
        deposit=deposit[keep],
        gas=gas[keep] * (infall > stop)[keep],
        xi=10 ** log_xi[keep],
        mstar_sat=(10**log_ms * growth)[keep],
        mass_ratio=10 ** log_ms[keep],  # relative mass; made a ratio to the host by :func:`with_host`
        infall=infall[keep],
        arrival=np.where(merged, arrival, infall)[keep],
        quench=quench[keep],
        merged=merged[keep],
        log_insitu_track=track,
        formation_gyr=formation,
    )


def with_host(history: History, log_insitu_offset: float) -> History:
    """``history`` for a galaxy whose in-situ stars are ``log_insitu_offset`` dex off the median track:
    satellites too small to matter are dropped and mass ratios become ratios to the host at infall
    (its in-situ stars then plus the satellites that had already arrived)."""
    track = history.log_insitu_track + log_insitu_offset
    keep = history.deposit >= MIN_DEPOSIT * 10 ** track[0]
    deposit, infall, arrival = history.deposit[keep], history.infall[keep], history.arrival[keep]
    order = np.argsort(-arrival)  # oldest arrival first
    arrived = np.concatenate([[0.0], np.cumsum(deposit[order])])
    host = 10 ** host_log_mstar(track, infall) + arrived[np.searchsorted(-arrival[order], -infall)]
    return replace(
        history,
        deposit=deposit,
        mass_ratio=np.minimum(history.mass_ratio[keep] / host, 1.0),
        infall=infall,
        arrival=arrival,
        quench=history.quench[keep],
        merged=history.merged[keep],
        gas=history.gas[keep],
        xi=history.xi[keep],
        mstar_sat=history.mstar_sat[keep],
        log_insitu_track=track,
    )


def satellites(rng: np.random.Generator, history: History, r_ref_kpc: float, spin: np.ndarray) -> tuple[Satellite, ...]:
    """The satellites of ``history`` (after :func:`with_host`) with their populations, orbits and debris radii.

    Debris of a satellite with stellar mass ratio mu falling in at redshift z is deposited at a
    half-mass radius ~ mu^-0.3 (1+z)^-0.75 ``r_ref_kpc``: massive satellites sink deep by dynamical
    friction before they are disrupted, small ones are stripped far out (Amorisco 2017, MNRAS 464,
    2882; Cooper et al. 2010, MNRAS 406, 744), and early debris settles where the smaller galaxy of
    the time was (sizes grow as (1+z)^-0.75 at fixed mass, van der Wel et al. 2014, ApJ 788, 28).
    ``spin`` is the host's disc axis (accreted discs settle in its plane). Satellites' internal
    metallicity gradients span 0.1-0.5 dex from their centres to their outskirts (dwarf galaxies:
    Taibi et al. 2022, A&A 665, A92; Leaman et al. 2013, ApJ 767, 131).
    """
    out = []
    spin = np.asarray(spin, dtype=np.float64)
    for i, kind in enumerate(history.kinds()):
        z = float(redshift_at_lookback(history.infall[i]))
        coplanar = kind in ("major", "minor") and z < 1.5 and rng.uniform() < COPLANAR_CHANCE
        axis = spin + rng.normal(0.0, 0.2, 3) if coplanar else rng.normal(size=3)
        mu = float(history.mass_ratio[i])
        depth = DEPOSIT_SCALE * max(mu, 1e-3) ** -0.3 * (1.6 if kind == "stripped" else 1.0) / (1.0 + z) ** 0.75
        out.append(
            Satellite(
                kind=str(kind),
                log_mass=float(np.log10(history.deposit[i])),
                log_mstar_sat=float(np.log10(history.mstar_sat[i])),
                mass_ratio=mu,
                infall_gyr=float(history.infall[i]),
                arrival_gyr=float(history.arrival[i]),
                quench_gyr=float(history.quench[i]),
                start_gyr=float(max(lookback_of_redshift(rng.uniform(3.5, 8.0)), history.infall[i] + 0.5)),
                sfh_shape=float(rng.lognormal(0.0, 0.5)),
                z_offset=float(rng.normal(0.0, MZR_SCATTER_DEX)),
                z_gradient=float(-rng.uniform(0.1, 0.5)),
                axis=_unit(axis),
                eccentricity=float(rng.uniform(0.3, 0.95)),
                radius_kpc=float(depth * r_ref_kpc * rng.lognormal(0.0, 0.25)),
                coplanar=bool(coplanar),
            )
        )
    return tuple(out)


def gas_to_stars(log_mstar: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Cold gas over stellar mass of star-forming galaxies: mu_gas = 0.2 (1 + z)^2.5 (M* / 1e10 Msun)^-0.35
    on the main sequence (Tacconi et al. 2018, ApJ 853, 179), kept between 0.02 and 3."""
    return np.clip(0.2 * (1.0 + z) ** 2.5 * 10 ** (-0.35 * (np.asarray(log_mstar) - 10.0)), 0.02, 3.0)


def _post_infall_growth(log_mstar: np.ndarray, z: np.ndarray, duration_gyr: np.ndarray) -> np.ndarray:
    """Stellar mass formed after infall over the stellar mass at infall, for ``duration_gyr`` of star formation.

    A satellite cut off from fresh gas (strangulation) turns its cold-gas reservoir (:func:`gas_to_stars`)
    into stars at the main-sequence rate (Speagle et al. 2014) until it is used up, so the growth is
    mu_gas (1 - exp(-sSFR t / mu_gas)).
    """
    gas = gas_to_stars(log_mstar, z)
    return gas * (1.0 - np.exp(-main_sequence_ssfr(log_mstar, z) * np.maximum(duration_gyr, 0.0) / gas))


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(x) for x in v / np.linalg.norm(v))


def star_metallicities(
    log_m_end: np.ndarray, z_end: np.ndarray, log_m_form: np.ndarray, z_form: np.ndarray, group: np.ndarray
) -> np.ndarray:
    """log10(Z/Zsun) of individual stars, each formed in galaxy ``group`` (per-star arrays).

    A galaxy that stops forming stars at ``z_end`` with mass ``log_m_end`` has the mean stellar
    metallicity of the relation there; its stars spread about that mean as the galaxy's
    enrichment history dictates: a star formed at ``z_form`` when the galaxy had ``log_m_form``
    is offset by the change of :func:`~exsitu.literature.stellar_metallicity` between then and the
    galaxy's stellar-mass-weighted mean. So old stars are metal poor and the galaxy average stays on
    the observed relation.
    """
    history = stellar_metallicity(log_m_form, z_form)
    counts = np.maximum(np.bincount(group), 1)
    mean = (np.bincount(group, weights=history) / counts)[group]
    return stellar_metallicity(log_m_end, z_end) + history - mean
