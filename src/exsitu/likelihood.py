"""The likelihood of a whole ex-situ fraction map: a low-rank + diagonal Gaussian in logit space.

Why not independent pixels: the maps are smooth fields (particles are smoothed onto pixels),
so what the conditions leave open about one pixel is shared with its neighbours. Independent
per-pixel noise with the right marginals gives right per-pixel intervals but whole maps that
are jointly far too rough; summed over hundreds of pixels that makes whole-map tests (TARP,
Lemos et al. 2023) fail even when every pixel's interval is calibrated. Here the residual
of a map in logit space is

    x = logit(clip(y, LOGIT_EPS, 1 - LOGIT_EPS)) = loc + F eps + sqrt(d) eta,
    eps ~ N(0, I_r), eta ~ N(0, I_n),   i.e.  x ~ N(loc, F F^T + diag(d)),

over the n galaxy pixels, with r factor maps F (the coherent part of the residual: its
large-scale modes, which carry most of a whole-map distance) and a diagonal d (the rest).
The probabilistic-PCA maximum-likelihood fit of F (Tipping & Bishop 1999) puts the r
largest-variance modes of the residual into F and their average excess into d, so the total
variance and the variance along the leading modes are right. The log-likelihood uses the
matrix determinant lemma and the Woodbury identity (O(n r^2), never an n x n matrix).

Logit space keeps every sample inside [0, 1] and lets the spread shrink near 0 and 1. Truth
values are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] (LOGIT_EPS = 1e-3: one part in a thousand of
a pixel's stellar mass, below what a pixel's ex-situ fraction is known to); a sample beyond the
clip becomes exactly 0 (or 1), so the pure in-situ (or purely accreted) pixels that real maps
have are point masses of the predictive, as the clipped truth is. Pixels outside the galaxy
mask decouple exactly: their factor rows and residuals are set to 0 and they add nothing to the
log-likelihood; samples there are 0.

Units: ``loc`` and samples before ``to_fraction`` are logits (dimensionless), ``log_var`` is
the log of the diagonal variance in logit^2, ``factors`` are logits; fractions are in [0, 1];
``nll`` is in nats per map, a density on [0, 1]^n (the logit Jacobian included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

LOGIT_EPS = 1e-3
LOGIT_LOW = math.log(LOGIT_EPS / (1 - LOGIT_EPS))  # logit of the clip; beyond it a sample is exactly 0 / 1
LOG_VAR_MIN = 2 * math.log(0.01)  # diagonal std >= 0.01 logits: clipped pixels must not give an unbounded NLL
LOG_VAR_MAX = 2 * math.log(10.0)
_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite.hermgauss(32)


def to_logit(fraction: torch.Tensor) -> torch.Tensor:
    """Ex-situ fraction in [0, 1] -> logit of the fraction clipped to [LOGIT_EPS, 1 - LOGIT_EPS]."""
    return torch.logit(fraction.float().clamp(LOGIT_EPS, 1 - LOGIT_EPS))


def to_fraction(logit: torch.Tensor) -> torch.Tensor:
    """Logit -> ex-situ fraction: the sigmoid inside the clip, exactly 0 below it and 1 above it."""
    inside = torch.sigmoid(logit)
    return torch.where(logit <= LOGIT_LOW, 0.0, torch.where(logit >= -LOGIT_LOW, 1.0, inside))


@dataclass
class MapLikelihood:
    """p(ex-situ map | z, conditions) for N maps of P x P pixels, as the decoder predicts it.

    loc: (N, 1, P, P) mean logit; log_var: (N, 1, P, P) log diagonal variance [logit^2];
    factors: (N, r, P, P) the r factor maps [logit] (r may be 0: independent pixels).
    """

    loc: torch.Tensor
    log_var: torch.Tensor
    factors: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.factors.shape[1])

    def nll(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each map, summed over its galaxy pixels: (N,) nats per map.

        target: (N, 1, P, P) ex-situ fractions in [0, 1]; mask: (N, 1, P, P) bool galaxy pixels.
        The density is of the clipped fractions on [0, 1]^n: the logit-space Gaussian density
        times the Jacobian prod 1 / (y (1 - y)), which does not depend on the model.
        """
        # Outside autocast: a bf16 capacitance matrix would lose the small eigenvalues.
        with torch.autocast(self.loc.device.type, enabled=False):
            m = mask.flatten(1).float()
            y = target.flatten(1).float().clamp(LOGIT_EPS, 1 - LOGIT_EPS)
            residual = (torch.logit(y) - self.loc.flatten(1).float()) * m
            log_var = self.log_var.flatten(1).float()
            inv_var = torch.exp(-log_var) * m
            factors = self.factors.flatten(2).float() * m[:, None]  # (N, r, n)
            scaled = factors * inv_var[:, None]  # F^T D^-1
            capacitance = torch.eye(self.rank, device=m.device) + scaled @ factors.transpose(1, 2)
            chol = torch.linalg.cholesky(capacitance)
            projected = torch.linalg.solve_triangular(chol, (scaled @ residual[..., None]), upper=False)[..., 0]
            mahalanobis = (inv_var * residual**2).sum(1) - projected.pow(2).sum(1)
            log_det = (log_var * m).sum(1) + 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(1)
            log_jacobian = (torch.log(y * (1 - y)) * m).sum(1)
            return 0.5 * (mahalanobis + log_det + m.sum(1) * math.log(2 * math.pi)) + log_jacobian

    def training_loss(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``nll`` in value, with the gradients of "faithful" heteroscedastic regression (N,).

        Trained on the NLL alone, the factors learn to explain the mean's early errors as
        coherent residual, which then flattens the gradient that would correct the mean (the
        pitfall of Seitzer et al. 2022); on synthetic smooth fields the mean stayed ~1.4 logits
        off. Following Stirn et al. (2023, AISTATS), the mean gets the gradient of the squared
        logit error, and the covariance (diagonal and factors) the gradient of the NLL at the
        mean detached. Both have the NLL's fixed point: the conditional mean and the residual
        covariance about it. The value is the NLL, so losses and histories stay an ELBO.
        """
        detached = MapLikelihood(self.loc.detach(), self.log_var, self.factors)
        residual = (to_logit(target) - self.loc.float()).flatten(1) * mask.flatten(1)
        squared = 0.5 * residual.pow(2).sum(1)
        return detached.nll(target, mask) + squared - squared.detach()

    def scaled(self, scale: float) -> MapLikelihood:
        """The same likelihood with every residual standard deviation times ``scale`` (covariance
        times scale^2): the recalibrated noise of ``exsitu.recalibration``. Draws from it use the
        random numbers in the same order, so a draw at ``scale`` is loc + scale * (draw at 1 - loc).
        """
        if scale == 1.0:
            return self
        return MapLikelihood(self.loc, self.log_var + 2.0 * math.log(scale), self.factors * scale)

    def sample_logit(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw x = loc + F eps + sqrt(d) eta per map: (N, 1, P, P) logits (every pixel)."""
        loc = self.loc.float()
        eps = torch.randn((loc.shape[0], self.rank, 1, 1), generator=generator, device=loc.device)
        eta = torch.randn(loc.shape, generator=generator, device=loc.device)
        coherent = (self.factors.float() * eps).sum(1, keepdim=True)
        return loc + coherent + torch.exp(0.5 * self.log_var.float()) * eta

    def sample(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One map per likelihood: (N, 1, P, P) fractions in [0, 1], 0 outside ``mask``."""
        return to_fraction(self.sample_logit(generator)) * mask

    def marginal_log_var(self) -> torch.Tensor:
        """Log of each pixel's total variance d + sum_k F_k^2: (N, 1, P, P) [log logit^2]."""
        return torch.log(self.log_var.float().exp() + self.factors.float().pow(2).sum(1, keepdim=True))

    def mean(self, mask: torch.Tensor) -> torch.Tensor:
        """E[ex-situ fraction] per pixel: (N, 1, P, P) in [0, 1], 0 outside ``mask``.

        The expectation of ``to_fraction`` under each pixel's Gaussian marginal, by 32-point
        Gauss-Hermite quadrature (exact to ~LOGIT_EPS, the size of the clip's steps).
        """
        loc, width = self.loc.float(), math.sqrt(2.0) * torch.exp(0.5 * self.marginal_log_var())
        mean = torch.zeros_like(loc)
        # Node by node: a (maps, nodes, P, P) tensor would be 32 maps per map at 128 x 128.
        for node, weight in zip(_HERMITE_NODES, _HERMITE_WEIGHTS / math.sqrt(math.pi)):
            mean += float(weight) * to_fraction(loc + float(node) * width)
        return mean * mask
