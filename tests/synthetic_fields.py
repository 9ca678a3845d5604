"""Synthetic ex-situ fraction fields with known heavy tails, maximum-likelihood fits of each likelihood
family to them, and the calibration of the fitted families (tests/test_likelihood.py and
benchmarks/bench_likelihood.py).

The truth of every process is a smooth low-rank + diagonal logit field (a few Gaussian bumps over a
radial mean that reaches the clip in the centre, as in the real maps) with tails of one kind:

- ``gaussian``: none (the fitted families must all be right);
- ``student_t``: per MAP: the whole residual of a map times sqrt(w), w ~ InvGamma(nu/2, nu/2), nu = 3;
- ``pixel_mixture``: per PIXEL: the independent part drawn from 93% N(0, 0.35^2) + 7% N(0, 2.5^2), the
  toy of issue 15 that reproduces the 0.65 / 0.92 coverage pair of the Gaussian model;
- ``quantised``: the Gaussian field's fraction seen through k = 32 particles (Binomial(k, f) / k), so
  many pixels are exactly 0 and the rest sit on steps of 1/k: the clip question.

A family is fitted by maximum likelihood (Adam on the mean NLL) with parameters shared by all maps
(one loc, log variance and tail exponent per pixel, r factor maps, one nu): the population the maps
come from, which is what the decoder learns per condition.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from exsitu.calibration import randomized_pit, tarp_atc_terms, tarp_credibility
from exsitu.likelihood import DOF_MIN, LOG_VAR_MAX, LOG_VAR_MIN, TAIL_RANGE, MapLikelihood

P = 10
PARTICLES = 32


def disc(p: int, radius: float) -> torch.Tensor:
    """(1, 1, p, p) bool: pixels whose centre lies within ``radius`` pixels of the map centre."""
    y, x = torch.meshgrid(torch.arange(p) - p / 2 + 0.5, torch.arange(p) - p / 2 + 0.5, indexing="ij")
    return (x.hypot(y) < radius)[None, None]


def smooth_field(p: int = P) -> MapLikelihood:
    """The Gaussian core of every process: radial mean logit from the clip (centre) to ~+0.5, 4 bumps, white noise."""
    y, x = torch.meshgrid(torch.arange(p) + 0.5, torch.arange(p) + 0.5, indexing="ij")
    r = (x - p / 2).hypot(y - p / 2)
    centres = [(0.25, 0.25), (0.75, 0.25), (0.5, 0.6), (0.25, 0.8)]
    bumps = torch.stack(
        [torch.exp(-((x - cx * p) ** 2 + (y - cy * p) ** 2) / (2 * (0.2 * p) ** 2)) for cx, cy in centres]
    )
    loc = (-6.0 + 1.3 * r)[None, None]
    return MapLikelihood(loc, torch.full_like(loc, 2 * math.log(0.4)), 0.8 * bumps[None])


def draw_truth(process: str, n: int, seed: int, p: int = P) -> torch.Tensor:
    """(n, 1, p, p) true fractions of ``process`` (see the module doc)."""
    g = torch.Generator().manual_seed(seed)
    core = smooth_field(p)
    coherent = (core.factors * torch.randn(n, core.rank, 1, 1, generator=g)).sum(1, keepdim=True)
    independent = torch.exp(0.5 * core.log_var) * torch.randn(n, 1, p, p, generator=g)
    if process == "pixel_mixture":
        wide = torch.rand(n, 1, p, p, generator=g) < 0.07
        independent = torch.where(wide, 2.5, 0.35) * torch.randn(n, 1, p, p, generator=g)
    residual = coherent + independent
    if process == "student_t":
        nu = 3  # w = nu / chi^2_nu
        w = nu / torch.randn(n, nu, 1, 1, generator=g).pow(2).sum(1, keepdim=True)
        residual = residual * torch.sqrt(w)
    fraction = torch.sigmoid(core.loc + residual)
    if process == "quantised":  # Binomial(k, f) / k
        fraction = (torch.rand(n, PARTICLES, p, p, generator=g) < fraction).float().mean(1, keepdim=True)
    return fraction


def fit_family(
    family: str, truth: torch.Tensor, mask: torch.Tensor, rank: int = 4, eps: float = 1e-3, steps: int = 400
) -> MapLikelihood:
    """The maximum-likelihood ``family`` for maps ``truth`` (n, 1, p, p), parameters shared by all maps."""
    n, _, p, _ = truth.shape
    x = torch.logit(truth.clamp(eps, 1 - eps))
    m = mask.expand_as(truth)
    loc = (x * m).sum(0, keepdim=True) / m.sum(0, keepdim=True).clamp_min(1)
    # Start from the probabilistic-PCA fit (Tipping & Bishop 1999), the Gaussian's maximum likelihood.
    keep = mask[0, 0].flatten()
    residual = (x - loc).flatten(1)[:, keep]
    values, vectors = torch.linalg.eigh(torch.cov(residual.T))
    noise = values[:-rank].mean()
    factors = torch.zeros(rank, p * p)
    factors[:, keep] = (vectors[:, -rank:] * (values[-rank:] - noise).clamp_min(0).sqrt()).T
    params = {
        "loc": loc,
        "log_var": torch.full((1, 1, p, p), float(noise.log())),
        "factors": factors.view(1, rank, p, p),
        "log_dof": torch.tensor(math.log(10.0 - DOF_MIN)),
        "tail": torch.full((1, 1, p, p), -2.0),
    }
    for t in params.values():
        t.requires_grad_()
    optimiser = torch.optim.Adam(params.values(), lr=0.03)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = _likelihood(family, params, n, eps).nll(truth, m).mean() / m[0].sum()
        loss.backward()
        optimiser.step()
    return _likelihood(family, {k: t.detach() for k, t in params.items()}, n, eps)


def _likelihood(family: str, params: dict[str, torch.Tensor], n: int, eps: float) -> MapLikelihood:
    expand = lambda t: t.expand(n, *t.shape[1:])  # noqa: E731
    return MapLikelihood(
        expand(params["loc"]),
        expand(params["log_var"].clamp(LOG_VAR_MIN, LOG_VAR_MAX)),
        expand(params["factors"]),
        dof=DOF_MIN + params["log_dof"].exp() if family.startswith("student_t") else None,
        tail=expand(1 + TAIL_RANGE * torch.sigmoid(params["tail"])) if family.endswith("sinh_arcsinh") else None,
        eps=eps,
    )


def calibration(
    likelihood: MapLikelihood, truth: torch.Tensor, mask: torch.Tensor, n_samples: int, seed: int
) -> dict[str, float]:
    """Per-pixel coverage of the central 68% and 95% intervals and TARP (ATC, KS p, both references)
    of ``n_samples`` draws per map from ``likelihood`` (one map's, broadcast) for the maps ``truth``."""
    n = truth.shape[0]
    one = MapLikelihood(
        *(t[:1].expand(n * n_samples, *t.shape[1:]) for t in (likelihood.loc, likelihood.log_var, likelihood.factors)),
        dof=likelihood.dof,
        tail=None if likelihood.tail is None else likelihood.tail[:1].expand(n * n_samples, *likelihood.tail.shape[1:]),
        eps=likelihood.eps,
    )
    keep = mask[0, 0]
    draws = one.sample(mask, torch.Generator().manual_seed(seed))[:, 0][:, keep].view(n, n_samples, -1).numpy()
    target = truth[:, 0][:, keep].numpy()
    rng = np.random.default_rng(seed)
    half_width = np.abs(randomized_pit(draws.transpose(0, 2, 1), target, rng) - 0.5)
    out = {f"coverage_{level:g}": float(np.mean(half_width <= level / 2)) for level in (0.68, 0.95)}
    for reference in ("uniform", "posterior"):
        credibility = tarp_credibility(draws, target, rng, reference=reference)
        out[f"atc_{reference}"] = float(tarp_atc_terms(credibility).mean())
        out[f"ks_p_{reference}"] = float(stats.kstest(credibility, "uniform").pvalue)
    return out
