"""The conditional VAE of Angeloudi et al. (2023): encoder, condition encoder and decoder.

Maps are P x P pixels (P a power of two, >= 8). The condition encoder turns the 5 normalised
observable maps (plus the galaxy mask, which is where they are non-zero) into one feature map
per resolution level and a summary vector; those features enter every convolutional level of
the encoder and of the decoder (U-net-like skips), and the summary vector is what the flow
is conditioned on.

The decoder does not return one map but a per-pixel likelihood with its own spread: a
Gaussian of location ``loc`` and scale ``scale`` censored to [0, 1] (the ex-situ fraction of a
pixel is that Gaussian clipped to [0, 1]). Censoring gives the point masses at 0 and 1 that
real ex-situ maps have (whole pixels of purely in-situ stars), and the learnt spread is the
part of the uncertainty that the latent vector does not carry, so credible intervals are
not too narrow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from exsitu.contracts import N_CHANNELS
from exsitu.io import InputError
from exsitu.settings import CVAESettings

ACTIVE_KL = 0.01  # nats: a latent dimension with less validation KL than this carries nothing
LOG_SCALE_MIN = math.log(1e-3)  # a pixel's spread below 0.1% ex-situ fraction is not resolvable
LOG_SCALE_MAX = math.log(1.0)


@dataclass(frozen=True)
class CVAEConfig:
    """Hyperparameters that fix the network's shape (stored in every checkpoint)."""

    npix: int
    latent_dim: int = 10
    base_channels: int = 16
    summary_dim: int = 32
    max_levels: int = 5

    @classmethod
    def from_settings(cls, settings: CVAESettings, npix: int) -> CVAEConfig:
        """The network shape from the cvae settings and the maps' side ``npix``."""
        if npix < 8 or npix & (npix - 1):
            raise InputError(f"the maps are {npix} pixels wide; the cVAE needs a power of two >= 8 (config maps.npix)")
        return cls(npix=npix, latent_dim=settings.latent_dim, base_channels=settings.base_channels)

    def levels(self) -> int:
        """Resolution levels: halve P down to 4 pixels, at most ``max_levels``."""
        if self.npix < 8 or self.npix & (self.npix - 1):
            raise ValueError(f"npix must be a power of two >= 8, got {self.npix}")
        return min(self.max_levels, int(math.log2(self.npix)) - 1)

    def channels(self, level: int) -> int:
        return self.base_channels * 2 ** min(level, 3)

    def bottom(self) -> int:
        """Side in pixels of the coarsest level."""
        return self.npix // 2 ** (self.levels() - 1)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm and SiLU (size preserving)."""
    groups = math.gcd(8, c_out)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(groups, c_out),
        nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(groups, c_out),
        nn.SiLU(),
    )


def galaxy_mask(conditions: torch.Tensor) -> torch.Tensor:
    """(N,1,P,P) bool: galaxy pixels are those where a normalised condition is non-zero."""
    return (conditions != 0).any(dim=1, keepdim=True)


class ConditionEncoder(nn.Module):
    """Observable maps -> one feature map per level (finest first) and a summary vector."""

    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        n = cfg.levels()
        self.blocks = nn.ModuleList()
        c_prev = N_CHANNELS + 1
        for level in range(n):
            self.blocks.append(conv_block(c_prev, cfg.channels(level)))
            c_prev = cfg.channels(level)
        self.summary = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_prev * cfg.bottom() ** 2, cfg.summary_dim),
            nn.SiLU(),
            nn.Linear(cfg.summary_dim, cfg.summary_dim),
        )

    def forward(self, conditions: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = torch.cat([conditions, galaxy_mask(conditions).to(conditions.dtype)], dim=1)
        features = []
        for level, block in enumerate(self.blocks):
            if level:
                h = F.avg_pool2d(h, 2)
            h = block(h)
            features.append(h)
        return features, self.summary(h)


class Encoder(nn.Module):
    """q(z | ex-situ map, conditions): mean and log-variance of a diagonal Gaussian."""

    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        n = cfg.levels()
        self.blocks = nn.ModuleList()
        c_prev = 1
        for level in range(n):
            self.blocks.append(conv_block(c_prev + cfg.channels(level), cfg.channels(level)))
            c_prev = cfg.channels(level)
        self.head = nn.Linear(c_prev * cfg.bottom() ** 2 + cfg.summary_dim, 2 * cfg.latent_dim)

    def forward(
        self, exsitu: torch.Tensor, features: list[torch.Tensor], summary: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = exsitu
        for level, (block, skip) in enumerate(zip(self.blocks, features)):
            if level:
                h = F.avg_pool2d(h, 2)
            h = block(torch.cat([h, skip], dim=1))
        mu, logvar = self.head(torch.cat([h.flatten(1), summary], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)


class Decoder(nn.Module):
    """p(ex-situ map | z, conditions): per-pixel censored-Gaussian ``loc`` and ``log_scale``.

    With ``latent_dim == 0`` it is the deterministic baseline's decoder (conditions only).
    """

    def __init__(self, cfg: CVAEConfig, latent_dim: int) -> None:
        super().__init__()
        n = cfg.levels()
        self.bottom = cfg.bottom()
        self.c_bottom = cfg.channels(n - 1)
        self.inp = nn.Linear(latent_dim + cfg.summary_dim, self.c_bottom * self.bottom**2)
        self.blocks = nn.ModuleList()
        c_prev = self.c_bottom
        for level in reversed(range(n)):
            self.blocks.append(conv_block(c_prev + cfg.channels(level) + latent_dim, cfg.channels(level)))
            c_prev = cfg.channels(level)
        self.out = nn.Conv2d(c_prev, 2, 1)

    def forward(
        self, z: torch.Tensor, features: list[torch.Tensor], summary: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(torch.cat([z, summary], dim=1)).view(-1, self.c_bottom, self.bottom, self.bottom)
        for i, (block, skip) in enumerate(zip(self.blocks, reversed(features))):
            if i:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            # z enters every level too, so the skips do not drown it out (posterior collapse).
            z_map = z[:, :, None, None].expand(-1, -1, *h.shape[-2:])
            h = block(torch.cat([h, skip, z_map], dim=1))
        loc, log_scale = self.out(h).chunk(2, dim=1)
        return loc, log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)


class CVAE(nn.Module):
    """Encoder + condition encoder + decoder; ``forward`` returns what the ELBO needs."""

    kind = "cvae"

    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.condition_encoder = ConditionEncoder(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cfg.latent_dim)

    def hparams(self) -> dict[str, int]:
        return self.cfg.to_dict()

    def forward(self, conditions: torch.Tensor, exsitu: torch.Tensor) -> dict[str, torch.Tensor]:
        features, summary = self.condition_encoder(conditions)
        mu, logvar = self.encoder(exsitu, features, summary)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        loc, log_scale = self.decoder(z, features, summary)
        return {"mu": mu, "logvar": logvar, "loc": loc, "log_scale": log_scale}

    def loss(
        self, conditions: torch.Tensor, exsitu: torch.Tensor, mask: torch.Tensor, *, beta: float, free_bits: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Equation (1) of the paper, per map: masked reconstruction NLL + beta * KL.

        The reconstruction term is the per-pixel mean over galaxy pixels (nats/pixel) so that beta
        has the scale of the paper's 7e-5; KL is summed over latent dimensions. ``free_bits`` (nats
        per dimension, batch-averaged) keeps the optimiser from pushing a dimension's KL below it,
        which counters posterior collapse through the skips. Returns the loss and diagnostics
        (``recon``, ``kl`` and ``kl_dim`` per dimension, all batch means).
        """
        out = self(conditions, exsitu)
        recon = censored_gaussian_nll(exsitu, out["loc"], out["log_scale"], mask).mean()
        kl_dims = kl_per_dim(out["mu"], out["logvar"]).mean(0)
        kl_term = kl_dims.clamp_min(free_bits).sum() if free_bits > 0 else kl_dims.sum()
        loss = recon + beta * kl_term
        return loss, {"recon": recon.detach(), "kl": kl_dims.sum().detach(), "kl_dim": kl_dims.detach()}


def censored_gaussian_nll(
    target: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Negative log-likelihood of ``target`` per map, averaged over its galaxy pixels (N,).

    The likelihood is N(loc, scale) censored to [0, 1]: a pixel at exactly 0 (or 1) scores
    the Gaussian mass below 0 (above 1), one inside scores the density. Averaging over the
    mask, not the whole image, keeps the background from dominating the loss.
    """
    loc, log_scale, target = loc.float(), log_scale.float(), target.float()
    scale = log_scale.exp()
    normal = torch.distributions.Normal(loc, scale)
    at_zero = target <= 0
    at_one = target >= 1
    log_density = normal.log_prob(target)
    # log Phi((0 - loc)/scale) and log(1 - Phi((1 - loc)/scale)) stay finite through log_ndtr.
    log_below = torch.special.log_ndtr(-loc / scale)
    log_above = torch.special.log_ndtr((loc - 1) / scale)
    log_p = torch.where(at_zero, log_below, torch.where(at_one, log_above, log_density))
    mask = mask.to(log_p.dtype)
    return -(log_p * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def censored_gaussian_sample(
    loc: torch.Tensor, log_scale: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One draw per pixel from N(loc, scale) clipped to [0, 1]."""
    noise = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
    return (loc + noise * log_scale.exp()).clamp(0, 1)


def censored_gaussian_mean(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """E[clip(X, 0, 1)] for X ~ N(loc, scale): the map a deterministic prediction reports."""
    scale = log_scale.exp()
    normal = torch.distributions.Normal(torch.zeros_like(loc), torch.ones_like(loc))
    a, b = -loc / scale, (1 - loc) / scale
    cdf_a, cdf_b = normal.cdf(a), normal.cdf(b)
    pdf_a, pdf_b = normal.log_prob(a).exp(), normal.log_prob(b).exp()
    return ((1 - cdf_b) + loc * (cdf_b - cdf_a) + scale * (pdf_a - pdf_b)).clamp(0, 1)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|eps,theta) || N(0,1)) per map and latent dimension, nats, shape (N, latent_dim)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)


def active_units(row: dict[str, float]) -> dict[str, float]:
    """Number of latent dimensions whose validation KL exceeds ``ACTIVE_KL`` (collapse watch).

    ``row`` is one epoch of the training history, with columns ``val_kl_dim_<i>`` [nats].
    """
    kls = [v for k, v in row.items() if k.startswith("val_kl_dim_")]
    return {"active_units": float(sum(kl > ACTIVE_KL for kl in kls))}
