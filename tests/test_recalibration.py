"""The noise-scale recalibration: the energy score, the scale fit, and the stage in the pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from exsitu.io import InputError
from exsitu.likelihood import MapLikelihood, to_fraction
from exsitu.recalibration import SCALES, best_scale, energy_scores, read_noise_scale, scale_scores


def test_energy_score_of_a_gaussian_is_its_crps() -> None:
    # In one dimension the energy score is the CRPS; for N(0, s^2) at y = 0 it is s (2 phi(0) - 1/sqrt(pi)).
    sigma = 0.5
    samples = sigma * torch.randn(1, 3000, 1, 1, generator=torch.Generator().manual_seed(0))
    score = energy_scores(samples, torch.zeros(1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool))
    assert score.item() == pytest.approx(sigma * (2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi)), rel=0.05)


def test_energy_score_is_zero_for_samples_at_the_truth_and_ignores_pixels_off_the_galaxy() -> None:
    truth = torch.rand(2, 4, 4)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    samples = truth[:, None].repeat(1, 5, 1, 1)
    samples[:, :, 0, 0] = 0.9  # off the galaxy: must not count
    assert torch.allclose(energy_scores(samples, truth, mask), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(InputError, match="at least 2 samples"):
        energy_scores(samples[:, :1], truth, mask)


def _smooth_fields(n: int, k: int, p: int, generator: torch.Generator) -> torch.Tensor:
    """(n, k, p, p) correlated Gaussian residual fields: a few smooth modes plus white noise."""
    x = torch.linspace(-1, 1, p)
    modes = torch.stack([torch.ones(p, p), x[:, None].expand(p, p), x[None, :].expand(p, p), x[:, None] * x[None, :]])
    amplitudes = torch.randn(n, k, len(modes), generator=generator)
    return torch.einsum("nkm,mij->nkij", amplitudes, modes) + 0.5 * torch.randn(n, k, p, p, generator=generator)


@pytest.mark.parametrize("true_scale", [0.4, 1.0])
def test_the_fit_recovers_the_scale_of_the_truth(true_scale: float) -> None:
    # The truth is a draw from the predictive at true_scale: the energy score must be lowest there.
    g = torch.Generator().manual_seed(1)
    n, k, p = 60, 32, 12
    loc = (torch.randn(n, 1, 1, 1, generator=g) - 1.0).expand(n, k, p, p)
    truth = to_fraction(loc[:, 0] + true_scale * _smooth_fields(n, 1, p, g)[:, 0])
    mask = torch.ones(n, p, p, dtype=torch.bool)
    scores = scale_scores(loc, _smooth_fields(n, k, p, g), truth, mask, torch.ones(n), SCALES)
    assert best_scale(SCALES, scores.numpy()) == pytest.approx(true_scale, rel=0.15)


def test_best_scale_refines_between_grid_points_and_keeps_edges() -> None:
    scales = np.geomspace(0.1, 2.0, 40)
    scores = (np.log(scales) - np.log(0.37)) ** 2
    assert best_scale(scales, scores) == pytest.approx(0.37, rel=1e-6)
    assert best_scale(scales, -np.log(scales)) == scales[-1]


def test_a_scaled_likelihood_draws_loc_plus_scaled_residual() -> None:
    # posterior_logits relies on it: one set of draws serves every candidate scale.
    torch.manual_seed(2)
    likelihood = MapLikelihood(torch.randn(3, 1, 6, 6), torch.randn(3, 1, 6, 6) - 2, 0.3 * torch.randn(3, 4, 6, 6))
    at_one = likelihood.sample_logit(torch.Generator().manual_seed(5))
    at_half = likelihood.scaled(0.5).sample_logit(torch.Generator().manual_seed(5))
    assert torch.allclose(at_half, likelihood.loc + 0.5 * (at_one - likelihood.loc), atol=1e-5)
    assert likelihood.scaled(1.0) is likelihood


@pytest.mark.parametrize("value", [-0.5, 0, "wide", float("inf")])
def test_a_bad_noise_scale_file_names_the_key(tmp_path: Path, value: object) -> None:
    path = tmp_path / "noise_scale.json"
    path.write_text(json.dumps({"noise_scale": value}).replace("Infinity", "1e999"))
    with pytest.raises(InputError, match="noise_scale.json: 'noise_scale' must be a finite number > 0"):
        read_noise_scale(path)


def test_the_pipeline_fits_the_scale_and_every_consumer_uses_it(tiny_run: Path) -> None:
    fitted = json.loads((tiny_run / "results" / "models" / "noise_scale.json").read_text())
    assert 0.1 <= fitted["noise_scale"] <= 2.0
    assert len(fitted["scales"]) == len(fitted["energy_score"]) == len(SCALES)
    assert fitted["n_maps"] > 0 and fitted["n_samples"] == 64
    # the fitted scale is at (or refined next to) the lowest validation score
    lowest = fitted["scales"][int(np.argmin(fitted["energy_score"]))]
    assert abs(math.log(fitted["noise_scale"] / lowest)) <= math.log(SCALES[1] / SCALES[0])
    metrics = json.loads((tiny_run / "results" / "evaluation" / "metrics.json").read_text())
    card = json.loads((tiny_run / "results" / "models" / "model.json").read_text())
    assert metrics["noise_scale"] == card["noise_scale"] == fitted["noise_scale"]
