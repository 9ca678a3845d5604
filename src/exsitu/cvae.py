"""The conditional VAE of Angeloudi et al. (2023): encoder, condition encoder and decoder.

Maps are P x P pixels (P a power of two, >= 8). The condition encoder turns the 5 normalised
observable maps (plus the galaxy mask, which is where they are non-zero) into one feature map
per resolution level and a summary vector; those features enter every convolutional level of
the encoder and of the decoder (U-net-like skips); the flow is conditioned on the summary vector
and, by default, each level's features averaged over the grid (``exsitu.flow.flow_context``).

The decoder does not return one map but the likelihood of a whole map,
``exsitu.likelihood.MapLikelihood``: per pixel a mean logit and a log diagonal variance, and
``rank`` factor maps of a spatially correlated residual (low rank + diagonal Gaussian in logit
space). Its spread is the part of the uncertainty that the latent vector does not carry; its
correlations make whole sampled maps as smooth as true ones, so that the posterior is
calibrated jointly over a map's pixels, not only pixel by pixel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from exsitu.contracts import N_CHANNELS
from exsitu.io import InputError
from exsitu.likelihood import DOF_MAX, DOF_MIN, FAMILIES, LOG_VAR_MAX, LOG_VAR_MIN, LOGIT_EPS, TAIL_RANGE, MapLikelihood
from exsitu.settings import CVAESettings

#: nats per map: a latent dimension with less validation KL than this is counted collapsed. 0.1 nats is the KL
#: of an encoder mean moved 0.45 prior sigma from 0 (KL = mu^2 / 2): below it a dimension tells the decoder next to
#: nothing, though it may not be exactly unused (the README's "collapsed dims" use the same cut).
ACTIVE_KL = 0.1


@dataclass(frozen=True)
class CVAEConfig:
    """Hyperparameters that fix the network's shape (stored in every checkpoint)."""

    npix: int
    latent_dim: int = 10
    base_channels: int = 16
    rank: int = 8
    n_channels: int = N_CHANNELS  # conditioning channels (config conditions.channels)
    n_scalars: int = 0  # galaxy scalars (config conditions.scalars)
    summary_dim: int = 32
    max_levels: int = 5
    likelihood: str = "gaussian"  # one of exsitu.likelihood.FAMILIES (config cvae.likelihood)
    logit_eps: float = LOGIT_EPS  # the fractions' clip (config cvae.logit_eps)
    censored: bool = False  # pixels beyond the clip censored in the likelihood (config cvae.censored)
    hurdle: bool = False  # a two-part likelihood with each pixel's probability of the clip (config cvae.hurdle)

    def __post_init__(self) -> None:
        if self.likelihood not in FAMILIES:
            raise InputError(f"config key 'cvae.likelihood': {self.likelihood!r} is not one of {FAMILIES}")
        if self.censored and self.hurdle:
            raise InputError(
                "config keys 'cvae.censored' and 'cvae.hurdle' are two models of the clip: set one"
                " (cvae.hurdle is true by default; set it to false to censor)"
            )

    @classmethod
    def from_settings(
        cls, settings: CVAESettings, npix: int, n_channels: int = N_CHANNELS, n_scalars: int = 0
    ) -> CVAEConfig:
        """The network shape from the cvae settings, the maps' side ``npix`` and the conditioning channel and
        galaxy scalar counts."""
        if npix < 8 or npix & (npix - 1):
            raise InputError(f"the maps are {npix} pixels wide; the cVAE needs a power of two >= 8 (config maps.npix)")
        return cls(
            npix=npix,
            latent_dim=settings.latent_dim,
            base_channels=settings.base_channels,
            rank=settings.rank,
            n_channels=n_channels,
            n_scalars=n_scalars,
            likelihood=settings.likelihood,
            logit_eps=settings.logit_eps,
            censored=settings.censored,
            hurdle=settings.hurdle,
        )

    @property
    def clip_model(self) -> str:
        """How pixels at or beyond the clip enter the likelihood: "clipped" (the density of their clipped
        logit), "censored" (``censored``) or "hurdle" (their own class, ``hurdle``); see ``exsitu.likelihood``."""
        return "censored" if self.censored else "hurdle" if self.hurdle else "clipped"

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

    def to_dict(self) -> dict[str, int | float | str]:
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


def shared_skip_convolution(
    conv: nn.Conv2d, h: torch.Tensor, skip: torch.Tensor, z: torch.Tensor, owner: torch.Tensor
) -> torch.Tensor:
    """``conv`` of the decoder block input [h, skip[owner], z as constant maps] (channels in that order), with
    the skip's part computed once per map: (n, C_out, P, P).

    h: (n, C_h, P, P) per latent; skip: (M, C_skip, P, P) per map; z: (n, L); owner: (n,) the map of each
    latent. A convolution is linear in its input channels, so it is the sum of one convolution per part.
    Sampling decodes K latents per map: there the skip's part, a third of the decoder's arithmetic, ran K
    times on the same input, and the concatenation copied it K times. The part of a constant map is a
    per-latent combination of L fixed patterns (the kernel's sum, less what the zero padding cuts at the
    edges): a matrix product. The sum agrees with the convolution of the concatenation to float rounding
    (~1e-5 in logit, ``tests/test_cvae.py``); training keeps the concatenation, one latent per map.
    """
    c_h, c_skip, size = h.shape[1], skip.shape[1], h.shape[-2:]
    weight = conv.weight
    out = F.conv2d(h, weight[:, :c_h], None, padding=conv.padding)
    out = out + F.conv2d(skip, weight[:, c_h : c_h + c_skip], conv.bias, padding=conv.padding).index_select(0, owner)
    latent = z.shape[1]
    if latent:
        unit = torch.eye(latent, dtype=weight.dtype, device=weight.device)[:, :, None, None].expand(-1, -1, *size)
        patterns = F.conv2d(unit, weight[:, c_h + c_skip :], None, padding=conv.padding)  # (L, C_out, P, P)
        out = out + (z.to(patterns.dtype) @ patterns.flatten(1)).view(out.shape)
    return out


def galaxy_mask(conditions: torch.Tensor) -> torch.Tensor:
    """(N,1,P,P) bool: galaxy pixels are those where a normalised condition is non-zero."""
    return (conditions != 0).any(dim=1, keepdim=True)


class ConditionEncoder(nn.Module):
    """Observable maps (and galaxy scalars) -> one feature map per level (finest first) and a summary vector.

    Galaxy scalars (``cfg.n_scalars``: stellar mass, size, ...; standardised with training-set
    statistics held as buffers, :meth:`set_scalar_standardisation`) enter twice: they modulate every
    level's features (FiLM, Perez et al. 2018, AAAI: per channel a scale and a shift predicted from
    the scalars, starting as the identity), so the convolutions read the maps in physical context,
    and they join the bottleneck features in the summary vector, part of the flow's context.
    """

    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        n = cfg.levels()
        self.n_scalars = cfg.n_scalars
        self.blocks = nn.ModuleList()
        c_prev = cfg.n_channels + 1
        self.widths = [cfg.channels(level) for level in range(n)]
        for width in self.widths:
            self.blocks.append(conv_block(c_prev, width))
            c_prev = width
        self.summary = nn.Sequential(
            nn.Linear(c_prev * cfg.bottom() ** 2 + cfg.n_scalars, cfg.summary_dim),
            nn.SiLU(),
            nn.Linear(cfg.summary_dim, cfg.summary_dim),
        )
        if cfg.n_scalars:
            self.film = nn.Linear(cfg.n_scalars, 2 * sum(self.widths))
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.register_buffer("scalar_mean", torch.zeros(cfg.n_scalars))
        self.register_buffer("scalar_std", torch.ones(cfg.n_scalars))

    def set_scalar_standardisation(self, scalars: torch.Tensor) -> None:
        """Fix the scalars' standardisation from the training maps' values (N, S)."""
        self.scalar_mean.copy_(scalars.float().mean(0))
        self.scalar_std.copy_(scalars.float().std(0).clamp_min(1e-6))

    def forward(
        self, conditions: torch.Tensor, scalars: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if (scalars is None) != (self.n_scalars == 0) or (scalars is not None and scalars.shape[1] != self.n_scalars):
            shape = None if scalars is None else tuple(scalars.shape)
            raise InputError(
                f"this network takes {self.n_scalars} galaxy scalars per map, got scalars of shape {shape}"
            )
        h = torch.cat([conditions, galaxy_mask(conditions).to(conditions.dtype)], dim=1)
        s = None if scalars is None else ((scalars.to(h.device).float() - self.scalar_mean) / self.scalar_std)
        film = (
            self.film(s).to(h.dtype).split([w for w in self.widths for _ in (0, 1)], dim=1) if s is not None else None
        )
        features = []
        for level, block in enumerate(self.blocks):
            if level:
                h = F.avg_pool2d(h, 2)
            h = block(h)
            if film is not None:
                h = h * (1.0 + film[2 * level][:, :, None, None]) + film[2 * level + 1][:, :, None, None]
            features.append(h)
        flat = h.flatten(1) if s is None else torch.cat([h.flatten(1), s.to(h.dtype)], dim=1)
        return features, self.summary(flat)


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


#: Adam moves a parameter by ~lr per step whatever its gradient, and nu spans orders of magnitude:
#: log(nu - DOF_MIN) = DOF_SPEED x the parameter lets a few hundred steps move nu by a factor of e.
DOF_SPEED = 10.0
DOF_INIT = 10.0
#: Initial sinh-arcsinh exponent (close to the Gaussian, tau = 1, with room to grow).
TAIL_INIT = 1.25


class Decoder(nn.Module):
    """p(ex-situ map | z, conditions) as a ``MapLikelihood`` of family ``cfg.likelihood``.

    A shared U-net trunk gives per-pixel features h. The mean head (a 1x1 convolution) reads h;
    the covariance head (its own 3x3 convolution, then a 1x1 one to the log diagonal variance,
    ``cfg.rank`` factor maps and, with sinh-arcsinh tails, the tail exponent) reads h DETACHED,
    and the Student-t degrees of freedom are one parameter: so the covariance's NLL trains only
    the covariance head, never the trunk, the condition encoder or the encoder (the faithful
    split of Stirn et al. 2023; ``MapLikelihood.training_loss`` trains the mean by the squared
    error). With ``cfg.hurdle`` a third head (1x1, on h live) gives each pixel's two clip-class logits,
    trained by their log-likelihood. With ``latent_dim == 0`` it is the deterministic baseline's decoder
    (conditions only).
    """

    def __init__(self, cfg: CVAEConfig, latent_dim: int) -> None:
        super().__init__()
        n = cfg.levels()
        self.bottom = cfg.bottom()
        self.c_bottom = cfg.channels(n - 1)
        self.rank, self.eps, self.censored = cfg.rank, cfg.logit_eps, cfg.censored
        self.inp = nn.Linear(latent_dim + cfg.summary_dim, self.c_bottom * self.bottom**2)
        self.blocks = nn.ModuleList()
        c_prev = self.c_bottom
        for level in reversed(range(n)):
            self.blocks.append(conv_block(c_prev + cfg.channels(level) + latent_dim, cfg.channels(level)))
            c_prev = cfg.channels(level)
        self.mean_head = nn.Conv2d(c_prev, 1, 1)
        # The clip classes are part of the point prediction, not of the residual's spread: their head
        # reads the trunk's live features, like the mean's. Start at P(clip) ~ 5% at each end.
        self.hurdle_head = nn.Conv2d(c_prev, 2, 1) if cfg.hurdle else None
        if self.hurdle_head is not None:
            nn.init.constant_(self.hurdle_head.bias, math.log(0.05 / 0.9))
        self.tails = cfg.likelihood.endswith("sinh_arcsinh")
        covariance_out = nn.Conv2d(c_prev, 1 + cfg.rank + self.tails, 1)
        if self.tails:  # start near the Gaussian: tau = 1 + TAIL_RANGE * sigmoid(bias)
            nn.init.constant_(covariance_out.bias[-1:], math.log((TAIL_INIT - 1) / (1 + TAIL_RANGE - TAIL_INIT)))
        groups = math.gcd(8, c_prev)
        self.covariance_head = nn.Sequential(
            nn.Conv2d(c_prev, c_prev, 3, padding=1), nn.GroupNorm(groups, c_prev), nn.SiLU(), covariance_out
        )
        self.log_dof = (
            nn.Parameter(torch.tensor(math.log(DOF_INIT - DOF_MIN) / DOF_SPEED))
            if cfg.likelihood.startswith("student_t")
            else None
        )

    def dof(self) -> torch.Tensor | None:
        """The Student-t degrees of freedom nu in [DOF_MIN, DOF_MAX] (a 0-d tensor), None for other families."""
        if self.log_dof is None:
            return None
        return (DOF_MIN + torch.exp(DOF_SPEED * self.log_dof)).clamp(max=DOF_MAX)

    def forward(
        self,
        z: torch.Tensor,
        features: list[torch.Tensor],
        summary: torch.Tensor,
        owner: torch.Tensor | None = None,
    ) -> MapLikelihood:
        """The likelihood of the map of each latent: z (n, latent_dim); features, summary: the condition
        encoder's output for the maps; owner: (n,) the map (row of ``features`` and ``summary``) each latent
        belongs to, for many latents per map (None: latent i belongs to map i).
        """
        if owner is not None:
            summary = summary.index_select(0, owner)
        h = self.inp(torch.cat([z, summary], dim=1)).view(-1, self.c_bottom, self.bottom, self.bottom)
        for i, (block, skip) in enumerate(zip(self.blocks, reversed(features))):
            if i:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            # z enters every level too, so the skips do not drown it out (posterior collapse).
            if owner is None:
                z_map = z[:, :, None, None].expand(-1, -1, *h.shape[-2:])
                h = block(torch.cat([h, skip, z_map], dim=1))
            else:
                h = block[1:](shared_skip_convolution(block[0], h, skip, z, owner))
        covariance = self.covariance_head(h.detach())
        rank = self.rank
        tail = 1 + TAIL_RANGE * torch.sigmoid(covariance[:, 1 + rank :]) if self.tails else None
        return MapLikelihood(
            loc=self.mean_head(h),
            log_var=covariance[:, :1].clamp(LOG_VAR_MIN, LOG_VAR_MAX),
            factors=covariance[:, 1 : 1 + rank],
            dof=self.dof(),
            tail=tail,
            eps=self.eps,
            censored=self.censored,
            hurdle=None if self.hurdle_head is None else self.hurdle_head(h),
        )


class ConditionedNetwork(nn.Module):
    """A network with a condition encoder (the cVAE, the baseline): the one way in for conditions."""

    condition_encoder: ConditionEncoder

    def encode_conditions(
        self, conditions: torch.Tensor, scalars: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The condition encoder's features (one map per level, finest first) and summary vector.

        conditions: (N, C, P, P) normalised observable maps; scalars: (N, S) galaxy scalars in the
        units of ``exsitu.scalars`` (the network standardises them), exactly as many as the network
        was built for (``cfg.n_scalars``; missing or extra ones are an error, never silently dropped).
        """
        return self.condition_encoder(conditions, scalars)


class CVAE(ConditionedNetwork):
    """Encoder + condition encoder + decoder; ``forward`` returns what the ELBO needs."""

    kind = "cvae"

    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.condition_encoder = ConditionEncoder(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cfg.latent_dim)

    def hparams(self) -> dict[str, int | float | str]:
        return self.cfg.to_dict()

    def forward(
        self, conditions: torch.Tensor, exsitu: torch.Tensor, scalars: torch.Tensor | None = None
    ) -> tuple[MapLikelihood, torch.Tensor, torch.Tensor]:
        """One reparameterised pass: the decoded likelihood and q(z | map, conditions)'s (mu, logvar)."""
        features, summary = self.encode_conditions(conditions, scalars)
        mu, logvar = self.encoder(exsitu, features, summary)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z, features, summary), mu, logvar

    def loss(
        self,
        conditions: torch.Tensor,
        exsitu: torch.Tensor,
        mask: torch.Tensor,
        scalars: torch.Tensor | None = None,
        *,
        beta: float,
        free_bits: float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Equation (1) of the paper per map, as a true ELBO at ``beta = 1``.

        Per map: recon = -log p(map | z, conditions), SUMMED over the map's galaxy pixels
        (nats per map; ``MapLikelihood.training_loss``: the NLL's value, with the mean trained
        on the squared logit error so the factors cannot hide its errors), and KL = sum over latent dimensions of
        KL(q(z | map, conditions) || N(0, 1)) (nats per map); the loss of a map is
        recon + beta * KL, divided by the constant P^2 (pixels per image), which changes neither
        the optimum nor beta's meaning but keeps the loss and its gradients at the per-pixel
        scale the training loop's gradient clip was set for.

        So beta means the same at every map size: beta = 1 is the evidence lower bound. The
        paper averages its reconstruction over pixels with beta = 7e-5; the same balance here is
        beta = 7e-5 x (galaxy pixels per map), ~0.7 at 128 x 128 with ~10^4 galaxy pixels, ~0.04
        at 32 x 32 with ~600 (the paper's recon is an MSE, i.e. a Gaussian NLL up to a factor
        1 / (2 sigma^2), so the correspondence is one of orders of magnitude).

        ``free_bits`` (nats per dimension, batch-averaged) keeps the optimiser from pushing a
        dimension's KL below it, which counters posterior collapse through the skips: a dimension
        whose batch-mean KL is below the floor contributes the constant floor to every map's loss
        (no gradient), as ``clamp_min`` of the batch mean would. Returns the per-map losses (N,)
        (the training loop takes their weighted batch mean) and per-map diagnostics: ``recon`` and
        ``kl`` (N,) in nats per map, ``kl_dim`` (N, latent_dim) per dimension.
        """
        likelihood, mu, logvar = self(conditions, exsitu, scalars)
        recon = likelihood.training_loss(exsitu, mask)
        kl_dims = kl_per_dim(mu, logvar)
        kl_term = kl_dims
        if free_bits > 0:
            kl_term = torch.where(kl_dims.detach().mean(0) > free_bits, kl_dims, torch.full_like(kl_dims, free_bits))
        loss = (recon + beta * kl_term.sum(1)) / exsitu[0].numel()
        return loss, {"recon": recon.detach(), "kl": kl_dims.sum(1).detach(), "kl_dim": kl_dims.detach()}


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
