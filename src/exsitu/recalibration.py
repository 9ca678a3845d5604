"""Recalibrate the decoder's residual noise on held-out maps with whole-map scores that see correlations.

Why: the map likelihood (``exsitu.likelihood``) is trained by maximum likelihood within its
family. On the smooth mock fields the low-rank + diagonal Gaussian's residual came out ~2.5 times
too wide in standard deviation on validation maps. A fit that is misspecified in its covariance
family (or its tails) is not protected from this: maximum likelihood then trades the marginal
widths against the correlations and tails it cannot express. The heavier-tailed families are
meant to need little of it; this stage measures how much is left.

What: two factors, ``NoiseScales(lowrank, diagonal)``, on the factor maps F (the correlated part
of the residual) and on the diagonal std sqrt(d) (the independent part), chosen on the
VALIDATION maps, never the test maps, with two proper scores of the flow's full predictive (the
posterior a user draws), both in ex-situ fraction units over each map's galaxy pixels:

- the energy score ES(F, y) = E||X - y|| - 1/2 E||X - X'|| (Gneiting & Raftery 2007, JASA 102,
  359): strictly proper for whole maps, but in ~10^3 dimensions it checks little beyond the
  total variance;
- the variogram score of order p = 1/2 (Scheuerer & Hamill 2015, MWR 143, 1321),
  VS(F, y) = mean over pixel pairs (i, j) of (|y_i - y_j|^p - E|X_i - X_j|^p)^2: it compares the
  spread of DIFFERENCES between pixels, which the correlations set (a correlated residual moves
  neighbours together, an independent one apart), and it is blind to a common offset. The pairs
  are every pair of galaxy pixels at the dyadic lags 1, 2, 4, ..., P/4 pixels along both axes,
  so every spatial scale counts and the cost is O(pixels log P).

Both are scored on a grid of (lowrank, diagonal) scales (:data:`SCALES` on each axis). They are
combined as ES / min ES + VS / min VS over the grid: a sum of proper scores with positive weights
is proper, and dividing each by its own minimum makes the two unit-free, so that each counts by
its relative change; the minimum is refined by a parabola in log scale along each axis. Both
surfaces go into the JSON.

``recalibrate.method: scores`` takes both scales from that minimum. Measured on the default mock
it makes the per-pixel intervals too narrow (68% intervals covering 0.62 of the test pixels): the
whole-map scores reward the sharpness of ~10^3 pixels at once and hardly see the width of each.
``method: coverage`` (the default) keeps the low-rank scale of the scores, which sets the spread
of whole-map functionals (integrated fractions, profiles), and sets the diagonal scale, which
sets the width of each pixel's interval beyond the correlated part, so that the galaxy-weighted
share of validation pixels inside their central 68% and 95% intervals matches those levels
(least squares over the two levels, coverage interpolated linearly in log scale between grid
points; quantile recalibration in the sense of Kuleshov et al. 2018, ICML, with one parameter).
The coverage surfaces go into the JSON as well. The former single scale (the ES minimum along lowrank = diagonal) is
kept as ``noise_scale`` for consumers that apply one factor to the whole residual.

``method: joint`` calibrates the whole-map functionals as well: the low-rank scale is chosen so that
the validation maps' integrated ex-situ fraction (mass-weighted over the field of view, computed per
sampled map) falls inside its central 68% and 95% intervals at those rates, with the diagonal scale
coverage-matched per pixel at each candidate low-rank scale as above (least squares over the two
levels along the curve lowrank -> diagonal(lowrank)). It targets directly what astronomers quote
from the samples, on validation maps only; the whole-map scores still go into the JSON. With ~75
validation galaxies the integrated coverage it matches has a standard error of ~0.05 at 68%.

Every candidate is scored on the same draws (``exsitu.sample.residual_draws_in_chunks``: a draw at
other scales reuses its z and random numbers), so the comparison between scales has no sampling
noise. Maps are weighted 1 / n_los so that every validation galaxy counts once, as in the
evaluation. Memory is bounded by a chunk of maps (:data:`CHUNK_ELEMENTS` floats of draws); score sums are
accumulated per grid point.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from exsitu.bootstrap import galaxy_weights
from exsitu.cvae import CVAE
from exsitu.dataset import MapSet
from exsitu.flow import LatentFlow
from exsitu.io import InputError, atomic_output, read_json
from exsitu.likelihood import AS_TRAINED, NoiseScales, ResidualDraw, is_noise_scale
from exsitu.sample import maps_in_budget, residual_draws_in_chunks
from exsitu.settings import RecalibrateSettings

#: Candidate scales of each part: 2^(k/2) for k = -5..2, 0.18 to 2 in steps of 41%, 1 included; the
#: minimum is refined by a parabola along each axis.
SCALES = 2.0 ** (np.arange(-5, 3) / 2)
#: Central-interval levels whose per-pixel coverage ``method: coverage`` matches on the validation maps.
COVERAGE_TARGETS: tuple[float, ...] = (0.68, 0.95)
METHODS = ("coverage", "joint", "scores")
VARIOGRAM_ORDER = 0.5
#: Float elements of one draw tensor per chunk (maps x samples x pixels): 16 MB in float32.
CHUNK_ELEMENTS = 2**22


def energy_scores(samples: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Energy score of each map's samples against its truth, over its galaxy pixels: (N,) float64.

    samples: (N, K, P, P), K >= 2; truth: (N, P, P); mask: (N, P, P) bool. Units of the maps
    (fractions here). The spread term uses all K (K - 1) pairs (the unbiased estimator). Pixels off
    the galaxy are set to 0 in samples and truth, which adds nothing to any distance.
    """
    k = samples.shape[1]
    if k < 2:
        raise InputError(f"the energy score needs at least 2 samples per map, got {k}")
    m = mask.bool().flatten(1)[:, None]
    x, y = samples.flatten(2).float() * m, truth.flatten(1)[:, None].float() * m
    error = torch.linalg.vector_norm(x - y, dim=-1).double().mean(1)
    # In float32 through the Gram matrix (fast); its diagonal, 0 in exact arithmetic, is rounding: left out.
    pairs = torch.cdist(x, x).double()
    spread = (pairs.sum((1, 2)) - torch.diagonal(pairs, dim1=1, dim2=2).sum(1)) / (k * (k - 1))
    return error - 0.5 * spread


def variogram_lags(npix: int) -> list[tuple[int, int]]:
    """Pixel offsets (dy, dx) of the variogram score's pairs: dyadic lags 1, 2, 4, ..., P/4 along each axis."""
    return [lag for d in 2 ** np.arange(int(math.log2(max(npix // 4, 1))) + 1) for lag in ((0, int(d)), (int(d), 0))]


def variogram_scores(
    samples: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, order: float = VARIOGRAM_ORDER
) -> torch.Tensor:
    """Variogram score of order ``order`` of each map (Scheuerer & Hamill 2015): (N,) float64.

    The mean over the map's pairs of galaxy pixels at :func:`variogram_lags` of
    (|y_i - y_j|^p - mean_k |x_ki - x_kj|^p)^2, in map units^(2p). samples: (N, K, P, P);
    truth: (N, P, P); mask: (N, P, P) bool. A map without such pairs scores 0.
    """
    x, y, m = samples.float(), truth.float()[:, None], mask.bool()
    p = m.shape[-1]
    total = torch.zeros(m.shape[0], dtype=torch.float64, device=x.device)
    count = torch.zeros_like(total)
    for dy, dx in variogram_lags(p):
        pair = m[:, : p - dy, : p - dx] & m[:, dy:, dx:]
        expected = (x[..., : p - dy, : p - dx] - x[..., dy:, dx:]).abs().pow(order).mean(1)
        observed = (y[..., : p - dy, : p - dx] - y[..., dy:, dx:]).abs().pow(order)[:, 0]
        total += ((observed - expected).pow(2) * pair).sum((1, 2), dtype=torch.float64)
        count += pair.sum((1, 2))
    return total / count.clamp_min(1)


def sample_scores(samples: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both whole-map scores of each map's samples: {"energy": (N,), "variogram": (N,)} float64.

    The scores the recalibration fits with, for the evaluation to report on the test set
    (lower is better; fraction units). samples: (N, K, P, P) in [0, 1], K >= 2; truth: (N, P, P);
    mask: (N, P, P) bool galaxy pixels; tensors on any device (numpy arrays are taken too).
    """
    samples, truth, mask = (torch.as_tensor(a) for a in (samples, truth, mask))
    return {"energy": energy_scores(samples, truth, mask), "variogram": variogram_scores(samples, truth, mask)}


def pixels_covered(
    samples: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, levels: Sequence[float] = COVERAGE_TARGETS
) -> torch.Tensor:
    """Galaxy pixels of each map whose truth lies inside the samples' central interval of each level: (N, L).

    samples: (N, K, P, P); truth, mask: (N, P, P). The interval test uses the mid-rank PIT
    (rank of the truth among the K samples, ties split evenly), |PIT - 1/2| <= level / 2.
    """
    below = (samples < truth[:, None]).sum(1)
    ties = (samples == truth[:, None]).sum(1)
    pit = (below + 0.5 * (ties + 1)) / (samples.shape[1] + 1)
    inside = (pit - 0.5).abs()[..., None] <= torch.as_tensor(levels, device=pit.device) / 2
    return (inside & mask.bool()[..., None]).sum((1, 2)).double()


def integrated_covered(
    samples: torch.Tensor, truth: torch.Tensor, mass: torch.Tensor, levels: Sequence[float] = COVERAGE_TARGETS
) -> torch.Tensor:
    """Whether each map's integrated ex-situ fraction lies inside the samples' central interval of each level: (N, L).

    samples: (N, K, P, P) fractions; truth: (N, P, P); mass: (N, P, P) stellar mass (or surface
    density) per pixel, 0 off the galaxy. The integrated fraction is sum(m f) / sum(m) over the map
    (:func:`exsitu.functionals.integrated_fraction`); the interval test is that of :func:`pixels_covered`.
    """
    total = mass.sum((1, 2)).clamp_min(1e-300)
    sampled = (samples * mass[:, None]).sum((2, 3)) / total[:, None]  # (N, K)
    true = (truth * mass).sum((1, 2)) / total  # (N,)
    one = torch.ones_like(true)[:, None, None]
    return pixels_covered(sampled[..., None, None], true[:, None, None], one, levels)


def grid_scores(
    draws: ResidualDraw,
    mask: torch.Tensor,
    truth: torch.Tensor,
    weights: torch.Tensor,
    scales: np.ndarray,
    mass: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sums over maps of both scores and of the covered pixels and maps at every (lowrank, diagonal) pair.

    draws: n K draws of n maps (map-major) and their (n K, 1, P, P) galaxy masks, as
    ``residual_draws_in_chunks`` yields them; truth: (n, P, P) fractions; weights: (n,); mass: (n, P, P)
    stellar mass per pixel for the integrated fraction (None: each galaxy pixel weighs the same).
    Returns (2 + 2T, L, L) float64 on the CPU: [energy, variogram, covered pixels at each level of
    :data:`COVERAGE_TARGETS`, maps whose integrated fraction is covered at each level] x lowrank x diagonal.
    """
    n, p = truth.shape[0], truth.shape[-1]
    map_mask = mask.view(n, -1, p, p)[:, 0]
    mass = (map_mask.float() if mass is None else mass.float()) * map_mask
    mass = mass / mass.sum((1, 2), keepdim=True).clamp_min(1e-30)  # each map's weights sum to 1: no float32 overflow
    w = weights.double()
    out = torch.empty(2 + 2 * len(COVERAGE_TARGETS), len(scales), len(scales), dtype=torch.float64)
    for i, lowrank in enumerate(scales):
        for j, diagonal in enumerate(scales):
            samples = draws.fractions(mask, NoiseScales(float(lowrank), float(diagonal))).view(n, -1, p, p)
            scores = sample_scores(samples, truth, map_mask)
            covered = (w[:, None] * pixels_covered(samples, truth, map_mask)).sum(0)
            integrated = (w[:, None] * integrated_covered(samples, truth, mass)).sum(0)
            out[:, i, j] = torch.cat([torch.stack([(w * scores[name]).sum() for name in ("energy", "variogram")]),
                                      covered.cpu(), integrated.cpu()])  # fmt: skip
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


def best_scales(scales: np.ndarray, energy: np.ndarray, variogram: np.ndarray) -> NoiseScales:
    """(lowrank, diagonal) minimising ES / min ES + VS / min VS on the grid, refined along each axis."""
    combined = energy / energy.min() + variogram / variogram.min()
    i, j = np.unravel_index(int(np.argmin(combined)), combined.shape)
    return NoiseScales(best_scale(scales, combined[:, j]), best_scale(scales, combined[i, :]))


def coverage_matched_diagonal(
    scales: np.ndarray, coverage: np.ndarray, lowrank: float, levels: Sequence[float] = COVERAGE_TARGETS
) -> float:
    """The diagonal scale whose per-pixel coverage at ``lowrank`` best matches ``levels`` (module doc).

    coverage: (T, L, L) share of (galaxy-weighted) pixels inside the central interval of each level,
    lowrank x diagonal on ``scales``. Coverage is interpolated linearly in log scale, first along
    lowrank at ``lowrank``, then along diagonal on a fine grid; the least-squares scale is returned
    (an end of the grid when the levels are out of reach inside it).
    """
    x = np.log(np.asarray(scales, dtype=np.float64))
    at_lowrank = np.array(
        [[np.interp(np.log(lowrank), x, level[:, j]) for j in range(len(x))] for level in coverage]
    )  # (T, L) along diagonal
    fine = np.linspace(x[0], x[-1], 512)
    curves = np.array([np.interp(fine, x, row) for row in at_lowrank])
    misfit = ((curves - np.asarray(levels)[:, None]) ** 2).sum(0)
    return float(np.exp(fine[int(np.argmin(misfit))]))


def coverage_matched_scales(
    scales: np.ndarray,
    pixel_coverage: np.ndarray,
    integrated_coverage: np.ndarray,
    levels: Sequence[float] = COVERAGE_TARGETS,
) -> NoiseScales:
    """(lowrank, diagonal) for ``method: joint`` (module doc): along lowrank (a fine grid in log scale), the
    diagonal scale coverage-matched per pixel, and of those pairs the one whose integrated-fraction coverage
    best matches ``levels``.

    pixel_coverage, integrated_coverage: (T, L, L) shares of validation pixels and of validation maps
    inside their central interval of each level, lowrank x diagonal on ``scales``; interpolated
    linearly in log scale.
    """
    x = np.log(np.asarray(scales, dtype=np.float64))

    def misfit(pair: NoiseScales) -> float:
        covered = [_bilinear(x, level, np.log(pair.lowrank), np.log(pair.diagonal)) for level in integrated_coverage]
        return float(((np.asarray(covered) - np.asarray(levels)) ** 2).sum())

    lowranks = [float(s) for s in np.exp(np.linspace(x[0], x[-1], 64))]
    pairs = [NoiseScales(s, coverage_matched_diagonal(scales, pixel_coverage, s, levels)) for s in lowranks]
    return min(pairs, key=misfit)


def _bilinear(x: np.ndarray, grid: np.ndarray, u: float, v: float) -> float:
    """``grid`` (L, L) on the axes ``x`` x ``x``, linearly interpolated at (u, v) (clamped to the grid)."""
    along_u = np.array([np.interp(u, x, grid[:, j]) for j in range(len(x))])
    return float(np.interp(v, x, along_u))


@dataclass(frozen=True)
class NoiseScaleFit:
    """The fitted noise scales and the score surfaces they come from (the recalibrate stage's JSON).

    noise: the two scales; noise_scale: the best single factor on the whole residual (ES along
    lowrank = diagonal); energy_score, variogram_score: (L, L) galaxy-weighted means over the
    validation maps, rows lowrank, columns diagonal, on ``scales``; pixel_coverage: level ->
    (L, L) galaxy-weighted share of validation pixels inside their central interval;
    integrated_coverage: level -> (L, L) galaxy-weighted share of validation maps whose integrated
    ex-situ fraction (field of view) is inside its central interval.
    """

    method: str
    noise: NoiseScales
    noise_scale: float
    scales: tuple[float, ...]
    energy_score: tuple[tuple[float, ...], ...]
    variogram_score: tuple[tuple[float, ...], ...]
    n_maps: int
    n_galaxies: int
    n_samples: int
    variogram_lags: tuple[tuple[int, int], ...] = ()
    pixel_coverage: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)
    integrated_coverage: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise_scale": self.noise_scale,
            "noise": {"lowrank": self.noise.lowrank, "diagonal": self.noise.diagonal},
            "method": self.method,
            "method_description": METHOD_DESCRIPTIONS[self.method],
            "scales": list(self.scales),
            "energy_score": [list(row) for row in self.energy_score],
            "variogram_score": [list(row) for row in self.variogram_score],
            "pixel_coverage": {level: [list(row) for row in grid] for level, grid in self.pixel_coverage.items()},
            "integrated_coverage": {
                level: [list(row) for row in grid] for level, grid in self.integrated_coverage.items()
            },
            "variogram_order": VARIOGRAM_ORDER,
            "variogram_lags": [list(lag) for lag in self.variogram_lags],
            "n_maps": self.n_maps,
            "n_galaxies": self.n_galaxies,
            "n_samples": self.n_samples,
        }


_SCORES = (
    "validation maps, flow full predictive, fraction units: (lowrank, diagonal) minimise "
    "ES / min ES + VS / min VS over the grid (energy score; variogram score of order "
    f"{VARIOGRAM_ORDER} at the listed lags); noise_scale: the energy-score minimum along lowrank = diagonal"
)
METHOD_DESCRIPTIONS = {
    "scores": _SCORES,
    "coverage": _SCORES.replace(": (lowrank, diagonal) minimise", ": lowrank minimises", 1)
    + "; diagonal: the per-pixel coverage of the central 68% and 95% intervals matches those levels at that lowrank",
    "joint": _SCORES.replace(": (lowrank, diagonal) minimise", ": scores (reported) of", 1)
    + "; lowrank: the validation maps' integrated ex-situ fraction (field of view) is inside its central 68% and "
    "95% intervals at those rates; diagonal: the per-pixel coverage of those intervals matches them at that lowrank",
    "as_trained": "recalibrate.enabled is false: the likelihood as trained",
}


def fit_noise_scales(
    cvae: CVAE,
    flow: LatentFlow,
    chunks: Iterable[MapSet],
    table: pd.DataFrame,
    settings: RecalibrateSettings,
    *,
    scalars: Sequence[str] = (),
    scales: np.ndarray = SCALES,
) -> NoiseScaleFit:
    """Fit the noise scales on the validation maps, streamed as ``chunks``; see the module doc.

    table: the validation subset's split rows (for the galaxy weights); each chunk's ``table``
    index holds its maps' row numbers in it. Map i is sampled with seed ``settings.seed + i``
    (``settings.n_samples`` flow draws), so the fit does not depend on the chunking. ``scalars``: the
    galaxy scalars the model is conditioned on (``conditions.scalars``).
    """
    scales = np.asarray(scales, dtype=np.float64)
    if settings.method not in METHODS:
        raise InputError(f"recalibrate.method must be one of {METHODS}, got {settings.method!r}")
    galaxies, _, map_weights = galaxy_weights(table["galaxy_id"].to_numpy())
    device = next(cvae.parameters()).device
    totals = torch.zeros(2 + 2 * len(COVERAGE_TARGETS), len(scales), len(scales), dtype=torch.float64)
    pixels = 0.0  # galaxy-weighted galaxy pixels: the denominator of the coverage surfaces
    n_maps, lags = 0, ()
    for chunk in chunks:
        rows = chunk.table.index.to_numpy()
        npix = chunk.mask.shape[-1]
        lags = tuple(variogram_lags(npix))
        for maps, draws, mask in residual_draws_in_chunks(
            cvae, chunk.conditions, settings.n_samples, "flow", seeds=settings.seed + rows, flow=flow,
            scalars=chunk.scalars(scalars), maps_per_chunk=maps_in_budget(settings.n_samples, npix, CHUNK_ELEMENTS),
        ):  # fmt: skip
            truth = chunk.exsitu[maps, 0].to(device)
            weights = torch.as_tensor(map_weights[rows[maps]], device=device)
            # Pixels have equal area within a map, so surface densities are the mass weights.
            mass = torch.as_tensor(10.0 ** chunk.log_sigma[maps].astype(np.float64), device=device)
            totals += grid_scores(draws, mask, truth, weights, scales, mass)
        pixels += float((torch.as_tensor(map_weights[rows]) * chunk.mask[:, 0].flatten(1).sum(1)).sum())
        n_maps += len(chunk)
    if n_maps != len(table):
        raise InputError(f"the validation chunks held {n_maps} maps, the split table lists {len(table)}")
    energy, variogram = (totals[:2] / float(map_weights.sum())).numpy()
    levels = len(COVERAGE_TARGETS)
    coverage = (totals[2 : 2 + levels] / max(pixels, 1e-300)).numpy()
    integrated = (totals[2 + levels :] / float(map_weights.sum())).numpy()
    common = best_scale(scales, np.diagonal(energy))
    noise = best_scales(scales, energy, variogram)
    if settings.method == "coverage":
        noise = NoiseScales(noise.lowrank, coverage_matched_diagonal(scales, coverage, noise.lowrank))
    elif settings.method == "joint":
        noise = coverage_matched_scales(scales, coverage, integrated)
    if not (is_noise_scale(common) and is_noise_scale(noise.lowrank) and is_noise_scale(noise.diagonal)):
        raise InputError(f"the noise-scale fit gave {common}, {noise}; the validation energy scores were {energy}")
    return NoiseScaleFit(
        method=settings.method,
        noise=noise,
        noise_scale=common,
        scales=tuple(float(s) for s in scales),
        energy_score=tuple(tuple(float(v) for v in row) for row in energy),
        variogram_score=tuple(tuple(float(v) for v in row) for row in variogram),
        n_maps=n_maps,
        n_galaxies=len(galaxies),
        n_samples=settings.n_samples,
        variogram_lags=lags,
        pixel_coverage={str(level): tuple(tuple(float(v) for v in row) for row in grid)
                        for level, grid in zip(COVERAGE_TARGETS, coverage)},
        integrated_coverage={str(level): tuple(tuple(float(v) for v in row) for row in grid)
                             for level, grid in zip(COVERAGE_TARGETS, integrated)},
    )  # fmt: skip


def unscaled(n_maps: int, n_galaxies: int) -> NoiseScaleFit:
    """The record of ``recalibrate.enabled: false``: the likelihood as trained (scales 1, no surfaces)."""
    return NoiseScaleFit("as_trained", AS_TRAINED, 1.0, (), (), (), n_maps=n_maps, n_galaxies=n_galaxies, n_samples=0)


def write_noise_scale(path: str | os.PathLike, fit: NoiseScaleFit, diagnostics: dict[str, Any] | None = None) -> None:
    """Write the recalibrate stage's JSON atomically: the fit and (``exsitu.residual_diagnostics``) the diagnostics."""
    record = fit.to_dict() | ({} if diagnostics is None else {"diagnostics": diagnostics})
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False))


def read_noise_scales(path: str | os.PathLike) -> NoiseScales:
    """The fitted ``NoiseScales`` from the recalibrate stage's JSON (key ``noise``); a bad file is one clear error."""
    noise = read_json(path, ("noise",), "noise-scale file")["noise"]
    if not isinstance(noise, dict) or set(noise) != {"lowrank", "diagonal"}:
        raise InputError(f"{path}: 'noise' must hold 'lowrank' and 'diagonal', got {noise!r}")
    try:
        return NoiseScales(noise["lowrank"], noise["diagonal"])
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
