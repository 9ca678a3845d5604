"""Diagnostics of the map likelihood's residuals on held-out maps: do the tails live per map, per pixel, or both?

For every validation map one latent is drawn from the encoder given the true map
(``reconstruction``: the likelihood at the map's own z) and one from the flow (``flow``: what a
user samples), each decoded to its likelihood (``exsitu.likelihood.MapLikelihood``), and the
truth's residual under it is standardised in two ways. g is the residual in the likelihood's
Gaussian core (the logit residual, with sinh-arcsinh tails undone), S = F F^T + diag(d) its scale
matrix, n the map's galaxy pixels.

- Marginal scores u_i = Phi^-1(F_i(g_i / sqrt(S_ii))), F_i the core's marginal CDF (N(0, 1), or
  t_nu for the Student-t families): N(0, 1) under a right model whatever the correlations. Their
  kurtosis (3 when right) and tail shares P(|u| > 1), P(|u| > 1.96), P(|u| > 2.576) (0.317, 0.05
  and 0.01 when right; one minus each is the coverage of the likelihood's central 68.3%, 95% and
  99% intervals at that z) are what per-pixel interval coverage sees: the marginal's tails, from any source.
- Jointly whitened residuals e = W g, W = (I + A A^T)^-1/2 D^-1/2 with A = D^-1/2 F (a thin SVD
  of A, O(n r^2)): W S W^T = I, so e ~ N(0, I_n) under a right Gaussian, and |e|^2 = M, the
  Mahalanobis distance g^T S^-1 g.
  - ``joint``: e pooled over maps: kurtosis from per-map AND per-pixel tails;
  - ``joint_within_map``: e / sqrt(M / n), each map's own scale divided out: kurtosis above 3 here
    is PER-PIXEL tails (outlying pixels within a map);
  - ``mahalanobis_per_pixel``: M / n per map. For a right Gaussian it is chi^2_n / n, ~1 +- sqrt(2 / n);
    a spread across maps wider than that is PER-MAP tails (for the Student-t families M / n follows
    F(n, nu)). Reported: galaxy-weighted quantiles, the model's own quantiles at the median n, and
    the PIT of each map's M under the model (uniform when right) with a KS test.
- ``by_truth``: the marginal scores' moments and tail shares and the mean e_i^2 (1 when right: where
  the Mahalanobis distance comes from) in bins of the true fraction, from the clip at 0 (truth <=
  eps, which the logit maps to the clip) to the clip at 1. Binned by the truth, even a right model
  bends (a rare true value is pulled towards the prior): ``by_prediction``, the same in bins of the
  likelihood's median fraction sigmoid(loc), is the calibration view.

Blocks are given ``as_trained`` (noise scales 1) and ``recalibrated`` (at the fitted scales).
Pixels are weighted so that every galaxy counts once (maps 1 / n_los). Units: everything is
dimensionless (standardised residuals, or M / n).

JSON (the ``diagnostics`` key of results/models/noise_scale.json)::

    {"family": str, "dof": float | null, "logit_eps": float, "noise": {"lowrank", "diagonal"},
     "n_maps": int, "n_galaxies": int, "weighting": str,
     "as_trained" | "recalibrated": {"reconstruction" | "flow": {
        "n_pixels": int,
        "marginal" | "joint" | "joint_within_map": MOMENTS,
        "expected_joint_kurtosis": float | null,          # 3 (Gaussian), 3 (nu-2)/(nu-4) (Student-t)
        "mahalanobis_per_pixel": {"quantiles": {"0.05": .., "0.16", "0.5", "0.84", "0.95"},
                                  "expected_quantiles": {same keys}, "median_pixels": int,
                                  "pit_quantiles": {same keys}, "pit_ks_statistic": float, "pit_ks_pvalue": float},
        "by_truth" | "by_prediction": [{"label": str, "low": float, "high": float, "n_pixels": int,
                      "marginal": MOMENTS, "joint_mean_square": float | null}, ...]}}}
    MOMENTS = {"n_pixels": int, "mean", "std", "kurtosis", "tail_1", "tail_1.96", "tail_2.576": float | null}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import special, stats

from exsitu.bootstrap import galaxy_weights
from exsitu.calibration import weighted_ks_uniform
from exsitu.cvae import CVAE
from exsitu.dataset import MapSet
from exsitu.flow import LatentFlow
from exsitu.likelihood import MapLikelihood, NoiseScales
from exsitu.sample import decoded_in_chunks

MODES = ("reconstruction", "flow")
QUANTILES = (0.05, 0.16, 0.5, 0.84, 0.95)
TAIL_LEVELS = (1.0, 1.96, 2.576)  # two-sided 31.7%, 5% and 1% points of N(0, 1): 1 - share = coverage
#: Interior edges of the truth bins; the clips at eps and 1 - eps are added as bins of their own.
TRUTH_EDGES = (0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99)


@dataclass
class Moments:
    """Weighted running moments of standardised values, and their tail shares."""

    count: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(5 + len(TAIL_LEVELS)))

    def add(self, values: np.ndarray, weights: np.ndarray) -> None:
        """Add values (n,) with weights (n,)."""
        v, w = np.asarray(values, np.float64), np.asarray(weights, np.float64)
        tails = [np.sum(w * (np.abs(v) > level)) for level in TAIL_LEVELS]
        self.sums += [np.sum(w), *(np.sum(w * v**k) for k in range(1, 5)), *tails]
        self.count += v.size

    def mean_square(self) -> float | None:
        return float(self.sums[2] / self.sums[0]) if self.sums[0] > 0 else None

    def to_dict(self) -> dict[str, Any]:
        if self.sums[0] <= 0:
            return {"n_pixels": self.count, "mean": None, "std": None, "kurtosis": None}
        w, s1, s2, s3, s4 = self.sums[:5]
        mean = s1 / w
        var = s2 / w - mean**2
        fourth = s4 / w - 4 * mean * s3 / w + 6 * mean**2 * s2 / w - 3 * mean**4
        out = {"n_pixels": self.count, "mean": float(mean), "std": float(np.sqrt(max(var, 0.0)))}
        out["kurtosis"] = float(fourth / var**2) if var > 0 else None
        out |= {f"tail_{level:g}": float(t / w) for level, t in zip(TAIL_LEVELS, self.sums[5:])}
        return out


def truth_bins(eps: float) -> list[tuple[str, float, float]]:
    """(label, low, high) of the truth bins: the clip at 0 (truth <= eps), interior bins (low, high], the
    last one open above, and the clip at 1 (truth >= 1 - eps)."""
    edges = [eps, *(e for e in TRUTH_EDGES if eps < e < 1 - eps), 1 - eps]
    interior = [(f"{lo:g}-{hi:g}", lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
    return [(f"<= {eps:g} (clip)", 0.0, eps), *interior, (f">= {1 - eps:g} (clip)", 1 - eps, 1.0)]


def truth_bin_index(truth: np.ndarray, eps: float) -> np.ndarray:
    """The :func:`truth_bins` bin of each true fraction (every value in exactly one bin)."""
    interior_edges = [e for e in TRUTH_EDGES if eps < e < 1 - eps]
    index = 1 + np.digitize(truth, interior_edges, right=True)
    index[truth <= eps] = 0
    index[truth >= 1 - eps] = len(interior_edges) + 2
    return index


def whiten(likelihood: MapLikelihood, core: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Jointly whitened core residuals e = W g (see the module doc): (N, P*P), 0 off the mask.

    core: (N, P*P) the core residual g (``MapLikelihood.core_residual``); |e|^2 is the Mahalanobis distance.
    """
    m = mask.flatten(1).double()
    inv_std = torch.exp(-0.5 * likelihood.log_var.flatten(1).double()) * m
    y = core.double() * inv_std
    if likelihood.rank == 0:
        return y
    a = likelihood.factors.flatten(2).double().transpose(1, 2) * inv_std[..., None]  # (N, n, r)
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    shrink = torch.rsqrt(1 + s**2) - 1
    return y + (u @ (shrink[..., None] * (u.transpose(1, 2) @ y[..., None])))[..., 0]


@dataclass
class ModeDiagnostics:
    """Accumulates one block (one noise setting, one latent mode) over chunks of maps."""

    eps: float
    marginal: Moments = field(default_factory=Moments)
    joint: Moments = field(default_factory=Moments)
    within: Moments = field(default_factory=Moments)
    by_truth: list[tuple[Moments, Moments]] = field(default_factory=list)
    by_prediction: list[tuple[Moments, Moments]] = field(default_factory=list)
    per_pixel: list[np.ndarray] = field(default_factory=list)  # M / n per map
    pit: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_truth = [(Moments(), Moments()) for _ in truth_bins(self.eps)]
        self.by_prediction = [(Moments(), Moments()) for _ in truth_bins(self.eps)]

    def add(self, likelihood: MapLikelihood, truth: torch.Tensor, mask: torch.Tensor, map_weights: np.ndarray) -> None:
        """Add maps: their likelihoods, truth (n, 1, P, P), mask (n, 1, P, P) and weights (n,)."""
        mask = likelihood.density_mask(truth, mask)  # censored pixels have no residual
        with torch.no_grad():
            core, _ = likelihood.core_residual(truth, mask)
            std = torch.exp(0.5 * likelihood.marginal_log_var()).flatten(1)
            e = whiten(likelihood, core, mask)
        keep = mask.flatten(1).cpu().numpy()
        n = keep.sum(1)
        e = e.cpu().numpy()
        mahalanobis = (e**2).sum(1)
        standard = (core / std).double().cpu().numpy()
        dof = likelihood.nu
        # The marginal CDF of the core through the normal quantile: u is N(0, 1) under a right model
        # (from the lower tail, where both functions keep their precision).
        lower = np.clip(special.stdtr(dof, -np.abs(standard)), 1e-300, 0.5) if dof is not None else None
        u = standard if dof is None else -np.sign(standard) * special.ndtri(lower)
        pixel_weights = np.broadcast_to(map_weights[:, None], keep.shape)[keep]
        # A map whose every galaxy pixel is censored (cvae.censored) or at the clip (cvae.hurdle) has no
        # residual: it has no Mahalanobis distance or PIT, and its rows of ``within`` are dropped by ``keep``.
        has = n > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            pit = stats.chi2.cdf(mahalanobis, n) if dof is None else stats.f.cdf(mahalanobis / n, n, dof)
            values = {"u": u[keep], "e": e[keep], "within": (e / np.sqrt(mahalanobis / n)[:, None])[keep]}
        self.marginal.add(values["u"], pixel_weights)
        self.joint.add(values["e"], pixel_weights)
        self.within.add(values["within"], pixel_weights)
        median = torch.sigmoid(likelihood.loc.float()).flatten(1).cpu().numpy()[keep]
        for binned, fraction in ((self.by_truth, truth.flatten(1).cpu().numpy()[keep]), (self.by_prediction, median)):
            which = truth_bin_index(fraction, self.eps)
            for b, (marginal, joint) in enumerate(binned):
                inside = which == b
                marginal.add(values["u"][inside], pixel_weights[inside])
                joint.add(values["e"][inside], pixel_weights[inside])
        self.per_pixel.append(mahalanobis[has] / n[has])
        self.pit.append(pit[has])
        self.weights.append(map_weights[has])
        self.pixels.append(n[has])

    def to_dict(self, dof: float | None, n_galaxies: int) -> dict[str, Any]:
        per_pixel, pit, weights = (np.concatenate(v) for v in (self.per_pixel, self.pit, self.weights))
        n_med = int(np.median(np.concatenate(self.pixels)))
        reference = stats.chi2(n_med, scale=1 / n_med) if dof is None else stats.f(n_med, dof)
        ks, ks_p = weighted_ks_uniform(pit, weights, n_galaxies)
        expected_kurtosis = 3.0 if dof is None else (3 * (dof - 2) / (dof - 4) if dof > 4 else None)
        return {
            "n_pixels": self.marginal.count,
            "marginal": self.marginal.to_dict(),
            "joint": self.joint.to_dict(),
            "joint_within_map": self.within.to_dict(),
            "expected_joint_kurtosis": expected_kurtosis,
            "mahalanobis_per_pixel": {
                "quantiles": _named(weighted_quantiles(per_pixel, weights, QUANTILES)),
                "expected_quantiles": _named(reference.ppf(QUANTILES)),
                "median_pixels": n_med,
                "pit_quantiles": _named(weighted_quantiles(pit, weights, QUANTILES)),
                "pit_ks_statistic": ks,
                "pit_ks_pvalue": ks_p,
            },
            **{name: [
                {"label": label, "low": low, "high": high, "n_pixels": marginal.count,
                 "marginal": marginal.to_dict(), "joint_mean_square": joint.mean_square()}
                for (label, low, high), (marginal, joint) in zip(truth_bins(self.eps), binned)
            ] for name, binned in (("by_truth", self.by_truth), ("by_prediction", self.by_prediction))},
        }  # fmt: skip


def _named(values: np.ndarray) -> dict[str, float]:
    return {f"{q:g}": float(v) for q, v in zip(QUANTILES, values)}


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels: Iterable[float]) -> np.ndarray:
    """Quantiles of ``values`` under ``weights`` (the inverse of the weighted empirical CDF, mid-point rule)."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, np.float64)[order], np.asarray(weights, np.float64)[order]
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()
    return np.interp(list(levels), cdf, v)


def diagnose(
    cvae: CVAE,
    flow: LatentFlow,
    chunks: Iterable[MapSet],
    table: pd.DataFrame,
    seed: int,
    noise: NoiseScales,
    *,
    scalars: Sequence[str] = (),
) -> dict[str, Any]:
    """The residual diagnostics of the validation maps streamed as ``chunks`` (the JSON of the module doc).

    table: the subset's split rows (galaxy weights); map i draws its latents with seed ``seed + i``.
    noise: the recalibrated scales (the ``recalibrated`` blocks); scalars: the galaxy scalars the
    model is conditioned on (``conditions.scalars``).
    """
    galaxies, _, map_weights = galaxy_weights(table["galaxy_id"].to_numpy())
    eps, dof = cvae.cfg.logit_eps, cvae.decoder.dof()
    dof = None if dof is None else float(dof.detach())
    settings = {"as_trained": NoiseScales(), "recalibrated": noise}
    blocks = {s: {mode: ModeDiagnostics(eps) for mode in MODES} for s in settings}
    device = next(cvae.parameters()).device
    n_maps = 0
    for chunk in chunks:
        rows = chunk.table.index.to_numpy()
        for mode in MODES:
            for _, passes in decoded_in_chunks(
                cvae, chunk.conditions, 1, mode, seeds=seed + rows, flow=flow, exsitu=chunk.exsitu,
                scalars=chunk.scalars(scalars), maps_per_chunk=len(chunk), with_noise=False,
            ):  # fmt: skip
                for step in passes:  # one sample per map: the pairs are the maps
                    truth = chunk.exsitu[step.pairs].to(device)
                    for name, scales in settings.items():
                        blocks[name][mode].add(
                            step.likelihood.scaled(scales), truth, step.mask, map_weights[rows[step.pairs]]
                        )
        n_maps += len(chunk)
    return {
        "family": cvae.cfg.likelihood,
        "dof": dof,
        "logit_eps": eps,
        "noise": asdict(noise),
        "n_maps": n_maps,
        "n_galaxies": len(galaxies),
        "weighting": "pixels weighted 1 / n_los of their map's galaxy: every validation galaxy counts once",
        **{
            name: {mode: block.to_dict(dof, len(galaxies)) for mode, block in modes.items()}
            for name, modes in blocks.items()
        },
    }
