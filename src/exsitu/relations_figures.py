"""Figures of the galaxy relations measured by :func:`exsitu.relations.measure_relations`, against the TNG100-1
population and published bands.

Each function takes the relations dict and returns a matplotlib Figure (the report embeds
it). Units as in :mod:`exsitu.relations`: Msun, kpc, km/s, dex.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

BAND_COLOUR = "tab:orange"
MOCK_COLOUR = "tab:blue"
TNG_COLOUR = "k"


def _centres(relations: dict) -> np.ndarray:
    edges = np.asarray(relations["mass_edges"])
    return 0.5 * (edges[:-1] + edges[1:])


def _scaling(relations: dict, key: str, ylabel: str, log_y: bool) -> Figure:
    """Galaxies as points, binned median with 16-84% range, and the published band (plus lines, if any)."""
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    gal = relations["galaxies"]
    column = {"exsitu_fraction": "exsitu_fraction", "half_mass_radius": "rhalf_kpc"}.get(key, "sigma_central_kms")
    ax.scatter(gal["log_mstar"], gal[column], s=4, color=MOCK_COLOUR, alpha=0.3, label="mock galaxies")
    binned = relations[key]
    have = [i for i, m in enumerate(binned["median"]) if m is not None]
    x = _centres(relations)[have]
    med = np.array([binned["median"][i] for i in have])
    err = (
        np.array([[med[k] - binned["p16"][i], binned["p84"][i] - med[k]] for k, i in enumerate(have)]).reshape(-1, 2).T
    )
    ax.errorbar(x, med, yerr=err, fmt="o-", color=MOCK_COLOUR, capsize=3, label="mock median, 16-84%")
    band = relations["bands"][key]
    grid = relations["bands"]["log_mstar"]
    ax.fill_between(grid, band["lo"], band["hi"], color=BAND_COLOUR, alpha=0.3, label=band["citation"])
    for (name, values), style in zip(band.get("lines", {}).items(), ("--", ":")):
        ax.plot(grid, values, style, color="k", lw=1, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(r"$\log_{10} M_\star\ [M_\odot]$")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, loc="best")
    return fig


def exsitu_fraction_figure(relations: dict) -> Figure:
    """Left: ex-situ fraction against stellar mass, the simulated galaxies' 16/50/84th percentiles per bin beside
    TNG100-1's. Right: the share of galaxies per mass bin (the stellar mass function above 1e10 Msun), both."""
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    gal = relations["galaxies"]
    left.scatter(
        gal["log_mstar"], gal["exsitu_fraction"], s=4, color=MOCK_COLOUR, alpha=0.3, label="simulated galaxies"
    )
    bins = relations["tng100"]["bins"]
    centre = np.array([0.5 * (b["log_mstar"][0] + b["log_mstar"][1]) for b in bins])
    for offset, colour, label, row in (
        (-0.02, MOCK_COLOUR, "this simulation: median, 16-84%", lambda b: b),
        (0.02, TNG_COLOUR, "TNG100-1: median, 16-84%", lambda b: b["tng100"]),
    ):
        have = [k for k, b in enumerate(bins) if row(b)["fex_median"] is not None]
        med = np.array([row(bins[k])["fex_median"] for k in have])
        err = np.array(
            [[med[i] - row(bins[k])["fex_p16"], row(bins[k])["fex_p84"] - med[i]] for i, k in enumerate(have)]
        )
        left.errorbar(
            centre[have] + offset, med, yerr=err.reshape(-1, 2).T, fmt="o", color=colour, capsize=3, label=label
        )
    left.set(xlabel=r"$\log_{10} M_\star\ [M_\odot]$", ylabel="ex-situ fraction", ylim=(0, 1))
    left.legend(fontsize=6, loc="upper left")
    width = np.array([b["log_mstar"][1] - b["log_mstar"][0] for b in bins])
    right.bar(centre - 0.05, [b["share"] for b in bins], width=0.1, color=MOCK_COLOUR, label="this simulation")
    right.bar(centre + 0.05, [b["tng100"]["share"] for b in bins], width=0.1, color=TNG_COLOUR, label="TNG100-1")
    right.set(xlabel=r"$\log_{10} M_\star\ [M_\odot]$ (bin centre)", ylabel="share of galaxies per bin", yscale="log")
    right.legend(fontsize=6)
    right.set_title(f"bin widths {', '.join(f'{w:g}' for w in np.unique(width))} dex", fontsize=7)
    return fig


def size_figure(relations: dict) -> Figure:
    """3D stellar half-mass radius [kpc] vs stellar mass, with TNG100-1's medians, the Kravtsov 2013 band and
    Shen+2003 lines."""
    fig = _scaling(relations, "half_mass_radius", r"$r_{1/2}$ [kpc]", log_y=True)
    ax = fig.axes[0]
    bins = relations["tng100"]["bins"]
    centre = [0.5 * (b["log_mstar"][0] + b["log_mstar"][1]) for b in bins]
    ax.plot(centre, [b["tng100"]["rhalf_median_kpc"] for b in bins], "s", color=TNG_COLOUR, label="TNG100-1 median")
    ax.legend(fontsize=6, loc="best")
    return fig


def dispersion_figure(relations: dict) -> Figure:
    """Central (R_e/8) LOS velocity dispersion [km/s] vs stellar mass, with the Zahid+2016 band."""
    return _scaling(relations, "central_dispersion", r"$\sigma_{\rm cen}$ [km/s]", log_y=True)


def exsitu_profile_figure(relations: dict) -> Figure:
    """Stacked ex-situ fraction vs radius [kpc] per mass bin, the f_ex = 0.5 transition radii marked."""
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    prof = relations["exsitu_profile"]
    r = np.asarray(prof["r_kpc"])
    edges = relations["mass_edges"]
    colours = [f"C{k}" for k in range(len(prof["fex"]))]
    for k, (row, r_t) in enumerate(zip(prof["fex"], prof["transition_kpc"])):
        f = np.array([np.nan if v is None else v for v in row])
        if np.isfinite(f).any():
            ax.plot(r, f, color=colours[k], label=f"{edges[k]:.2f}-{edges[k + 1]:.2f}")
        if r_t is not None:
            ax.axvline(r_t, color=colours[k], ls=":", lw=1)
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("r [kpc]")
    ax.set_ylabel("ex-situ fraction (stacked)")
    ax.legend(title=r"$\log_{10} M_\star$", fontsize=6, title_fontsize=7)
    return fig


def metallicity_figure(relations: dict) -> Figure:
    """Mass-weighted log Z/Zsun distributions of in-situ and ex-situ stars, one panel per mass bin, with the overlap."""
    met = relations["metallicity"]
    edges = np.asarray(met["edges"])
    mass_edges = relations["mass_edges"]
    n = len(met["overlap"])
    fig = Figure(figsize=(2.4 * n, 2.6), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for b, ax in enumerate(axes):
        for key, colour in (("insitu", "tab:red"), ("exsitu", "tab:blue")):
            dens = met[f"{key}_density"][b]
            if dens is not None:
                ax.stairs(dens, edges, color=colour, label=key.replace("situ", "-situ"))
        overlap = met["overlap"][b]
        title = f"{mass_edges[b]:.2f}-{mass_edges[b + 1]:.2f}"
        ax.set_title(title + ("" if overlap is None else f"\noverlap {overlap:.2f}"), fontsize=8)
        ax.set_xlabel(r"$\log_{10} Z/Z_\odot$")
    axes[0].set_ylabel("mass-weighted density")
    axes[0].legend(fontsize=6)
    return fig


def within_galaxy_figure(relations: dict) -> Figure:
    """Per galaxy, the overlap of the in-situ and ex-situ metallicity (left) and age (right) distributions
    against stellar mass: 0 when the quantity alone separates the populations, 1 when it says nothing."""
    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    gal = relations["galaxies"]
    centres = _centres(relations)
    for ax, name, label in zip(fig.subplots(1, 2), ("metallicity", "age"), ("metallicity", "age")):
        values = np.array([np.nan if v is None else v for v in gal[f"{name}_overlap"]])
        ax.scatter(gal["log_mstar"], values, s=4, color=MOCK_COLOUR, alpha=0.3, label="simulated galaxies")
        binned = relations["within_galaxy"][f"{name}_overlap"]
        have = [i for i, m in enumerate(binned["median"]) if m is not None]
        med = np.array([binned["median"][i] for i in have])
        err = np.array([[med[k] - binned["p16"][i], binned["p84"][i] - med[k]] for k, i in enumerate(have)])
        ax.errorbar(centres[have], med, yerr=err.reshape(-1, 2).T, fmt="o-", color=MOCK_COLOUR, capsize=3,
                    label="median, 16-84%")  # fmt: skip
        ax.set(xlabel=r"$\log_{10} M_\star\ [M_\odot]$", ylabel=f"in-/ex-situ {label} overlap", ylim=(0, 1))
        ax.legend(fontsize=6)
    return fig
