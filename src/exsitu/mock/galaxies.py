"""Star-particle models of mock galaxies: in-situ disc and bulge, ex-situ halo and streams.

The components are chosen so that the ex-situ map is predictable from the observables but
not trivially: the ex-situ halo is old, metal-poor, extended and pressure supported; the
in-situ disc is rotating, younger and metal rich with inside-out gradients; the in-situ
bulge is old and metal rich but dispersion dominated (old yet in-situ: a real degeneracy
with the halo); accreted satellites are coherent streams or clumps with their own ages and
metallicities. The ex-situ fraction rises with stellar mass as in TNG (Rodriguez-Gomez et
al. 2016): ~10% at 1e10 Msun, ~40% at 1e11, ~75% at 1e12, with scatter.

All quantities here are physical: kpc, km/s, Msun, Gyr, metallicity mass fraction; the
TNG-layout writer converts to code units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from exsitu.units import ZSUN


@dataclass(frozen=True)
class GalaxyModel:
    """Parameters of one mock galaxy (physical units)."""

    log_mstar: float  # log10 stellar mass [Msun]
    exsitu_fraction: float  # ex-situ share of the stellar mass
    bulge_fraction: float  # bulge share of the in-situ mass
    disc_scale_kpc: float
    vflat_kms: float  # flat rotation speed (Tully-Fisher-like in mass)
    halo_scale_kpc: float  # Hernquist scale of the ex-situ halo
    n_streams: int
    stream_share: float  # share of the ex-situ mass in streams/clumps
    spin: tuple[float, float, float]  # unit vector of the disc angular momentum
    seed: int  # seeds the particle draw, so a model always gives the same particles


def particle_count(log_mstar: float) -> int:
    """Star particles for a galaxy: sub-linear in mass keeps massive galaxies affordable."""
    return int(np.clip(4000.0 * 10 ** (0.4 * (log_mstar - 10.0)), 300, 25000))


def draw_population(rng: np.random.Generator, n: int) -> list[GalaxyModel]:
    """``n`` z=0 galaxies above 1e10 Msun with a falling mass function up to ~1e12 Msun."""
    log_m = np.empty(0)
    while log_m.size < n:  # truncated exponential in log M: a falling mass function
        draw = 10.02 + rng.exponential(0.45, size=2 * n)
        log_m = np.concatenate([log_m, draw[draw < 12.2]])
    return [draw_galaxy(rng, float(lm)) for lm in log_m[:n]]


def draw_galaxy(rng: np.random.Generator, log_mstar: float) -> GalaxyModel:
    """One galaxy of the given mass with scatter in every structural parameter."""
    dm = log_mstar - 10.0
    logit = -2.2 + 1.7 * dm + rng.normal(0.0, 0.6)
    fex = float(1.0 / (1.0 + np.exp(-logit)))
    m_insitu = 10**log_mstar * (1.0 - fex)
    spin = rng.normal(size=3)
    return GalaxyModel(
        log_mstar=log_mstar,
        exsitu_fraction=fex,
        bulge_fraction=float(np.clip(0.15 + 0.15 * dm + rng.normal(0.0, 0.08), 0.05, 0.7)),
        disc_scale_kpc=float(3.0 * (m_insitu / 5e10) ** 0.3 * rng.lognormal(0.0, 0.15)),
        vflat_kms=float(200.0 * (10**log_mstar / 5e10) ** 0.25 * rng.lognormal(0.0, 0.05)),
        halo_scale_kpc=float(4.0 * (10**log_mstar / 5e10) ** 0.35 * rng.lognormal(0.0, 0.2)),
        n_streams=int(min(rng.poisson(1.0 + 2.0 * fex), 4)),
        stream_share=float(np.clip(rng.normal(0.25, 0.08), 0.05, 0.5)),
        spin=tuple(spin / np.linalg.norm(spin)),
        seed=int(rng.integers(2**31)),
    )


def progenitor(model: GalaxyModel, rng: np.random.Generator) -> GalaxyModel:
    """The z=0.1 main progenitor: a little less massive, fewer accreted stars, same disc plane."""
    growth = rng.uniform(0.03, 0.12)  # dex grown since z=0.1; mergers add most of the ex-situ growth
    return replace(
        model,
        log_mstar=model.log_mstar - growth,
        exsitu_fraction=float(np.clip(model.exsitu_fraction * rng.uniform(0.8, 0.95), 0.0, 1.0)),
        disc_scale_kpc=model.disc_scale_kpc * 10 ** (-0.3 * growth),
        halo_scale_kpc=model.halo_scale_kpc * 10 ** (-0.35 * growth),
        seed=int(rng.integers(2**31)),
    )


def _frame(axis: np.ndarray) -> np.ndarray:
    """Orthonormal rows (e1, e2, axis) with ``axis`` the third row."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(axis, e1), axis])


def _hernquist_radii(rng: np.random.Generator, n: int, scale: float, r_max: float) -> np.ndarray:
    """Radii of a Hernquist sphere (inverse CDF M(<r)/M = r^2/(r+a)^2), truncated at r_max."""
    u = rng.uniform(0.0, (r_max / (r_max + scale)) ** 2, n)
    s = np.sqrt(u)
    return scale * s / (1.0 - s)


def _isotropic(rng: np.random.Generator, r: np.ndarray) -> np.ndarray:
    v = rng.normal(size=(r.size, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True) * r[:, None]


def _rotation_speed(model: GalaxyModel, r: np.ndarray) -> np.ndarray:
    """Circular speed [km/s]: rises over ~half a disc scale length, then flat."""
    return model.vflat_kms * (2.0 / np.pi) * np.arctan(r / (0.5 * model.disc_scale_kpc))


@dataclass
class Particles:
    """Star particles of one galaxy in its own frame (kpc, km/s, Msun, Gyr, mass fraction)."""

    pos: np.ndarray  # (n, 3)
    vel: np.ndarray  # (n, 3)
    mass: np.ndarray  # (n,)
    age: np.ndarray  # (n,)
    metallicity: np.ndarray  # (n,)
    insitu: np.ndarray  # (n,) int8: 1 in-situ, 0 ex-situ, -1 unassigned

    def __len__(self) -> int:
        return self.age.size

    @staticmethod
    def concat(parts: list[Particles]) -> Particles:
        return Particles(*(np.concatenate([getattr(p, f) for p in parts]) for f in Particles.__dataclass_fields__))


def make_particles(model: GalaxyModel, t_now_gyr: float, age_shift_gyr: float) -> Particles:
    """Star particles of ``model`` (bound stars only; winds are added by the writer).

    ``age_shift_gyr`` is the time from the snapshot to z=0: ages are drawn for z=0 and
    shifted back, so a progenitor's stars are younger by that much, and none is older
    than the Universe at the snapshot.
    """
    rng = np.random.default_rng(model.seed)
    n = particle_count(model.log_mstar)
    m_total = 10**model.log_mstar
    dm = model.log_mstar - 10.0
    n_ex = int(round(n * model.exsitu_fraction))
    n_stream = int(round(n_ex * model.stream_share)) if model.n_streams else 0
    n_halo = n_ex - n_stream
    n_bulge = int(round((n - n_ex) * model.bulge_fraction))
    n_disc = n - n_ex - n_bulge
    frame = _frame(np.asarray(model.spin))
    rd, vflat = model.disc_scale_kpc, model.vflat_kms

    # In-situ disc: exponential, thin, rotating; younger and more metal poor outwards (inside-out).
    r = rng.gamma(2.0, rd, n_disc)  # surface density R exp(-R/Rd) in R dR
    phi = rng.uniform(0.0, 2 * np.pi, n_disc)
    z = rng.laplace(0.0, 0.1 * rd, n_disc)
    local = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    vrot = _rotation_speed(model, r)
    vloc = np.stack([-vrot * np.sin(phi), vrot * np.cos(phi), np.zeros(n_disc)], axis=1)
    vloc += rng.normal(0.0, 0.12 * vflat, (n_disc, 3))
    disc = Particles(
        pos=local @ frame,
        vel=vloc @ frame,
        mass=np.empty(0),
        age=rng.normal(np.clip(7.0 - 1.5 * r / rd, 1.0, None), 1.5),
        metallicity=ZSUN * 10 ** (0.05 + 0.15 * dm - 0.1 * r / rd + rng.normal(0.0, 0.1, n_disc)),
        insitu=np.ones(n_disc, np.int8),
    )

    # In-situ bulge: compact, old, metal rich, dispersion dominated with slow rotation.
    r = _hernquist_radii(rng, n_bulge, 0.25 * rd, 10.0 * rd)
    pos = _isotropic(rng, r)
    spin_v = 0.2 * vflat * np.cross(frame[2], pos) / np.maximum(np.linalg.norm(pos, axis=1, keepdims=True), 1e-3)
    bulge = Particles(
        pos=pos,
        vel=spin_v + rng.normal(0.0, 0.55 * vflat, (n_bulge, 3)),
        mass=np.empty(0),
        age=rng.normal(10.0, 1.0, n_bulge),
        metallicity=ZSUN * 10 ** (0.2 + 0.1 * dm + rng.normal(0.0, 0.1, n_bulge)),
        insitu=np.ones(n_bulge, np.int8),
    )

    # Ex-situ halo: extended Hernquist, old, metal poor with a mild negative gradient, hot.
    r = _hernquist_radii(rng, n_halo, model.halo_scale_kpc, 30.0 * model.halo_scale_kpc)
    halo = Particles(
        pos=_isotropic(rng, r),
        vel=rng.normal(0.0, 0.6 * vflat, (n_halo, 3)),
        mass=np.empty(0),
        age=rng.normal(10.5, 1.2, n_halo),
        metallicity=ZSUN
        * 10 ** (-0.6 + 0.25 * dm - 0.15 * np.log10(1.0 + r / model.halo_scale_kpc) + rng.normal(0.0, 0.2, n_halo)),
        insitu=np.zeros(n_halo, np.int8),
    )

    parts = [disc, bulge, halo]
    if n_stream:
        sizes = rng.multinomial(n_stream, rng.dirichlet(np.ones(model.n_streams)))
        parts += [_stream(rng, model, int(k)) for k in sizes if k]
    out = Particles.concat(parts)
    out.mass = np.full(len(out), m_total / len(out))
    out.age = np.clip(out.age - age_shift_gyr, 0.05, t_now_gyr - 0.2)
    return out


def _stream(rng: np.random.Generator, model: GalaxyModel, n: int) -> Particles:
    """An accreted satellite on a circular-ish orbit: a tidal arc (or a clump, for a recent one)."""
    axis = rng.normal(size=3)
    orbit = _frame(axis / np.linalg.norm(axis))
    r0 = rng.uniform(1.0, 4.0) * model.disc_scale_kpc
    spread = rng.choice([0.15, 0.8])  # clump or arc [rad]
    phi = rng.uniform(0.0, 2 * np.pi) + rng.normal(0.0, spread, n)
    r = r0 * (1.0 + rng.normal(0.0, 0.06, n))
    local = np.stack([r * np.cos(phi), r * np.sin(phi), rng.normal(0.0, 0.05 * r0, n)], axis=1)
    v0 = float(_rotation_speed(model, np.array([r0]))[0])
    vloc = np.stack([-v0 * np.sin(phi), v0 * np.cos(phi), np.zeros(n)], axis=1) + rng.normal(0.0, 0.1 * v0, (n, 3))
    log_msat = model.log_mstar + np.log10(max(model.exsitu_fraction * model.stream_share, 1e-3)) - rng.uniform(0, 0.5)
    return Particles(
        pos=local @ orbit,
        vel=vloc @ orbit,
        mass=np.empty(0),
        age=rng.normal(rng.uniform(5.0, 9.5), 1.0, n),
        metallicity=ZSUN * 10 ** (-0.4 + 0.3 * (log_msat - 10.0) + rng.normal(0.0, 0.1, n)),
        insitu=np.zeros(n, np.int8),
    )


def half_mass_radius(pos: np.ndarray, mass: np.ndarray) -> float:
    """3D radius [same unit as pos] enclosing half the mass, about the origin."""
    r = np.linalg.norm(pos, axis=1)
    order = np.argsort(r)
    cum = np.cumsum(mass[order])
    return float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])
