"""The likelihood of a whole ex-situ fraction map: low-rank + diagonal logit families with tails.

Why not independent pixels: the maps are smooth fields (particles are smoothed onto pixels),
so what the conditions leave open about one pixel is shared with its neighbours. Independent
per-pixel noise with the right marginals gives right per-pixel intervals but whole maps that
are jointly far too rough; summed over hundreds of pixels that makes whole-map tests (TARP,
Lemos et al. 2023) fail even when every pixel's interval is calibrated.

The families (config ``cvae.likelihood``, :data:`FAMILIES`) share one Gaussian core. Over the n
galaxy pixels of a map, with x = logit(clip(y, eps, 1 - eps)) the target in logit space,

    g = F e + sqrt(d) h,   e ~ N(0, I_r), h ~ N(0, I_n),   i.e.  g ~ N(0, S),  S = F F^T + diag(d),

r factor maps F (the coherent part of the residual: its large-scale modes) and a diagonal d. The
probabilistic-PCA maximum-likelihood fit of F (Tipping & Bishop 1999) puts the r largest-variance
modes of the residual into F and their average excess into d. Every log-likelihood uses the
matrix determinant lemma and the Woodbury identity (O(n r^2), never an n x n matrix).

- ``gaussian``: x = loc + g.
- ``student_t``: x = loc + sqrt(w) g with one w ~ InvGamma(nu/2, nu/2) per map, i.e. a
  multivariate Student-t with nu degrees of freedom and scale matrix S (a Gaussian scale
  mixture): per-MAP tails. A map whose whole residual is larger than the model's typical map
  (a rare merger, a mis-centred galaxy) costs log(1 + M/nu) instead of M/2, M the Mahalanobis
  distance. Same Woodbury algebra. nu is one learned number per model (``Decoder.dof``):
  given n ~ 10^3 pixels a map's M/n pins its own w almost exactly, so what the data say about
  nu is the spread of M/n ACROSS maps; a per-map head would have to learn that spread from one
  number per map and is confounded with the map's scale.
- ``sinh_arcsinh``: x_i = loc_i + s_i T(g_i / s_i), T(u) = sinh(tau_i asinh(u)) (Jones & Pewsey
  2009), s_i^2 = S_ii: a Gaussian copula with heavy-tailed marginals, per-PIXEL tails whose
  exponent tau_i >= 1 the decoder predicts per pixel (tau = 1: the Gaussian; T(u) ~ u^tau for
  large u). The dependence is the Gaussian core's, so the density is the Gaussian one of
  g_i = s_i T^-1((x_i - loc_i) / s_i) times the Jacobian prod dg_i/dx_i: exact and O(n r^2).
  What is NOT tractable with the low-rank part: a Student-t (or logistic mixture) on the
  diagonal term alone, x = loc + F e + sqrt(d) t, whose density is an r-dimensional integral
  over e of a product of per-pixel densities (Monte Carlo only, a biased bound in training);
  it is tractable only at rank 0 (independent pixels). The copula keeps the correlations.
- ``student_t_sinh_arcsinh``: both (the core g is the multivariate t).

The clip: truth values are clipped to [eps, 1 - eps] (``cvae.logit_eps``, default LOGIT_EPS)
and a sample beyond the clip becomes exactly 0 (or 1), so the pure in-situ (or purely
accreted) pixels that real maps have are point masses of the predictive, as the clipped truth
is. By default a clipped pixel enters the likelihood as the density of its clipped logit, so a
symmetric family must stretch both of its tails to reach a spike of values at -6.9 logits.
``censored=True`` (config ``cvae.censored``) instead gives a pixel at or beyond the clip the
probability P(x_i <= logit(eps)) (or P(x_i >= -logit(eps))) under its own marginal, and the
other galaxy pixels their joint density: a composite (pairwise-independent) censored
likelihood. Exact censoring would need the joint CDF of every clipped pixel of a map (hundreds
at 128^2), with the low-rank structure an r-dimensional integral; the composite keeps each
censored pixel's marginal exact and drops only the dependence between the censoring events and
the rest of the map. ``hurdle`` (config ``cvae.hurdle``) is the third way: a two-part (hurdle) model.
The decoder predicts each pixel's probabilities of lying at or below the clip, inside it, or at or
above 1 - eps (a softmax of two class logits against 0 for inside), trained by their categorical
log-likelihood; the family above is the density of the pixels inside the clip only, its mean the
mean logit of those pixels. A draw reads each pixel's class off the family's own correlated core
draw: with z_i = g_i / sqrt(S_ii) (standard normal per pixel, correlated as the core) and u_i = Phi(z_i),
the pixel is at the low clip if u_i < P(low), at the high clip if u_i > 1 - P(high), and otherwise takes
the family's value at the quantile (u_i - P(low)) / P(inside) (a Gaussian copula over the classes and
values). Each pixel's class probabilities and its inside density are exactly the trained marginals, and
the classes inherit the residual's correlations: a draw whose coherent part runs low puts many pixels
at the clip together. Independent class draws (measured once, README "A hurdle at the clip") made a
map's share at the clip nearly the same in every draw, its intervals far too narrow. The composite
training likelihood (each class probability, the inside pixels' joint density) does not see the
coupling. The family is not truncated to the clip (a truncated joint density has no closed form): an
inside-class draw that falls beyond the clip becomes 0 (or 1) as well, so a pixel's probability of a
sample at the clip is its class probability plus that leak. Pixels outside the galaxy mask decouple
exactly: their factor rows and residuals are set to 0 and they add nothing to the
log-likelihood; samples there are 0.

Units: ``loc`` and samples before ``to_fraction`` are logits (dimensionless), ``log_var`` is
the log of the diagonal variance in logit^2, ``factors`` are logits; fractions are in [0, 1];
``nll`` is in nats per map, a density on [0, 1]^n (the logit Jacobian included).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from scipy import special, stats
from torch.special import log_ndtr

from exsitu.io import InputError

LOGIT_EPS = 1e-3
LOG_VAR_MIN = 2 * math.log(0.01)  # diagonal std >= 0.01 logits: clipped pixels must not give an unbounded NLL
LOG_VAR_MAX = 2 * math.log(10.0)
#: Likelihood families (config ``cvae.likelihood``): see the module doc.
FAMILIES = ("gaussian", "student_t", "sinh_arcsinh", "student_t_sinh_arcsinh")
#: Degrees of freedom of the Student-t families are kept in [DOF_MIN, DOF_MAX]: above 2 the variance
#: is finite (the mean is trained on the squared error, so it must be the mean); at 1000 the t is a Gaussian.
DOF_MIN, DOF_MAX = 2.05, 1000.0
#: The sinh-arcsinh tail exponent tau lies in (1, 1 + TAIL_RANGE).
TAIL_RANGE = 2.0
# Gauss-Legendre nodes on (0, 1) for expectations over a pixel's marginal by its quantiles: max error
# 2.5e-4 in E[sigmoid] for Gaussian and Student-t marginals (against adaptive quadrature), below the clip.
_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(32)
_QUANTILE_LEVELS, _QUANTILE_WEIGHTS = (_LEGENDRE_NODES + 1) / 2, _LEGENDRE_WEIGHTS / 2


def logit_low(eps: float) -> float:
    """The logit of the clip ``eps``: below it a sample is exactly 0 (above -logit_low(eps), exactly 1)."""
    return math.log(eps / (1 - eps))


def to_logit(fraction: torch.Tensor, eps: float = LOGIT_EPS) -> torch.Tensor:
    """Ex-situ fraction in [0, 1] -> logit of the fraction clipped to [eps, 1 - eps]."""
    return torch.logit(fraction.float().clamp(eps, 1 - eps))


def to_fraction(logit: torch.Tensor, eps: float = LOGIT_EPS) -> torch.Tensor:
    """Logit -> ex-situ fraction: the sigmoid inside the clip, exactly 0 below it and 1 above it."""
    low = logit_low(eps)
    inside = torch.sigmoid(logit)
    return torch.where(logit <= low, 0.0, torch.where(logit >= -low, 1.0, inside))


def clip_classes(fraction: torch.Tensor, eps: float = LOGIT_EPS) -> torch.Tensor:
    """The hurdle's class of each fraction (any shape, long): 0 at or below ``eps``, 2 at or above 1 - eps,
    1 inside."""
    return (fraction > eps).long() + (fraction >= 1 - eps).long()


def class_log_probs(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """log P(low clip, inside, high clip) from the hurdle's two class logits (low, high; each against 0 for
    inside) along ``dim``: the same shape with 3 there, nats."""
    low, high = logits.float().split(1, dim=dim)
    return torch.log_softmax(torch.cat([low, torch.zeros_like(low), high], dim=dim), dim=dim)


def is_noise_scale(value: object) -> bool:
    """Whether ``value`` is a valid noise scale: a finite number > 0 (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class NoiseScales:
    """Factors on the residual of a map likelihood (``MapLikelihood.scaled``), fitted by ``exsitu.recalibration``.

    lowrank multiplies the factor maps F (the correlated part), diagonal the diagonal std sqrt(d)
    (the independent part); 1, 1 is the likelihood as trained. Dimensionless, > 0.

    diagonal_slope [per logit] lets the diagonal factor depend on where the pixel's decoder mean
    lies: it is diagonal * exp(diagonal_slope * |loc|), with loc the mean logit of that draw, so
    ``diagonal`` is the factor where the mean is 1/2 and a positive slope widens the independent
    noise towards fractions of 0 and 1 against the middle (0: one factor for every pixel).

    clip_slope, clip_low, clip_high recalibrate the hurdle's two class logits (a pixel at the low and
    at the high clip, each against inside; ``MapLikelihood.hurdle``): they become clip_slope * logit
    + clip_low (or + clip_high), Platt scaling fitted on validation maps (``exsitu.hurdle_calibration``).
    1, 0, 0 keeps the classes as trained; a likelihood without the hurdle ignores them.
    """

    lowrank: float = 1.0
    diagonal: float = 1.0
    diagonal_slope: float = 0.0
    clip_slope: float = 1.0
    clip_low: float = 0.0
    clip_high: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lowrank", "diagonal", "clip_slope"):
            if not is_noise_scale(getattr(self, name)):
                raise InputError(f"noise scale '{name}' must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("diagonal_slope", "clip_low", "clip_high"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
                raise InputError(f"noise scale '{name}' must be a finite number, got {value!r}")

    @classmethod
    def from_record(cls, noise: Any, path: str | os.PathLike) -> NoiseScales:
        """The scales of the ``noise`` record of file ``path`` (noise_scale.json, model.json): 'lowrank',
        'diagonal', and optionally 'diagonal_slope' and the clip classes' 'clip_slope', 'clip_low', 'clip_high'
        (as trained in files written before them); a bad record is one clear error."""
        keys = {f.name for f in fields(cls)}
        if not isinstance(noise, dict) or not {"lowrank", "diagonal"} <= set(noise) <= keys:
            optional = sorted(keys - {"lowrank", "diagonal"})
            raise InputError(
                f"{path}: 'noise' must hold 'lowrank' and 'diagonal' (and optionally {optional}), got {noise!r}"
            )
        try:
            return cls(**noise)
        except InputError as err:
            raise InputError(f"{path}: {err}") from None

    def diagonal_factor(self, loc: torch.Tensor) -> torch.Tensor | float:
        """The factor on the diagonal std of pixels whose mean logit is ``loc`` (a float when the slope is 0)."""
        return self.diagonal if self.diagonal_slope == 0 else torch.exp(self.log_diagonal_factor(loc))

    def log_diagonal_factor(self, loc: torch.Tensor) -> torch.Tensor:
        """log of :meth:`diagonal_factor`: log(diagonal) + diagonal_slope * |loc| (loc: mean logits)."""
        return math.log(self.diagonal) + self.diagonal_slope * loc.abs()

    @property
    def classes_as_trained(self) -> bool:
        """Whether the hurdle's class logits stay as trained (clip_slope 1, no shifts)."""
        return (self.clip_slope, self.clip_low, self.clip_high) == (1.0, 0.0, 0.0)

    def class_logits(self, hurdle: torch.Tensor) -> torch.Tensor:
        """The recalibrated class logits of the hurdle's (N, 2, P, P) logits (low, high; each against inside)."""
        if self.classes_as_trained:
            return hurdle
        shift = torch.tensor([self.clip_low, self.clip_high], dtype=hurdle.dtype, device=hurdle.device)
        return self.clip_slope * hurdle + shift.view(1, 2, 1, 1)


#: The likelihood as trained.
AS_TRAINED = NoiseScales()


@dataclass
class ResidualNoise:
    """The standard random numbers behind one draw per likelihood.

    eps: (N, r) factor weights; eta: (N, 1, P, P) per-pixel normals; uniform: (N,) the uniform
    that sets the per-map scale w of the Student-t families (None for the others).
    """

    eps: torch.Tensor
    eta: torch.Tensor
    uniform: torch.Tensor | None

    @classmethod
    def draw(
        cls, n: int, rank: int, npix: int, per_map_scale: bool, generator: torch.Generator | None, device: torch.device
    ) -> ResidualNoise:
        """n draws, always in this order: e (n, r), h (n, 1, P, P), then (``per_map_scale``) n uniforms."""
        eps = torch.randn((n, rank), generator=generator, device=device)
        eta = torch.randn((n, 1, npix, npix), generator=generator, device=device)
        uniform = torch.rand(n, generator=generator, device=device) if per_map_scale else None
        return cls(eps, eta, uniform)

    def rows(self, start: int, stop: int) -> ResidualNoise:
        """Draws ``start`` to ``stop`` (exclusive)."""
        return ResidualNoise(*(None if t is None else t[start:stop] for t in (self.eps, self.eta, self.uniform)))

    @classmethod
    def cat(cls, parts: list[ResidualNoise]) -> ResidualNoise:
        """The draws of ``parts`` one after the other."""
        return cls(*(_cat_optional([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def _cat_optional(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    """``torch.cat`` of tensors that are all None (then None) or all set."""
    return None if tensors[0] is None else torch.cat(tensors)


@dataclass
class ResidualDraw:
    """One draw per likelihood kept in parts, so that a draw at other noise scales needs no decoder pass.

    ``logits(scales)`` is exactly what ``likelihood.scaled(scales)`` draws from the same random
    numbers. loc, coherent (= F e), independent (= sqrt(d) h): (N, 1, P, P) logits; mixing:
    (N, 1, 1, 1) sqrt(w) (Student-t) or None; lowrank_var, diagonal_var, tail: (N, 1, P, P) the
    two parts of S_ii (with sinh-arcsinh tails or the hurdle) and tau (sinh-arcsinh) or None;
    clip_logits: (N, 2, P, P) each pixel's class logits of the low and the high clip against inside, as
    trained (hurdle), or None.
    """

    loc: torch.Tensor
    coherent: torch.Tensor
    independent: torch.Tensor
    mixing: torch.Tensor | None
    lowrank_var: torch.Tensor | None
    diagonal_var: torch.Tensor | None
    tail: torch.Tensor | None
    eps: float
    clip_logits: torch.Tensor | None = None
    # The class probabilities at the last clip calibration asked for: every grid candidate of the
    # recalibration shares one, and they cost a full-size softmax.
    _classes: tuple[tuple[float, float, float], tuple[torch.Tensor, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def logits(self, scales: NoiseScales = AS_TRAINED) -> torch.Tensor:
        """The draw in logit space at ``scales``: (N, 1, P, P); with the hurdle, -inf (+inf) where the pixel is
        drawn at the low (high) clip."""
        diagonal = scales.diagonal_factor(self.loc)
        g = scales.lowrank * self.coherent + diagonal * self.independent
        std = None
        if self.lowrank_var is not None:
            std = torch.sqrt(scales.lowrank**2 * self.lowrank_var + diagonal**2 * self.diagonal_var)
        clipped = None
        if self.clip_logits is not None:
            g, clipped = self._hurdle(g, std, self._clip_probabilities(scales))
        if self.mixing is not None:
            g = g * self.mixing
        if self.tail is not None:
            g = std * sinh_arcsinh(g / std, self.tail)
        x = self.loc + g
        if clipped is not None:
            at_low, at_high = clipped
            x = x.masked_fill_(at_low, -math.inf).masked_fill_(at_high, math.inf)
        return x

    def _hurdle(
        self, g: torch.Tensor, std: torch.Tensor, classes: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The hurdle's Gaussian copula (module doc) with ``classes`` (P(low), P(high), P(inside)) from
        :meth:`_clip_probabilities`: from u = Phi(g / std), whether each pixel is at the low clip
        and whether at the high one (two bool masks, never both), and the inside pixels' core value
        std Phi^-1((u - P(low)) / P(inside)).

        In float32 without losing the tails: u and 1 - u are each computed from their own side (erfc), and the
        inside quantile t is inverted on the side where it is below 1/2, as Phi^-1(t) or -Phi^-1(1 - t), so
        neither rounds to 1. (A float64 version took 2-3x as long per draw, which recalibration pays at every
        grid candidate; so does every full-size operation here, hence min and copysign for the side, not where,
        and one scan for the few tail pixels.)"""
        z = (g / std) / math.sqrt(2)
        below, above = 0.5 * torch.erfc(-z), 0.5 * torch.erfc(z)  # u and 1 - u
        low, high, inside = classes
        at_low, at_high = below < low, above < high
        at_low, at_high = at_low & ~at_high, at_high & ~at_low  # both (rounding at P(inside) ~ 0): inside
        from_low, from_high = below - low, above - high  # t and 1 - t, times P(inside)
        t = (torch.minimum(from_low, from_high) / inside).clamp_min(1e-12)
        # erfinv is the fast path; below t = 1e-3 the float32 sum 2t - 1 loses t's digits, so ndtri takes those.
        core = math.sqrt(2) * torch.erfinv(2 * t - 1)  # Phi^-1(t) <= 0
        tail = torch.nonzero(t.flatten() < 1e-3).squeeze(1)
        core.view(-1).index_copy_(0, tail, torch.special.ndtri(t.flatten().index_select(0, tail)))
        # Phi^-1(t) on the low side, -Phi^-1(t) on the high side (0 at t = 1/2 either way).
        return std * torch.copysign(core, from_low - from_high), (at_low, at_high)

    def _clip_probabilities(self, scales: NoiseScales) -> tuple[torch.Tensor, ...]:
        """Each pixel's P(low clip), P(high clip) and P(inside) under the class calibration of ``scales``,
        (N, 1, P, P) each, contiguous; kept for the next call with the same calibration."""
        key = (scales.clip_slope, scales.clip_low, scales.clip_high)
        if self._classes is None or self._classes[0] != key:
            probs = class_log_probs(scales.class_logits(self.clip_logits))[:, ::2].exp()
            low, high = (side.contiguous() for side in probs.split(1, dim=1))
            self._classes = (key, (low, high, 1 - low - high))
        return self._classes[1]

    def fractions(self, mask: torch.Tensor, scales: NoiseScales = AS_TRAINED) -> torch.Tensor:
        """The draw as ex-situ fractions in [0, 1] at ``scales``, 0 outside ``mask``: (N, 1, P, P)."""
        return to_fraction(self.logits(scales), self.eps) * mask

    @classmethod
    def cat(cls, parts: list[ResidualDraw]) -> ResidualDraw:
        """The draws of ``parts`` one after the other (same family and clip)."""
        joined = {f.name: _cat_optional([getattr(p, f.name) for p in parts]) for f in fields(cls)
                  if f.init and f.name != "eps"}  # fmt: skip
        return cls(**joined, eps=parts[0].eps)


def sinh_arcsinh(u: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """T(u) = sinh(tau asinh(u)): odd, T(u) ~ tau u near 0 and ~ (2u)^tau / 2 in the tails."""
    return torch.sinh(tail * torch.asinh(u))


def arcsinh_sinh(v: torch.Tensor, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """T^-1(v) = sinh(asinh(v) / tau) and log dT^-1/dv = log cosh(asinh(v) / tau) - log tau - log sqrt(1 + v^2)."""
    a = torch.asinh(v) / tail
    log_slope = _log_cosh(a) - torch.log(tail) - 0.5 * torch.log1p(v * v)
    return torch.sinh(a), log_slope


def _log_cosh(a: torch.Tensor) -> torch.Tensor:
    """log cosh(a) without overflow: |a| + log1p(exp(-2|a|)) - log 2."""
    a = a.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


class _StudentTLogCdf(torch.autograd.Function):
    """log P(T <= u) of Student's t with ``nu`` degrees of freedom (a number or an array that broadcasts
    against u), differentiable in u (not in nu).

    scipy's ``stdtr`` in float64 (torch has no incomplete beta function); the gradient is the
    ratio of the density to the CDF, computed in the same precision.
    """

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, nu: float | np.ndarray) -> torch.Tensor:  # type: ignore[override]
        x = u.detach().double().cpu().numpy()
        # From the lower tail on each side of 0, where stdtr keeps its precision.
        log_cdf = np.where(x < 0, np.log(special.stdtr(nu, np.minimum(x, 0))), np.log1p(-special.stdtr(nu, -np.abs(x))))
        ctx.save_for_backward(torch.as_tensor(np.exp(stats.t.logpdf(x, nu) - log_cdf), dtype=u.dtype, device=u.device))
        return torch.as_tensor(log_cdf, dtype=u.dtype, device=u.device)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


def log_core_cdf(u: torch.Tensor, nu: float | np.ndarray | None) -> torch.Tensor:
    """log P(G <= u) for a standardised pixel: N(0, 1) (``nu`` None), or Student's t with ``nu`` degrees
    of freedom (a number, or an array broadcasting against u). Differentiable in u, not in nu."""
    return log_ndtr(u) if nu is None else _StudentTLogCdf.apply(u, nu)


@dataclass
class MapLikelihood:
    """p(ex-situ map | z, conditions) for N maps of P x P pixels, as the decoder predicts it.

    loc: (N, 1, P, P) mean logit; log_var: (N, 1, P, P) log diagonal variance [logit^2];
    factors: (N, r, P, P) the r factor maps [logit] (r may be 0: independent pixels);
    dof: () degrees of freedom of the per-map scale mixture (Student-t families) or None;
    tail: (N, 1, P, P) sinh-arcsinh exponent tau >= 1 (per-pixel tails) or None;
    eps: the clip of the fractions (``cvae.logit_eps``); censored: whether pixels at or beyond
    the clip are censored (``cvae.censored``, see the module doc); hurdle: (N, 2, P, P) the logits
    of a pixel at the low and at the high clip against 0 for one inside it (``cvae.hurdle``), or
    None. The family follows from which of ``dof`` and ``tail`` are set.
    """

    loc: torch.Tensor
    log_var: torch.Tensor
    factors: torch.Tensor
    dof: torch.Tensor | None = None
    tail: torch.Tensor | None = None
    eps: float = LOGIT_EPS
    censored: bool = False
    hurdle: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.factors.shape[1])

    @property
    def nu(self) -> float | None:
        """The Student-t degrees of freedom as a number (None for the other families)."""
        return None if self.dof is None else float(self.dof.detach())

    def marginal_log_var(self) -> torch.Tensor:
        """Log of each pixel's core variance S_ii = d + sum_k F_k^2: (N, 1, P, P) [log logit^2].

        The total variance of the logit is this for ``gaussian``, nu / (nu - 2) times it for
        ``student_t``; with sinh-arcsinh tails S_ii is the variance of the core g.
        """
        return torch.log(self.log_var.float().exp() + self.factors.float().pow(2).sum(1, keepdim=True))

    def density_mask(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, 1, P, P) bool: the galaxy pixels that enter by their density; without censoring or the hurdle
        all of ``mask``, with either those strictly inside the clip (eps, 1 - eps)."""
        if not self.censored and self.hurdle is None:
            return mask
        return mask.bool() & (target > self.eps) & (target < 1 - self.eps)

    def clip_log_probs(self) -> torch.Tensor:
        """log P(pixel at the low clip, inside, at the high clip) under the hurdle: (N, 3, P, P) nats."""
        return class_log_probs(self.hurdle)

    def log_clip_classes(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log P(each galaxy pixel's clip class) summed over a map's galaxy pixels: (N,) nats (0 without the
        hurdle). A pixel at or below eps is of the low class, one at or above 1 - eps of the high one."""
        if self.hurdle is None:
            return target.new_zeros(target.shape[0])
        picked = self.clip_log_probs().gather(1, clip_classes(target, self.eps))
        return (picked * mask.float()).flatten(1).sum(1)

    def log_censored(
        self,
        target: torch.Tensor,
        mask: torch.Tensor,
        fit: tuple[torch.Tensor, torch.Tensor],
        loc: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log P(x_i beyond the clip) of each censored galaxy pixel, 0 elsewhere: (N, P*P) nats (all 0 without
        censoring).

        A pixel at or below eps has P(x_i <= logit(eps)), one at or above 1 - eps P(x_i >= -logit(eps)),
        under loc_i + std_i T(G) with std_i^2 = S_ii (T the sinh-arcsinh map, or the identity) and G
        the standardised core. For the Gaussian families G ~ N(0, 1). For the Student-t families the
        map's scale w is shared by all its pixels, and the uncensored ones pin it: given them G is
        t with nu + n degrees of freedom and scale sqrt((nu + M) / (nu + n)), the multivariate t's
        conditional (M the Mahalanobis distance of the n uncensored pixels, ``fit`` = (M, n), both
        (N,)); only the conditional's shift towards the uncensored residuals is dropped. Without it
        a censored pixel would see the heavy marginal t, which rewards a wide core in maps whose
        uncensored pixels say it is narrow. ``loc`` replaces the likelihood's mean (the training
        loss passes the live one with the covariance detached).
        """
        if not self.censored:
            return target.new_zeros(target.shape[0], target[0].numel())
        loc = self.loc if loc is None else loc
        low, high = mask.bool() & (target <= self.eps), mask.bool() & (target >= 1 - self.eps)
        bound = logit_low(self.eps)
        std = torch.exp(0.5 * self.marginal_log_var())
        # Above the clip the event x >= -bound is G >= u, i.e. -G <= -u: both sides use the lower CDF.
        v = torch.where(high, (loc.float() + bound) / std, (bound - loc.float()) / std)
        u = v if self.tail is None else arcsinh_sinh(v, self.tail.float())[0]
        # Only the censored pixels (~7% of a map) are evaluated: the t's CDF is scipy's, on the CPU.
        censored = low | high
        if self.dof is None:
            log_p = log_core_cdf(u[censored], None)
        else:
            mahalanobis, n = fit
            nu = self.dof.detach().float()
            scale = torch.sqrt((nu + mahalanobis) / (nu + n)).view(-1, 1, 1, 1)
            owner = censored.nonzero(as_tuple=True)[0].cpu().numpy()  # the map of each censored pixel
            log_p = log_core_cdf((u / scale)[censored], (nu + n).detach().double().cpu().numpy()[owner])
        return torch.zeros_like(u).masked_scatter(censored, log_p).flatten(1)

    def core_residual(self, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's residual g in the Gaussian core, (N, P*P) logits (0 off the mask), and
        log |dg/dx| summed over each map's galaxy pixels (N,) (0 without sinh-arcsinh tails)."""
        m = mask.flatten(1).float()
        residual = (to_logit(target, self.eps) - self.loc.float()).flatten(1) * m
        if self.tail is None:
            return residual, residual.new_zeros(residual.shape[0])
        std = torch.exp(0.5 * self.marginal_log_var()).flatten(1)
        core, log_slope = arcsinh_sinh(residual / std, self.tail.float().flatten(1))
        return core * std * m, (log_slope * m).sum(1)

    def _woodbury(self, core: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Mahalanobis distance g^T S^-1 g, log det S) of each map over its galaxy pixels, both (N,)."""
        m = mask.flatten(1).float()
        log_var = self.log_var.flatten(1).float()
        inv_var = torch.exp(-log_var) * m
        factors = self.factors.flatten(2).float() * m[:, None]  # (N, r, n)
        scaled = factors * inv_var[:, None]  # F^T D^-1
        capacitance = torch.eye(self.rank, device=m.device) + scaled @ factors.transpose(1, 2)
        chol = torch.linalg.cholesky(capacitance)
        projected = torch.linalg.solve_triangular(chol, (scaled @ core[..., None]), upper=False)[..., 0]
        mahalanobis = (inv_var * core**2).sum(1) - projected.pow(2).sum(1)
        log_det = (log_var * m).sum(1) + 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(1)
        return mahalanobis, log_det

    def nll(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each map, summed over its galaxy pixels: (N,) nats per map.

        target: (N, 1, P, P) ex-situ fractions in [0, 1]; mask: (N, 1, P, P) bool galaxy pixels.
        The density is of the clipped fractions on [0, 1]^n: the logit-space density times the
        Jacobian prod 1 / (y (1 - y)), which does not depend on the model.
        """
        # Outside autocast: a bf16 capacitance matrix would lose the small eigenvalues.
        with torch.autocast(self.loc.device.type, enabled=False):
            inside = self.density_mask(target, mask)
            m = inside.flatten(1).float()
            n = m.sum(1)
            core, log_slope = self.core_residual(target, inside)
            mahalanobis, log_det = self._woodbury(core, inside)
            # The pixels that do not enter by their density: censored, or the hurdle's classes.
            discrete = self.log_censored(target, mask, (mahalanobis, n)).sum(1) + self.log_clip_classes(target, mask)
            if self.dof is None:
                log_density = -0.5 * (mahalanobis + log_det + n * math.log(2 * math.pi))
            else:
                nu = self.dof.float()
                log_density = (
                    torch.lgamma(0.5 * (nu + n)) - torch.lgamma(0.5 * nu) - 0.5 * n * torch.log(nu * math.pi)
                    - 0.5 * log_det - 0.5 * (nu + n) * torch.log1p(mahalanobis / nu)
                )  # fmt: skip
            y = target.flatten(1).float().clamp(self.eps, 1 - self.eps)
            log_jacobian = (torch.log(y * (1 - y)) * m).sum(1)
            return -(log_density + log_slope + discrete) + log_jacobian

    def training_loss(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``nll`` in value, with the gradients of "faithful" heteroscedastic regression (N,).

        Trained on the NLL alone, the factors learn to explain the mean's early errors as
        coherent residual, which then flattens the gradient that would correct the mean (the
        pitfall of Seitzer et al. 2022); on synthetic smooth fields the mean stayed ~1.4 logits
        off. Following Stirn et al. (2023, AISTATS), the mean gets the gradient of the squared
        logit error, and the covariance (diagonal, factors, dof, tails) the gradient of the NLL at
        the mean detached; the decoder computes the covariance from detached features
        (``exsitu.cvae.Decoder``), so the NLL trains nothing but the covariance head. Both have the
        NLL's fixed point (every family is symmetric about loc): the conditional mean and the
        residual distribution about it. The value is the NLL, so losses and histories stay an ELBO.

        With censoring the mean gets the squared error of the pixels inside the clip and, from each
        censored pixel, the gradient of its -log P(beyond the clip) at the covariance detached, times
        its variance S_ii: for the Gaussian that is the Tobit model's score for the mean (its fixed
        point is the mean of the uncensored latent logit, which may lie beyond the clip), in the
        squared error's units.
        """
        detached = replace(self, loc=self.loc.detach())
        inside = self.density_mask(target, mask)
        residual = (to_logit(target, self.eps) - self.loc.float()).flatten(1) * inside.flatten(1)
        squared = 0.5 * residual.pow(2).sum(1)
        if self.censored:
            detach = lambda t: None if t is None else t.detach()  # noqa: E731
            covariance = replace(
                self,
                log_var=self.log_var.detach(),
                factors=self.factors.detach(),
                dof=detach(self.dof),
                tail=detach(self.tail),
            )
            with torch.no_grad():
                core, _ = covariance.core_residual(target, inside)
                fit = covariance._woodbury(core, inside)[0], inside.flatten(1).float().sum(1)
            variance = covariance.marginal_log_var().flatten(1).exp()
            squared = squared - (variance * covariance.log_censored(target, mask, fit, self.loc)).sum(1)
        return detached.nll(target, mask) + squared - squared.detach()

    def scaled(self, noise: NoiseScales) -> MapLikelihood:
        """The same likelihood with the factor maps times ``noise.lowrank``, the diagonal std times
        ``noise.diagonal_factor(loc)`` and the hurdle's class logits recalibrated (``noise.class_logits``):
        the recalibrated likelihood of ``exsitu.recalibration``. Draws from it use the random numbers in the
        same order: ``scaled(s)`` draws ``residual(noise).logits(s)``.
        """
        if noise == AS_TRAINED:
            return self
        log_factor = 2.0 * noise.log_diagonal_factor(self.loc.detach())
        hurdle = None if self.hurdle is None else noise.class_logits(self.hurdle)
        return replace(self, log_var=self.log_var + log_factor, factors=self.factors * noise.lowrank, hurdle=hurdle)

    def draw_noise(self, generator: torch.Generator | None = None) -> ResidualNoise:
        """The random numbers of one draw per map (:meth:`ResidualNoise.draw`; uniforms for the Student-t families)."""
        n, _, p, _ = self.loc.shape
        return ResidualNoise.draw(n, self.rank, p, self.dof is not None, generator, self.loc.device)

    def residual(self, noise: ResidualNoise) -> ResidualDraw:
        """The draw that ``noise`` makes from this likelihood, in parts (see :class:`ResidualDraw`)."""
        factors = self.factors.float()
        diagonal_var = self.log_var.float().exp()
        mixing = None
        if self.dof is not None:
            # w = 1 / tau, tau ~ Gamma(nu / 2, rate nu / 2), by the inverse CDF (scipy: torch has no
            # generator-driven gamma sampler, and one number per map is cheap on the CPU).
            half = 0.5 * self.nu
            u = noise.uniform.double().clamp(1e-12, 1 - 1e-12).cpu().numpy()
            w = half / special.gammaincinv(half, u)
            mixing = torch.as_tensor(np.sqrt(w), dtype=torch.float32, device=self.loc.device).view(-1, 1, 1, 1)
        tails, hurdle = self.tail is not None, self.hurdle is not None
        return ResidualDraw(
            loc=self.loc.float(),
            coherent=(factors * noise.eps[:, :, None, None]).sum(1, keepdim=True),
            independent=torch.sqrt(diagonal_var) * noise.eta,
            mixing=mixing,
            lowrank_var=factors.pow(2).sum(1, keepdim=True) if tails or hurdle else None,
            diagonal_var=diagonal_var if tails or hurdle else None,
            tail=self.tail.float() if tails else None,
            eps=self.eps,
            clip_logits=self.hurdle.float() if hurdle else None,
        )

    def sample_logit(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw per map: (N, 1, P, P) logits (every pixel; +-inf where the hurdle puts a pixel at a clip)."""
        return self.residual(self.draw_noise(generator)).logits()

    def sample(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One map per likelihood: (N, 1, P, P) fractions in [0, 1], 0 outside ``mask``."""
        return to_fraction(self.sample_logit(generator), self.eps) * mask

    def mean(self, mask: torch.Tensor) -> torch.Tensor:
        """E[ex-situ fraction] per pixel: (N, 1, P, P) in [0, 1], 0 outside ``mask``.

        The expectation of ``to_fraction`` under each pixel's marginal, by 32-point Gauss-Legendre
        quadrature over its quantiles: the core's standardised marginal is N(0, 1) (t_nu for the
        Student-t families), mapped through T for sinh-arcsinh tails (error ~2.5e-4, below the
        clip's steps). With the hurdle, P(inside) times that plus P(at the high clip).
        """
        quantiles = self._marginal().ppf(_QUANTILE_LEVELS)
        std = torch.exp(0.5 * self.marginal_log_var())
        mean = torch.zeros_like(std)
        # Node by node: a (maps, nodes, P, P) tensor would be 32 maps per map at 128 x 128.
        for q, weight in zip(quantiles.tolist(), _QUANTILE_WEIGHTS.tolist()):
            mean += weight * self._family_fraction(q, std)
        if self.hurdle is not None:
            _, inside, high = self.clip_log_probs().exp().split(1, dim=1)
            mean = inside * mean + high
        return mean * mask

    def median(self, mask: torch.Tensor) -> torch.Tensor:
        """The median ex-situ fraction of each pixel's marginal: (N, 1, P, P) in [0, 1], 0 outside ``mask``.

        Without the hurdle the family's median, the sigmoid of loc (every family is symmetric about it).
        With it, the median of the mixture: 0 where P(low clip) >= 1/2, 1 where P(high clip) >= 1/2,
        else the family's quantile at (1/2 - P(low)) / P(inside) (its leak beyond the clip neglected).
        """
        if self.hurdle is None:
            return to_fraction(self.loc.float(), self.eps) * mask
        low, inside, _ = self.clip_log_probs().exp().split(1, dim=1)
        level = (0.5 - low) / inside
        q = torch.as_tensor(self._marginal().ppf(level.clamp(1e-6, 1 - 1e-6).double().cpu().numpy()))
        family = self._family_fraction(q.float().to(self.loc.device), torch.exp(0.5 * self.marginal_log_var()))
        return torch.where(level <= 0, 0.0, torch.where(level >= 1, 1.0, family)) * mask

    def _marginal(self) -> Any:
        """scipy's standardised core marginal: N(0, 1), or Student's t with nu degrees of freedom."""
        return stats.norm if self.nu is None else stats.t(self.nu)

    def _family_fraction(self, q: torch.Tensor | float, std: torch.Tensor) -> torch.Tensor:
        """to_fraction of each pixel's family quantile whose standardised core quantile is ``q``: (N, 1, P, P);
        ``std``: each pixel's core std sqrt(S_ii), computed once by the caller (:meth:`mean` asks 32 quantiles)."""
        q = torch.as_tensor(q, dtype=torch.float32, device=std.device)
        step = std * (q if self.tail is None else torch.sinh(self.tail.float() * torch.asinh(q)))
        return to_fraction(self.loc.float() + step, self.eps)
