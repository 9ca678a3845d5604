"""The cVAE's networks, its censored-Gaussian pixel likelihood and the ELBO (eq. 1)."""

from __future__ import annotations

import math

import pytest
import torch

from exsitu.cvae import (
    CVAE,
    CVAEConfig,
    censored_gaussian_mean,
    censored_gaussian_nll,
    censored_gaussian_sample,
    galaxy_mask,
    kl_per_dim,
)
from exsitu.io import InputError


def maps(n: int, p: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(p) - p / 2 + 0.5, torch.arange(p) - p / 2 + 0.5, indexing="ij")
    mask = (x.hypot(y) < p / 2.5).expand(n, 1, p, p)
    conditions = torch.randn(n, 5, p, p, generator=g) * mask
    exsitu = torch.rand(n, 1, p, p, generator=g) * mask
    return conditions, exsitu, mask


@pytest.mark.parametrize("npix,levels", [(16, 3), (32, 4), (128, 5)])
def test_shapes_at_every_size(npix: int, levels: int) -> None:
    cfg = CVAEConfig(npix=npix, latent_dim=6, base_channels=4, summary_dim=8)
    model = CVAE(cfg)
    conditions, exsitu, _ = maps(3, npix)
    features, summary = model.condition_encoder(conditions)
    assert cfg.levels() == levels and len(features) == levels
    assert [f.shape[-1] for f in features] == [npix // 2**i for i in range(levels)]
    assert summary.shape == (3, 8)
    out = model(conditions, exsitu)
    assert out["mu"].shape == out["logvar"].shape == (3, 6)
    assert out["loc"].shape == out["log_scale"].shape == (3, 1, npix, npix)


def test_decoder_sees_conditions_at_full_resolution() -> None:
    """The U-net skip: one condition pixel changes the decoded map at and near that pixel."""
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(npix=16, latent_dim=4, base_channels=4, summary_dim=8)).eval()
    conditions, _, _ = maps(1, 16)
    z = torch.zeros(1, 4)
    features, summary = model.condition_encoder(conditions)
    before = model.decoder(z, features, summary)[0][0, 0]
    changed = conditions.clone()
    changed[0, 3, 8, 8] += 5.0
    features, summary = model.condition_encoder(changed)
    after = model.decoder(z, features, summary)[0][0, 0]
    delta = (after - before).abs()
    assert delta[7:10, 7:10].mean() > 3 * delta[0:3, 0:3].mean()


def test_config_from_settings_rejects_bad_sizes() -> None:
    assert CVAEConfig.from_settings({"latent_dim": 3}, 32).latent_dim == 3
    with pytest.raises(InputError, match="power of two"):
        CVAEConfig.from_settings({"latent_dim": 3}, 24)
    with pytest.raises(InputError, match="cvae.latent_dim"):
        CVAEConfig.from_settings({}, 32)


def test_censored_nll_by_hand() -> None:
    loc = torch.tensor([0.2, 0.5, 0.9, 0.3]).view(1, 1, 2, 2)
    log_scale = torch.full_like(loc, math.log(0.1))
    target = torch.tensor([0.0, 0.4, 1.0, 0.7]).view(1, 1, 2, 2)
    mask = torch.tensor([True, True, True, False]).view(1, 1, 2, 2)
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = (
        -(
            normal.cdf(torch.tensor(-2.0)).log()  # P(X <= 0), X ~ N(0.2, 0.1)
            + torch.distributions.Normal(0.5, 0.1).log_prob(torch.tensor(0.4))
            + (1 - normal.cdf(torch.tensor(1.0))).log()  # P(X >= 1), X ~ N(0.9, 0.1)
        )
        / 3
    )
    nll = censored_gaussian_nll(target, loc, log_scale, mask)
    assert nll.shape == (1,)
    assert torch.allclose(nll, expected.reshape(1), atol=1e-5)
    # The background pixel (mask False) does not count.
    target[0, 0, 1, 1] = 0.0
    assert torch.allclose(censored_gaussian_nll(target, loc, log_scale, mask), nll)


def test_censored_mean_matches_its_samples() -> None:
    loc = torch.linspace(-0.5, 1.5, 9).view(1, 1, 3, 3).expand(20000, 1, 3, 3)
    log_scale = torch.full_like(loc, math.log(0.3))
    draws = censored_gaussian_sample(loc, log_scale, torch.Generator().manual_seed(0))
    assert draws.min() >= 0 and draws.max() <= 1
    assert (draws == 0).any() and (draws == 1).any()
    assert torch.allclose(draws.mean(0), censored_gaussian_mean(loc[:1], log_scale[:1])[0], atol=0.01)


def test_elbo_is_recon_plus_beta_kl() -> None:
    assert torch.allclose(kl_per_dim(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2, 3))
    assert torch.allclose(kl_per_dim(torch.ones(1, 1), torch.zeros(1, 1)), torch.tensor([[0.5]]))
    model = CVAE(CVAEConfig(npix=16, latent_dim=5, base_channels=4, summary_dim=8))
    conditions, exsitu, mask = maps(4, 16)
    assert torch.equal(galaxy_mask(conditions), mask)
    torch.manual_seed(1)
    loss, extras = model.loss(conditions, exsitu, mask, beta=0.5)
    assert extras["kl_dim"].shape == (5,)
    assert torch.allclose(loss, extras["recon"] + 0.5 * extras["kl"], atol=1e-5)
    # Free bits lift every dimension's KL to at least the floor.
    torch.manual_seed(1)
    floored, _ = model.loss(conditions, exsitu, mask, beta=0.5, free_bits=100.0)
    assert torch.allclose(floored, extras["recon"] + 0.5 * 5 * 100.0, atol=1e-4)
