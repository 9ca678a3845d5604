"""Galaxy relations measured from tagged particle shards, against the real TNG100-1 population and published bands.

From the tag stage's shards (``results/particles/shard_K.h5``: per-galaxy rows and per-star
pos [kpc], vel [km/s], mass [Msun], age [Gyr], metallicity [mass fraction], exsitu flag) and,
optionally, the subhalo catalogue (central flags), this measures for the galaxies of one snapshot:

- per stellar-mass bin of the TNG100 reference (:func:`exsitu.literature.tng100_population`): the
  share of galaxies, the ex-situ fraction's 16th/50th/84th percentiles (all galaxies, centrals,
  satellites), the median 3D stellar half-mass radius, the Spearman correlation of ex-situ fraction
  and half-mass radius within the bin, and the central share, each beside TNG100's number, with the
  checks of :data:`TOLERANCES`;
- the central line-of-sight velocity dispersion and the half-mass radius against published bands;
- the stacked ex-situ fraction profile f_ex(r) per mass bin and the transition radius where it
  crosses 0.5 (it shrinks with mass: Rodriguez-Gomez et al. 2016, Fig. 9; Pillepich et al. 2018);
- the mass-weighted metallicity distributions of in-situ and ex-situ stars per mass bin, and WITHIN
  each galaxy the overlap coefficient of the in-situ and ex-situ metallicity (and age) distributions
  (the shared area of the two normalised distributions: 0 when the quantity alone separates the
  populations, 1 when it says nothing) and the median difference, summarised per mass bin.

:func:`measure_relations` returns a JSON-serialisable dict. Units: Msun, kpc, km/s, Gyr, dex
(log10 Z/Zsun).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from scipy import stats

from exsitu.io import InputError, read_table
from exsitu.literature import (
    SIZE_TO_R200,
    log_halo_of_mstar,
    r200_kpc,
    shen_sizes_kpc,
    tng100_population,
    zahid_dispersion_kms,
)
from exsitu.units import ZSUN

log = logging.getLogger(__name__)

PROFILE_EDGES_KPC = tuple(float(r) for r in np.geomspace(0.5, 300.0, 25))
METALLICITY_EDGES = tuple(float(z) for z in np.linspace(-2.5, 1.0, 71))  # log10 Z/Zsun
AGE_EDGES = tuple(float(a) for a in np.linspace(0.0, 14.0, 57))  # Gyr
CENTRAL_APERTURE = 0.125  # of the projected half-mass radius: the R_e/8 aperture of Jorgensen et al. 1995
MIN_GALAXIES = 3  # per mass bin for a percentile
MIN_CHECKED = 10  # a bin's median f_ex is checked against TNG100 when it holds at least this many galaxies
#: How close the mock must be to TNG100 (absolute, ratio or absolute): the issue's "done" figures.
TOLERANCES = {
    "fex_median": 0.03,
    "fex_median_massive": 0.05,  # bins from 10^11.25 Msun up
    "massive_from": 11.25,
    "fex_p16": 0.05,
    "fex_p84": 0.05,
    "share_ratio": 1.3,
    "mean_rho": 0.1,
}
GALAXY_FIELDS = ("snapshot", "start", "count")
PARTICLE_FIELDS = ("pos", "vel", "mass", "age", "metallicity", "exsitu")


def mass_edges() -> tuple[float, ...]:
    """log10 M* [Msun] bin edges of the TNG100 reference table."""
    bins = tng100_population()["bins"]
    return (*(b["log_mstar"][0] for b in bins), bins[-1]["log_mstar"][1])


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


def overlap_coefficient(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray, edges: Sequence[float]) -> float:
    """Shared area of the weighted, normalised histograms of ``a`` and ``b`` on ``edges`` (0: disjoint, 1: equal)."""
    ha = np.histogram(a, edges, weights=wa)[0]
    hb = np.histogram(b, edges, weights=wb)[0]
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _read_shard(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(galaxies, particles) columns of one tag shard; fails naming the file and the missing dataset."""
    if not path.exists():
        raise InputError(f"particle shard {path} not found")
    with h5py.File(path, "r") as f:
        for group, names in (("galaxies", GALAXY_FIELDS + ("subhalo_id",)), ("particles", PARTICLE_FIELDS)):
            missing = [n for n in names if f"{group}/{n}" not in f]
            if missing:
                raise InputError(f"{path}: group '{group}' lacks datasets {missing}")
        galaxies = {k: f["galaxies"][k][()] for k in (*GALAXY_FIELDS, "subhalo_id")}
        return galaxies, {k: f["particles"][k][()] for k in PARTICLE_FIELDS}


def _central_flags(catalog: str | Path | None, snapshot: int) -> dict[int, bool] | None:
    """subhalo_id -> is_central of ``snapshot`` from the select stage's catalogue (None without one)."""
    if catalog is None:
        return None
    table = read_table(str(catalog), ["snapshot", "subhalo_id", "is_central"], "subhalo catalogue")
    rows = table[table["snapshot"] == snapshot]
    return dict(zip(rows["subhalo_id"].astype(int), rows["is_central"].astype(bool)))


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size < MIN_GALAXIES:
        return {"p16": None, "median": None, "p84": None}
    p16, median, p84 = np.percentile(values, [16, 50, 84])
    return {"p16": float(p16), "median": float(median), "p84": float(p84)}


def _binned(log_m: np.ndarray, values: np.ndarray) -> dict[str, list]:
    """Median and 16/84th percentiles of ``values`` per mass bin (None where a bin has < MIN_GALAXIES)."""
    edges = mass_edges()
    out: dict[str, list] = {"median": [], "p16": [], "p84": [], "n": []}
    which = np.digitize(log_m, edges) - 1
    for b in range(len(edges) - 1):
        v = values[which == b]
        out["n"].append(int(v.size))
        for key, value in _percentiles(v).items():
            out[key].append(value)
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


def _galaxy_row(part: dict[str, np.ndarray], sl: slice) -> dict[str, float | None]:
    """Per-galaxy measurements of one galaxy's stars (see :func:`measure_relations`)."""
    pos, vel = part["pos"][sl].astype(np.float64), part["vel"][sl].astype(np.float64)
    mass, ex = part["mass"][sl].astype(np.float64), part["exsitu"][sl].astype(bool)
    age = part["age"][sl].astype(np.float64)
    log_z = np.log10(np.maximum(part["metallicity"][sl].astype(np.float64), 1e-6 * ZSUN) / ZSUN)
    row: dict[str, float | None] = {
        "log_mstar": float(np.log10(mass.sum())),
        "exsitu_fraction": float(mass[ex].sum() / mass.sum()),
        "rhalf_kpc": half_mass_radius_kpc(pos, mass),
        "sigma_central_kms": central_dispersion_kms(pos, vel, mass),
    }
    both = ex.any() and (~ex).any()
    for name, values, edges in (("metallicity", log_z, METALLICITY_EDGES), ("age", age, AGE_EDGES)):
        row[f"{name}_overlap"] = (
            overlap_coefficient(values[~ex], mass[~ex], values[ex], mass[ex], edges) if both else None
        )
        row[f"{name}_insitu_minus_exsitu"] = (
            _weighted_median(values[~ex], mass[~ex]) - _weighted_median(values[ex], mass[ex]) if both else None
        )
    return row


def measure_relations(
    shard_paths: Sequence[str | Path], catalog: str | Path | None = None, snapshot: int | None = None
) -> dict:
    """Relations of the galaxies of ``snapshot`` (default: the latest one in the shards).

    ``catalog`` is the select stage's subhalos.csv (central flags; without it the central /
    satellite split and the central share are not measured). Returns a JSON-serialisable dict:
    ``mass_edges``; per galaxy ``galaxies`` (log_mstar, exsitu_fraction, rhalf_kpc,
    sigma_central_kms, is_central, the in-situ/ex-situ metallicity and age overlaps and median
    differences); ``tng100`` (per bin the mock's and TNG100's numbers side by side, and ``checks``
    against :data:`TOLERANCES`); binned ``exsitu_fraction``, ``half_mass_radius`` [kpc] and
    ``central_dispersion`` [km/s]; ``exsitu_profile``; ``metallicity`` (pooled in-situ and ex-situ
    densities per bin, their medians and overlap); ``within_galaxy`` (per bin the median and 16-84%
    of the per-galaxy overlaps and differences); and ``bands`` from :func:`published_bands`.
    """
    shards = [_read_shard(Path(p)) for p in shard_paths]
    if not shards:
        raise InputError("measure_relations: no particle shards given")
    if snapshot is None:
        snapshot = int(max(g["snapshot"].max() for g, _ in shards if g["snapshot"].size))
    central = _central_flags(catalog, snapshot)
    edges = mass_edges()
    n_bins, n_r = len(edges) - 1, len(PROFILE_EDGES_KPC) - 1
    prof_ex, prof_all = np.zeros((n_bins, n_r)), np.zeros((n_bins, n_r))
    z_hist = {k: np.zeros((n_bins, len(METALLICITY_EDGES) - 1)) for k in ("insitu", "exsitu")}
    rows = []
    for gal, part in shards:
        for k in np.flatnonzero(gal["snapshot"] == snapshot):
            sl = slice(int(gal["start"][k]), int(gal["start"][k] + gal["count"][k]))
            row = _galaxy_row(part, sl)
            if central is not None:
                flag = central.get(int(gal["subhalo_id"][k]))
                if flag is None:
                    raise InputError(
                        f"{catalog}: no row for subhalo {int(gal['subhalo_id'][k])} of snapshot {snapshot}"
                    )
                row["is_central"] = flag
            rows.append(row)
            b = int(np.digitize(row["log_mstar"], edges)) - 1
            if not 0 <= b < n_bins:
                continue
            mass, ex = part["mass"][sl].astype(np.float64), part["exsitu"][sl].astype(bool)
            r = np.linalg.norm(part["pos"][sl].astype(np.float64), axis=1)
            prof_all[b] += np.histogram(r, PROFILE_EDGES_KPC, weights=mass)[0]
            prof_ex[b] += np.histogram(r[ex], PROFILE_EDGES_KPC, weights=mass[ex])[0]
            log_z = np.log10(np.maximum(part["metallicity"][sl].astype(np.float64), 1e-6 * ZSUN) / ZSUN)
            for key, sel in (("insitu", ~ex), ("exsitu", ex)):
                z_hist[key][b] += np.histogram(log_z[sel], METALLICITY_EDGES, weights=mass[sel])[0]
    if not rows:
        raise InputError(f"no galaxy of snapshot {snapshot} in the particle shards {[str(p) for p in shard_paths]}")
    log.info("relations: %d galaxies of snapshot %d", len(rows), snapshot)
    columns = {key: [r.get(key) for r in rows] for key in rows[0]}
    log_m = np.array(columns["log_mstar"])
    fex = np.array(columns["exsitu_fraction"])

    radii = np.sqrt(np.array(PROFILE_EDGES_KPC[:-1]) * np.array(PROFILE_EDGES_KPC[1:]))
    profile = np.where(prof_all > 0, prof_ex / np.where(prof_all > 0, prof_all, 1.0), np.nan)
    return {
        "snapshot": snapshot,
        "n_galaxies": len(rows),
        "mass_edges": list(edges),
        "galaxies": columns,
        "tng100": compare_with_tng100(log_m, fex, np.array(columns["rhalf_kpc"]), columns.get("is_central")),
        "exsitu_fraction": _binned(log_m, fex),
        "half_mass_radius": _binned(log_m, np.array(columns["rhalf_kpc"])),
        "central_dispersion": _binned(log_m, np.array(columns["sigma_central_kms"])),
        "exsitu_profile": {
            "r_kpc": radii.tolist(),
            "fex": [[None if np.isnan(v) else float(v) for v in row] for row in profile],
            "transition_kpc": [
                _transition_radius(radii[np.isfinite(p)], p[np.isfinite(p)]) if np.isfinite(p).any() else None
                for p in profile
            ],
        },
        "metallicity": _pooled_metallicity(z_hist),
        "within_galaxy": _within_galaxy(log_m, columns),
        "bands": published_bands(),
    }


def _pooled_metallicity(z_hist: dict[str, np.ndarray]) -> dict[str, list]:
    """Mass-weighted in-situ / ex-situ metallicity densities per mass bin (all galaxies pooled), medians, overlap."""
    width = np.diff(METALLICITY_EDGES)
    out: dict[str, list] = {"edges": list(METALLICITY_EDGES)}
    for key in ("insitu_density", "exsitu_density", "insitu_median", "exsitu_median", "overlap"):
        out[key] = []
    for b in range(z_hist["insitu"].shape[0]):
        dens = {}
        for key in ("insitu", "exsitu"):
            total = z_hist[key][b].sum()
            dens[key] = z_hist[key][b] / (total * width) if total > 0 else None
            out[f"{key}_density"].append(None if dens[key] is None else dens[key].tolist())
            cum = np.concatenate([[0.0], np.cumsum(z_hist[key][b])])
            out[f"{key}_median"].append(float(np.interp(0.5 * total, cum, METALLICITY_EDGES)) if total > 0 else None)
        both = dens["insitu"] is not None and dens["exsitu"] is not None
        out["overlap"].append(float(np.sum(np.minimum(dens["insitu"], dens["exsitu"]) * width)) if both else None)
    return out


def _within_galaxy(log_m: np.ndarray, columns: dict[str, list]) -> dict[str, dict[str, list]]:
    """Per mass bin, the distribution (16/50/84th percentiles, n) of each per-galaxy overlap and difference."""
    out = {}
    for key in ("metallicity_overlap", "metallicity_insitu_minus_exsitu", "age_overlap", "age_insitu_minus_exsitu"):
        values = np.array([np.nan if v is None else v for v in columns[key]])
        have = np.isfinite(values)
        out[key] = _binned(log_m[have], values[have])
    return out


def compare_with_tng100(
    log_m: np.ndarray, fex: np.ndarray, rhalf: np.ndarray, is_central: Sequence[bool] | None
) -> dict:
    """Per TNG100 mass bin: the mock's galaxy share, f_ex percentiles (all, centrals, satellites), median
    r_1/2 [kpc], Spearman rho(f_ex, r_1/2) and central share beside TNG100's, and the ``checks`` of
    :data:`TOLERANCES` (each a dict: what, bin, mock, tng100, tolerance, passed; bins with too few
    galaxies are not checked). ``mean_rho`` is the mean of the per-bin rho over bins with at least
    :data:`MIN_CHECKED` galaxies."""
    ref = tng100_population()
    edges = mass_edges()
    which = np.digitize(log_m, edges) - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    centrals = None if is_central is None else np.asarray(is_central, bool)
    bins, checks, rhos = [], [], []
    for b, tng in enumerate(ref["bins"]):
        sel = which == b
        n = int(sel.sum())
        row = {"log_mstar": tng["log_mstar"], "n": n, "share": n / max(int(inside.sum()), 1), "tng100": tng}
        row.update({f"fex_{k}": v for k, v in _percentiles(fex[sel]).items()})
        sized = sel & np.isfinite(rhalf)
        row["rhalf_median_kpc"] = float(np.median(rhalf[sized])) if sized.any() else None
        row["rho_fex_rhalf"] = (
            float(stats.spearmanr(fex[sized], rhalf[sized])[0]) if sized.sum() >= MIN_GALAXIES else None
        )
        if centrals is not None:
            row["central_share"] = float(centrals[sel].mean()) if n else None
            row["fex_median_centrals"] = _percentiles(fex[sel & centrals])["median"]
            row["fex_median_satellites"] = _percentiles(fex[sel & ~centrals])["median"]
        bins.append(row)
        label = f"{tng['log_mstar'][0]:.2f}-{tng['log_mstar'][1]:.2f}"
        if n < MIN_CHECKED:
            continue
        massive = tng["log_mstar"][0] >= TOLERANCES["massive_from"]
        tol = TOLERANCES["fex_median_massive" if massive else "fex_median"]
        for key, tolerance in (
            ("fex_median", tol),
            ("fex_p16", TOLERANCES["fex_p16"]),
            ("fex_p84", TOLERANCES["fex_p84"]),
        ):
            checks.append(_check(key, label, row[key], tng[key], tolerance, abs(row[key] - tng[key]) <= tolerance))
        ratio = row["share"] / tng["share"]
        limit = TOLERANCES["share_ratio"]
        checks.append(_check("share", label, row["share"], tng["share"], limit, 1 / limit <= ratio <= limit))
        if row["rho_fex_rhalf"] is not None and np.isfinite(row["rho_fex_rhalf"]):
            rhos.append((row["rho_fex_rhalf"], tng["rho_fex_rhalf"]))
    mean_rho = float(np.mean([r for r, _ in rhos])) if rhos else None
    tng_rho = float(np.mean([t for _, t in rhos])) if rhos else None
    if mean_rho is not None:
        passed = abs(mean_rho - tng_rho) <= TOLERANCES["mean_rho"]
        checks.append(_check("mean_rho", "all", mean_rho, tng_rho, TOLERANCES["mean_rho"], passed))
    return {
        "source": ref["source"],
        "bins": bins,
        "mean_rho": mean_rho,
        "tng100_mean_rho": tng_rho,
        "satellites_vs_centrals": ref["satellites_vs_centrals"],
        "tolerances": TOLERANCES,
        "checks": checks,
        "all_passed": all(c["passed"] for c in checks),
    }


def _check(what: str, where: str, mock: float, tng: float, tolerance: float, passed: bool) -> dict:
    return {"what": what, "bin": where, "mock": mock, "tng100": tng, "tolerance": tolerance, "passed": bool(passed)}


def published_bands() -> dict:
    """Published relations on a grid of log10 M* [Msun], as lower/upper edges of a band plus citations.

    - ``half_mass_radius`` [kpc]: 3D stellar half-mass radius r_1/2 = 0.015 R200 (Kravtsov 2013,
      ApJ 764, L31, scatter ~0.2 dex) with R200 from the stellar-to-halo mass relation of
      Kravtsov et al. 2018, and the SDSS size relations of early- and late-type galaxies (Shen et
      al. 2003) deprojected as r_1/2 = 4/3 R_e (Wolf et al. 2010); those are half-light radii,
      larger than half-mass radii by ~0.1-0.2 dex (Szomoru et al. 2013, ApJ 763, 73).
    - ``central_dispersion`` [km/s]: the stellar mass-velocity dispersion relation of quiescent
      galaxies (Zahid et al. 2016), +-0.1 dex (its intrinsic scatter). Star-forming discs lie below it
      at low mass.
    The ex-situ fraction and the mass function are checked against TNG100-1 itself (``tng100``).
    """
    grid = np.linspace(10.0, 12.5, 11)
    kravtsov = SIZE_TO_R200 * r200_kpc(log_halo_of_mstar(grid))
    shen = shen_sizes_kpc(grid)
    zahid = zahid_dispersion_kms(grid)
    return {
        "log_mstar": grid.tolist(),
        "half_mass_radius": {
            "lo": (kravtsov / 10**0.2).tolist(),
            "hi": (kravtsov * 10**0.2).tolist(),
            "citation": "Kravtsov 2013 (r_1/2 = 0.015 R200) with the Kravtsov et al. 2018 SHMR, +-0.2 dex",
            "lines": {
                "Shen+2003 early types (4/3 R_e)": shen["early"].tolist(),
                "Shen+2003 late types (4/3 R_e)": shen["late"].tolist(),
            },
        },
        "central_dispersion": {
            "lo": (zahid / 10**0.1).tolist(),
            "hi": (zahid * 10**0.1).tolist(),
            "citation": "Zahid et al. 2016 (quiescent galaxies), +-0.1 dex",
        },
    }
