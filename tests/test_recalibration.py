"""The noise-scale recalibration: the energy and variogram scores, the two-scale fit streamed over chunks,
the JSON, and the stage in the pipeline."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from exsitu.calibration import randomized_pit
from exsitu.cvae import CVAE, CVAEConfig
from exsitu.dataset import MapSet
from exsitu.flow import FlowConfig, LatentFlow
from exsitu.io import InputError
from exsitu.likelihood import NoiseScales, ResidualDraw, to_fraction
from exsitu.recalibration import (
    COVERAGE_TARGETS,
    SCALES,
    SLOPES,
    NoiseScaleFit,
    best_scale,
    best_scales,
    combined_score,
    constrained_scales,
    coverage_curve,
    coverage_matched_diagonal,
    coverage_matched_scales,
    energy_scores,
    fit_noise_scales,
    grid_scores,
    grown_slope_fit,
    inside_probability,
    integrated_covered,
    pixels_covered,
    read_noise_scales,
    sample_scores,
    slope_matched_scales,
    stratum_grid,
    variogram_lags,
)
from exsitu.settings import RecalibrateSettings


def test_energy_score_of_a_gaussian_is_its_crps() -> None:
    # In one dimension the energy score is the CRPS; for N(0, s^2) at y = 0 it is s (2 phi(0) - 1/sqrt(pi)).
    sigma = 0.5
    samples = sigma * torch.randn(1, 3000, 1, 1, generator=torch.Generator().manual_seed(0))
    score = energy_scores(samples, torch.zeros(1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool))
    assert score.item() == pytest.approx(sigma * (2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi)), rel=0.05)


def test_scores_are_zero_for_samples_at_the_truth_and_ignore_pixels_off_the_galaxy() -> None:
    truth = torch.rand(2, 8, 8)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 1:7, 1:7] = True
    samples = truth[:, None].repeat(1, 5, 1, 1)
    samples[:, :, 0, 0] = 0.9  # off the galaxy: must not count
    for name, score in sample_scores(samples, truth, mask).items():
        assert torch.allclose(score, torch.zeros(2, dtype=torch.float64)), name
    with pytest.raises(InputError, match="at least 2 samples"):
        energy_scores(samples[:, :1], truth, mask)


def test_variogram_lags_are_dyadic_along_both_axes() -> None:
    assert variogram_lags(16) == [(0, 1), (1, 0), (0, 2), (2, 0), (0, 4), (4, 0)]
    assert len(variogram_lags(128)) == 12


def _fields(n: int, k: int, p: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k, p, p) smooth correlated residual fields (a few modes) and (n, k, p, p) white noise."""
    x = torch.linspace(-1, 1, p)
    modes = torch.stack([torch.ones(p, p), x[:, None].expand(p, p), x[None, :].expand(p, p), x[:, None] * x[None, :]])
    amplitudes = torch.randn(n, k, len(modes), generator=generator)
    return torch.einsum("nkm,mij->nkij", amplitudes, modes), 0.5 * torch.randn(n, k, p, p, generator=generator)


def test_the_variogram_score_sees_correlations_the_energy_score_hardly_does() -> None:
    # Two predictives with the same per-pixel marginals: the right correlated one, and independent pixels.
    g = torch.Generator().manual_seed(3)
    n, k, p = 40, 32, 12
    coherent, white = _fields(n, k + 1, p, g)
    right = coherent + white
    independent = right.flatten(2)[:, :, torch.randperm(p * p, generator=g)].view_as(right)  # same marginal spread
    independent = right.std(1, keepdim=True) / independent.std(1, keepdim=True) * independent
    truth, mask = right[:, 0], torch.ones(n, p, p, dtype=torch.bool)
    scores = {name: sample_scores(s[:, 1:], truth, mask) for name, s in (("right", right), ("indep", independent))}
    gain = {
        score: float(scores["indep"][score].mean() / scores["right"][score].mean()) for score in ("energy", "variogram")
    }
    assert gain["variogram"] > 1.5 and gain["variogram"] > 3 * (gain["energy"] - 1) + 1


def _predictive_and_truth(
    true_scales: tuple[float, float], n: int, k: int, p: int, seed: int
) -> tuple[ResidualDraw, torch.Tensor, torch.Tensor]:
    """k draws of n synthetic p x p maps (a random offset plus correlated and white residual parts), their
    all-true galaxy masks, and a truth per map drawn from the same predictive at ``true_scales``."""
    g = torch.Generator().manual_seed(seed)
    loc = (torch.randn(n, 1, 1, 1, generator=g) - 1.0).expand(n, 1, p, p)
    coherent, white = _fields(n, 1, p, g)
    truth = to_fraction(loc + true_scales[0] * coherent + true_scales[1] * white)[:, 0]
    coherent, white = _fields(n, k, p, g)
    parts = ResidualDraw(
        loc=loc.repeat_interleave(k, 0), coherent=coherent.reshape(n * k, 1, p, p),
        independent=white.reshape(n * k, 1, p, p), mixing=None, lowrank_var=None, diagonal_var=None, tail=None,
        eps=1e-3,
    )  # fmt: skip
    return parts, torch.ones(n * k, 1, p, p, dtype=torch.bool), truth


@pytest.mark.parametrize("true_scales", [(0.4, 1.0), (1.0, 0.5), (1.0, 1.0)])
def test_the_two_scale_fit_recovers_the_scales_of_the_truth(true_scales: tuple[float, float]) -> None:
    # The truth is a draw from the predictive at true_scales: the combined score must be lowest there.
    n, k, p = 60, 32, 12
    parts, mask, truth = _predictive_and_truth(true_scales, n, k, p, seed=1)
    energy, variogram, *covered = grid_scores(parts, mask, truth, torch.ones(n), SCALES).numpy()
    covered = covered[: len(COVERAGE_TARGETS)]  # pixels; the maps' integrated fractions follow
    fitted = best_scales(SCALES, energy, variogram)
    assert fitted.lowrank == pytest.approx(true_scales[0], rel=0.2)
    assert fitted.diagonal == pytest.approx(true_scales[1], rel=0.2)
    # Coverage matching: the surfaces grow with either scale; at the true low-rank scale the matched diagonal
    # scale gives the nominal 68%/95% coverage, and it is the true one where the diagonal part sets the
    # pixel widths (where the correlated part dominates, coverage hardly depends on it).
    coverage = np.array(covered) / (n * p * p)
    assert np.all(np.diff(coverage, axis=2) >= -0.02) and np.all(np.diff(coverage, axis=1) >= -0.02)
    matched = coverage_matched_diagonal(SCALES, coverage, true_scales[0])
    x = np.log(SCALES)
    for level, surface in zip(COVERAGE_TARGETS, coverage):
        row = [np.interp(np.log(true_scales[0]), x, surface[:, j]) for j in range(len(x))]
        assert np.interp(np.log(matched), x, row) == pytest.approx(level, abs=0.03)
    if true_scales[0] < true_scales[1]:
        assert matched == pytest.approx(true_scales[1], rel=0.2)


@pytest.mark.parametrize("tails", [False, True])
@pytest.mark.parametrize("scales", [SCALES, np.array([0.3, 0.45, 1.0, 1.7])])
def test_grid_scores_draw_once_per_ratio_what_each_pair_draws(tails: bool, scales: np.ndarray) -> None:
    """The grid draws the residual once per ratio diagonal / lowrank and scales it (a draw is homogeneous of
    degree one in the two scales): every surface equals the pair-by-pair draw's, for a hurdle with per-map
    Student-t mixing and, optionally, sinh-arcsinh tails; on the geometric grid and an irregular one."""
    n, k, p = 5, 8, 8
    g = torch.Generator().manual_seed(3)
    shape = (n * k, 1, p, p)
    var = lambda: 0.05 + torch.rand(shape, generator=g)  # noqa: E731
    lowrank_var, diagonal_var = var(), var()
    clip = 2 * torch.randn(n * k, 2, p, p, generator=g)  # class logits against inside
    draws = ResidualDraw(
        loc=torch.randn(shape, generator=g), coherent=lowrank_var.sqrt() * torch.randn(shape, generator=g),
        independent=diagonal_var.sqrt() * torch.randn(shape, generator=g),
        mixing=0.5 + torch.rand(n * k, 1, 1, 1, generator=g), lowrank_var=lowrank_var, diagonal_var=diagonal_var,
        tail=1 + torch.rand(shape, generator=g) if tails else None, eps=1e-3, clip_logits=clip,
    )  # fmt: skip
    mask = torch.rand(n, 1, p, p, generator=g).repeat_interleave(k, 0) < 0.8
    truth = torch.rand(n, p, p, generator=g) * mask.view(n, k, p, p)[:, 0]
    mass = torch.rand(n, p, p, generator=g)
    weights = torch.rand(n, generator=g).double()
    got = grid_scores(draws, mask, truth, weights, scales, mass)
    map_mask = mask.view(n, k, p, p)[:, 0]
    mass = mass * map_mask / (mass * map_mask).sum((1, 2), keepdim=True)
    for i, lowrank in enumerate(scales):
        for j, diagonal in enumerate(scales):
            direct = draws.fractions(mask, NoiseScales(float(lowrank), float(diagonal))).view(n, k, p, p)
            scores = sample_scores(direct, truth, map_mask)
            expected = torch.cat([
                torch.stack([(weights * scores[name]).sum() for name in ("energy", "variogram")]),
                (weights[:, None] * pixels_covered(direct, truth, map_mask)).sum(0),
                (weights[:, None] * integrated_covered(direct, truth, mass)).sum(0),
            ])  # fmt: skip
            torch.testing.assert_close(got[:, i, j], expected, rtol=1e-5, atol=1e-7)


def test_integrated_coverage_is_the_mass_weighted_fraction_inside_the_sampled_interval() -> None:
    # Two maps of 2 x 2 pixels; all the mass of map 0 sits in one pixel, so only that pixel's samples count.
    mass = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    truth = torch.tensor([[[0.5, 0.9], [0.9, 0.9]], [[0.9, 0.9], [0.9, 0.9]]])
    samples = torch.linspace(0.0, 1.0, 101)[None, :, None, None].expand(2, 101, 2, 2).clone()
    covered = integrated_covered(samples, truth, mass, levels=(0.5, 0.7))
    # map 0: integrated truth 0.5, the middle of the samples -> inside both; map 1: 0.9 sits at rank 0.9 -> inside
    # neither the central 50% (0.25-0.75) nor the central 70% (0.15-0.85) interval
    assert covered.tolist() == [[1, 1], [0, 0]]


def test_the_coverage_fitted_is_the_expectation_of_the_randomized_pit_coverage_the_evaluation_counts() -> None:
    # Samples with ties at the truth (a clip where the truth sits too) and without: the probability of being
    # inside equals the share of randomized PITs inside, over many randomizations.
    gen = np.random.default_rng(0)
    samples = np.where(gen.random((3, 9, 4, 4)) < 0.4, 0.0, gen.random((3, 9, 4, 4))).astype(np.float32)
    truth = np.where(gen.random((3, 4, 4)) < 0.5, 0.0, gen.random((3, 4, 4))).astype(np.float32)
    levels = (0.5, 0.68, 0.95)
    got = inside_probability(torch.as_tensor(samples), torch.as_tensor(truth), levels).numpy()
    pits = np.stack([randomized_pit(np.moveaxis(samples, 1, -1), truth, gen) for _ in range(20000)])
    expected = (np.abs(pits - 0.5)[..., None] <= np.asarray(levels) / 2).mean(0)
    assert np.abs(got - expected).max() < 0.02
    assert ((got > 0) & (got < 1)).any()  # pixels partly inside: the expectation, not an indicator


def test_a_calibrated_posterior_with_a_point_mass_at_the_clip_covers_the_nominal_levels() -> None:
    # Each pixel's posterior: 0 with probability p (the hurdle's clip), else uniform; the truth is drawn from
    # it. A mid-rank PIT would count every tied pixel with p >= 0.32 as inside the 68% interval.
    gen = torch.Generator().manual_seed(0)
    p = 0.2 + 0.6 * torch.rand(40, 1, 16, 16, generator=gen)

    def draw(k: int) -> torch.Tensor:
        at_clip = torch.rand(40, k, 16, 16, generator=gen) < p
        return torch.where(at_clip, 0.0, torch.rand(40, k, 16, 16, generator=gen))

    covered = pixels_covered(draw(64), draw(1)[:, 0], torch.ones(40, 16, 16)).sum(0) / (40 * 16 * 16)
    assert covered.tolist() == pytest.approx(list(COVERAGE_TARGETS), abs=0.012)


@pytest.mark.parametrize("true_scales", [(0.4, 1.0), (1.0, 0.5)])
def test_the_joint_fit_matches_integrated_and_pixel_coverage(true_scales: tuple[float, float]) -> None:
    # Truth drawn from the predictive at true_scales: at the jointly matched scales the validation maps'
    # integrated fractions and their pixels are covered at the nominal rates, and the low-rank scale, which
    # sets the spread of the integrated fraction, is recovered.
    n, k, p = 400, 40, 8
    parts, mask, truth = _predictive_and_truth(true_scales, n, k, p, seed=7)
    totals = grid_scores(parts, mask, truth, torch.ones(n), SCALES).numpy()
    levels = len(COVERAGE_TARGETS)
    pixels, maps = totals[2 : 2 + levels] / (n * p * p), totals[2 + levels :] / n
    assert np.all(np.diff(maps, axis=1) >= -0.03)  # a wider correlated part covers more integrated fractions
    fitted = coverage_matched_scales(SCALES, pixels, maps)
    assert fitted.lowrank == pytest.approx(true_scales[0], rel=0.25)
    assert fitted.diagonal == coverage_matched_diagonal(SCALES, pixels, fitted.lowrank)
    x = np.log(SCALES)
    for level, surface in zip(COVERAGE_TARGETS, maps):
        along = [np.interp(np.log(fitted.lowrank), x, surface[:, j]) for j in range(len(x))]
        assert np.interp(np.log(fitted.diagonal), x, along) == pytest.approx(level, abs=0.05)


@pytest.mark.parametrize("true_scales", [(0.4, 1.0), (1.0, 0.5)])
def test_the_constrained_fit_is_the_scores_best_pair_whose_pixels_are_covered(true_scales: tuple[float, float]) -> None:
    # Truth drawn from the predictive at true_scales: the constrained pair recovers the low-rank scale (and the
    # diagonal where it sets the pixel widths: where the correlated part dominates, coverage hardly depends on
    # it), its pixel coverage is matched (it lies on the coverage curve), and no pair of that curve, the coverage
    # method's included, scores lower on the combined score.
    n, k, p = 60, 32, 12
    parts, mask, truth = _predictive_and_truth(true_scales, n, k, p, seed=5)
    energy, variogram, *covered = grid_scores(parts, mask, truth, torch.ones(n), SCALES).numpy()
    pixels = np.array(covered[: len(COVERAGE_TARGETS)]) / (n * p * p)
    fitted = constrained_scales(SCALES, energy, variogram, pixels)
    assert fitted.lowrank == pytest.approx(true_scales[0], rel=0.25)
    if true_scales[0] < true_scales[1]:
        assert fitted.diagonal == pytest.approx(true_scales[1], rel=0.25)
    assert fitted.diagonal == coverage_matched_diagonal(SCALES, pixels, fitted.lowrank)
    x, combined = np.log(SCALES), combined_score(energy, variogram)

    def score(pair: NoiseScales) -> float:
        along = [np.interp(np.log(pair.lowrank), x, combined[:, j]) for j in range(len(x))]
        return float(np.interp(np.log(pair.diagonal), x, along))

    curve = coverage_curve(SCALES, pixels)
    assert fitted in curve and score(fitted) == min(score(pair) for pair in curve)
    lowrank = best_scales(SCALES, energy, variogram).lowrank
    coverage_pair = NoiseScales(lowrank, coverage_matched_diagonal(SCALES, pixels, lowrank))
    assert score(fitted) <= score(coverage_pair) + 1e-3  # the curve is sampled at 64 low-rank scales


def graded_noise(true_slope: float, n: int = 120, k: int = 48, p: int = 10):
    """Independent noise only, with a mean logit that varies over each map from -4 to 4: the truth (n, p, p)
    drawn with the diagonal factor exp(true_slope |loc|), the draws (n x k maps) as trained (factor 1)."""
    g = torch.Generator().manual_seed(11)
    loc = torch.linspace(-4.0, 4.0, p * p)[torch.randperm(p * p, generator=g)].view(1, 1, p, p).expand(n, 1, p, p)
    truth = to_fraction(loc + torch.exp(true_slope * loc.abs()) * torch.randn(n, 1, p, p, generator=g))[:, 0]
    draws = ResidualDraw(
        loc=loc.repeat_interleave(k, 0), coherent=torch.zeros(n * k, 1, p, p),
        independent=torch.randn(n * k, 1, p, p, generator=g), mixing=None, lowrank_var=None, diagonal_var=None,
        tail=None, eps=1e-3,
    )  # fmt: skip
    return draws, torch.ones(n * k, 1, p, p, dtype=torch.bool), truth, loc


@pytest.mark.parametrize("true_slope", [0.0, 0.3])
def test_the_slope_fit_recovers_a_diagonal_noise_that_grows_towards_0_and_1(true_slope: float) -> None:
    # Fitted per median stratum, the slope and the diagonal factor at |loc| = 0 come back, and every stratum is
    # then covered at 68%.
    n, k, p = 120, 48, 10
    draws, mask, truth, loc = graded_noise(true_slope, n, k, p)
    covered, pixels = stratum_grid(draws, mask, truth, torch.ones(n), lowrank=1.0, slopes=SLOPES, scales=SCALES)
    assert covered.shape == (len(SLOPES), len(SCALES), len(COVERAGE_TARGETS), 6) and float(pixels.sum()) == n * p * p
    fitted, diagonals, misfit = slope_matched_scales(1.0, SLOPES, SCALES, covered.numpy(), pixels.numpy())
    assert fitted.diagonal_slope == pytest.approx(true_slope, abs=0.08)
    assert fitted.diagonal == pytest.approx(1.0, rel=0.25) and misfit.shape == diagonals.shape == SLOPES.shape
    samples = draws.fractions(mask, fitted).view(n, k, p, p)
    centre = to_fraction(loc[:, 0]).expand(n, p, p)
    inside = ((samples < truth[:, None]).float().mean(1) - 0.5).abs() <= 0.34
    for low, high in ((0.0, 0.05), (0.05, 0.2), (0.2, 0.8), (0.8, 0.95), (0.95, 1.0)):
        stratum_inside = inside[(centre >= low) & (centre <= high)].float().mean()
        assert float(stratum_inside) == pytest.approx(0.68, abs=0.06), (low, high)
    if true_slope > 0:  # one factor for every pixel cannot cover the ends and the middle alike
        single = draws.fractions(mask, NoiseScales(1.0, float(diagonals[list(SLOPES).index(0.0)]))).view(n, k, p, p)
        single_inside = ((single < truth[:, None]).float().mean(1) - 0.5).abs() <= 0.34
        ends, middle = centre.sub(0.5).abs() > 0.45, centre.sub(0.5).abs() < 0.3
        assert float(single_inside[ends].float().mean()) < float(single_inside[middle].float().mean()) - 0.1


def test_a_slope_past_the_grid_grows_the_grid_on_the_same_draws_until_the_fit_is_inside_it() -> None:
    # The truth's diagonal factor falls towards 0 and 1 (slope -0.6 per logit), past the grid's lower end
    # (-0.3): the grid grows past that end until the best slope is inside it, and the fit finds the slope.
    n = 120
    draws, mask, truth, _ = graded_noise(-0.6, n)
    scored: list[list[float]] = []

    def score(slopes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        scored.append([float(v) for v in slopes])
        return stratum_grid(draws, mask, truth, torch.ones(n), lowrank=1.0, slopes=slopes, scales=SCALES)

    fitted, record = grown_slope_fit(score, 1.0, SLOPES, SCALES)
    assert fitted.diagonal_slope == pytest.approx(-0.6, abs=0.08)
    assert scored[0] == list(SLOPES) and len(scored) >= 2 and all(max(more) < SLOPES.min() for more in scored[1:])
    grid = np.array(record["slopes"])
    np.testing.assert_allclose(np.diff(grid), 0.1, atol=1e-9)  # one even grid, the first scores kept
    assert grid.min() < -0.6 < grid[int(np.argmin(record["strata_misfit"]))] + 0.15
    assert 0 < int(np.argmin(record["strata_misfit"])) < len(grid) - 1
    # the same fit on the grown grid scored at once
    direct, _, _ = slope_matched_scales(1.0, grid, SCALES, *(t.numpy() for t in score(grid)))
    assert fitted.diagonal_slope == pytest.approx(direct.diagonal_slope, abs=1e-9)
    # a slope inside the grid: the grid is scored once, as it is
    scored.clear()
    draws, mask, truth, _ = graded_noise(0.1, n)
    inside, record = grown_slope_fit(score, 1.0, SLOPES, SCALES)
    assert len(scored) == 1 and record["slopes"] == list(SLOPES)


def test_best_scale_refines_between_grid_points_and_keeps_edges() -> None:
    scales = np.geomspace(0.1, 2.0, 40)
    scores = (np.log(scales) - np.log(0.37)) ** 2
    assert best_scale(scales, scores) == pytest.approx(0.37, rel=1e-6)
    assert best_scale(scales, -np.log(scales)) == scales[-1]


def small_models(family: str = "gaussian") -> tuple[CVAE, LatentFlow]:
    torch.manual_seed(0)
    cfg = CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8, rank=2, likelihood=family)
    flow = LatentFlow(FlowConfig(latent_dim=3, context_dim=8, num_layers=1, hidden_features=8))
    return CVAE(cfg).eval(), flow.eval()


def small_maps(n: int, p: int = 16) -> MapSet:
    g = torch.Generator().manual_seed(4)
    y, x = torch.meshgrid(torch.arange(p) - p / 2 + 0.5, torch.arange(p) - p / 2 + 0.5, indexing="ij")
    mask = (x.hypot(y) < p / 2.5).expand(n, 1, p, p).clone()
    conditions = torch.randn(n, 5, p, p, generator=g) * mask
    exsitu = torch.rand(n, 1, p, p, generator=g) * mask
    table = pd.DataFrame({"galaxy_id": np.arange(n) // 3})
    return MapSet(conditions, exsitu, mask, table, np.zeros((n, p, p), np.float32))


def test_the_fit_streams_chunks_and_does_not_depend_on_them() -> None:
    cvae, flow = small_models()
    maps = small_maps(11)
    settings = RecalibrateSettings(enabled=True, n_samples=4, seed=5, method="scores", diagonal_slope=False)
    scales = SCALES[::2]
    whole = fit_noise_scales(cvae, flow, lambda: maps.chunks(11), maps.table, settings, scales=scales)
    pieces = fit_noise_scales(cvae, flow, lambda: maps.chunks(4), maps.table, settings, scales=scales)
    assert (whole.n_maps, whole.n_galaxies, len(whole.energy_score)) == (11, 4, len(scales))
    np.testing.assert_allclose(pieces.energy_score, whole.energy_score, rtol=1e-5)
    np.testing.assert_allclose(pieces.variogram_score, whole.variogram_score, rtol=1e-5)
    for level in ("0.68", "0.95"):
        np.testing.assert_allclose(pieces.integrated_coverage[level], whole.integrated_coverage[level], atol=1e-9)
    # field by field: pytest.approx compares a dataclass exactly, and chunked sums differ in the last bit
    assert astuple(pieces.noise) == pytest.approx(astuple(whole.noise), rel=1e-4)
    with pytest.raises(InputError, match="chunks held 4 maps"):
        fit_noise_scales(cvae, flow, lambda: small_maps(4).chunks(4), maps.table, settings, scales=scales)


def test_the_passes_share_the_draws_they_keep_and_fit_what_they_fit_when_decoding_again() -> None:
    # the class, grid and slope passes read the same draws: kept after the first pass within the budget (the maps
    # are streamed once), decoded again for every pass without it; the fit is the same to the last bit
    torch.manual_seed(0)
    cfg = CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8, rank=2, likelihood="student_t", hurdle=True)
    cvae = CVAE(cfg).eval()
    flow = LatentFlow(FlowConfig(latent_dim=3, context_dim=8, num_layers=1, hidden_features=8)).eval()
    maps = small_maps(9)
    maps.exsitu[:, :, :4] = 0.0  # pixels at the low clip, for the class pass
    settings = RecalibrateSettings(
        enabled=True, n_samples=8, seed=5, method="coverage", diagonal_slope=True, clip_classes=True
    )
    streamed = []

    def fit(cache_bytes: int) -> NoiseScaleFit:
        streamed.append(0)

        def chunks() -> Iterator[MapSet]:
            streamed[-1] += 1
            return maps.chunks(4)

        return fit_noise_scales(cvae, flow, chunks, maps.table, settings, scales=SCALES[::2],
                                slopes=np.array([-0.2, 0.1, 0.4]), cache_bytes=cache_bytes)  # fmt: skip

    kept, decoded = fit(2**30), fit(0)
    assert streamed == [1, 3]
    assert kept.class_fit["n_pixels"] > 0 and kept.slope_fit["slopes"][:3] == [-0.2, 0.1, 0.4]
    assert kept.to_dict() == decoded.to_dict()


def test_joint_keeps_its_low_rank_scale_when_the_slope_is_fitted() -> None:
    # recalibrate.diagonal_slope with method joint: the low-rank scale stays the integrated fraction's, and the
    # diagonal factor and slope are fitted at it; method scores fits no slope
    cvae, flow = small_models("student_t")
    maps = small_maps(9)
    scales, slopes = SCALES[::2], np.array([-0.2, 0.1, 0.4, 0.7])  # a coarse grid the tiny models' slope is inside

    def fit(method: str, slope: bool) -> NoiseScaleFit:
        settings = RecalibrateSettings(enabled=True, n_samples=8, seed=5, method=method, diagonal_slope=slope)
        return fit_noise_scales(cvae, flow, lambda: maps.chunks(9), maps.table, settings, scales=scales, slopes=slopes)

    joint, joint_slope = fit("joint", False), fit("joint", True)
    assert joint_slope.noise.lowrank == joint.noise.lowrank and joint.slope_fit == {}
    assert joint_slope.slope_fit["slopes"] == list(slopes)
    assert slopes.min() <= joint_slope.noise.diagonal_slope <= slopes.max()
    assert joint_slope.to_dict()["method_description"].endswith("(recalibrate.diagonal_slope)")
    scores = fit("scores", True)
    assert scores.noise.diagonal_slope == 0.0 and scores.slope_fit == {}


def test_a_bad_noise_scale_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "noise_scale.json"
    path.write_text(json.dumps({"noise_scale": 0.5}))
    with pytest.raises(InputError, match="noise_scale.json.*'noise'"):
        read_noise_scales(path)
    path.write_text(json.dumps({"noise": {"lowrank": 0.5}}))
    with pytest.raises(InputError, match="'noise' must hold 'lowrank' and 'diagonal'"):
        read_noise_scales(path)
    path.write_text(json.dumps({"noise": {"lowrank": 0.5, "diagonal": -1}}))
    with pytest.raises(InputError, match="noise_scale.json: noise scale 'diagonal'"):
        read_noise_scales(path)


def test_the_pipeline_fits_the_scales_and_every_consumer_uses_them(tiny_run: Path) -> None:
    path = tiny_run / "results" / "models" / "noise_scale.json"
    fitted = json.loads(path.read_text())
    scales = fitted["scales"]
    energy, variogram = np.array(fitted["energy_score"]), np.array(fitted["variogram_score"])
    assert energy.shape == variogram.shape == (len(SCALES), len(SCALES)) and fitted["n_samples"] == 64
    noise = read_noise_scales(path)
    # the default: among the pairs whose validation pixels are covered, the one whose integrated fractions are (its
    # low-rank scale; the diagonal slope, on in the tiny config, then refits the diagonal at it)
    assert fitted["method"] == "joint"
    coverage, integrated = (
        np.array([fitted[name][str(level)] for level in COVERAGE_TARGETS])
        for name in ("pixel_coverage", "integrated_coverage")
    )
    assert coverage.shape == integrated.shape == (len(COVERAGE_TARGETS), len(SCALES), len(SCALES))
    assert np.all((coverage >= 0) & (coverage <= 1)) and np.all((integrated >= 0) & (integrated <= 1))
    assert noise.lowrank == coverage_matched_scales(np.array(scales), coverage, integrated).lowrank
    # recalibrate.diagonal_slope (on in the tiny config): per slope a diagonal scale matched to the pooled
    # coverage; the fitted pair lies on that curve, at the slope of the least stratum misfit (refined between
    # grid slopes)
    slope_fit = fitted["diagonal_slope_fit"]
    slopes, matched = np.array(slope_fit["slopes"]), np.array(slope_fit["matched_diagonal"])
    assert slopes.min() <= noise.diagonal_slope <= slopes.max()
    assert abs(noise.diagonal_slope - slopes[int(np.argmin(slope_fit["strata_misfit"]))]) <= slopes[1] - slopes[0]
    assert noise.diagonal == pytest.approx(math.exp(np.interp(noise.diagonal_slope, slopes, np.log(matched))))
    # at slope 0 the pooled match is the one-factor fit (computed at the low-rank scale, not interpolated to it)
    assert matched[list(slopes).index(0.0)] == pytest.approx(
        coverage_matched_diagonal(np.array(scales), coverage, noise.lowrank), rel=0.15
    )
    assert sum(slope_fit["stratum_pixel_share"]) == pytest.approx(1.0)
    assert min(scales) <= noise.lowrank <= max(scales) and min(scales) <= noise.diagonal <= max(scales)
    # the single factor is the energy-score minimum along lowrank = diagonal (or refined next to it)
    lowest = scales[int(np.argmin(np.diagonal(energy)))]
    assert abs(math.log(fitted["noise_scale"] / lowest)) <= math.log(SCALES[1] / SCALES[0])
    diagnostics = fitted["diagnostics"]
    # the default family: the multivariate Student-t, whose learned degrees of freedom the diagnostics record
    assert diagnostics["family"] == "student_t" and diagnostics["dof"] > 2 and diagnostics["noise"] == fitted["noise"]
    assert NoiseScales(**fitted["noise"]) == noise
    block = diagnostics["as_trained"]["flow"]
    assert block["n_pixels"] > 0 and block["mahalanobis_per_pixel"]["quantiles"]["0.5"] > 0
    metrics = json.loads((tiny_run / "results" / "evaluation" / "metrics.json").read_text())
    card = json.loads((tiny_run / "results" / "models" / "model.json").read_text())
    assert metrics["noise"] == card["noise"] == fitted["noise"] and card["format"] == "exsitu-model-dir-2"
    # the stage's log says what each pass cost: the scale grid, the slope passes and the diagnostics
    log = (tiny_run / "results" / "logs" / "recalibrate.log").read_text()
    grid = re.search(r"scale grid: (\d+) validation maps x 64 draws scored at (\d+) .* in \d+ s", log)
    assert grid and int(grid[1]) == fitted["n_maps"] and int(grid[2]) == len(SCALES) ** 2
    slope = re.search(r"diagonal slope: (\d+) slopes x (\d+) diagonal scales .* in (\d+) pass", log)
    assert slope and int(slope[1]) == len(slopes) and int(slope[2]) == len(SCALES) and int(slope[3]) >= 1
    assert re.search(r"residual diagnostics in \d+ s", log)
    # recalibrate.clip_classes (on by default, the tiny model has the hurdle): the Platt scaling is fitted first, the
    # noise record carries it, and it did not raise the validation pixels' class NLL
    clip = fitted["clip_class_fit"]
    assert [clip[name] for name in ("clip_slope", "clip_low", "clip_high")] == [
        noise.clip_slope,
        noise.clip_low,
        noise.clip_high,
    ]
    assert clip["nll_fitted"] <= clip["nll_as_trained"] and clip["n_pixels"] > 0
    line = re.search(r"clip classes: (\d+) validation pixels x 64 draws, Platt slope ([\d.]+)", log)
    assert line and int(line[1]) == clip["n_pixels"] and float(line[2]) == pytest.approx(clip["clip_slope"], abs=1e-3)
