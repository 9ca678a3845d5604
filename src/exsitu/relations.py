"""Galaxy scaling relations measured from tagged particle shards, and the published bands they should follow.

From the tag stage's shards (``results/particles/shard_K.h5``: per-galaxy rows and per-star
pos [kpc], vel [km/s], mass [Msun], metallicity [mass fraction], exsitu flag) this measures,
for the galaxies of one snapshot:

- the median and 16-84th percentiles of the ex-situ fraction, the 3D stellar half-mass
  radius and the central line-of-sight velocity dispersion in bins of stellar mass;
- the stacked ex-situ fraction profile f_ex(r) per mass bin and the transition radius where
  it crosses 0.5 (it shrinks with mass: Rodriguez-Gomez et al. 2016, Fig. 9; Pillepich et al.
  2018, MNRAS 475, 648);
- the mass-weighted metallicity distributions of in-situ and ex-situ stars per mass bin and
  their mass-weighted medians and overlap coefficient (the shared area of the two normalised
  distributions: 0 when metallicity alone separates the populations, 1 when it says nothing).

:func:`measure_relations` returns a JSON-serialisable dict that includes
:func:`published_bands`. Units: Msun, kpc, km/s, dex (log10 Z/Zsun).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from exsitu.io import InputError
from exsitu.mock.assembly import SIZE_TO_R200, halo_mass, r200_kpc
from exsitu.units import ZSUN

log = logging.getLogger(__name__)

MASS_EDGES = (9.75, 10.25, 10.75, 11.25, 11.75, 12.25)  # log10 M* [Msun]
PROFILE_EDGES_KPC = tuple(float(r) for r in np.geomspace(0.5, 300.0, 25))
METALLICITY_EDGES = tuple(float(z) for z in np.linspace(-2.5, 1.0, 71))  # log10 Z/Zsun
CENTRAL_APERTURE = 0.125  # of the projected half-mass radius: the R_e/8 aperture of Jorgensen et al. 1995
MIN_GALAXIES = 3  # per mass bin for a median
GALAXY_FIELDS = ("snapshot", "start", "count")
PARTICLE_FIELDS = ("pos", "vel", "mass", "metallicity", "exsitu")


def half_mass_radius_kpc(pos: np.ndarray, mass: np.ndarray) -> float:
    """Radius [kpc] about the origin enclosing half the mass; ``pos`` may be 3D or projected 2D."""
    r = np.linalg.norm(pos, axis=1)
    order = np.argsort(r)
    cum = np.cumsum(mass[order])
    return float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])


def central_dispersion_kms(pos: np.ndarray, vel: np.ndarray, mass: np.ndarray) -> float:
    """Mass-weighted LOS velocity dispersion [km/s] within R_e/8, averaged over the x, y and z lines of sight.

    R_e is the projected half-mass radius along that line of sight; the dispersion includes
    rotation inside the aperture, as a single spectrum through a fibre does.
    """
    values = []
    for los in range(3):
        sky = np.delete(pos, los, axis=1)
        inside = np.linalg.norm(sky, axis=1) < CENTRAL_APERTURE * half_mass_radius_kpc(sky, mass)
        if inside.sum() < 2:
            inside = np.argsort(np.linalg.norm(sky, axis=1))[:2]
        v, w = vel[inside, los], mass[inside]
        mean = np.average(v, weights=w)
        values.append(np.sqrt(np.average((v - mean) ** 2, weights=w)))
    return float(np.mean(values))


def _read_shard(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(galaxies, particles) columns of one tag shard; fails naming the file and the missing dataset."""
    if not path.exists():
        raise InputError(f"particle shard {path} not found")
    with h5py.File(path, "r") as f:
        for group, names in (("galaxies", GALAXY_FIELDS), ("particles", PARTICLE_FIELDS)):
            missing = [n for n in names if f"{group}/{n}" not in f]
            if missing:
                raise InputError(f"{path}: group '{group}' lacks datasets {missing}")
        return {k: f["galaxies"][k][()] for k in GALAXY_FIELDS}, {k: f["particles"][k][()] for k in PARTICLE_FIELDS}


def _binned(log_m: np.ndarray, values: np.ndarray) -> dict[str, list]:
    """Median and 16/84th percentiles of ``values`` per mass bin (None where a bin has < MIN_GALAXIES)."""
    out: dict[str, list] = {"median": [], "p16": [], "p84": [], "n": []}
    which = np.digitize(log_m, MASS_EDGES) - 1
    for b in range(len(MASS_EDGES) - 1):
        v = values[which == b]
        out["n"].append(int(v.size))
        enough = v.size >= MIN_GALAXIES
        for key, q in (("median", 50), ("p16", 16), ("p84", 84)):
            out[key].append(float(np.percentile(v, q)) if enough else None)
    return out


def _transition_radius(r: np.ndarray, fex: np.ndarray) -> float | None:
    """Smallest radius where ``fex`` rises through 0.5 (log-linear interpolation), None if it never does."""
    if fex[0] >= 0.5:
        return float(r[0])
    up = np.flatnonzero((fex[:-1] < 0.5) & (fex[1:] >= 0.5))
    if up.size == 0:
        return None
    k = up[0]
    t = (0.5 - fex[k]) / (fex[k + 1] - fex[k])
    return float(np.exp(np.log(r[k]) + t * (np.log(r[k + 1]) - np.log(r[k]))))


def measure_relations(shard_paths: Sequence[str | Path], snapshot: int | None = None) -> dict:
    """Scaling relations of the galaxies of ``snapshot`` (default: the latest one in the shards).

    Returns a JSON-serialisable dict: ``mass_edges``; per galaxy ``galaxies`` (log_mstar,
    exsitu_fraction, rhalf_kpc, sigma_central_kms); binned ``exsitu_fraction``,
    ``half_mass_radius`` [kpc] and ``central_dispersion`` [km/s] (median, p16, p84, n per bin);
    ``exsitu_profile`` (radii [kpc], stacked f_ex per bin, transition radius per bin);
    ``metallicity`` (bin edges [dex], mass-weighted in-situ and ex-situ densities per bin, their
    medians and overlap coefficient); and ``bands`` from :func:`published_bands`.
    """
    shards = [_read_shard(Path(p)) for p in shard_paths]
    if not shards:
        raise InputError("measure_relations: no particle shards given")
    if snapshot is None:
        snapshot = int(max(g["snapshot"].max() for g, _ in shards if g["snapshot"].size))
    n_bins, n_r = len(MASS_EDGES) - 1, len(PROFILE_EDGES_KPC) - 1
    prof_ex, prof_all = np.zeros((n_bins, n_r)), np.zeros((n_bins, n_r))
    z_hist = {k: np.zeros((n_bins, len(METALLICITY_EDGES) - 1)) for k in ("insitu", "exsitu")}
    rows = []
    for gal, part in shards:
        for k in np.flatnonzero(gal["snapshot"] == snapshot):
            sl = slice(int(gal["start"][k]), int(gal["start"][k] + gal["count"][k]))
            pos, vel = part["pos"][sl].astype(np.float64), part["vel"][sl].astype(np.float64)
            mass, ex = part["mass"][sl].astype(np.float64), part["exsitu"][sl].astype(bool)
            log_z = np.log10(np.maximum(part["metallicity"][sl].astype(np.float64), 1e-6 * ZSUN) / ZSUN)
            log_m = float(np.log10(mass.sum()))
            rows.append(
                (
                    log_m,
                    float(mass[ex].sum() / mass.sum()),
                    half_mass_radius_kpc(pos, mass),
                    central_dispersion_kms(pos, vel, mass),
                )
            )
            b = int(np.digitize(log_m, MASS_EDGES)) - 1
            if not 0 <= b < n_bins:
                continue
            r = np.linalg.norm(pos, axis=1)
            prof_all[b] += np.histogram(r, PROFILE_EDGES_KPC, weights=mass)[0]
            prof_ex[b] += np.histogram(r[ex], PROFILE_EDGES_KPC, weights=mass[ex])[0]
            for key, sel in (("insitu", ~ex), ("exsitu", ex)):
                z_hist[key][b] += np.histogram(log_z[sel], METALLICITY_EDGES, weights=mass[sel])[0]
    if not rows:
        raise InputError(f"no galaxy of snapshot {snapshot} in the particle shards {[str(p) for p in shard_paths]}")
    table = np.array(rows)
    log.info("relations: %d galaxies of snapshot %d", len(rows), snapshot)

    radii = np.sqrt(np.array(PROFILE_EDGES_KPC[:-1]) * np.array(PROFILE_EDGES_KPC[1:]))
    profile = np.where(prof_all > 0, prof_ex / np.where(prof_all > 0, prof_all, 1.0), np.nan)
    width = np.diff(METALLICITY_EDGES)
    metallicity: dict[str, list] = {
        "insitu_density": [],
        "exsitu_density": [],
        "insitu_median": [],
        "exsitu_median": [],
        "overlap": [],
    }
    for b in range(n_bins):
        dens = {}
        for key in ("insitu", "exsitu"):
            total = z_hist[key][b].sum()
            dens[key] = z_hist[key][b] / (total * width) if total > 0 else None
            metallicity[f"{key}_density"].append(None if dens[key] is None else dens[key].tolist())
            cum = np.concatenate([[0.0], np.cumsum(z_hist[key][b])])
            median = float(np.interp(0.5 * total, cum, METALLICITY_EDGES)) if total > 0 else None
            metallicity[f"{key}_median"].append(median)
        both = dens["insitu"] is not None and dens["exsitu"] is not None
        metallicity["overlap"].append(
            float(np.sum(np.minimum(dens["insitu"], dens["exsitu"]) * width)) if both else None
        )
    return {
        "snapshot": snapshot,
        "n_galaxies": len(rows),
        "mass_edges": list(MASS_EDGES),
        "galaxies": {
            "log_mstar": table[:, 0].tolist(),
            "exsitu_fraction": table[:, 1].tolist(),
            "rhalf_kpc": table[:, 2].tolist(),
            "sigma_central_kms": table[:, 3].tolist(),
        },
        "exsitu_fraction": _binned(table[:, 0], table[:, 1]),
        "half_mass_radius": _binned(table[:, 0], table[:, 2]),
        "central_dispersion": _binned(table[:, 0], table[:, 3]),
        "exsitu_profile": {
            "r_kpc": radii.tolist(),
            "fex": [[None if np.isnan(v) else float(v) for v in row] for row in profile],
            "transition_kpc": [
                _transition_radius(radii[np.isfinite(p)], p[np.isfinite(p)]) if np.isfinite(p).any() else None
                for p in profile
            ],
        },
        "metallicity": {"edges": list(METALLICITY_EDGES), **metallicity},
        "bands": published_bands(),
    }


def published_bands() -> dict:
    """Published relations on a grid of log10 M* [Msun], as lower/upper edges of a band plus citations.

    - ``exsitu_fraction``: the envelope of the median total ex-situ fraction of z=0 galaxies in
      Illustris (Rodriguez-Gomez et al. 2016, MNRAS 458, 2371, Fig. 4), TNG100/TNG300 (Pillepich
      et al. 2018, MNRAS 475, 648; Tacchella et al. 2019, MNRAS 487, 5416), read by eye from the
      figures and widened by ~0.05 for that reading: it bounds a median, not single galaxies.
    - ``half_mass_radius`` [kpc]: 3D stellar half-mass radius r_1/2 = 0.015 R200 (Kravtsov 2013,
      ApJ 764, L31, scatter ~0.2 dex) with R200 from the stellar-to-halo mass relation of
      Kravtsov et al. 2018 (the mock's size scale, so not an independent check), and the SDSS
      size relations of early- and late-type galaxies (Shen et al. 2003, MNRAS 343, 978, eqs.
      17-18) deprojected as r_1/2 = 4/3 R_e (Wolf et al. 2010); those are half-light radii,
      larger than half-mass radii by ~0.1-0.2 dex (Szomoru et al. 2013, ApJ 763, 73).
    - ``central_dispersion`` [km/s]: the stellar mass-velocity dispersion relation of quiescent
      galaxies, a broken power law sigma = 118 km/s (M*/10^10.26)^a, a = 0.403 below and 0.293
      above the break (Zahid et al. 2016, ApJ 832, 203), +-0.1 dex (its intrinsic scatter).
      Star-forming discs lie below it at low mass.
    """
    grid = np.linspace(10.0, 12.0, 9)
    fex_lo = np.interp(grid, [10.0, 10.5, 11.0, 11.5, 12.0], [0.04, 0.08, 0.18, 0.40, 0.65])
    fex_hi = np.interp(grid, [10.0, 10.5, 11.0, 11.5, 12.0], [0.18, 0.30, 0.45, 0.70, 0.90])
    kravtsov = np.array([SIZE_TO_R200 * r200_kpc(halo_mass(m)) for m in grid])
    m = 10**grid
    shen_late = 4.0 / 3.0 * 0.1 * m**0.14 * (1.0 + m / 3.98e10) ** (0.39 - 0.14)
    shen_early = 4.0 / 3.0 * 2.88e-6 * m**0.56
    slope = np.where(grid < 10.26, 0.403, 0.293)
    zahid = 118.0 * 10 ** (slope * (grid - 10.26))
    return {
        "log_mstar": grid.tolist(),
        "exsitu_fraction": {
            "lo": fex_lo.tolist(),
            "hi": fex_hi.tolist(),
            "citation": "Rodriguez-Gomez et al. 2016 (Illustris); Pillepich et al. 2018, Tacchella et al. 2019 (TNG)",
        },
        "half_mass_radius": {
            "lo": (kravtsov / 10**0.2).tolist(),
            "hi": (kravtsov * 10**0.2).tolist(),
            "citation": "Kravtsov 2013 (r_1/2 = 0.015 R200) with the Kravtsov et al. 2018 SHMR, +-0.2 dex",
            "lines": {
                "Shen+2003 early types (4/3 R_e)": shen_early.tolist(),
                "Shen+2003 late types (4/3 R_e)": shen_late.tolist(),
            },
        },
        "central_dispersion": {
            "lo": (zahid / 10**0.1).tolist(),
            "hi": (zahid * 10**0.1).tolist(),
            "citation": "Zahid et al. 2016 (quiescent galaxies), +-0.1 dex",
        },
    }
