"""The whole-map likelihood families (low rank + diagonal in logit space; Student-t per map; sinh-arcsinh
per pixel): NLL against reference implementations, the mask, samples, scaled noise, the mean, faithful
gradients, and calibration on smooth and heavy-tailed synthetic fields."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats
from synthetic_fields import calibration as field_calibration
from synthetic_fields import disc, draw_truth, fit_family

from exsitu.calibration import central_coverage, randomized_pit, tarp_atc_terms, tarp_credibility
from exsitu.io import InputError
from exsitu.likelihood import (
    AS_TRAINED,
    FAMILIES,
    LOGIT_EPS,
    MapLikelihood,
    NoiseScales,
    ResidualDraw,
    arcsinh_sinh,
    log_core_cdf,
    to_fraction,
    to_logit,
)

#: The logit of the clip: beyond it a sample is exactly 0 or 1.
LOGIT_LOW = float(to_logit(torch.tensor(0.0)))


def has_family(lik: MapLikelihood, family: str) -> bool:
    """Whether ``lik`` is of ``family``: Student-t families carry degrees of freedom, sinh-arcsinh ones a tail."""
    expected = (family.startswith("student_t"), family.endswith("sinh_arcsinh"))
    return (lik.dof is not None, lik.tail is not None) == expected


def dense_mahalanobis(one: MapLikelihood, x: torch.Tensor) -> torch.Tensor:
    """g^T S^-1 g of logit maps x (N, 1, P, P) about one map's mean, S = F F^T + diag(d) solved densely."""
    factors = one.factors[0].flatten(1).double()
    cov = factors.T @ factors + torch.diag(one.log_var[0, 0].flatten().double().exp())
    g = (x - one.loc).flatten(1).double()
    return (g * torch.linalg.solve(cov, g.T).T).sum(1)


def random_likelihood(n: int, p: int, rank: int, seed: int, family: str = "gaussian") -> MapLikelihood:
    g = torch.Generator().manual_seed(seed)
    return MapLikelihood(
        torch.randn(n, 1, p, p, generator=g),
        torch.randn(n, 1, p, p, generator=g) * 0.5 - 1,
        torch.randn(n, rank, p, p, generator=g) * 0.5,
        dof=torch.tensor(4.5) if family.startswith("student_t") else None,
        tail=1 + torch.rand(n, 1, p, p, generator=g) if family.endswith("sinh_arcsinh") else None,
    )


def reference_nll(lik: MapLikelihood, target: torch.Tensor, mask: torch.Tensor, i: int) -> float:
    """-log density of map i on [0, 1]^n, written independently: scipy's dense multivariate normal or t,
    the sinh-arcsinh transform and its Jacobian by a central finite difference, the logit Jacobian."""
    sel = mask[i, 0].flatten().numpy()
    y = target[i, 0].flatten().double().numpy()[sel].clip(LOGIT_EPS, 1 - LOGIT_EPS)
    factors = lik.factors[i].flatten(1).double().numpy()[:, sel]
    cov = factors.T @ factors + np.diag(np.exp(lik.log_var[i, 0].flatten().double().numpy()[sel]))
    residual = np.log(y / (1 - y)) - lik.loc[i, 0].flatten().double().numpy()[sel]
    log_slope = 0.0
    if lik.tail is not None:
        std, tail = np.sqrt(np.diag(cov)), lik.tail[i, 0].flatten().double().numpy()[sel]

        def core(r: np.ndarray) -> np.ndarray:
            return std * np.sinh(np.arcsinh(r / std) / tail)

        h = 1e-5
        log_slope = np.log((core(residual + h) - core(residual - h)) / (2 * h)).sum()
        residual = core(residual)
    if lik.dof is None:
        log_density = stats.multivariate_normal(np.zeros(len(y)), cov).logpdf(residual)
    else:
        log_density = stats.multivariate_t(np.zeros(len(y)), cov, df=float(lik.dof)).logpdf(residual)
    return float(-(log_density + log_slope) + np.log(y * (1 - y)).sum())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rank", [0, 3])
def test_nll_matches_a_reference_implementation(family: str, rank: int) -> None:
    n, p = 3, 6
    lik = random_likelihood(n, p, rank, seed=rank, family=family)
    assert has_family(lik, family)
    mask = disc(p, 2.6).expand(n, 1, p, p).clone()
    mask[1, 0, 2, 2] = False  # maps need not share a mask
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(9))
    target[0, 0, 2, 3], target[2, 0, 3, 3] = 0.0, 1.0  # clipped to LOGIT_EPS, 1 - LOGIT_EPS
    nll = lik.nll(target, mask)
    assert nll.shape == (n,)
    for i in range(n):
        assert float(nll[i]) == pytest.approx(reference_nll(lik, target, mask, i), rel=1e-4, abs=2e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_pixels_outside_the_mask_do_not_change_the_nll(family: str) -> None:
    n, p = 2, 8
    lik = random_likelihood(n, p, 4, seed=1, family=family)
    mask = disc(p, 3.2).expand(n, 1, p, p)
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(2))
    nll = lik.nll(target, mask)
    outside = ~mask
    changed = replace(
        lik,
        loc=torch.where(outside, 5.0, lik.loc),
        log_var=torch.where(outside, 3.0, lik.log_var),
        factors=torch.where(outside, 7.0, lik.factors),
        tail=None if lik.tail is None else torch.where(outside, 1.9, lik.tail),
    )
    assert torch.allclose(changed.nll(torch.where(outside, 0.3, target), mask), nll, rtol=1e-5, atol=1e-4)
    # A galaxy pixel does count.
    target[0, 0, 4, 4] = 0.99
    assert not torch.allclose(lik.nll(target, mask), nll)


def reference_censored_nll(lik: MapLikelihood, target: torch.Tensor, mask: torch.Tensor, i: int) -> float:
    """The composite censored NLL of map i written with scipy: the joint density of the pixels inside
    the clip (``reference_nll``) and, per pixel beyond it, the log probability of lying beyond, under
    N(0, 1) or, for the Student-t families, the multivariate t's conditional scale and dof."""
    y = target[i, 0].double().numpy()
    sel = mask[i, 0].numpy()
    inside = sel & (y > LOGIT_EPS) & (y < 1 - LOGIT_EPS)
    one_mask = mask.clone()
    one_mask[i, 0] = torch.as_tensor(inside)
    density = reference_nll(lik, target, one_mask, i)
    factors = lik.factors[i].flatten(1).double().numpy()
    cov = factors.T @ factors + np.diag(np.exp(lik.log_var[i, 0].flatten().double().numpy()))
    std = np.sqrt(np.diag(cov)).reshape(y.shape)
    loc = lik.loc[i, 0].double().numpy()
    low, high = sel & (y <= LOGIT_EPS), sel & (y >= 1 - LOGIT_EPS)
    v = np.where(high, (loc + LOGIT_LOW) / std, (LOGIT_LOW - loc) / std)
    if lik.tail is not None:
        v = np.sinh(np.arcsinh(v) / lik.tail[i, 0].double().numpy())
    if lik.dof is None:
        log_p = stats.norm.logcdf(v)
    else:
        nu, keep = float(lik.dof), inside.flatten()
        kept = y.flatten()[keep]
        x = np.log(kept / (1 - kept)) - loc.flatten()[keep]
        if lik.tail is not None:  # the core residual: T^-1 of the standardised residual
            scale, tail = std.flatten()[keep], lik.tail[i, 0].double().numpy().flatten()[keep]
            x = scale * np.sinh(np.arcsinh(x / scale) / tail)
        m, n = x @ np.linalg.solve(cov[np.ix_(keep, keep)], x), keep.sum()
        log_p = stats.t(nu + n).logcdf(v / np.sqrt((nu + m) / (nu + n)))
    return density - float(log_p[low | high].sum())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rank", [0, 3])
def test_censored_nll_matches_a_reference_implementation(family: str, rank: int) -> None:
    n, p = 3, 6
    lik = replace(random_likelihood(n, p, rank, seed=rank, family=family), censored=True)
    mask = disc(p, 2.6).expand(n, 1, p, p).clone()
    mask[1, 0, 2, 2] = False
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(9))
    target[0, 0, 2, 3], target[0, 0, 3, 2], target[2, 0, 3, 3] = 0.0, 1e-4, 1.0  # censored: two low, one high
    nll = lik.nll(target, mask)
    for i in range(n):
        assert float(nll[i]) == pytest.approx(reference_censored_nll(lik, target, mask, i), rel=1e-4, abs=2e-3)
    # Without censoring the same pixels are densities of their clipped logits: another number.
    assert not torch.allclose(replace(lik, censored=False).nll(target, mask)[[0, 2]], nll[[0, 2]])
    # Map 1 has nothing beyond the clip: both agree.
    assert float(replace(lik, censored=False).nll(target, mask)[1]) == pytest.approx(float(nll[1]), rel=1e-6)


def test_student_t_log_cdf_matches_scipy_and_its_gradient_the_density() -> None:
    u = torch.linspace(-40.0, 8.0, 49, dtype=torch.float64)
    for nu in (2.05, 3.5, 300.0):
        assert np.allclose(log_core_cdf(u, nu).numpy(), stats.t.logcdf(u.numpy(), nu), rtol=1e-10, atol=1e-12)
        point = torch.tensor([-12.0, -1.0, 0.3, 4.0], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda v, nu=nu: log_core_cdf(v, nu), (point,))
    assert np.allclose(log_core_cdf(u, None).numpy(), stats.norm.logcdf(u.numpy()), rtol=1e-10)


@pytest.mark.parametrize("family", ["gaussian", "student_t"])
def test_censored_training_recovers_the_latent_mean_and_width_where_clipping_does_not(family: str) -> None:
    """A Tobit check: logits N(-6.5, 1) of which a third fall below the clip (-6.9). Trained with the
    faithful loss on one location and one log variance, the censored likelihood finds the latent
    mean and width; the clipped one finds the mean of the clipped values and a narrower width."""
    n, p = 64, 16
    g = torch.Generator().manual_seed(1)
    x = -6.5 + torch.randn(n, 1, p, p, generator=g)
    target = torch.where(x <= LOGIT_LOW, 0.0, torch.sigmoid(x))
    mask = torch.ones(n, 1, p, p, dtype=torch.bool)
    fits = {}
    for censored in (False, True):
        loc, log_var, log_dof = (torch.zeros(1, requires_grad=True) for _ in range(3))
        optimiser = torch.optim.Adam([loc, log_var, log_dof], lr=0.05)
        for _ in range(800):
            lik = MapLikelihood(
                (loc - 5).expand(n, 1, p, p), log_var.expand(n, 1, p, p), torch.zeros(n, 0, p, p),
                dof=2.05 + 10 * torch.exp(log_dof) if family == "student_t" else None, censored=censored,
            )  # fmt: skip
            optimiser.zero_grad()
            lik.training_loss(target, mask).mean().backward()
            optimiser.step()
        fits[censored] = float(loc.detach()) - 5, float(torch.exp(0.5 * log_var.detach()))
    assert 0.3 < float((target == 0).float().mean()) < 0.4
    assert fits[True][0] == pytest.approx(-6.5, abs=0.08) and fits[True][1] == pytest.approx(1.0, abs=0.08)
    assert fits[False][0] > -6.35 and fits[False][1] < 0.8


def with_hurdle(lik: MapLikelihood, seed: int) -> MapLikelihood:
    """``lik`` with random clip-class logits for the hurdle, (N, 2, P, P)."""
    n, _, p, _ = lik.loc.shape
    return replace(lik, hurdle=torch.randn(n, 2, p, p, generator=torch.Generator().manual_seed(seed)) - 1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rank", [0, 3])
def test_hurdle_nll_matches_a_reference_implementation(family: str, rank: int) -> None:
    n, p = 3, 6
    lik = with_hurdle(random_likelihood(n, p, rank, seed=rank, family=family), seed=4)
    mask = disc(p, 2.6).expand(n, 1, p, p).clone()
    mask[1, 0, 2, 2] = False
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(9))
    target[0, 0, 2, 3], target[0, 0, 3, 2], target[2, 0, 3, 3] = 0.0, 1e-4, 1.0  # two at the low clip, one high
    nll = lik.nll(target, mask)
    for i in range(n):
        # The density of the pixels inside the clip, then every galaxy pixel's class by a softmax in numpy.
        y, sel = target[i, 0].double().numpy(), mask[i, 0].numpy()
        one_mask = mask.clone()
        one_mask[i, 0] = torch.as_tensor(sel & (y > LOGIT_EPS) & (y < 1 - LOGIT_EPS))
        low, high = lik.hurdle[i].double().numpy()
        log_norm = np.logaddexp(np.logaddexp(low, 0.0), high)
        log_class = np.where(y <= LOGIT_EPS, low, np.where(y >= 1 - LOGIT_EPS, high, 0.0)) - log_norm
        expected = reference_nll(lik, target, one_mask, i) - log_class[sel].sum()
        assert float(nll[i]) == pytest.approx(expected, rel=1e-4, abs=2e-3)
    # Map 1 has no pixel at the clip, yet each of its pixels pays for its class "inside".
    inside_only = replace(lik, hurdle=None).nll(target, mask)[1]
    assert float(nll[1]) > float(inside_only) + 1.0


@pytest.mark.parametrize("family", ["gaussian", "student_t"])
def test_hurdle_draws_mean_and_median_match_the_class_probabilities(family: str) -> None:
    draws = 40_000
    # Pixels: mostly at the low clip; mostly inside near 0.5; inside but near the low clip (it leaks);
    # mostly at the high clip; an even split of low and inside.
    loc = torch.tensor([0.0, 0.0, LOGIT_LOW + 1.0, 0.0, 2.0]).view(1, 1, 1, 5)
    p_low = torch.tensor([0.7, 0.1, 0.05, 0.05, 0.45])
    p_high = torch.tensor([0.05, 0.1, 0.05, 0.6, 0.05])
    p_inside = 1 - p_low - p_high
    hurdle = torch.stack([torch.log(p_low / p_inside), torch.log(p_high / p_inside)]).view(1, 2, 1, 5)
    one = MapLikelihood(
        loc,
        torch.full((1, 1, 1, 5), -1.0),
        torch.full((1, 1, 1, 5), 0.5),
        dof=torch.tensor(4.0) if family == "student_t" else None,
        hurdle=hurdle,
    )
    mask = torch.ones(draws, 1, 1, 5, dtype=torch.bool)
    samples = many(one, draws).sample(mask, torch.Generator().manual_seed(0))[:, 0, 0]
    at_low, at_high = (samples == 0).float().mean(0), (samples == 1).float().mean(0)
    # Far from the clip the family hardly leaks: the shares at 0 and 1 are the class probabilities.
    far = [0, 1, 3, 4]
    assert torch.allclose(at_low[far], p_low[far], atol=0.01) and torch.allclose(at_high[far], p_high[far], atol=0.01)
    assert float(at_low[2]) > float(p_low[2]) + 0.05  # near the clip the family's draws below it add to the class
    assert torch.allclose(samples.mean(0), one.mean(mask[:1])[0, 0, 0], atol=0.006)
    median = one.median(mask[:1])[0, 0, 0]
    assert float(median[0]) == 0.0 and float(median[3]) == 1.0
    assert torch.allclose(samples.median(0).values[[1, 4]], median[[1, 4]], atol=0.01)
    # Without the hurdle the median is the sigmoid of the mean logit.
    assert torch.allclose(replace(one, hurdle=None).median(mask[:1]), torch.sigmoid(loc))


def test_hurdle_training_finds_the_clip_share_and_the_density_inside() -> None:
    """40% of the pixels at the low clip and 5% at the high one, the rest logits N(-3, 0.7^2): trained
    with the faithful loss, the hurdle recovers both shares and the inside density's mean and width;
    the clipped likelihood pulls its mean down and widens to reach the clip's -6.9 logits."""
    n, p = 64, 16
    g = torch.Generator().manual_seed(1)
    u = torch.rand(n, 1, p, p, generator=g)
    inside = torch.sigmoid(-3 + 0.7 * torch.randn(n, 1, p, p, generator=g))
    target = torch.where(u < 0.4, 0.0, torch.where(u > 0.95, 1.0, inside))
    mask = torch.ones(n, 1, p, p, dtype=torch.bool)
    fits = {}
    for hurdle in (False, True):
        loc, log_var, classes = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True), None
        params = [loc, log_var]
        if hurdle:
            classes = torch.zeros(1, 2, 1, 1, requires_grad=True)
            params.append(classes)
        optimiser = torch.optim.Adam(params, lr=0.05)
        for _ in range(600):
            lik = MapLikelihood(
                (loc - 3).expand(n, 1, p, p), log_var.expand(n, 1, p, p), torch.zeros(n, 0, p, p),
                hurdle=None if classes is None else classes.expand(n, 2, p, p),
            )  # fmt: skip
            optimiser.zero_grad()
            lik.training_loss(target, mask).mean().backward()
            optimiser.step()
        fits[hurdle] = float(loc.detach()) - 3, float(torch.exp(0.5 * log_var.detach())), lik
    loc, sd, lik = fits[True]
    low, _, high = lik.clip_log_probs()[0, :, 0, 0].exp().tolist()
    assert low == pytest.approx(float((target == 0).float().mean()), abs=0.01)
    assert high == pytest.approx(float((target == 1).float().mean()), abs=0.01)
    assert loc == pytest.approx(-3.0, abs=0.05) and sd == pytest.approx(0.7, abs=0.05)
    assert fits[False][0] < -4.0 and fits[False][1] > 2.0


def test_draws_in_parts_carry_the_hurdle_classes_at_any_noise_scales() -> None:
    lik = with_hurdle(random_likelihood(3, 6, 4, seed=2, family="student_t"), seed=7)
    mask = disc(6, 2.6).expand(3, 1, 6, 6)
    scales = NoiseScales(lowrank=0.5, diagonal=1.7, diagonal_slope=0.3, clip_slope=1.4, clip_low=0.8, clip_high=-0.3)
    parts = lik.residual(lik.draw_noise(torch.Generator().manual_seed(5)))
    direct = lik.scaled(scales).sample(mask, torch.Generator().manual_seed(5))
    assert torch.allclose(parts.fractions(mask, scales), direct, atol=1e-5)
    # the class calibration moves pixels to the clip (positive shifts) and back when asked for the classes as trained
    trained_classes = replace(scales, clip_slope=1.0, clip_low=0.0, clip_high=0.0)
    assert int(torch.isinf(parts.logits(scales)).sum()) > int(torch.isinf(parts.logits(trained_classes)).sum())
    fresh = lik.residual(lik.draw_noise(torch.Generator().manual_seed(5)))
    assert torch.equal(parts.logits(AS_TRAINED), fresh.logits())
    # One factor on both parts keeps every pixel's standardised core, so the same pixels are drawn at the clip.
    at_clip = lambda s: torch.isinf(parts.logits(s)) & mask  # noqa: E731
    assert bool(at_clip(AS_TRAINED).any()) and torch.equal(at_clip(AS_TRAINED), at_clip(NoiseScales(0.4, 0.4)))
    # The hurdle draws from the same random numbers as the family alone.
    plain = replace(lik, hurdle=None)
    before = plain.residual(plain.draw_noise(torch.Generator().manual_seed(5)))
    assert before.clip_logits is None and torch.equal(before.independent, parts.independent)


def test_the_copula_inverts_the_inside_quantile_in_both_tails_as_float64_does() -> None:
    """The hurdle's draw in float32 keeps the digits of a core 6 standard deviations out on either side, where
    a float32 Phi(z) rounds to 0 or 1: each inside pixel's core is std Phi^-1((Phi(z) - P(low)) / P(inside))."""
    z = torch.linspace(-6.5, 6.5, 27).view(1, 1, 1, 27)
    p_low, p_high = torch.full_like(z, 1e-9), torch.full_like(z, 1e-10)
    inside = torch.log(1 - p_low - p_high)
    std = torch.full_like(z, 0.8)
    draw = ResidualDraw(
        loc=torch.zeros_like(z), coherent=z * std, independent=torch.zeros_like(z), mixing=None,
        lowrank_var=std**2, diagonal_var=torch.zeros_like(z), tail=None, eps=LOGIT_EPS,
        clip_logits=torch.cat([p_low.log() - inside, p_high.log() - inside], dim=1),
    )  # fmt: skip
    x = draw.logits().flatten().double().numpy()
    zs = z.flatten().double().numpy()
    at_low, at_high = stats.norm.cdf(zs) < 1e-9, stats.norm.sf(zs) < 1e-10
    assert np.all(np.isneginf(x[at_low])) and np.all(np.isposinf(x[at_high]))
    inside = ~(at_low | at_high)
    t_low, t_high = (stats.norm.cdf(zs) - 1e-9) / (1 - 1.1e-9), (stats.norm.sf(zs) - 1e-10) / (1 - 1.1e-9)
    expected = 0.8 * np.where(t_low <= 0.5, stats.norm.ppf(t_low), -stats.norm.ppf(t_high))
    assert expected[inside].min() / 0.8 < -5 and expected[inside].max() / 0.8 > 5  # both tails, in sigma
    np.testing.assert_allclose(x[inside], expected[inside], atol=2e-3)


def test_hurdle_classes_share_the_residual_correlations_and_keep_their_marginals() -> None:
    """A map whose residual is one coherent mode: its pixels' classes follow that mode together, so a map's
    share at the clip varies from draw to draw far more than independent classes would let it, while every
    pixel is still at the clip with its own probability."""
    n, p, draws = 1, 8, 20_000
    p_low = 0.3
    one = MapLikelihood(
        torch.full((n, 1, p, p), 1.0),
        torch.full((n, 1, p, p), math.log(0.1)),
        torch.full((n, 1, p, p), 1.0),  # rank 1: one mode shared by all pixels
        hurdle=torch.stack([torch.full((p, p), math.log(p_low / 0.65)), torch.full((p, p), math.log(0.05 / 0.65))])[
            None
        ],
    )
    samples = many(one, draws).sample(torch.ones(draws, 1, p, p, dtype=torch.bool), torch.Generator().manual_seed(0))
    low = (samples == 0).float().flatten(1)
    assert float(low.mean()) == pytest.approx(p_low, abs=0.01)  # the marginal
    assert torch.allclose(low.mean(0), torch.full((p * p,), p_low), atol=0.02)
    binomial_sd = math.sqrt(p_low * (1 - p_low) / (p * p))
    assert float(low.mean(1).std()) > 5 * binomial_sd  # correlated: whole maps go to the clip together
    # The inside pixels take a whole draw of the family, not its middle: mean loc, variance 1 + 0.1.
    inside = torch.logit(samples[(samples > 0) & (samples < 1)].double())
    assert float(inside.mean()) == pytest.approx(1.0, abs=0.03) and float(inside.var()) == pytest.approx(1.1, abs=0.05)


def many(one: MapLikelihood, n: int) -> MapLikelihood:
    """``one`` (a single map's likelihood) broadcast to n maps."""
    expand = lambda t: None if t is None else t.expand(n, *t.shape[1:])  # noqa: E731
    return replace(
        one,
        loc=expand(one.loc),
        log_var=expand(one.log_var),
        factors=expand(one.factors),
        tail=expand(one.tail),
        hurdle=expand(one.hurdle),
    )


def covariance(one: MapLikelihood) -> torch.Tensor:
    factors = one.factors[0].flatten(1).double()
    return factors.T @ factors + torch.diag(one.log_var.flatten().double().exp())


def test_gaussian_logit_samples_have_the_model_mean_and_covariance() -> None:
    p, rank, draws = 3, 2, 100_000
    one = random_likelihood(1, p, rank, seed=4)
    x = many(one, draws).sample_logit(torch.Generator().manual_seed(0)).flatten(1).double()
    cov = covariance(one)
    assert torch.allclose(x.mean(0), one.loc.flatten().double(), atol=0.02)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.03)
    assert torch.allclose(one.marginal_log_var().flatten().double().exp(), torch.diagonal(cov), atol=1e-5)


def test_student_t_samples_have_t_marginals_and_mahalanobis_distances() -> None:
    p, rank, draws = 3, 2, 40_000
    one = random_likelihood(1, p, rank, seed=5, family="student_t")
    lik = many(one, draws)
    x = lik.sample_logit(torch.Generator().manual_seed(1))
    std = torch.exp(0.5 * one.marginal_log_var())
    standard = ((x - one.loc) / std).flatten(1).double().numpy()
    for pixel in (0, 4, 8):  # each pixel's standardised marginal is t_nu
        assert stats.kstest(standard[:, pixel], stats.t(4.5).cdf).pvalue > 0.01
    mahalanobis = dense_mahalanobis(one, x)
    # M / n of a multivariate t with scale matrix S is F(n, nu): per-map tails.
    assert stats.kstest(mahalanobis.double().numpy() / p**2, stats.f(p**2, 4.5).cdf).pvalue > 0.01


def test_sinh_arcsinh_samples_have_a_gaussian_core() -> None:
    p, rank, draws = 3, 2, 40_000
    one = random_likelihood(1, p, rank, seed=6, family="sinh_arcsinh")
    lik = many(one, draws)
    x = lik.sample_logit(torch.Generator().manual_seed(2))
    # Undoing the per-pixel transform (in logit space: the tails saturate the sigmoid) gives back
    # the low rank + diagonal Gaussian ...
    std = torch.exp(0.5 * one.marginal_log_var().double())
    standard = ((x.double() - one.loc.double()) / std).flatten(1)
    core = arcsinh_sinh(standard, one.tail.double().flatten(1))[0] * std.flatten(1)
    assert torch.allclose(torch.cov(core.T), covariance(one), atol=0.03)
    assert stats.kstest((core[:, 4] / std.flatten()[4]).numpy(), "norm").pvalue > 0.01
    # ... whose marginals the tails stretch: kurtosis above the Gaussian's 3, the more the larger tau.
    tail = one.tail.flatten()
    kurtosis = stats.kurtosis(standard.numpy(), fisher=False)
    assert kurtosis[int(tail.argmax())] > 5 and kurtosis[int(tail.argmin())] < kurtosis[int(tail.argmax())]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("slope", [0.0, 0.3])
def test_scaled_noise_draws_the_parts_of_the_same_random_numbers(family: str, slope: float) -> None:
    # The recalibration relies on it: one set of draws serves every candidate pair of scales.
    lik = random_likelihood(3, 6, 4, seed=2, family=family)
    scales = NoiseScales(lowrank=0.5, diagonal=1.7, diagonal_slope=slope)
    noise = lik.draw_noise(torch.Generator().manual_seed(5))
    parts = lik.residual(noise)
    scaled = lik.scaled(scales).sample_logit(torch.Generator().manual_seed(5))
    assert torch.allclose(scaled, parts.logits(scales), atol=1e-5)
    assert torch.allclose(lik.sample_logit(torch.Generator().manual_seed(5)), parts.logits(), atol=1e-6)
    if family == "gaussian":
        diagonal = 1.7 * torch.exp(slope * lik.loc.abs())  # the diagonal factor grows with |mean logit|
        assert torch.allclose(scaled, lik.loc + 0.5 * parts.coherent + diagonal * parts.independent, atol=1e-5)
    assert lik.scaled(NoiseScales()) is lik


def test_noise_scales_must_be_positive_numbers() -> None:
    with pytest.raises(InputError, match="'diagonal' must be a finite number > 0"):
        NoiseScales(1.0, 0.0)
    with pytest.raises(InputError, match="'lowrank'"):
        NoiseScales(float("nan"))
    with pytest.raises(InputError, match="'diagonal_slope' must be a finite number"):
        NoiseScales(1.0, 1.0, float("inf"))


def test_noise_records_without_a_slope_read_as_slope_zero_and_unknown_keys_are_errors() -> None:
    assert NoiseScales.from_record({"lowrank": 0.4, "diagonal": 0.9}, "model.json") == NoiseScales(0.4, 0.9, 0.0)
    assert (
        NoiseScales.from_record({"lowrank": 0.4, "diagonal": 0.9, "diagonal_slope": -0.1}, "x").diagonal_slope == -0.1
    )
    with pytest.raises(InputError, match="model.json: 'noise' must hold 'lowrank' and 'diagonal'"):
        NoiseScales.from_record({"lowrank": 0.4, "diagonal": 0.9, "tilt": 1.0}, "model.json")


def test_fractions_clip_to_exact_zero_and_one() -> None:
    assert torch.equal(to_fraction(torch.tensor([LOGIT_LOW - 1e-3, 0.0, -LOGIT_LOW + 1e-3])), torch.tensor([0, 0.5, 1]))
    assert torch.allclose(to_fraction(to_logit(torch.tensor([0.0, 0.25, 1.0]))), torch.tensor([0.0, 0.25, 1.0]))
    # A larger clip moves the point masses: 0.01 is below a clip of 0.02.
    assert torch.equal(to_fraction(to_logit(torch.tensor([0.01, 0.5]), 0.02), 0.02), torch.tensor([0.0, 0.5]))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_mean_matches_the_samples(family: str) -> None:
    draws = 40_000
    loc = torch.tensor([LOGIT_LOW, -2.0, 0.0, 3.0, -LOGIT_LOW + 0.5]).view(1, 1, 1, 5)
    one = MapLikelihood(
        loc,
        torch.full((1, 1, 1, 5), -1.0),
        torch.full((1, 1, 1, 5), 0.5),
        dof=torch.tensor(3.5) if family.startswith("student_t") else None,
        tail=torch.full((1, 1, 1, 5), 1.6) if family.endswith("sinh_arcsinh") else None,
    )
    lik = many(one, draws)
    mask = torch.ones(draws, 1, 1, 5, dtype=torch.bool)
    samples = lik.sample(mask, torch.Generator().manual_seed(0))
    assert samples.min() == 0 and samples.max() == 1
    assert 0.4 < float((samples[:, 0, 0, 0] == 0).float().mean()) < 0.6  # a point mass at 0
    assert torch.allclose(samples.mean(0), one.mean(mask[:1])[0], atol=0.006)
    assert torch.all(one.mean(~mask[:1]) == 0)


# Calibration on smooth fields: truth maps are drawn from a known low rank + diagonal field
# in logit space (6 Gaussian bumps of 2.5 px width with random amplitudes, plus white noise)
# around a radial mean that reaches the clip in the centre, so some pixels are exactly 0.
P, N_MAPS, N_SAMPLES = 12, 600, 100


def bumps_field() -> tuple[MapLikelihood, torch.Tensor]:
    y, x = torch.meshgrid(torch.arange(P) + 0.5, torch.arange(P) + 0.5, indexing="ij")
    r = (x - P / 2).hypot(y - P / 2)
    centres = [(3, 3), (9, 3), (6, 6), (3, 9), (9, 9), (6, 1)]
    bumps = torch.stack([torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 2.5**2)) for cx, cy in centres])
    loc = (-7.5 + 1.4 * r)[None, None]
    lik = MapLikelihood(loc, torch.full_like(loc, 2 * np.log(0.3)), 0.9 * bumps[None])
    return lik, disc(P, 5.6)


def draws(lik: MapLikelihood, mask: torch.Tensor, n: int, seed: int) -> np.ndarray:
    """n maps from ``lik`` (one map's likelihood) as (n, galaxy pixels) fractions."""
    return many(lik, n).sample(mask, torch.Generator().manual_seed(seed))[:, 0][:, mask[0, 0]].numpy()


def calibration(lik: MapLikelihood, truth_field: MapLikelihood, mask: torch.Tensor) -> tuple[np.ndarray, float]:
    """Per-pixel central coverage at 0.5/0.68/0.9 and TARP ATC of ``lik``'s samples for ``truth_field``'s maps."""
    truth = draws(truth_field, mask, N_MAPS, seed=1)
    samples = draws(lik, mask, N_MAPS * N_SAMPLES, seed=2).reshape(N_MAPS, N_SAMPLES, -1)
    rng = np.random.default_rng(0)
    pit = randomized_pit(samples.transpose(0, 2, 1), truth, rng)
    atc = float(tarp_atc_terms(tarp_credibility(samples, truth, rng)).mean())
    return central_coverage(pit, (0.5, 0.68, 0.9)), atc


def test_the_exact_correlated_model_is_calibrated_per_pixel_and_jointly() -> None:
    field, mask = bumps_field()
    coverage, atc = calibration(field, field, mask)
    assert np.allclose(coverage, [0.5, 0.68, 0.9], atol=0.015)
    # Over 8 seeds of truths and samples this ATC was -0.003 +- 0.011.
    assert abs(atc) < 0.05


def test_independent_pixels_with_the_same_marginals_are_jointly_miscalibrated() -> None:
    field, mask = bumps_field()
    independent = MapLikelihood(field.loc, field.marginal_log_var(), field.factors[:, :0])
    coverage, atc = calibration(independent, field, mask)
    assert np.allclose(coverage, [0.5, 0.68, 0.9], atol=0.015)  # every pixel's interval is right ...
    # ... but whole maps are not: over 8 seeds this ATC was -0.140 +- 0.014.
    assert abs(atc) > 0.08


@pytest.mark.parametrize("family", FAMILIES)
def test_training_loss_is_the_nll_with_faithful_gradients(family: str) -> None:
    """Value: the NLL. Gradients: the mean's from the squared logit error, the covariance's from the NLL."""
    n, p = 2, 6
    mask = disc(p, 2.8).expand(n, 1, p, p)
    target = torch.rand(n, 1, p, p, generator=torch.Generator().manual_seed(3))
    base = random_likelihood(n, p, 2, seed=5, family=family)
    names = [name for name in ("loc", "log_var", "factors", "dof", "tail") if getattr(base, name) is not None]
    params = {name: getattr(base, name).clone().requires_grad_() for name in names}
    lik = replace(base, **params)
    loss = lik.training_loss(target, mask)
    assert torch.allclose(loss, lik.nll(target, mask))
    loss.sum().backward()
    grads = {name: t.grad.clone() for name, t in params.items()}
    assert torch.allclose(grads["loc"], -(to_logit(target) - lik.loc.detach()) * mask)
    for t in params.values():
        t.grad = None
    lik.nll(target, mask).sum().backward()
    for name in names[1:]:
        assert torch.allclose(grads[name], params[name].grad, atol=1e-5), name


# Maximum-likelihood fits to synthetic fields with PER-MAP tails (each map's residual times sqrt(w),
# w ~ InvGamma(3/2, 3/2)): the Student-t family is calibrated per pixel and jointly, the Gaussian
# fitted the same way is not. benchmarks/bench_likelihood.py runs the full table (more maps, every
# family and process, the clip).
def test_student_t_fitted_to_per_map_tails_is_calibrated_where_the_gaussian_is_not() -> None:
    mask = disc(10, 4.6)
    train, test = draw_truth("student_t", 600, seed=1), draw_truth("student_t", 200, seed=2)
    fitted = {family: fit_family(family, train, mask, steps=150) for family in ("gaussian", "student_t")}
    scores = {family: field_calibration(lik, test, mask, 100, seed=3) for family, lik in fitted.items()}
    assert 2.5 < fitted["student_t"].nu < 5  # the process has nu = 3
    right, gaussian = scores["student_t"], scores["gaussian"]
    assert abs(right["coverage_0.68"] - 0.68) < 0.03 and abs(right["coverage_0.95"] - 0.95) < 0.02
    assert abs(right["atc_posterior"]) < 0.05 and right["ks_p_posterior"] > 0.01
    # The Gaussian matches the second moment, which the tails dominate: its 68% intervals are too
    # wide, and whole maps rank far from uniformly against a held-out posterior draw.
    assert gaussian["coverage_0.68"] > 0.73 and gaussian["ks_p_posterior"] < 0.01
