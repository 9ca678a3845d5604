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
``method: coverage`` (the default until 2026-12-07) keeps the low-rank scale of the scores, which sets the spread
of whole-map functionals (integrated fractions, profiles), and sets the diagonal scale, which
sets the width of each pixel's interval beyond the correlated part, so that the galaxy-weighted
share of validation pixels inside their central 68% and 95% intervals matches those levels (the
share the evaluation counts with its randomized PIT, taken in expectation, :func:`inside_probability`;
least squares over the two levels, coverage interpolated linearly in log scale between grid
points; quantile recalibration in the sense of Kuleshov et al. 2018, ICML, with one parameter).
The coverage surfaces go into the JSON as well. The former single scale (the ES minimum along lowrank = diagonal) is
kept as ``noise_scale`` for consumers that apply one factor to the whole residual.

``method: constrained`` (the default from 2026-12-07 afternoon to night) asks both questions at once: of the pairs
whose per-pixel coverage matches (along lowrank, the coverage-matched diagonal, :func:`coverage_curve`), it takes the
one the whole-map scores prefer.
``coverage`` takes the low-rank scale of the scores' unconstrained minimum and then moves the diagonal alone; when
that low-rank part is by itself about as wide as the pixel intervals may be, the matched diagonal falls to the
grid's lowest scale, and the samples lose the pixel-to-pixel spread the truth has (measured on the MaNGA preset,
whose intrinsic target varies on scales its PSF-blurred observables cannot resolve: README). The coverage pair
lies on the same curve, so ``constrained`` never scores worse than it on the validation maps (up to the curve's
sampling at 64 low-rank scales).

``diagonal_slope`` (with ``method: constrained``, ``coverage`` or ``joint``) lets the diagonal factor depend on the
pixel's decoder mean, diagonal * exp(slope * |mean logit|) (``NoiseScales.diagonal_slope``): one factor for every pixel
leaves the pixels whose posterior median is near 0 or 1 under-covered and those in the middle
over-covered, or the reverse, when the trained diagonal variance is off by a different amount at the
ends than in the middle. A further pass over the same draws scores :data:`SLOPES` (grown past an end
the best slope lies at, :func:`grown_slope_fit`) x the diagonal grid at the fitted low-rank scale
(that of the scores, of the constrained pair, or with ``joint`` that of the integrated fraction), per
posterior-median stratum (those of the evaluation, ``exsitu.calibration.MEDIAN_STRATUM_EDGES``; a pixel's
stratum is the median of its draws' decoder means, so that it does not move with the candidate); per slope the diagonal
scale is matched to the pooled coverage as above, and the slope whose strata come closest to 68% and
95% (least squares, every stratum with at least :data:`MIN_STRATUM_SHARE` of the pixels counting the
same) is kept. It is recalibration conditional on the prediction, with one parameter more, fitted on
validation maps only.

``clip_classes`` (with ``cvae.hurdle``): before any scale is scored, a first pass over the same draws fits the
Platt scaling of the hurdle's two class logits (``exsitu.hurdle_calibration``), so that the predictive's share of
samples at the clip matches how often the validation truths lie there; every later pass draws with those classes,
and the fitted scales carry them (``NoiseScales.clip_slope``, ``clip_low``, ``clip_high``). The noise factors act on
the value inside the clip and cannot move mass to or from it.

``method: joint`` (the default) calibrates the whole-map functionals as well: the low-rank scale is chosen so that
the validation maps' integrated ex-situ fraction (mass-weighted over the field of view, computed per
sampled map) falls inside its central 68% and 95% intervals at those rates, with the diagonal scale
coverage-matched per pixel at each candidate low-rank scale as above (least squares over the two
levels along the curve lowrank -> diagonal(lowrank)). It targets directly what astronomers quote
from the samples, on validation maps only; the whole-map scores still go into the JSON. With ~75
validation galaxies the integrated coverage it matches has a standard error of ~0.05 at 68%.

Why ``joint`` is the default: the variogram score compares differences between pixels and is blind to a common
offset, which is most of an integrated fraction's error; in ES / min ES + VS / min VS the energy score moves by 2-5%
along the coverage curve (low-rank scales 0.25-1) and the variogram score by 14-21%, so ``constrained`` is in effect
the variogram's choice. On four universes of the exact-draw mock that choice covered the validation maps' own
integrated fractions at 0.69-0.75 (68%) and the test maps' at 0.71-0.79. ``joint`` moved the low-rank scale down and
the diagonal up along the same curve there: the smooth part of the maps gained calibration and the rough part (pixel
to pixel) carries more spread than the truth; on the MaNGA preset it moved the other way and scored no better
(README, "The noise scales from validation to test").

Every candidate is scored on the same draws (``exsitu.sample.residual_draws_in_chunks``: a draw at
other scales reuses its z and random numbers), so the comparison between scales has no sampling
noise. A draw is homogeneous of degree one in the two scales (the copula, the mixing and the tails see
only their ratio), so the grid draws the residual once per ratio diagonal / lowrank and scales it: 21
draws for the 121 pairs of :data:`SCALES`, where the hurdle's copula took most of the stage's time.
Maps are weighted 1 / n_los so that every validation galaxy counts once, as in the evaluation. Score sums
are accumulated per grid point, chunk of maps by chunk (:data:`CHUNK_ELEMENTS` floats of draws). The passes
(classes, grid, slope) share the draws: kept in memory after the first pass when they fit in :data:`CACHE_BYTES`
(the default mock's), else decoded again for each pass, so memory stays bounded by a chunk at any size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from exsitu.bootstrap import galaxy_weights
from exsitu.calibration import MEDIAN_STRATUM_EDGES
from exsitu.cvae import CVAE
from exsitu.dataset import MapSet
from exsitu.flow import LatentFlow
from exsitu.hurdle_calibration import MAX_PIXELS, ClassCalibration, class_rows, fit_class_calibration, kept_pixels
from exsitu.io import InputError, atomic_output, read_json
from exsitu.likelihood import AS_TRAINED, NoiseScales, ResidualDraw, is_noise_scale, to_fraction
from exsitu.sample import maps_in_budget, residual_draws_in_chunks
from exsitu.settings import RecalibrateSettings

log = logging.getLogger(__name__)

#: Candidate scales of each part: 2^(k/2) for k = -8..2, 1/16 to 2 in steps of 41%, 1 included; the
#: minimum is refined by a parabola along each axis. The lower end is far below 1 because the Student-t's
#: fits with the slope ended at the former end, 0.18 (the diagonal factor on the default mock, seed 42;
#: the low-rank factor on the MaNGA preset): a fit that stops at a grid edge is not a fit.
SCALES = 2.0 ** (np.arange(-8, 3) / 2)
#: Central-interval levels whose per-pixel coverage ``method: constrained``, ``coverage`` and ``joint`` match on the
#: validation maps.
COVERAGE_TARGETS: tuple[float, ...] = (0.68, 0.95)
METHODS = ("constrained", "coverage", "joint", "scores")
#: Candidate slopes [per logit] of the diagonal factor (``NoiseScales.diagonal_slope``) that
#: ``recalibrate.diagonal_slope`` fits: -0.3 to 0.3 in steps of 0.1, around no slope; the best is refined
#: by a parabola, and the grid grows past an end the best slope lies at (:func:`grown_slope_fit`). Each
#: slope costs a draw per diagonal scale, most of the stage's time. The former -0.2 to 0.8 was set for the
#: Student-t without the hurdle (best slopes 0.41-0.49); with the hurdle (the default) the best slopes were
#: -0.26 to +0.08 on universes 42, 7, 2027, 314 and the MaNGA preset, and from 0.6 up the matched diagonal
#: sat at the lowest scale, 1/16: those slopes fitted nothing.
SLOPES = np.arange(-3, 4) / 10
#: A slope fit whose best grid slope is an end of the grid is not a fit: the grid then grows by
#: SLOPE_GROWTH steps past that end, scored on the same draws, until the best slope is inside it or
#: the grid reaches SLOPE_LIMIT per logit (a factor exp(2 x 6.9) = 1e6 between a pixel at the clip and one
#: at 0.5). The hurdle likelihood's fit ended at the lower end, -0.2 (universe 42); the defaults' are inside.
SLOPE_GROWTH = 4
SLOPE_LIMIT = 2.0
#: The strata (fractions) whose coverage the slope is fitted to: the evaluation's posterior-median strata.
SLOPE_STRATA: tuple[float, ...] = MEDIAN_STRATUM_EDGES
#: A stratum counts in the slope fit when it holds at least this share of the (weighted) validation pixels.
MIN_STRATUM_SHARE = 0.01
VARIOGRAM_ORDER = 0.5
#: Float elements of one draw tensor per chunk (maps x samples x pixels): 8 MB in float32. The grid scores each
#: chunk at 121 pairs, a dozen passes over its draws per pair: on the 2-core development CPU (32 MB L3) the default
#: mock's grid took 28 s in chunks of 8 MB against 38 s in chunks of 16 MB (the same sums to float rounding).
CHUNK_ELEMENTS = 2**21
#: Bytes of validation draws kept in memory between the fit's passes (``_ValidationDraws``): the default mock's 279
#: maps x 64 draws take ~0.7 GB, and decoding them again cost ~13 s a pass; a larger set is decoded for each pass.
CACHE_BYTES = 2**30
#: float32 values a kept draw holds per pixel: the residual's parts (loc, coherent, independent, the two variances),
#: the two class logits and the three class probabilities cached at the fitted calibration.
KEPT_FLOATS_PER_PIXEL = 10
#: One batch of validation draws: (its maps in the chunk, draws, masks, true maps, map weights, stellar mass per pixel).
_Batch = tuple[slice, ResidualDraw, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


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
        # In place: the difference is a fresh tensor; abs and the power out of place took 2.5x as long on a
        # chunk of 64 maps x 64 draws.
        expected = (x[..., : p - dy, : p - dx] - x[..., dy:, dx:]).abs_().pow_(order).mean(1)
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
    """Galaxy pixels of each map whose truth lies inside the samples' central interval of each level: (N, L),
    in expectation over the evaluation's randomized PIT (:func:`inside_probability`).

    samples: (N, K, P, P); truth, mask: (N, P, P).
    """
    return (inside_probability(samples, truth, levels) * mask.bool()[..., None]).sum((1, 2))


def inside_probability(samples: torch.Tensor, truth: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
    """The probability that each pixel's truth lies inside the samples' central interval of each level:
    (N, P, P, L) float64 in [0, 1].

    samples: (N, K, P, P); truth: (N, P, P). It is the expectation of what the evaluation counts: there the
    PIT is randomized (``exsitu.calibration.randomized_pit``), uniform on [b, b + t + 1] / (K + 1) with b the
    samples below the truth and t those equal to it, and a pixel is covered when |PIT - 1/2| <= level / 2;
    here each pixel counts the share of that range inside the interval, with no random numbers. Why not a
    mid-rank PIT: where the hurdle puts a pixel's samples at a clip and the truth sits there too (~40% of the
    pixels whose posterior median is below 0.01 on the default mock), the mid-rank PIT is one number,
    inside the 68% interval whenever 32% or more of the samples are at the clip, and so counts the pixel as
    covered where a calibrated posterior covers it 68% of the time; it also rounds K = 64 samples to 0.69
    and 0.94 coverage at the 68% and 95% levels for a calibrated continuous posterior.
    """
    k = samples.shape[1]
    below = (samples < truth[:, None]).sum(1).double()
    ties = (samples == truth[:, None]).sum(1).double()
    low, high = (below / (k + 1))[..., None], ((below + ties + 1) / (k + 1))[..., None]
    half = torch.as_tensor(levels, dtype=torch.float64, device=low.device) / 2
    return (torch.minimum(high, 0.5 + half) - torch.maximum(low, 0.5 - half)).clamp_min(0) / (high - low)


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
    *,
    classes: NoiseScales = AS_TRAINED,
) -> torch.Tensor:
    """Weighted sums over maps of both scores and of the covered pixels and maps at every (lowrank, diagonal) pair.

    draws: n K draws of n maps (map-major) and their (n K, 1, P, P) galaxy masks, as
    ``residual_draws_in_chunks`` yields them; truth: (n, P, P) fractions; weights: (n,); mass: (n, P, P)
    stellar mass per pixel for the integrated fraction (None: each galaxy pixel weighs the same);
    classes: the hurdle's class calibration every pair is drawn with (its clip fields).
    Returns (2 + 2T, L, L) float64 on the CPU: [energy, variogram, covered pixels at each level of
    :data:`COVERAGE_TARGETS`, maps whose integrated fraction is covered at each level] x lowrank x diagonal.
    """
    n, p = truth.shape[0], truth.shape[-1]
    map_mask = mask.view(n, -1, p, p)[:, 0]
    mass = (map_mask.float() if mass is None else mass.float()) * map_mask
    mass = mass / mass.sum((1, 2), keepdim=True).clamp_min(1e-30)  # each map's weights sum to 1: no float32 overflow
    w = weights.double()
    out = torch.empty(2 + 2 * len(COVERAGE_TARGETS), len(scales), len(scales), dtype=torch.float64)
    for ratio, pairs in _pairs_by_ratio(scales).items():
        # A draw is homogeneous of degree one in the two scales, in every family: at (a l, a d) it is
        # loc + a (draw at (l, d) - loc), because the copula, the mixing and the tails see only the ratio d / l.
        # So the residual (the hurdle's copula, most of the cost) is drawn once per ratio, not once per pair.
        unit = draws.logits(replace(classes, lowrank=1.0, diagonal=ratio)) - draws.loc
        for i, j in pairs:
            samples = (to_fraction(draws.loc + float(scales[i]) * unit, draws.eps) * mask).view(n, -1, p, p)
            scores = sample_scores(samples, truth, map_mask)
            covered = (w[:, None] * pixels_covered(samples, truth, map_mask)).sum(0)
            integrated = (w[:, None] * integrated_covered(samples, truth, mass)).sum(0)
            out[:, i, j] = torch.cat([torch.stack([(w * scores[name]).sum() for name in ("energy", "variogram")]),
                                      covered.cpu(), integrated.cpu()])  # fmt: skip
    return out


def _pairs_by_ratio(scales: np.ndarray) -> dict[float, list[tuple[int, int]]]:
    """The (lowrank, diagonal) index pairs of the grid ``scales`` x ``scales``, grouped by the ratio diagonal /
    lowrank (equal to 1e-9 in log; on the geometric :data:`SCALES`, 2L - 1 ratios)."""
    groups: dict[float, tuple[float, list[tuple[int, int]]]] = {}  # rounded log ratio -> (ratio, pairs)
    for i, lowrank in enumerate(scales):
        for j, diagonal in enumerate(scales):
            ratio = float(diagonal / lowrank)
            groups.setdefault(round(math.log(ratio), 9), (ratio, []))[1].append((i, j))
    return dict(groups.values())


def best_scale(scales: np.ndarray, scores: np.ndarray) -> float:
    """The scale of the lowest score, refined by a parabola through it and its neighbours in log s.

    A minimum at either end of the grid is returned as it is (the caller warns).
    """
    i = int(np.argmin(scores))
    vertex = _vertex(np.log(scales), scores, i)
    return float(scales[i]) if vertex is None else float(np.exp(vertex))


def _vertex(x: np.ndarray, scores: np.ndarray, i: int) -> float | None:
    """The vertex of the parabola through point ``i`` and its neighbours; None at an end of the grid or when
    the parabola opens downwards."""
    if i == 0 or i == len(x) - 1:
        return None
    a, b, _ = np.polyfit(x[i - 1 : i + 2], scores[i - 1 : i + 2], 2)
    return float(-b / (2 * a)) if a > 0 else None


def combined_score(energy: np.ndarray, variogram: np.ndarray) -> np.ndarray:
    """ES / min ES + VS / min VS on a grid of candidate scales: each score unit-free, counting by its relative change
    (module doc)."""
    return energy / energy.min() + variogram / variogram.min()


def best_scales(scales: np.ndarray, energy: np.ndarray, variogram: np.ndarray) -> NoiseScales:
    """(lowrank, diagonal) minimising ES / min ES + VS / min VS on the grid, refined along each axis."""
    combined = combined_score(energy, variogram)
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
    return matched_diagonal(scales, at_lowrank, levels)


def matched_diagonal(scales: np.ndarray, coverage: np.ndarray, levels: Sequence[float] = COVERAGE_TARGETS) -> float:
    """The diagonal scale whose coverage (T, L) along ``scales`` best matches ``levels`` (least squares over
    the levels, interpolated linearly in log scale on a fine grid; an end of the grid when out of reach)."""
    x = np.log(np.asarray(scales, dtype=np.float64))
    fine = np.linspace(x[0], x[-1], 512)
    curves = np.array([np.interp(fine, x, row) for row in coverage])
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

    return min(coverage_curve(scales, pixel_coverage, levels), key=misfit)


def constrained_scales(
    scales: np.ndarray,
    energy: np.ndarray,
    variogram: np.ndarray,
    pixel_coverage: np.ndarray,
    levels: Sequence[float] = COVERAGE_TARGETS,
) -> NoiseScales:
    """(lowrank, diagonal) for ``method: constrained`` (module doc): of the pairs along
    :func:`coverage_curve` (per-pixel coverage matched), the one with the lowest ES / min ES + VS / min VS.

    energy, variogram: (L, L) validation scores, lowrank x diagonal on ``scales``; pixel_coverage as in
    :func:`coverage_matched_scales`. Scores are interpolated linearly in log scale.
    """
    x = np.log(np.asarray(scales, dtype=np.float64))
    combined = combined_score(energy, variogram)
    return min(
        coverage_curve(scales, pixel_coverage, levels),
        key=lambda pair: _bilinear(x, combined, np.log(pair.lowrank), np.log(pair.diagonal)),
    )


def coverage_curve(
    scales: np.ndarray, pixel_coverage: np.ndarray, levels: Sequence[float] = COVERAGE_TARGETS
) -> list[NoiseScales]:
    """The pairs whose per-pixel coverage matches ``levels``: 64 low-rank scales spaced evenly in log
    scale over ``scales``, each with its :func:`coverage_matched_diagonal`."""
    x = np.log(np.asarray(scales, dtype=np.float64))
    lowranks = [float(s) for s in np.exp(np.linspace(x[0], x[-1], 64))]
    return [NoiseScales(s, coverage_matched_diagonal(scales, pixel_coverage, s, levels)) for s in lowranks]


def stratum_grid(
    draws: ResidualDraw,
    mask: torch.Tensor,
    truth: torch.Tensor,
    weights: torch.Tensor,
    *,
    lowrank: float,
    slopes: np.ndarray,
    scales: np.ndarray,
    edges: Sequence[float] = SLOPE_STRATA,
    classes: NoiseScales = AS_TRAINED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted covered pixels per stratum at every (diagonal slope, diagonal) pair at ``lowrank``, for
    ``recalibrate.diagonal_slope``: (S, L, T, B) float64 [slopes x diagonal x levels of
    :data:`COVERAGE_TARGETS` x strata], and the weighted galaxy pixels of each stratum (B,), on the CPU.

    A pixel's stratum is where the median over its K draws of the decoder mean, as a fraction, falls
    in ``edges``: it does not depend on the noise scales, so every candidate is scored on the same
    strata. draws, mask, truth, weights and classes are those of :func:`grid_scores`.
    """
    n, p = truth.shape[0], truth.shape[-1]
    map_mask = mask.view(n, -1, p, p)[:, 0].bool()
    centre = to_fraction(draws.loc.float(), draws.eps).view(n, -1, p, p).median(1).values
    inner = torch.as_tensor(edges[1:-1], dtype=centre.dtype, device=centre.device)
    stratum = torch.bucketize(centre, inner, right=True)
    member = nn.functional.one_hot(stratum, len(edges) - 1).double()
    member = member * (weights.double()[:, None, None] * map_mask)[..., None]  # (n, P, P, B)
    out = torch.empty(len(slopes), len(scales), len(COVERAGE_TARGETS), len(edges) - 1, dtype=torch.float64)
    for i, slope in enumerate(slopes):
        for j, diagonal in enumerate(scales):
            noise = replace(classes, lowrank=lowrank, diagonal=float(diagonal), diagonal_slope=float(slope))
            samples = draws.fractions(mask, noise).view(n, -1, p, p)
            inside = inside_probability(samples, truth, COVERAGE_TARGETS)  # (n, P, P, T)
            out[i, j] = torch.einsum("nxyt,nxyb->tb", inside, member).cpu()
    return out, member.sum((0, 1, 2)).cpu()


def slope_matched_scales(
    lowrank: float,
    slopes: np.ndarray,
    scales: np.ndarray,
    covered: np.ndarray,
    pixels: np.ndarray,
    levels: Sequence[float] = COVERAGE_TARGETS,
) -> tuple[NoiseScales, np.ndarray, np.ndarray]:
    """The scales of ``recalibrate.diagonal_slope`` (module doc) from :func:`stratum_grid`'s sums.

    For each slope the diagonal scale is matched to the pooled coverage (:func:`matched_diagonal`);
    of those pairs the slope whose strata (each holding at least :data:`MIN_STRATUM_SHARE` of the
    pixels, each counting the same) come closest to ``levels`` in least squares is taken, refined by a
    parabola between grid slopes. Returns the scales and, per slope, the matched diagonal scale and
    the strata's mean squared coverage error (S,).
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    counted = np.flatnonzero(pixels >= MIN_STRATUM_SHARE * pixels.sum())
    x = np.log(np.asarray(scales, dtype=np.float64))
    target = np.asarray(levels)[:, None]
    diagonals, misfit = np.empty(len(slopes)), np.empty(len(slopes))
    for i in range(len(slopes)):
        diagonals[i] = matched_diagonal(scales, (covered[i].sum(-1) / pixels.sum()).T, levels)
        strata = covered[i][..., counted] / pixels[counted]  # (L, T, B)
        at = np.array([[np.interp(np.log(diagonals[i]), x, strata[:, t, b]) for b in range(len(counted))]
                       for t in range(len(levels))])  # fmt: skip
        misfit[i] = float(((at - target) ** 2).mean())
    best = int(np.argmin(misfit))
    vertex = _vertex(np.asarray(slopes, dtype=np.float64), misfit, best)
    slope = float(slopes[best]) if vertex is None else vertex
    diagonal = float(np.exp(np.interp(slope, slopes, np.log(diagonals))))
    return NoiseScales(lowrank, diagonal, slope), diagonals, misfit


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
    slope_fit: dict[str, Any] = field(default_factory=dict)
    class_fit: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise_scale": self.noise_scale,
            "noise": asdict(self.noise),
            "method": self.method,
            "method_description": METHOD_DESCRIPTIONS[self.method] + (SLOPE_DESCRIPTION if self.slope_fit else ""),
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
            "diagonal_slope_fit": self.slope_fit,
            "clip_class_fit": self.class_fit,
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
    "constrained": _SCORES.replace(
        "over the grid",
        "among the pairs whose per-pixel coverage of the central 68% and 95% intervals matches those levels "
        "(along lowrank, the coverage-matched diagonal)",
        1,
    ),
    "joint": _SCORES.replace(": (lowrank, diagonal) minimise", ": scores (reported) of", 1)
    + "; lowrank: the validation maps' integrated ex-situ fraction (field of view) is inside its central 68% and "
    "95% intervals at those rates; diagonal: the per-pixel coverage of those intervals matches them at that lowrank",
    "as_trained": "recalibrate.enabled is false: the likelihood as trained",
}
SLOPE_DESCRIPTION = (
    "; the diagonal factor grows as exp(slope |mean logit|), the slope chosen so that the validation pixels' "
    "coverage comes closest to 68% and 95% in every posterior-median stratum (recalibrate.diagonal_slope)"
)


def fit_noise_scales(
    cvae: CVAE,
    flow: LatentFlow,
    chunks: Callable[[], Iterable[MapSet]],
    table: pd.DataFrame,
    settings: RecalibrateSettings,
    *,
    scalars: Sequence[str] = (),
    scales: np.ndarray = SCALES,
    slopes: np.ndarray = SLOPES,
    cache_bytes: int = CACHE_BYTES,
) -> NoiseScaleFit:
    """Fit the noise scales on the validation maps, streamed by ``chunks()``; see the module doc.

    chunks: returns a fresh stream of the validation maps (read a second time when
    ``settings.diagonal_slope`` fits the slope); table: the validation subset's split rows (for the
    galaxy weights); each chunk's ``table`` index holds its maps' row numbers in it. Map i is sampled
    with seed ``settings.seed + i`` (``settings.n_samples`` flow draws), so the fit does not depend on
    the chunking. ``scalars``: the galaxy scalars the model is conditioned on (``conditions.scalars``).
    ``cache_bytes``: the draws are kept between the passes when they fit in this many bytes, else decoded again
    for each pass (the same draws either way).
    """
    scales = np.asarray(scales, dtype=np.float64)
    if settings.method not in METHODS:
        raise InputError(f"recalibrate.method must be one of {METHODS}, got {settings.method!r}")
    galaxies, _, map_weights = galaxy_weights(table["galaxy_id"].to_numpy())
    validation = _ValidationDraws(cvae, flow, chunks, settings, scalars, map_weights, cache_bytes)
    classes, class_fit = AS_TRAINED, {}
    if settings.clip_classes and cvae.cfg.hurdle:
        fitted = _fit_classes(validation, len(table))
        classes, class_fit = fitted.scales(), fitted.to_dict()
    totals = torch.zeros(2 + 2 * len(COVERAGE_TARGETS), len(scales), len(scales), dtype=torch.float64)
    pixels = 0.0  # galaxy-weighted galaxy pixels: the denominator of the coverage surfaces
    n_maps, lags = 0, ()
    started = time.perf_counter()
    for chunk, batches in validation.passes():
        for _, draws, mask, truth, weights, mass in batches:
            totals += grid_scores(draws, mask, truth, weights, scales, mass, classes=classes)
        rows = chunk.table.index.to_numpy()
        pixels += float((torch.as_tensor(map_weights[rows]) * chunk.mask[:, 0].flatten(1).sum(1)).sum())
        n_maps += len(chunk)
        lags = tuple(variogram_lags(chunk.mask.shape[-1]))
    if n_maps != len(table):
        raise InputError(f"the validation chunks held {n_maps} maps, the split table lists {len(table)}")
    log.info(
        "scale grid: %d validation maps x %d draws scored at %d (low-rank, diagonal) pairs in %.0f s",
        n_maps, settings.n_samples, len(scales) ** 2, time.perf_counter() - started,
    )  # fmt: skip
    energy, variogram = (totals[:2] / float(map_weights.sum())).numpy()
    levels = len(COVERAGE_TARGETS)
    coverage = (totals[2 : 2 + levels] / max(pixels, 1e-300)).numpy()
    integrated = (totals[2 + levels :] / float(map_weights.sum())).numpy()
    common = best_scale(scales, np.diagonal(energy))
    noise = best_scales(scales, energy, variogram)
    slope_fit: dict[str, Any] = {}
    if settings.method == "coverage":
        noise = NoiseScales(noise.lowrank, coverage_matched_diagonal(scales, coverage, noise.lowrank))
    elif settings.method == "joint":
        noise = coverage_matched_scales(scales, coverage, integrated)
    elif settings.method == "constrained":
        noise = constrained_scales(scales, energy, variogram, coverage)
    if settings.diagonal_slope and settings.method != "scores":
        noise, slope_fit = _fit_slope(validation, lowrank=noise.lowrank, slopes=slopes, scales=scales, classes=classes)
    noise = replace(classes, lowrank=noise.lowrank, diagonal=noise.diagonal, diagonal_slope=noise.diagonal_slope)
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
        slope_fit=slope_fit,
        class_fit=class_fit,
    )  # fmt: skip


@dataclass(frozen=True)
class _ValidationDraws:
    """The flow's full-predictive draws of the validation maps, for every pass of the fit. Map i is drawn with seed
    ``settings.seed + i``, so each pass sees the same draws: they are kept in memory after the first pass when they
    fit in ``cache_bytes``, else ``chunks()`` streams the maps afresh and each pass decodes them again."""

    cvae: CVAE
    flow: LatentFlow
    chunks: Callable[[], Iterable[MapSet]]
    settings: RecalibrateSettings
    scalars: Sequence[str]
    map_weights: np.ndarray
    cache_bytes: int
    _kept: list[tuple[MapSet, list[_Batch]]] = field(default_factory=list, init=False, repr=False, compare=False)

    def passes(self) -> Iterator[tuple[MapSet, Iterator[_Batch]]]:
        """One pass over the validation maps: per chunk (the chunk, its batches of draws as :meth:`of` gives them)."""
        if self._kept:
            for chunk, batches in self._kept:
                yield chunk, iter(batches)
            return
        n_maps, npix = len(self.map_weights), self.cvae.cfg.npix
        keep = n_maps * self.settings.n_samples * npix**2 * KEPT_FLOATS_PER_PIXEL * 4 <= self.cache_bytes
        if not keep:  # streamed: nothing outlives its chunk
            for chunk in self.chunks():
                yield chunk, self.of(chunk)
            return
        kept = [(chunk, list(self.of(chunk))) for chunk in self.chunks()]
        self._kept.extend(kept)
        yield from ((chunk, iter(batches)) for chunk, batches in kept)

    def of(self, chunk: MapSet) -> Iterator[_Batch]:
        """The draws of one chunk of validation maps, batch by batch, on the model's device: (the batch's maps in the
        chunk, draws, their masks, true maps, map weights, stellar mass per pixel)."""
        rows = chunk.table.index.to_numpy()
        device = next(self.cvae.parameters()).device
        n_samples = self.settings.n_samples
        for maps, draws, mask in residual_draws_in_chunks(
            self.cvae, chunk.conditions, n_samples, "flow", seeds=self.settings.seed + rows, flow=self.flow,
            scalars=chunk.scalars(self.scalars),
            maps_per_chunk=maps_in_budget(n_samples, chunk.mask.shape[-1], CHUNK_ELEMENTS),
        ):  # fmt: skip
            truth = chunk.exsitu[maps, 0].to(device)
            weights = torch.as_tensor(self.map_weights[rows[maps]], device=device)
            # Pixels have equal area within a map, so surface densities are the mass weights.
            mass = torch.as_tensor(10.0 ** chunk.log_sigma[maps].astype(np.float64), device=device)
            yield maps, draws, mask, truth, weights, mass


def _fit_classes(validation: _ValidationDraws, n_maps: int) -> ClassCalibration:
    """The first pass of ``recalibrate.clip_classes``: the hurdle's class calibration
    (``exsitu.hurdle_calibration``) from the ``n_maps`` validation maps' draws, before any scale is scored."""
    started = time.perf_counter()
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    eps = validation.cvae.cfg.logit_eps
    for chunk, batches in validation.passes():
        rows = chunk.table.index.to_numpy()
        share = MAX_PIXELS / (n_maps * chunk.mask.shape[-1] ** 2)
        for maps, draws, _, truth, weights, _ in batches:
            keep = kept_pixels(rows[maps], truth.shape[-1], share) & chunk.mask[maps, 0].bool()
            parts.append(class_rows(draws.clip_logits, keep, truth, weights, eps))
    fitted = fit_class_calibration(*(torch.cat(column) for column in zip(*parts)))
    log.info(
        "clip classes: %d validation pixels x %d draws, Platt slope %.3f, shifts %.3f (low) %.3f (high), "
        "class NLL %.4f -> %.4f nats per pixel in %.0f s", fitted.n_pixels, validation.settings.n_samples,
        fitted.slope, fitted.low, fitted.high, fitted.nll_as_trained, fitted.nll_fitted,
        time.perf_counter() - started,
    )  # fmt: skip
    return fitted


def grown_slope_fit(
    score: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]],
    lowrank: float,
    slopes: np.ndarray,
    scales: np.ndarray,
) -> tuple[NoiseScales, dict[str, Any]]:
    """:func:`slope_matched_scales` on a slope grid that grows past an end the best slope lies at.

    ``score(slopes)`` returns :func:`stratum_grid`'s sums (covered, stratum pixels) for those slopes, always
    on the same draws; ``slopes`` is an evenly spaced grid. While the best slope is the grid's first or last,
    :data:`SLOPE_GROWTH` more steps are scored past it (at most to +-:data:`SLOPE_LIMIT`). Returns the scales and
    the JSON record of the fit (every slope scored, its matched diagonal and strata misfit).
    """
    slopes = np.asarray(slopes, dtype=np.float64)
    started, passes = time.perf_counter(), 1
    covered, stratum_pixels = score(slopes)
    while True:
        noise, diagonals, misfit = slope_matched_scales(
            lowrank, slopes, scales, covered.numpy(), stratum_pixels.numpy()
        )
        more = _slopes_past_end(slopes, int(np.argmin(misfit)))
        if more.size == 0:
            break
        order = np.argsort(np.concatenate([slopes, more]))
        slopes = np.concatenate([slopes, more])[order]
        covered = torch.cat([covered, score(more)[0]])[torch.as_tensor(order)]
        passes += 1
    log.info(
        "diagonal slope: %d slopes x %d diagonal scales scored per stratum in %d pass(es) over the validation maps "
        "in %.0f s", len(slopes), len(scales), passes, time.perf_counter() - started,
    )  # fmt: skip
    record = {
        "slopes": [float(v) for v in slopes],
        "matched_diagonal": [float(v) for v in diagonals],
        "strata_misfit": [float(v) for v in misfit],
        "strata_edges": list(SLOPE_STRATA),
        "stratum_pixel_share": [float(v) for v in stratum_pixels / stratum_pixels.sum().clamp_min(1e-300)],
    }
    return noise, record


def _slopes_past_end(slopes: np.ndarray, best: int) -> np.ndarray:
    """The slopes to score next: SLOPE_GROWTH grid steps past the end ``best`` is at, within SLOPE_LIMIT; none
    when ``best`` is inside the grid (or the grid is a single slope)."""
    if len(slopes) < 2 or 0 < best < len(slopes) - 1:
        return np.empty(0)
    step = float(slopes[1] - slopes[0]) * (-1 if best == 0 else 1)
    more = slopes[best] + step * np.arange(1, SLOPE_GROWTH + 1)
    return more[np.abs(more) <= SLOPE_LIMIT + 1e-9]


def _fit_slope(
    validation: _ValidationDraws,
    *,
    lowrank: float,
    slopes: np.ndarray,
    scales: np.ndarray,
    classes: NoiseScales = AS_TRAINED,
) -> tuple[NoiseScales, dict[str, Any]]:
    """The pass of ``recalibrate.diagonal_slope``: the same draws scored per stratum at ``lowrank``
    with the hurdle's ``classes`` (:func:`stratum_grid`, :func:`grown_slope_fit`); returns the scales and the
    JSON record of the fit."""

    def score(candidates: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        covered = torch.zeros(len(candidates), len(scales), len(COVERAGE_TARGETS), len(SLOPE_STRATA) - 1,
                              dtype=torch.float64)  # fmt: skip
        stratum_pixels = torch.zeros(len(SLOPE_STRATA) - 1, dtype=torch.float64)
        for _, batches in validation.passes():
            for _, draws, mask, truth, weights, _ in batches:
                batch, batch_pixels = stratum_grid(draws, mask, truth, weights, lowrank=lowrank, slopes=candidates,
                                                   scales=scales, classes=classes)  # fmt: skip
                covered += batch
                stratum_pixels += batch_pixels
        return covered, stratum_pixels

    return grown_slope_fit(score, lowrank, slopes, scales)


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
    return NoiseScales.from_record(read_json(path, ("noise",), "noise-scale file")["noise"], path)
