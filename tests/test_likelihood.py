"""The whole-map likelihood (low rank + diagonal Gaussian in logit space): its NLL against a dense
covariance, the mask, its samples and mean, and joint calibration on smooth random fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exsitu.calibration import central_coverage, randomized_pit, tarp_atc_terms, tarp_credibility
from exsitu.likelihood import LOGIT_EPS, LOGIT_LOW, MapLikelihood, to_fraction, to_logit


def disc(p: int, radius: float) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(p) - p / 2 + 0.5, torch.arange(p) - p / 2 + 0.5, indexing="ij")
    return (x.hypot(y) < radius)[None, None]


def random_likelihood(n: int, p: int, rank: int, seed: int) -> MapLikelihood:
    g = torch.Generator().manual_seed(seed)
    return MapLikelihood(
        torch.randn(n, 1, p, p, generator=g),
        torch.randn(n, 1, p, p, generator=g) * 0.5 - 1,
        torch.randn(n, rank, p, p, generator=g) * 0.5,
    )


@pytest.mark.parametrize("rank", [0, 3])
def test_nll_matches_a_dense_multivariate_normal(rank: int) -> None:
    n, p = 3, 6
    lik = random_likelihood(n, p, rank, seed=rank)
    mask = disc(p, 2.6).expand(n, 1, p, p).clone()
    mask[1, 0, 2, 2] = False  # maps need not share a mask
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(9))
    target[0, 0, 2, 3], target[2, 0, 3, 3] = 0.0, 1.0  # clipped to LOGIT_EPS, 1 - LOGIT_EPS
    nll = lik.nll(target, mask)
    assert nll.shape == (n,)
    for i in range(n):
        sel = mask[i, 0].flatten()
        y = target[i, 0].flatten()[sel].double().clamp(LOGIT_EPS, 1 - LOGIT_EPS)
        factors = lik.factors[i].flatten(1)[:, sel].double()
        cov = factors.T @ factors + torch.diag(lik.log_var[i, 0].flatten()[sel].double().exp())
        dense = torch.distributions.MultivariateNormal(lik.loc[i, 0].flatten()[sel].double(), cov)
        expected = -dense.log_prob(torch.logit(y)) + torch.log(y * (1 - y)).sum()
        assert float(nll[i]) == pytest.approx(float(expected), rel=1e-4, abs=1e-3)


def test_pixels_outside_the_mask_do_not_change_the_nll() -> None:
    n, p = 2, 8
    lik = random_likelihood(n, p, 4, seed=1)
    mask = disc(p, 3.2).expand(n, 1, p, p)
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(2))
    nll = lik.nll(target, mask)
    outside = ~mask
    changed = MapLikelihood(
        torch.where(outside, 5.0, lik.loc),
        torch.where(outside, 3.0, lik.log_var),
        torch.where(outside, 7.0, lik.factors),
    )
    assert torch.allclose(changed.nll(torch.where(outside, 0.3, target), mask), nll, rtol=1e-5, atol=1e-4)
    # A galaxy pixel does count.
    target[0, 0, 4, 4] = 0.99
    assert not torch.allclose(lik.nll(target, mask), nll)


def test_logit_samples_have_the_model_mean_and_covariance() -> None:
    p, rank, draws = 3, 2, 100_000
    one = random_likelihood(1, p, rank, seed=4)
    lik = MapLikelihood(*(t.expand(draws, *t.shape[1:]) for t in (one.loc, one.log_var, one.factors)))
    x = lik.sample_logit(torch.Generator().manual_seed(0)).flatten(1).double()
    factors = one.factors[0].flatten(1).double()
    cov = factors.T @ factors + torch.diag(one.log_var.flatten().double().exp())
    assert torch.allclose(x.mean(0), one.loc.flatten().double(), atol=0.02)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.03)
    assert torch.allclose(one.marginal_log_var().flatten().double().exp(), torch.diagonal(cov), atol=1e-5)


def test_fractions_clip_to_exact_zero_and_one_and_the_mean_matches_the_samples() -> None:
    assert torch.equal(to_fraction(torch.tensor([LOGIT_LOW - 1e-3, 0.0, -LOGIT_LOW + 1e-3])), torch.tensor([0, 0.5, 1]))
    assert torch.allclose(to_fraction(to_logit(torch.tensor([0.0, 0.25, 1.0]))), torch.tensor([0.0, 0.25, 1.0]))
    draws = 40_000
    loc = torch.tensor([LOGIT_LOW, -2.0, 0.0, 3.0, -LOGIT_LOW + 0.5]).view(1, 1, 1, 5)
    lik = MapLikelihood(
        loc.expand(draws, 1, 1, 5), torch.full((draws, 1, 1, 5), -1.0), torch.full((draws, 1, 1, 1, 5), 0.5)[:, 0]
    )
    mask = torch.ones(draws, 1, 1, 5, dtype=torch.bool)
    samples = lik.sample(mask, torch.Generator().manual_seed(0))
    assert samples.min() == 0 and samples.max() == 1
    assert 0.4 < float((samples[:, 0, 0, 0] == 0).float().mean()) < 0.6  # a point mass at 0
    assert torch.allclose(samples.mean(0), lik.mean(mask)[0], atol=0.005)
    assert torch.all(lik.mean(~mask) == 0)


# Calibration on smooth fields: truth maps are drawn from a known low rank + diagonal field
# in logit space (6 Gaussian bumps of 2.5 px width with random amplitudes, plus white noise)
# around a radial mean that reaches the clip in the centre, so some pixels are exactly 0.
P, N_MAPS, N_SAMPLES = 12, 600, 100


def smooth_field() -> tuple[MapLikelihood, torch.Tensor]:
    y, x = torch.meshgrid(torch.arange(P) + 0.5, torch.arange(P) + 0.5, indexing="ij")
    r = (x - P / 2).hypot(y - P / 2)
    centres = [(3, 3), (9, 3), (6, 6), (3, 9), (9, 9), (6, 1)]
    bumps = torch.stack([torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 2.5**2)) for cx, cy in centres])
    loc = (-7.5 + 1.4 * r)[None, None]
    lik = MapLikelihood(loc, torch.full_like(loc, 2 * np.log(0.3)), 0.9 * bumps[None])
    return lik, disc(P, 5.6)


def draws(lik: MapLikelihood, mask: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """n maps from ``lik`` (one map's likelihood) as (n, galaxy pixels) fractions."""
    many = MapLikelihood(*(t.expand(n, *t.shape[1:]) for t in (lik.loc, lik.log_var, lik.factors)))
    return many.sample(mask, torch.Generator().manual_seed(seed))[:, 0][:, mask[0, 0]].numpy()


def calibration(lik: MapLikelihood, truth_field: MapLikelihood, mask: torch.Tensor) -> tuple[np.ndarray, float]:
    """Per-pixel central coverage at 0.5/0.68/0.9 and TARP ATC of ``lik``'s samples for ``truth_field``'s maps."""
    truth = draws(truth_field, mask, N_MAPS, seed=1)
    samples = draws(lik, mask, N_MAPS * N_SAMPLES, seed=2).reshape(N_MAPS, N_SAMPLES, -1)
    rng = np.random.default_rng(0)
    pit = randomized_pit(samples.transpose(0, 2, 1), truth, rng)
    atc = float(tarp_atc_terms(tarp_credibility(samples, truth, rng)).mean())
    return central_coverage(pit, (0.5, 0.68, 0.9)), atc


def test_the_exact_correlated_model_is_calibrated_per_pixel_and_jointly() -> None:
    field, mask = smooth_field()
    coverage, atc = calibration(field, field, mask)
    assert np.allclose(coverage, [0.5, 0.68, 0.9], atol=0.015)
    # Over 8 seeds of truths and samples this ATC was -0.003 +- 0.011.
    assert abs(atc) < 0.05


def test_independent_pixels_with_the_same_marginals_are_jointly_miscalibrated() -> None:
    field, mask = smooth_field()
    independent = MapLikelihood(field.loc, field.marginal_log_var(), field.factors[:, :0])
    coverage, atc = calibration(independent, field, mask)
    assert np.allclose(coverage, [0.5, 0.68, 0.9], atol=0.015)  # every pixel's interval is right ...
    # ... but whole maps are not: over 8 seeds this ATC was -0.140 +- 0.014.
    assert abs(atc) > 0.08


def test_training_loss_is_the_nll_with_faithful_gradients() -> None:
    """Value: the NLL. Gradients: the mean's from the squared logit error, the covariance's from the NLL."""
    n, p = 2, 6
    mask = disc(p, 2.8).expand(n, 1, p, p)
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(3))
    params = [t.requires_grad_() for t in vars(random_likelihood(n, p, 2, seed=5)).values()]
    lik = MapLikelihood(*params)
    loss = lik.training_loss(target, mask)
    assert torch.allclose(loss, lik.nll(target, mask))
    loss.sum().backward()
    grads = [t.grad.clone() for t in params]
    assert torch.allclose(grads[0], -(to_logit(target) - lik.loc.detach()) * mask)
    for t in params:
        t.grad = None
    lik.nll(target, mask).sum().backward()
    assert torch.allclose(grads[1], params[1].grad, atol=1e-5) and torch.allclose(grads[2], params[2].grad, atol=1e-5)
