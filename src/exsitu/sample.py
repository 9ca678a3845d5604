"""Posterior sampling of ex-situ maps from the trained cVAE, in the paper's three modes.

- ``reconstruction``: z ~ q(z | true ex-situ map, conditions), the lower bound on the error;
- ``prior``: z ~ N(0, 1);
- ``flow``: z ~ p_flow(z | condition summary), the realistic inference mode.

Each z is decoded to the likelihood of a whole map (``exsitu.likelihood.MapLikelihood``) and then
``predictive`` decides what a sample is:

- ``"full"``: one map drawn from p(eps | z, theta), spatially correlated residual included; the
  samples' spread is the whole posterior uncertainty (latent and residual);
- ``"mean"``: the likelihood's mean map E[eps | z, theta]; the samples' spread is what the
  latent alone carries.

The condition encoder runs once per map; its features are broadcast over the K samples. Work
is batched over (map, sample) pairs on the model's device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from exsitu.baseline import Baseline
from exsitu.cvae import CVAE, galaxy_mask
from exsitu.flow import LatentFlow
from exsitu.io import InputError
from exsitu.likelihood import MapLikelihood

MODES = ("reconstruction", "prior", "flow")
#: Maps per posterior_samples call in the evaluate stage and exsitu predict (bounds memory at
#: MAPS_PER_CALL x K x P^2 floats). Both use it and decode_batch(), so the same maps and seed give
#: the same samples in either.
MAPS_PER_CALL = 64


def decode_batch(device: torch.device) -> int:
    """(map, sample) pairs per decoder pass: the sampler's default of 64 ran ~3x slower on CPU."""
    return 2048 if device.type == "cuda" else 512


PREDICTIVES = ("full", "mean")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode(
    cvae: CVAE, conditions: torch.Tensor, exsitu: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(z | eps, theta) of every map: (mu, std, summary) on the CPU, float32.

    mu, std: (N, latent_dim) in latent units; summary: (N, summary_dim), the condition encoder's
    summary vector that the flow is conditioned on.
    """
    cvae.eval()
    device = _device(cvae)
    mus, stds, summaries = [], [], []
    for start in range(0, conditions.shape[0], batch_size):
        cond = conditions[start : start + batch_size].to(device)
        features, summary = cvae.condition_encoder(cond)
        mu, logvar = cvae.encoder(exsitu[start : start + batch_size].to(device), features, summary)
        mus.append(mu.float().cpu())
        stds.append(torch.exp(0.5 * logvar).float().cpu())
        summaries.append(summary.float().cpu())
    return torch.cat(mus), torch.cat(stds), torch.cat(summaries)


def _latents(
    cvae: CVAE,
    mode: str,
    n_samples: int,
    features: list[torch.Tensor],
    summary: torch.Tensor,
    *,
    exsitu: torch.Tensor | None,
    flow: LatentFlow | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """(maps, K, latent_dim) latent draws for one chunk of maps."""
    maps, dim = summary.shape[0], cvae.cfg.latent_dim
    noise_shape = (maps, n_samples, dim)
    if mode == "flow":
        return flow.sample(n_samples, summary, generator=generator)
    noise = torch.randn(noise_shape, generator=generator, device=summary.device)
    if mode == "prior":
        return noise
    mu, logvar = cvae.encoder(exsitu, features, summary)
    return mu[:, None] + noise * torch.exp(0.5 * logvar)[:, None]


def _check(mode: str, n_samples: int, batch_size: int, exsitu: torch.Tensor | None, flow: LatentFlow | None) -> None:
    if mode not in MODES:
        raise InputError(f"sampling mode must be one of {MODES}, got {mode!r}")
    if mode == "reconstruction" and exsitu is None:
        raise InputError("sampling mode 'reconstruction' needs the true ex-situ maps (exsitu=...)")
    if mode == "flow" and flow is None:
        raise InputError("sampling mode 'flow' needs the trained flow (flow=...)")
    if n_samples < 1 or batch_size < 1:
        raise InputError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")


def _decoded(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    *,
    exsitu: torch.Tensor | None,
    flow: LatentFlow | None,
    batch_size: int,
    generator: torch.Generator | None,
) -> Iterator[tuple[slice, slice, MapLikelihood, torch.Tensor]]:
    """Decode K latent draws per map, one decoder pass at a time.

    Yields (maps, pairs, likelihood, galaxy mask): ``maps`` the slice of maps of this chunk,
    ``pairs`` the slice of its (map, sample) pairs (map-major) that this pass decoded, their
    likelihoods and (pairs, 1, P, P) galaxy masks. A consumer that draws from each likelihood
    before asking for the next keeps the generator's order of use, hence the samples, fixed.
    """
    cvae.eval()
    if flow is not None:
        flow.eval()
    device = _device(cvae)
    n = conditions.shape[0]
    maps_per_chunk = max(1, batch_size // n_samples)
    for start in range(0, n, maps_per_chunk):
        stop = min(n, start + maps_per_chunk)
        cond = conditions[start:stop].to(device)
        features, summary = cvae.condition_encoder(cond)
        truth = exsitu[start:stop].to(device) if exsitu is not None else None
        z = _latents(cvae, mode, n_samples, features, summary, exsitu=truth, flow=flow, generator=generator).flatten(
            0, 1
        )
        owner = torch.arange(stop - start, device=device).repeat_interleave(n_samples)
        mask = galaxy_mask(cond)
        for first in range(0, owner.numel(), batch_size):
            which = owner[first : first + batch_size]
            likelihood = cvae.decoder(
                z[first : first + batch_size],
                [f.index_select(0, which) for f in features],
                summary.index_select(0, which),
            )
            yield slice(start, stop), slice(first, first + which.numel()), likelihood, mask.index_select(0, which)


@torch.no_grad()
def posterior_samples(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    *,
    exsitu: torch.Tensor | None = None,
    flow: LatentFlow | None = None,
    predictive: str = "full",
    noise_scale: float = 1.0,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """K posterior samples of the ex-situ fraction map for each of N maps.

    conditions: (N, C, P, P) normalised as ``exsitu.dataset.load_subset`` returns them.
    mode: "reconstruction" (needs ``exsitu``, (N, 1, P, P) true maps), "prior", or "flow"
        (needs ``flow``, the model of ``train_flow``).
    predictive: "full" (draws from the decoded likelihood) or "mean" (its mean map per z).
    noise_scale: factor on the likelihood's residual standard deviations (1: as trained; the
        recalibrate stage fits it, see ``exsitu.recalibration``).
    batch_size: (map, sample) pairs decoded per forward pass.
    generator: a torch.Generator on the model's device, for reproducible draws.
    Returns (N, K, P, P) float32 in [0, 1] on the CPU; pixels outside the galaxy are 0.
    """
    _check(mode, n_samples, batch_size, exsitu, flow)
    if predictive not in PREDICTIVES:
        raise InputError(f"predictive must be one of {PREDICTIVES}, got {predictive!r}")
    if not noise_scale > 0:
        raise InputError(f"noise_scale must be > 0, got {noise_scale}")
    n, p = conditions.shape[0], conditions.shape[-1]
    out = torch.empty(n, n_samples, p, p, dtype=torch.float32)
    for maps, pairs, likelihood, galaxy in _decoded(
        cvae, conditions, n_samples, mode, exsitu=exsitu, flow=flow, batch_size=batch_size, generator=generator
    ):
        likelihood = likelihood.scaled(noise_scale)
        draw = likelihood.sample(galaxy, generator) if predictive == "full" else likelihood.mean(galaxy)
        out[maps].view(-1, p, p)[pairs] = draw.squeeze(1).cpu()
    return out


@torch.no_grad()
def posterior_logits(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    *,
    exsitu: torch.Tensor | None = None,
    flow: LatentFlow | None = None,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The full-predictive draws of :func:`posterior_samples` split into (loc, residual) logits.

    Both (N, K, P, P) float32 on the model's device (their consumer scores them there): the
    decoded mean logit per z and one residual draw
    (coherent + diagonal) at noise scale 1. ``to_fraction(loc + s * residual) * mask`` is the
    sample that ``posterior_samples(..., noise_scale=s)`` draws from the same generator state,
    so one pass serves every candidate scale.
    """
    _check(mode, n_samples, batch_size, exsitu, flow)
    n, p = conditions.shape[0], conditions.shape[-1]
    loc = torch.empty(n, n_samples, p, p, dtype=torch.float32, device=_device(cvae))
    residual = torch.empty_like(loc)
    for maps, pairs, likelihood, _ in _decoded(
        cvae, conditions, n_samples, mode, exsitu=exsitu, flow=flow, batch_size=batch_size, generator=generator
    ):
        centre = likelihood.loc.float()
        loc[maps].view(-1, p, p)[pairs] = centre.squeeze(1)
        residual[maps].view(-1, p, p)[pairs] = (likelihood.sample_logit(generator) - centre).squeeze(1)
    return loc, residual


@torch.no_grad()
def predict_baseline(baseline: Baseline, conditions: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Deterministic ex-situ fraction maps (N, P, P), float32 in [0, 1], on the CPU: the mean of
    the baseline's map likelihood, 0 outside the galaxy.

    ``conditions`` are normalised (N, 5, P, P) maps as ``exsitu.dataset.load_subset`` returns
    them; they are moved batch by batch to the model's device.
    """
    baseline.eval()
    device = _device(baseline)
    out = []
    for start in range(0, conditions.shape[0], batch_size):
        cond = conditions[start : start + batch_size].to(device)
        out.append(baseline(cond).mean(galaxy_mask(cond)).squeeze(1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, *conditions.shape[-2:])
