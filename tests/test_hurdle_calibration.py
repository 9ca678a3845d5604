"""The Platt scaling of the hurdle's clip classes (exsitu.hurdle_calibration) and how draws apply it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special

from exsitu.hurdle_calibration import class_nll, class_rows, fit_class_calibration, kept_pixels
from exsitu.io import InputError
from exsitu.likelihood import AS_TRAINED, NoiseScales, clip_classes


def synthetic(slope: float, low: float, high: float, m: int = 20_000, k: int = 8, seed: int = 0):
    """(m, k, 2) per-draw class logits whose true classes are drawn from the predictive that (slope, low, high)
    makes of them: the mean over the k draws of softmax(slope * logit + shift, 0)."""
    rng = np.random.default_rng(seed)
    centre = rng.normal([-1.5, -3.5], 1.5, size=(m, 1, 2))
    logits = centre + rng.normal(0, 1.0, size=(m, k, 2))
    scaled = slope * logits + np.array([low, high])
    full = np.concatenate([scaled[..., :1], np.zeros((m, k, 1)), scaled[..., 1:]], axis=-1)
    predictive = special.softmax(full, axis=-1).mean(1)
    u = rng.random(m)[:, None]
    classes = (u > np.cumsum(predictive, axis=1)).sum(1)  # 0 low, 1 inside, 2 high
    weights = rng.choice([1.0, 0.5, 1 / 3], size=m)
    return torch.tensor(logits, dtype=torch.float32), torch.as_tensor(classes), torch.as_tensor(weights)


def test_the_fit_recovers_the_scaling_that_drew_the_classes() -> None:
    logits, classes, weights = synthetic(1.5, 0.8, -0.5)
    fit = fit_class_calibration(logits, classes, weights)
    assert fit.slope == pytest.approx(1.5, abs=0.15)
    assert fit.low == pytest.approx(0.8, abs=0.15) and fit.high == pytest.approx(-0.5, abs=0.25)
    assert fit.nll_fitted < fit.nll_as_trained and fit.n_pixels == len(classes)
    assert sum(fit.class_share) == pytest.approx(1.0)
    # classes drawn from the logits as they are: the fit stays near the identity
    as_trained = fit_class_calibration(*synthetic(1.0, 0.0, 0.0, seed=1))
    assert as_trained.slope == pytest.approx(1.0, abs=0.1) and abs(as_trained.low) < 0.1


def test_the_nll_is_that_of_the_predictive_mean_over_draws() -> None:
    logits, classes, weights = synthetic(1.0, 0.0, 0.0, m=50, k=3)
    slope, shifts = 1.3, np.array([0.4, -0.2])
    scaled = slope * logits.double().numpy() + shifts
    full = np.concatenate([scaled[..., :1], np.zeros((50, 3, 1)), scaled[..., 1:]], axis=-1)
    picked = special.softmax(full, axis=-1).mean(1)[np.arange(50), classes.numpy()]
    expected = -(weights.numpy() * np.log(picked)).sum() / weights.numpy().sum()
    got = class_nll(logits, classes, weights, torch.tensor(slope), torch.tensor(shifts))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_a_class_no_pixel_holds_keeps_its_shift() -> None:
    logits, classes, weights = synthetic(1.5, 0.8, -0.5)
    classes = torch.where(classes == 2, 1, classes)
    fit = fit_class_calibration(logits, classes, weights)
    assert fit.high == 0.0 and fit.class_share[2] == 0.0 and fit.low != 0.0


def test_the_kept_pixels_do_not_depend_on_the_chunking() -> None:
    rows = np.arange(40)
    whole = kept_pixels(rows, 16, 0.25)
    assert torch.equal(whole, torch.cat([kept_pixels(rows[:13], 16, 0.25), kept_pixels(rows[13:], 16, 0.25)]))
    assert float(whole.float().mean()) == pytest.approx(0.25, abs=0.02)
    assert bool(kept_pixels(rows, 16, 1.5).all())


def test_class_rows_take_each_kept_pixel_with_all_its_draws() -> None:
    n, k, p = 3, 4, 5
    g = torch.Generator().manual_seed(0)
    clip_logits = torch.randn(n * k, 2, p, p, generator=g)
    truth = torch.tensor([0.0, 0.5, 1.0]).repeat(n, p, p // 3 + 1)[:, :, :p]
    keep = torch.zeros(n, p, p, dtype=torch.bool)
    keep[1, 2, 3] = keep[2, 0, 0] = True
    logits, classes, weights = class_rows(clip_logits, keep, truth, torch.tensor([1.0, 0.5, 0.25]), eps=1e-3)
    assert logits.shape == (2, k, 2) and torch.equal(logits[0], clip_logits[k : 2 * k, :, 2, 3])
    assert classes.tolist() == clip_classes(truth[keep], 1e-3).tolist() and weights.tolist() == [0.5, 0.25]


def test_noise_scales_check_the_class_calibration() -> None:
    assert AS_TRAINED.classes_as_trained and not NoiseScales(clip_low=0.1).classes_as_trained
    hurdle = torch.randn(2, 2, 3, 3)
    assert AS_TRAINED.class_logits(hurdle) is hurdle
    moved = NoiseScales(clip_slope=2.0, clip_low=1.0, clip_high=-1.0).class_logits(hurdle)
    assert torch.allclose(moved[:, 0], 2 * hurdle[:, 0] + 1) and torch.allclose(moved[:, 1], 2 * hurdle[:, 1] - 1)
    with pytest.raises(InputError, match="'clip_slope' must be a finite number > 0"):
        NoiseScales(clip_slope=0.0)
    with pytest.raises(InputError, match="'clip_high' must be a finite number"):
        NoiseScales(clip_high=float("nan"))
