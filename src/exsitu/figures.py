"""The report's figures as matplotlib Figures: data summary, training curves, the paper's
Fig. 2 (example posteriors) and Fig. 3 (residuals), calibration curves.

Fractions are dimensionless ex-situ mass fractions in [0, 1]; radii in units of rhalf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from exsitu.contracts import CHANNELS  # noqa: E402

CONDITION_LABELS = (
    r"$\log_{10}\Sigma_*$ [M$_\odot$ kpc$^{-2}$]",
    r"$v_{\rm los}$ [km s$^{-1}$]",
    r"$\sigma_{\rm los}$ [km s$^{-1}$]",
    "age [Gyr]",
    r"$\log_{10} Z/Z_\odot$",
)
CONDITION_CMAPS = ("viridis", "RdBu_r", "magma", "cividis", "plasma")


def exsitu_distribution(per_galaxy: np.ndarray, per_projection: np.ndarray) -> Figure:
    """Histogram of the total ex-situ fraction before (one per galaxy) and after balancing."""
    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    bins = np.linspace(0, 1, 21)
    ax.hist(per_galaxy, bins, histtype="step", lw=2, label=f"galaxies (N={len(per_galaxy)})", density=True)
    ax.hist(
        per_projection,
        bins,
        histtype="step",
        lw=2,
        label=f"maps after balancing (N={len(per_projection)})",
        density=True,
    )
    ax.set(xlabel="total ex-situ fraction", ylabel="density")
    ax.legend()
    return fig


def training_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Train and validation loss against epoch, one panel per model."""
    fig, axes = plt.subplots(1, len(histories), figsize=(4 * len(histories), 3.2), layout="constrained", squeeze=False)
    for ax, (name, history) in zip(axes[0], histories.items()):
        ax.plot(history["epoch"], history["train_loss"], "o-", label="train")
        ax.plot(history["epoch"], history["val_loss"], "s-", label="validation")
        ax.set(title=name, xlabel="epoch", ylabel="loss")
        ax.legend()
    return fig


def _show(
    ax: Any,
    image: np.ndarray,
    mask: np.ndarray,
    title: str,
    cmap: str,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
) -> None:
    shown = ax.imshow(np.ma.masked_where(~mask, image), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    plt.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)


def example_posteriors(
    conditions: np.ndarray,
    channels: Sequence[str],
    truth: np.ndarray,
    means: Mapping[str, np.ndarray],
    std: np.ndarray,
    *,
    mask: np.ndarray,
    labels: Sequence[str],
) -> Figure:
    """The paper's Fig. 2: per row one test map: its condition maps, truth, posterior means, std.

    conditions (E, C, P, P) physical units, ``channels`` their names (contracts.CHANNELS order);
    truth, std, mask and each of ``means`` (E, P, P).
    """
    style = {name: (label, cmap) for name, label, cmap in zip(CHANNELS, CONDITION_LABELS, CONDITION_CMAPS)}
    n_cond = len(channels)
    n_cols = n_cond + 1 + len(means) + 1
    fig, axes = plt.subplots(
        len(truth), n_cols, figsize=(1.9 * n_cols, 1.9 * len(truth) + 0.4), layout="constrained", squeeze=False
    )
    for row, axrow in enumerate(axes):
        m = mask[row]
        for c, name in enumerate(channels):
            label, cmap = style[name]
            values = conditions[row, c][m]
            if name == "velocity":  # symmetric velocity scale so that rotation reads as red/blue
                lim = float(np.abs(values).max()) if values.size else 1.0
                _show(axrow[c], conditions[row, c], m, label, cmap, vmin=-lim, vmax=lim)
            else:
                _show(axrow[c], conditions[row, c], m, label, cmap)
        _show(axrow[n_cond], truth[row], m, f"truth\n{labels[row]}", "inferno", vmin=0, vmax=1)
        for k, (mode, mean) in enumerate(means.items()):
            _show(axrow[n_cond + 1 + k], mean[row], m, f"mean ({mode})", "inferno", vmin=0, vmax=1)
        _show(axrow[-1], std[row], m, "std (flow)", "Greys", vmin=0)
    return fig


def residual_figures(blocks: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Fig. 3a (residual distribution) and 3b (residual vs true fraction) from metrics blocks."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for name, block in blocks.items():
        res = block["residuals"]
        edges, counts = np.asarray(res["hist_edges"]), np.asarray(res["hist_counts"], dtype=float)
        left.stairs(
            counts / max(counts.sum(), 1) / np.diff(edges), edges, label=f"{name} (MAE {block['mae']['value']:.3f})"
        )
        binned = block["residual_vs_truth"]
        centres = 0.5 * (np.asarray(binned["edges"][1:]) + np.asarray(binned["edges"][:-1]))
        median = np.array([np.nan if v is None else v for v in binned["median"]])
        lo = np.array([np.nan if v is None else v for v in binned["p16"]])
        hi = np.array([np.nan if v is None else v for v in binned["p84"]])
        line = right.plot(centres, median, "o-", label=name)[0]
        right.fill_between(centres, lo, hi, color=line.get_color(), alpha=0.15)
    left.set(
        xlabel="predicted - true ex-situ fraction (galaxy pixels)", ylabel="density", title="(a) residual distribution"
    )
    left.axvline(0, color="k", lw=0.5)
    left.legend(fontsize=7)
    right.axhline(0, color="k", lw=0.5)
    right.set(xlabel="true ex-situ fraction", ylabel="residual: median, 16-84%", title="(b) residual vs true fraction")
    right.legend(fontsize=7)
    return fig


def integrated_scatter(true: np.ndarray, predicted: Mapping[str, np.ndarray]) -> Figure:
    """Galaxy-integrated (mass-weighted) ex-situ fraction, predicted against true, per map."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    for name, values in predicted.items():
        scatter = float(np.std(values - true))
        ax.plot(true, values, ".", alpha=0.6, label=f"{name} (scatter {scatter:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="true integrated ex-situ fraction", ylabel="predicted", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    return fig


def calibration_curves(modes: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Per-pixel expected-coverage curves and TARP whole-map curves (uniform and posterior references)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3), layout="constrained")
    for name, block in modes.items():
        curve = block["coverage_curve"]
        axes[0].plot(
            curve["nominal"], curve["observed"], label=f"{name} (68%: {block['coverage']['0.68']['value']:.2f})"
        )
        for ax, reference in zip(axes[1:], ("uniform", "posterior")):
            tarp = block["tarp"][reference]
            atc = tarp["atc"]
            line = ax.plot(
                tarp["alpha"],
                tarp["ecp"],
                label=f"{name} (ATC {atc['value']:+.2f} [{atc['low']:+.2f}, {atc['high']:+.2f}])",
            )
            ax.fill_between(tarp["alpha"], tarp["ecp_low"], tarp["ecp_high"], color=line[0].get_color(), alpha=0.15)
    titles = ("per-pixel coverage (randomized PIT)", "TARP, uniform references", "TARP, held-out posterior reference")
    for ax, title in zip(axes, titles):
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel=r"credibility level $\alpha$", ylabel="expected coverage", title=title, xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    return fig


def rank_histograms(modes: Mapping[str, Mapping[str, Any]]) -> Figure:
    """SBC rank histograms of the galaxy-integrated ex-situ fraction, one panel per posterior."""
    fig, axes = plt.subplots(1, len(modes), figsize=(3.4 * len(modes), 3.2), layout="constrained", squeeze=False)
    for ax, (name, block) in zip(axes[0], modes.items()):
        hist = block["rank_histogram"]
        edges = np.asarray(hist["edges"])
        ax.stairs(np.asarray(hist["fraction"]) * (len(edges) - 1), edges, fill=True, alpha=0.6)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set(title=f"{name} (KS p {hist['ks_pvalue']:.2g})", xlabel="normalised rank of the truth", ylim=(0, None))
    axes[0][0].set_ylabel("galaxy-weighted density")
    return fig


def stratified_coverage(strata: Sequence[Mapping[str, Any]], level: str = "0.68") -> Figure:
    """Coverage of the central ``level`` interval per stratum (truth, mass tercile, radius), with intervals."""
    groups = [g for g in ("truth", "mass", "radius") if any(s["by"] == g for s in strata)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), layout="constrained", squeeze=False)
    for ax, group in zip(axes[0], groups):
        rows = [s for s in strata if s["by"] == group and s["n_pixels"] > 0]
        values = [s["coverage"][level] for s in rows]
        y = np.arange(len(rows))
        mid = np.array([v["value"] for v in values], dtype=float)
        err = np.array([[v["value"] - v["low"], v["high"] - v["value"]] for v in values], dtype=float).T
        ax.errorbar(mid, y, xerr=err, fmt="o")
        ax.axvline(float(level), color="k", ls="--", lw=0.8)
        ax.set_yticks(y, [f"{s['label']} (n={s['n_pixels']})" for s in rows], fontsize=7)
        ax.set(xlabel=f"coverage of the {float(level):.0%} interval", title=f"by {group}", xlim=(0, 1))
    return fig


def latent_kl(history: pd.DataFrame) -> Figure:
    """Validation KL per latent dimension [nats] at the kept (best) epoch of the cVAE."""
    columns = sorted(
        (c for c in history.columns if c.startswith("val_kl_dim_")), key=lambda c: int(c.rsplit("_", 1)[1])
    )
    best = int(history["best_epoch"].iloc[-1]) if "best_epoch" in history else int(history["epoch"].iloc[-1])
    row = history.loc[history["epoch"] == best].iloc[0]
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    ax.bar(range(len(columns)), [row[c] for c in columns])
    ax.set(xlabel="latent dimension", ylabel="KL [nats]", title=f"cVAE latent usage at epoch {best}", yscale="log")
    return fig


def radial_profile(radius: np.ndarray, exsitu: np.ndarray) -> Figure:
    """The radial-profile baseline: training-set mean ex-situ fraction vs r / rhalf."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    ax.plot(radius, exsitu, "o-")
    ax.set(xlabel=r"$r / r_{1/2}$", ylabel="mean ex-situ fraction", ylim=(0, 1))
    return fig
