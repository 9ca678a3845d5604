"""Recalibrate the decoder's residual noise on held-out maps with a proper whole-map score.

Why: the map likelihood (``exsitu.likelihood``) is trained by maximum likelihood within a
low-rank + diagonal family. On the smooth mock fields its residual covariance came out several
times too wide on validation maps (per-pixel 68% intervals covered ~94% of the truth, whole-map
TARP credibilities far from uniform), for reconstructions and flow samples alike. A fit that
is misspecified in its covariance family is not protected from this: maximum likelihood then
trades the marginal widths against the correlations it cannot express.

What: one scalar ``s`` multiplies every residual standard deviation of the decoded likelihood
(``MapLikelihood.scaled``). It is chosen on the VALIDATION maps, never the test maps, as the
minimiser of the energy score of the flow's full predictive (the posterior a user draws),

    ES(F, y) = E ||X - y|| - 1/2 E ||X - X'||,   X, X' ~ F independent,

over the galaxy pixels of each map in ex-situ fraction units (Gneiting & Raftery 2007, JASA
102, 359). The energy score is strictly proper for whole maps, so its expected value is lowest
at the true predictive: the scale follows from a score, not from matching a coverage target.
Maps are weighted 1 / n_los so that every validation galaxy counts once, as in the evaluation.

The scores of all candidate scales come from one set of draws (``posterior_logits``): a sample
at scale s is ``to_fraction(loc + s * residual)``, with the same z and the same random numbers,
so the comparison between scales has no sampling noise between them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from exsitu.bootstrap import galaxy_weights
from exsitu.cvae import CVAE
from exsitu.dataset import MapSet
from exsitu.flow import LatentFlow
from exsitu.io import InputError, atomic_output, read_json
from exsitu.likelihood import to_fraction
from exsitu.sample import MAPS_PER_CALL, decode_batch, posterior_logits
from exsitu.settings import RecalibrateSettings

#: Candidate noise scales: 0.1 to 2 in steps of 8%; the minimum is refined by a parabola in log s.
SCALES = np.geomspace(0.1, 2.0, 40)


@dataclass(frozen=True)
class NoiseScaleFit:
    """The fitted noise scale and the curve it comes from (the recalibrate stage's JSON)."""

    noise_scale: float
    scales: tuple[float, ...]
    energy_score: tuple[float, ...]
    n_maps: int
    n_galaxies: int
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        method = "minimum of the validation energy score of the flow's full predictive (fraction units)"
        return {**asdict(self), "method": method}


def energy_scores(samples: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Energy score of each map's samples against its truth, over its galaxy pixels: (N,).

    samples: (N, K, P, P), K >= 2; truth: (N, P, P); mask: (N, P, P) bool. Units of the maps
    (fractions here). The spread term uses all K (K - 1) pairs (the unbiased estimator).
    """
    n, k = samples.shape[:2]
    if k < 2:
        raise InputError(f"the energy score needs at least 2 samples per map, got {k}")
    out = torch.empty(n, dtype=torch.float64, device=samples.device)
    for i in range(n):
        keep = mask[i].bool()
        x = samples[i][:, keep].double()
        y = truth[i][keep].double()
        error = torch.linalg.vector_norm(x - y, dim=1).mean()
        spread = torch.cdist(x, x).sum() / (k * (k - 1))
        out[i] = error - 0.5 * spread
    return out


def scale_scores(
    loc: torch.Tensor,
    residual: torch.Tensor,
    truth: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    scales: np.ndarray,
) -> torch.Tensor:
    """Weighted sum over maps of the energy score at each candidate scale: (len(scales),) float64.

    loc, residual: (N, K, P, P) logits as ``posterior_logits`` returns them; truth: (N, P, P)
    fractions; mask: (N, P, P) galaxy pixels; weights: (N,) map weights.
    """
    out = torch.empty(len(scales), dtype=torch.float64, device=loc.device)
    for j, scale in enumerate(scales):
        samples = to_fraction(loc + float(scale) * residual) * mask[:, None]
        out[j] = (weights.double() * energy_scores(samples, truth, mask)).sum()
    return out


def best_scale(scales: np.ndarray, scores: np.ndarray) -> float:
    """The scale of the lowest score, refined by a parabola through it and its neighbours in log s.

    A minimum at either end of the grid is returned as it is (the caller warns).
    """
    i = int(np.argmin(scores))
    if i == 0 or i == len(scales) - 1:
        return float(scales[i])
    x = np.log(scales[i - 1 : i + 2])
    a, b, _ = np.polyfit(x, scores[i - 1 : i + 2], 2)
    return float(np.exp(-b / (2 * a))) if a > 0 else float(scales[i])


def fit_noise_scale(
    cvae: CVAE, flow: LatentFlow, maps: MapSet, settings: RecalibrateSettings, scales: np.ndarray = SCALES
) -> NoiseScaleFit:
    """Fit the noise scale on ``maps`` (the validation subset); see the module doc.

    Every candidate scale is scored on the same ``settings.n_samples`` flow draws per map.
    """
    device = next(cvae.parameters()).device
    galaxies, _, map_weights = galaxy_weights(maps.table["galaxy_id"].to_numpy())
    weights = torch.as_tensor(map_weights, dtype=torch.float64, device=device)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    totals = torch.zeros(len(scales), dtype=torch.float64)
    for start in range(0, len(maps), MAPS_PER_CALL):
        stop = min(len(maps), start + MAPS_PER_CALL)
        loc, residual = posterior_logits(
            cvae, maps.conditions[start:stop], settings.n_samples, "flow",
            flow=flow, batch_size=decode_batch(device), generator=generator,
        )  # fmt: skip
        # scored on the model's device: at 128 x 128 the K^2 pair distances are most of the work
        truth, mask = maps.exsitu[start:stop, 0].to(device), maps.mask[start:stop, 0].to(device)
        totals += scale_scores(loc, residual, truth, mask, weights[start:stop], scales).cpu()
    mean = (totals / weights.sum().cpu()).numpy()
    scale = best_scale(np.asarray(scales), mean)
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(f"the noise-scale fit gave {scale}; the validation energy scores were {mean}")
    return NoiseScaleFit(
        noise_scale=scale,
        scales=tuple(float(s) for s in scales),
        energy_score=tuple(float(v) for v in mean),
        n_maps=len(maps),
        n_galaxies=len(galaxies),
        n_samples=settings.n_samples,
    )


def unscaled(n_maps: int, n_galaxies: int) -> NoiseScaleFit:
    """The record of ``recalibrate.enabled: false``: the likelihood as trained (scale 1, no curve)."""
    return NoiseScaleFit(noise_scale=1.0, scales=(), energy_score=(), n_maps=n_maps, n_galaxies=n_galaxies, n_samples=0)


def write_noise_scale(path: str | os.PathLike, fit: NoiseScaleFit) -> None:
    """Write the recalibrate stage's JSON atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(fit.to_dict(), indent=2))


def check_noise_scale(scale: Any, source: str | os.PathLike) -> float:
    """``scale`` as a float if it is a finite number > 0; otherwise one error naming ``source`` and the key."""
    if not (isinstance(scale, int | float) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
        raise InputError(f"{source}: 'noise_scale' must be a finite number > 0, got {scale!r}")
    return float(scale)


def read_noise_scale(path: str | os.PathLike) -> float:
    """The fitted noise scale from the recalibrate stage's JSON; a bad file is one clear error."""
    return check_noise_scale(read_json(path, ("noise_scale",), "noise-scale file")["noise_scale"], path)
