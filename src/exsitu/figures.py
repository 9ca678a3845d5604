"""The report's figures as matplotlib Figures, each named after what it shows: the data, training curves,
the paper's Fig. 2 (example posteriors) and Fig. 3 (residuals), the integrated fraction by stellar mass,
calibration (coverage, TARP, strata, functionals' rank histograms) and the residual diagnostics.

Most take blocks of metrics.json (``exsitu.evaluation``) or noise_scale.json's ``diagnostics``
(``exsitu.residual_diagnostics``) as they are. Fractions are dimensionless ex-situ mass fractions in
[0, 1]; radii in units of r_half.
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
    medians: Mapping[str, np.ndarray],
    std: np.ndarray,
    *,
    mask: np.ndarray,
    labels: Sequence[str],
) -> Figure:
    """The paper's Fig. 2: per row one test map: its condition maps, truth, per-pixel posterior medians, std.

    conditions (E, C, P, P) physical units, ``channels`` their names (contracts.CHANNELS order);
    truth, std (the flow posterior's), mask and each of ``medians`` (E, P, P).
    """
    style = {name: (label, cmap) for name, label, cmap in zip(CHANNELS, CONDITION_LABELS, CONDITION_CMAPS)}
    n_cond = len(channels)
    n_cols = n_cond + 1 + len(medians) + 1
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
        for k, (mode, median) in enumerate(medians.items()):
            _show(axrow[n_cond + 1 + k], median[row], m, f"median ({mode})", "inferno", vmin=0, vmax=1)
        _show(axrow[-1], std[row], m, "std (flow)", "Greys", vmin=0)
    return fig


def _values(estimates: Sequence[Mapping[str, float | None] | None]) -> tuple[np.ndarray, np.ndarray]:
    """Values (n,) and asymmetric error bars (2, n) of metrics.json estimates; NaN where undefined."""
    value = np.array([np.nan if not e or e.get("value") is None else e["value"] for e in estimates], dtype=float)
    low = np.array([np.nan if not e or e.get("low") is None else e["low"] for e in estimates], dtype=float)
    high = np.array([np.nan if not e or e.get("high") is None else e["high"] for e in estimates], dtype=float)
    return value, np.nan_to_num(np.stack([value - low, high - value]), nan=0.0).clip(min=0.0)


def _label(estimate: Mapping[str, float | None] | None, fmt: str = "{:.2f}") -> str:
    """ "value [low, high]" of a metrics.json estimate for a legend; "–" parts where undefined."""
    value, err = _values([estimate])
    if np.isnan(value[0]):
        return "–"
    low, high = value[0] - err[0, 0], value[0] + err[1, 0]
    return f"{fmt.format(value[0])} [{fmt.format(low)}, {fmt.format(high)}]"


def residuals(blocks: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Fig. 3a (residual distribution) and 3b (residual vs true fraction) of point estimates (metrics blocks with
    ``mae``, ``residuals``, ``residual_vs_truth``), one line per method."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for name, block in blocks.items():
        res = block["residuals"]
        edges, counts = np.asarray(res["hist_edges"]), np.asarray(res["hist_counts"], dtype=float)
        left.stairs(
            counts / max(counts.sum(), 1) / np.diff(edges), edges, label=f"{name} (MAE {block['mae']['value']:.3f})"
        )
        binned = block["residual_vs_truth"]
        centres = 0.5 * (np.asarray(binned["edges"][1:]) + np.asarray(binned["edges"][:-1]))
        median, lo, hi = (np.array([np.nan if v is None else v for v in binned[k]]) for k in ("median", "p16", "p84"))
        line = right.plot(centres, median, "o-", label=name)[0]
        right.fill_between(centres, lo, hi, color=line.get_color(), alpha=0.12)
    left.set(
        xlabel="predicted - true ex-situ fraction (galaxy pixels)", ylabel="density", title="(a) residual distribution"
    )
    left.axvline(0, color="k", lw=0.5)
    left.legend(fontsize=7)
    right.axhline(0, color="k", lw=0.5)
    right.set(xlabel="true ex-situ fraction", ylabel="residual: median, 16-84%", title="(b) residual vs true fraction")
    right.legend(fontsize=7)
    return fig


def integrated_by_mass(methods: Mapping[str, Mapping[str, Any]], apertures: Mapping[str, str]) -> Figure:
    """RMS, bias and scatter of the integrated ex-situ fraction per stellar-mass bin (rows) and aperture (columns),
    one series per method (``methods``: name -> metrics ``integrated`` block; ``apertures``: name -> label).
    Open markers: bins with too few galaxies for the bootstrap."""
    keys = ("rms", "bias", "scatter")
    fig, axes = plt.subplots(
        len(keys), len(apertures), figsize=(3.8 * len(apertures), 7.5), layout="constrained", squeeze=False,
        sharex=True, sharey="row",
    )  # fmt: skip
    for k, (name, block) in enumerate(methods.items()):
        for col, aperture in enumerate(apertures):
            rows = block[aperture]["by_mass"]
            centre = np.array([np.mean(r["log_mstar"]) for r in rows]) + 0.02 * (k - len(methods) / 2)
            few = np.array([r["few_galaxies"] for r in rows])
            for row, key in enumerate(keys):
                ax = axes[row, col]
                value, err = _values([r.get(key) for r in rows])
                line = ax.errorbar(centre, value, yerr=err, fmt="-", lw=0.8, label=name)
                colour = line[0].get_color()
                ax.plot(centre[~few], value[~few], "o", color=colour)
                ax.plot(centre[few], value[few], "o", mfc="none", color=colour)
    for col, label in enumerate(apertures.values()):
        axes[0, col].set_title(f"integrated, {label}")
        axes[-1, col].set_xlabel(r"$\log_{10} M_*$ [M$_\odot$]")
        axes[1, col].axhline(0, color="k", lw=0.5)
    for row, key in enumerate(keys):
        axes[row, 0].set_ylabel(f"{key} (predicted - true)")
    axes[0, 0].legend(fontsize=7)
    return fig


def integrated_scatter(
    true: Mapping[str, np.ndarray], flow: Mapping[str, np.ndarray], trees: Mapping[str, np.ndarray],
    apertures: Mapping[str, str],
) -> Figure:  # fmt: skip
    """Predicted against true integrated ex-situ fraction per test map, one panel per aperture: the flow posterior's
    median with its 16-84% interval (``flow``: aperture -> (N, 3)) and the tree baseline (aperture -> (N,))."""
    size = (4.2 * len(apertures), 4.2)
    fig, axes = plt.subplots(1, len(apertures), figsize=size, layout="constrained", squeeze=False)
    for ax, (aperture, label) in zip(axes[0], apertures.items()):
        t, q = true[aperture], flow[aperture]
        ax.errorbar(
            t, q[:, 1], yerr=np.clip([q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]], 0, None), fmt="o", ms=3, lw=0.6,
            alpha=0.7, label="flow: posterior median, 16-84%",
        )  # fmt: skip
        ax.plot(t, trees[aperture], "s", ms=3, alpha=0.7, label="trees")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel=f"true integrated fraction, {label}", ylabel="predicted", xlim=(0, 1), ylim=(0, 1))
    axes[0, 0].legend(fontsize=7)
    return fig


def calibration_curves(modes: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Per-pixel expected-coverage curves and TARP whole-map curves (uniform and posterior references)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3), layout="constrained")
    for name, block in modes.items():
        curve = block["coverage_curve"]
        axes[0].plot(curve["nominal"], curve["observed"], label=f"{name} (68%: {_label(block['coverage']['0.68'])})")
        for ax, reference in zip(axes[1:], ("uniform", "posterior")):
            tarp = block["tarp"][reference]
            line = ax.plot(tarp["alpha"], tarp["ecp"], label=f"{name} (ATC {_label(tarp['atc'], '{:+.2f}')})")
            ax.fill_between(tarp["alpha"], tarp["ecp_low"], tarp["ecp_high"], color=line[0].get_color(), alpha=0.15)
    titles = ("per-pixel coverage (randomized PIT)", "TARP, uniform references", "TARP, held-out posterior reference")
    for ax, title in zip(axes, titles):
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel=r"credibility level $\alpha$", ylabel="expected coverage", title=title, xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    return fig


def stratified_coverage(
    strata: Mapping[str, Sequence[Mapping[str, Any]]], groups: Sequence[str], level: str = "0.68"
) -> Figure:
    """Per-pixel coverage of the central ``level`` interval per stratum, one panel per group of strata (``by`` of
    metrics ``strata``) and one series per posterior (``strata``: posterior -> its strata), with intervals."""
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4.2), layout="constrained", squeeze=False)
    for ax, group in zip(axes[0], groups):
        chosen = {name: [s for s in rows if s["by"] == group] for name, rows in strata.items()}
        # Pixel counts by truth, radius or mass are the same for every posterior; by median they are not.
        counts = {tuple(s["n_pixels"] for s in rows) for rows in chosen.values()}
        labels = [
            s["label"] + (f" (n={s['n_pixels']})" if len(counts) == 1 else "") for s in next(iter(chosen.values()))
        ]
        for k, (name, rows) in enumerate(chosen.items()):
            value, err = _values([s["coverage"].get(level) for s in rows])
            ax.errorbar(value, np.arange(len(rows)) + 0.12 * (k - len(strata) / 2), xerr=err, fmt="o", ms=4, label=name)
        ax.axvline(float(level), color="k", ls="--", lw=0.8)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=7)
        ax.set(xlabel=f"coverage of the {float(level):.0%} interval", title=f"by {group}", xlim=(0, 1))
    axes[0, -1].legend(fontsize=7)
    return fig


def functional_ranks(modes: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> Figure:
    """SBC rank histograms of every functional (columns; ``labels``: name -> title) for every posterior (rows)."""
    # A fixed grid: constrained layout would cost seconds on these many small panels.
    fig, axes = plt.subplots(
        len(modes), len(labels), figsize=(2.1 * len(labels), 1.9 * len(modes) + 0.4), squeeze=False, sharex=True,
        sharey=True, gridspec_kw={"left": 0.06, "right": 0.99, "bottom": 0.1, "top": 0.92, "hspace": 0.45},
    )  # fmt: skip
    for row, (name, block) in zip(axes, modes.items()):
        for ax, (functional, label) in zip(row, labels.items()):
            hist = block["functionals"][functional].get("rank_histogram")
            if hist is not None:
                edges = np.asarray(hist["edges"])
                ax.stairs(np.asarray(hist["fraction"]) * (len(edges) - 1), edges, fill=True, alpha=0.6)
                ax.set_title(f"{label}\nKS p {hist['ks_pvalue']:.2g}", fontsize=7)
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
        row[0].set_ylabel(f"{name}\ndensity", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("rank of the truth", fontsize=7)
    return fig


#: Reference lines of :func:`residual_tails`: a right Gaussian model's kurtosis, share beyond 1.96, mean e^2.
TAIL_PANELS: tuple[tuple[str, str, float], ...] = (
    ("kurtosis", "marginal kurtosis", 3.0),
    ("tail_1.96", "share |u| > 1.96", 0.05),
    ("joint_mean_square", r"mean $e^2$ (whitened)", 1.0),
)


def residual_tails(blocks: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Residual diagnostics in bins of the truth (top) and of the likelihood's median (bottom): marginal kurtosis,
    share beyond 1.96 and mean squared whitened residual, one line per block (``blocks``: name -> a block of
    noise_scale.json ``diagnostics``, e.g. "recalibrated, flow"); dashed: a right Gaussian model."""
    views = (("by_truth", "true fraction"), ("by_prediction", "likelihood median"))
    fig, axes = plt.subplots(len(views), len(TAIL_PANELS), figsize=(13, 6.5), layout="constrained", sharex=True)
    for name, block in blocks.items():
        for (view, _), axrow in zip(views, axes):
            for ax, (key, _, _) in zip(axrow, TAIL_PANELS):
                value = [b[key] if key == "joint_mean_square" else b["marginal"].get(key) for b in block[view]]
                ax.plot(np.array([np.nan if v is None else v for v in value], dtype=float), "o-", ms=4, label=name)
    for (view, xlabel), axrow in zip(views, axes):
        labels = [b["label"] for b in next(iter(blocks.values()))[view]]
        for ax, (_, ylabel, reference) in zip(axrow, TAIL_PANELS):
            ax.axhline(reference, color="k", ls="--", lw=0.8)
            ax.set(ylabel=ylabel, yscale="log")
            ax.set_xticks(np.arange(len(labels)), labels, rotation=60, fontsize=6)
        axrow[1].set_title(f"by {xlabel}", fontsize=9)
    axes[0, 0].legend(fontsize=6)
    return fig


def mahalanobis_per_pixel(blocks: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Per-map Mahalanobis distance per pixel M/n: its 5, 16, 50, 84, 95% quantiles over validation maps (thick:
    16-84%) against the model's own (grey), per block (``blocks`` as in :func:`residual_tails`); a wider spread
    than the model's means per-map tails."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
    for k, block in enumerate(blocks.values()):
        m = block["mahalanobis_per_pixel"]
        for offset, q, colour in ((0.15, m["quantiles"], "tab:blue"), (-0.15, m["expected_quantiles"], "grey")):
            ax.plot([q["0.05"], q["0.95"]], [k + offset] * 2, color=colour, lw=1)
            ax.plot([q["0.16"], q["0.84"]], [k + offset] * 2, color=colour, lw=5, solid_capstyle="butt")
            ax.plot(q["0.5"], k + offset, "|", color="k", ms=10)
    ax.set_yticks(np.arange(len(blocks)), list(blocks), fontsize=8)
    ax.axvline(1.0, color="k", ls="--", lw=0.8)
    ax.set(xscale="log", xlabel="M / n per map (blue: validation maps, grey: the model)")
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
    """The radial-profile baseline: training-set median ex-situ fraction vs r / r_half."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    ax.plot(radius, exsitu, "o-")
    ax.set(xlabel=r"$r / r_{1/2}$", ylabel="median ex-situ fraction", ylim=(0, 1))
    return fig
