"""Posterior sampling of ex-situ maps from the trained cVAE, in the paper's three modes.

- ``reconstruction``: z ~ q(z | true ex-situ map, conditions), the lower bound on the error;
- ``prior``: z ~ N(0, 1);
- ``flow``: z ~ p_flow(z | condition context), the realistic inference mode.

Each z is decoded to the likelihood of a whole map (``exsitu.likelihood.MapLikelihood``) and then
``predictive`` decides what a sample is:

- ``"full"``: one map drawn from p(eps | z, theta), spatially correlated residual included; the
  samples' spread is the whole posterior uncertainty (latent and residual);
- ``"mean"``: the likelihood's mean map E[eps | z, theta]; the samples' spread is what the
  latent alone carries.

One sampler, :func:`sample_in_chunks`: maps are taken ``maps_per_chunk`` at a time (that bounds the
memory of the samples it hands back); the condition encoder runs once per map and its features are
broadcast over the K samples; the decoder runs over (map, sample) pairs in passes of
:func:`decode_batch` pairs (that bounds the decoder's activations at any map size). Every map draws
its random numbers from its own generator, seeded with its own seed, in a fixed order (its K latent
draws, then, the first time a pass reaches it, the residual noise of its K samples): a map's samples
depend only on the model, the map, its seed, K and the noise scales, never on the chunk or pass
sizes or on the map's position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from exsitu.baseline import Baseline
from exsitu.cvae import CVAE, galaxy_mask
from exsitu.flow import LatentFlow, flow_context
from exsitu.io import InputError
from exsitu.likelihood import AS_TRAINED, MapLikelihood, NoiseScales, ResidualDraw, ResidualNoise

ModelT = TypeVar("ModelT", bound=torch.nn.Module)

MODES = ("reconstruction", "prior", "flow")
PREDICTIVES = ("full", "mean")
#: Maps per chunk of the sampler (bounds memory at MAPS_PER_CALL x K x P^2 floats of samples).
MAPS_PER_CALL = 64
#: Decoder pass budget in (map, sample) pairs at 32 x 32 maps and 16 base channels; the pairs per
#: pass scale with 1 / (P^2 x channels), which bounds a pass's activations at any map size.
PAIRS_AT_32 = {"cpu": 128, "cuda": 2048}
#: Maps per batch of :func:`encode`: on the 2-core development CPU, the flow's 8 x 2120 training maps of 32^2
#: encode in 6.5-6.8 s in batches of 128 against 8.5-11 s in batches of 256 (the activations stay in the caches),
#: bit for bit the same latents.
ENCODE_BATCH = 128


def decode_batch(device: torch.device, npix: int = 32, base_channels: int = 16) -> int:
    """(map, sample) pairs per decoder pass for maps of ``npix``^2 and a network of ``base_channels``.

    128 on the CPU at 32^2 and 16 channels, 2048 on CUDA; at 128^2 and 32 channels that is 4 and 64
    (the paper run's recalibrate peaked at 12.5 GB decoding 512 such pairs at once). On the 2-core
    development CPU (AMD EPYC, 32 MB L3) the flow samples of 96 test maps x 100 took a median 4.1 s at
    128 pairs per pass, 5.0 s at 256 and 6.0 s at 512 (5 repeats each): a pass's activations stay in
    the caches. The samples agree with 512's to float rounding (bit for bit at 256).
    """
    budget = PAIRS_AT_32["cuda" if device.type == "cuda" else "cpu"] * 32 * 32 * 16
    return max(1, budget // (npix * npix * base_channels))


def maps_in_budget(n_samples: int, npix: int, budget: int) -> int:
    """Maps per chunk (>= 1) so that a chunk's (maps, n_samples, npix, npix) samples hold at most ``budget`` floats."""
    return max(1, budget // (n_samples * npix * npix))


def sampling_layout(model: ModelT) -> ModelT:
    """``model`` (in place, and returned) in the channels-last memory format the sampler runs fastest in.

    oneDNN's convolutions and nearest-neighbour upsampling take channels-last batches of hundreds of
    maps about 1.6x faster on a CPU (the decoder on 512 (map, sample) pairs of 32^2); the outputs
    agree with the default layout to ~1e-5 in logit (another summation order). The training loop
    sets its own layout, so trained weights never depend on this; the stages that sample (evaluate,
    recalibrate, predict) put their models in it when they load them.
    """
    return model.to(memory_format=torch.channels_last)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode(
    cvae: CVAE,
    conditions: torch.Tensor,
    exsitu: torch.Tensor,
    scalars: torch.Tensor | None = None,
    batch_size: int = ENCODE_BATCH,
    context: str = "summary",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(z | eps, theta) of every map: (mu, std, flow context) on the CPU, float32.

    mu, std: (N, latent_dim) in latent units; the flow context (N, D) of kind ``context``
    (``exsitu.flow.flow_context``: the condition encoder's summary vector, or it and the pooled
    features) is what the flow is conditioned on; scalars: (N, S) galaxy scalars when the model takes them.
    """
    cvae.eval()
    device = _device(cvae)
    mus, stds, contexts = [], [], []
    for start in range(0, conditions.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        features, summary = cvae.encode_conditions(
            conditions[rows].to(device), None if scalars is None else scalars[rows].to(device)
        )
        mu, logvar = cvae.encoder(exsitu[rows].to(device), features, summary)
        mus.append(mu.float().cpu())
        stds.append(torch.exp(0.5 * logvar).float().cpu())
        contexts.append(flow_context(context, features, summary).float().cpu())
    return torch.cat(mus), torch.cat(stds), torch.cat(contexts)


def _check(
    mode: str, n_samples: int, n_maps: int, seeds: Sequence[int], exsitu: torch.Tensor | None, flow: LatentFlow | None
) -> None:
    if mode not in MODES:
        raise InputError(f"sampling mode must be one of {MODES}, got {mode!r}")
    if mode == "reconstruction" and exsitu is None:
        raise InputError("sampling mode 'reconstruction' needs the true ex-situ maps (exsitu=...)")
    if mode == "flow" and flow is None:
        raise InputError("sampling mode 'flow' needs the trained flow (flow=...)")
    if n_samples < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    if len(seeds) != n_maps:
        raise InputError(f"one seed per map is needed: {n_maps} maps, {len(seeds)} seeds")


@dataclass
class Pass:
    """One decoder pass of a chunk: ``pairs`` (map-major (map, sample) pairs of the chunk), their
    likelihoods and (pairs, 1, P, P) galaxy masks, and their residual noise (None when not drawn)."""

    pairs: slice
    likelihood: MapLikelihood
    mask: torch.Tensor
    noise: ResidualNoise | None


def decoded_in_chunks(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    *,
    seeds: Sequence[int] | np.ndarray,
    flow: LatentFlow | None = None,
    exsitu: torch.Tensor | None = None,
    scalars: torch.Tensor | None = None,
    maps_per_chunk: int = MAPS_PER_CALL,
    pairs_per_pass: int | None = None,
    with_noise: bool = True,
) -> Iterator[tuple[slice, Iterator[Pass]]]:
    """The decoded likelihoods of K latent draws per map, chunk by chunk and pass by pass.

    Yields (maps of the chunk, its passes); each pass must be consumed before the next is asked for.
    ``with_noise``: draw each pair's residual noise (for draws; not needed for the mean map). The
    arguments are those of :func:`sample_in_chunks`; ``pairs_per_pass`` defaults to
    :func:`decode_batch`.
    """
    seeds = [int(s) for s in np.asarray(seeds).reshape(-1)]
    _check(mode, n_samples, conditions.shape[0], seeds, exsitu, flow)
    if maps_per_chunk < 1 or (pairs_per_pass is not None and pairs_per_pass < 1):
        raise InputError(f"maps_per_chunk and pairs_per_pass must be >= 1, got {maps_per_chunk}, {pairs_per_pass}")
    cvae.eval()
    if flow is not None:
        flow.eval()
    device = _device(cvae)
    npix = conditions.shape[-1]
    pairs_per_pass = pairs_per_pass or decode_batch(device, npix, cvae.cfg.base_channels)
    for start in range(0, conditions.shape[0], maps_per_chunk):
        stop = min(conditions.shape[0], start + maps_per_chunk)
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds[start:stop]]
        yield slice(start, stop), _passes(
            cvae, conditions[start:stop].to(device), n_samples, mode, generators,
            flow=flow, exsitu=None if exsitu is None else exsitu[start:stop].to(device),
            scalars=None if scalars is None else scalars[start:stop].to(device),
            pairs_per_pass=pairs_per_pass, with_noise=with_noise,
        )  # fmt: skip


def _latents(
    cvae: CVAE,
    mode: str,
    n_samples: int,
    features: list[torch.Tensor],
    summary: torch.Tensor,
    generators: list[torch.Generator],
    *,
    exsitu: torch.Tensor | None,
    flow: LatentFlow | None,
) -> torch.Tensor:
    """(maps, K, latent_dim) latent draws, each map's from its own generator."""
    if mode == "flow":
        context = flow.context_of(features, summary)
        return flow.sample(n_samples, context, generator=generators)
    dim = cvae.cfg.latent_dim
    noise = torch.stack([torch.randn((n_samples, dim), generator=g, device=summary.device) for g in generators])
    if mode == "prior":
        return noise
    mu, logvar = cvae.encoder(exsitu, features, summary)
    return mu[:, None] + noise * torch.exp(0.5 * logvar)[:, None]


def _passes(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    generators: list[torch.Generator],
    *,
    flow: LatentFlow | None,
    exsitu: torch.Tensor | None,
    scalars: torch.Tensor | None,
    pairs_per_pass: int,
    with_noise: bool,
) -> Iterator[Pass]:
    """The decoder passes of one chunk (see :func:`decoded_in_chunks`)."""
    with torch.no_grad():
        features, summary = cvae.encode_conditions(conditions, scalars)
        z = _latents(cvae, mode, n_samples, features, summary, generators, exsitu=exsitu, flow=flow).flatten(0, 1)
    owner = torch.arange(conditions.shape[0], device=conditions.device).repeat_interleave(n_samples)
    mask = galaxy_mask(conditions)
    npix = conditions.shape[-1]
    per_map_scale = cvae.cfg.likelihood.startswith("student_t")
    noise_of: dict[int, ResidualNoise] = {}  # the residual noise of the maps the current pass reaches
    for first in range(0, owner.numel(), pairs_per_pass):
        last = min(owner.numel(), first + pairs_per_pass)
        which = owner[first:last]
        # The features of the maps this pass reaches, once each (the decoder shares them over their samples); the
        # pairs are map-major, so those maps are one contiguous run.
        reached = slice(int(which[0]), int(which[-1]) + 1)
        with torch.no_grad():
            likelihood = cvae.decoder(
                z[first:last], [f[reached] for f in features], summary[reached], owner=which - reached.start
            )
        noise = None
        if with_noise:
            maps = range(first // n_samples, (last - 1) // n_samples + 1)
            noise_of = {i: v for i, v in noise_of.items() if i in maps}
            for i in maps:  # the first pass that reaches map i draws the residual noise of all its K samples
                if i not in noise_of:
                    noise_of[i] = ResidualNoise.draw(
                        n_samples, cvae.cfg.rank, npix, per_map_scale, generators[i], conditions.device
                    )
            noise = ResidualNoise.cat(
                [noise_of[i].rows(max(first - i * n_samples, 0), min(last - i * n_samples, n_samples)) for i in maps]
            )
        yield Pass(slice(first, last), likelihood, mask.index_select(0, which), noise)


def sample_in_chunks(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    *,
    seeds: Sequence[int] | np.ndarray,
    flow: LatentFlow | None = None,
    exsitu: torch.Tensor | None = None,
    scalars: torch.Tensor | None = None,
    predictive: str = "full",
    noise: NoiseScales = AS_TRAINED,
    maps_per_chunk: int = MAPS_PER_CALL,
    pairs_per_pass: int | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """K posterior samples of the ex-situ fraction map of each of N maps, ``maps_per_chunk`` maps at a time.

    conditions: (N, C, P, P) normalised as ``exsitu.dataset`` returns them (any device).
    mode: "reconstruction" (needs ``exsitu``, (N, 1, P, P) true maps), "prior", or "flow" (needs
        ``flow``, the model of ``train_flow``).
    seeds: (N,) integers, one per map; see the module doc for what a map's samples depend on.
    scalars: (N, S) galaxy scalars for a model that takes them (``CVAE.encode_conditions``).
    predictive: "full" (draws from the decoded likelihood) or "mean" (its mean map per z).
    noise: the noise scales of the residual (``exsitu.recalibration``; the default is as trained).
    pairs_per_pass: (map, sample) pairs per decoder pass (default :func:`decode_batch`).
    Yields (maps of this chunk, samples (n, K, P, P) float32 in [0, 1] on the CPU, 0 off the galaxy).
    """
    for maps, samples in predictives_in_chunks(
        cvae, conditions, n_samples, mode, seeds=seeds, flow=flow, exsitu=exsitu, scalars=scalars,
        predictives=(predictive,), noise=noise, maps_per_chunk=maps_per_chunk, pairs_per_pass=pairs_per_pass,
    ):  # fmt: skip
        yield maps, samples[predictive]


def predictives_in_chunks(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    *,
    seeds: Sequence[int] | np.ndarray,
    predictives: Sequence[str],
    flow: LatentFlow | None = None,
    exsitu: torch.Tensor | None = None,
    scalars: torch.Tensor | None = None,
    noise: NoiseScales = AS_TRAINED,
    maps_per_chunk: int = MAPS_PER_CALL,
    pairs_per_pass: int | None = None,
) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
    """:func:`sample_in_chunks` for several ``predictives`` of the same latent draws, from one decoder pass.

    Yields (maps of this chunk, predictive -> samples (n, K, P, P)); each predictive's samples are
    bit for bit those of ``sample_in_chunks(..., predictive=...)`` with the same arguments (a map's
    latents come first from its generator, the residual noise after), at the cost of one decoding.
    """
    unknown = [p for p in predictives if p not in PREDICTIVES]
    if unknown or not predictives:
        raise InputError(f"predictive must be one of {PREDICTIVES}, got {list(predictives)!r}")
    p = conditions.shape[-1]
    for maps, passes in decoded_in_chunks(
        cvae, conditions, n_samples, mode, seeds=seeds, flow=flow, exsitu=exsitu, scalars=scalars,
        maps_per_chunk=maps_per_chunk, pairs_per_pass=pairs_per_pass, with_noise="full" in predictives,
    ):  # fmt: skip
        out = {name: torch.empty(maps.stop - maps.start, n_samples, p, p, dtype=torch.float32) for name in predictives}
        for step in passes:
            with torch.no_grad():
                for name in predictives:
                    if name == "full":
                        draw = step.likelihood.residual(step.noise).fractions(step.mask, noise)
                    else:
                        draw = step.likelihood.scaled(noise).mean(step.mask)
                    out[name].view(-1, p, p)[step.pairs] = draw.squeeze(1).cpu()
        yield maps, out


def residual_draws_in_chunks(
    cvae: CVAE,
    conditions: torch.Tensor,
    n_samples: int,
    mode: str,
    *,
    seeds: Sequence[int] | np.ndarray,
    flow: LatentFlow | None = None,
    scalars: torch.Tensor | None = None,
    maps_per_chunk: int = MAPS_PER_CALL,
) -> Iterator[tuple[slice, ResidualDraw, torch.Tensor]]:
    """The full-predictive draws of :func:`sample_in_chunks` kept in parts, chunk by chunk.

    Yields (maps, draws of the chunk's (map, sample) pairs (n K, 1, P, P), map-major, on the model's
    device, their galaxy masks): ``draws.fractions(mask, s)`` are the samples that
    ``sample_in_chunks(..., noise=s)`` gives with the same seeds, for any noise scales s, so one
    decoder pass serves every candidate of ``exsitu.recalibration``.
    """
    for maps, passes in decoded_in_chunks(
        cvae, conditions, n_samples, mode, seeds=seeds, flow=flow, scalars=scalars, maps_per_chunk=maps_per_chunk
    ):
        draws, masks = [], []
        for step in passes:
            with torch.no_grad():
                draws.append(step.likelihood.residual(step.noise))
            masks.append(step.mask)
        yield maps, ResidualDraw.cat(draws), torch.cat(masks)


@torch.no_grad()
def predict_baseline(
    baseline: Baseline, conditions: torch.Tensor, scalars: torch.Tensor | None = None, batch_size: int = 256
) -> torch.Tensor:
    """Deterministic ex-situ fraction maps (N, P, P), float32 in [0, 1], on the CPU: the median of the baseline's
    likelihood per pixel (``MapLikelihood.median``: the sigmoid of its mean logit without the hurdle), the
    MAE-optimal point, as the posteriors' medians, 0 outside the galaxy.

    ``conditions`` are normalised (N, C, P, P) maps as ``exsitu.dataset`` holds them, ``scalars`` (N, S) the
    galaxy scalars the network takes; both are moved batch by batch to the model's device.
    """
    baseline.eval()
    device = _device(baseline)
    out = []
    for start in range(0, conditions.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        cond = conditions[rows].to(device).float()
        likelihood = baseline(cond, None if scalars is None else scalars[rows].to(device))
        out.append(likelihood.median(galaxy_mask(cond)).squeeze(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, *conditions.shape[-2:])
