"""The cVAE's networks, the likelihood its decoder predicts and the ELBO (eq. 1)."""

from __future__ import annotations

import pytest
import torch

from exsitu.cvae import CVAE, CVAEConfig, galaxy_mask, kl_per_dim
from exsitu.io import InputError
from exsitu.settings import CVAESettings


def maps(n: int, p: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(p) - p / 2 + 0.5, torch.arange(p) - p / 2 + 0.5, indexing="ij")
    mask = (x.hypot(y) < p / 2.5).expand(n, 1, p, p)
    conditions = torch.randn(n, 5, p, p, generator=g) * mask
    exsitu = torch.rand(n, 1, p, p, generator=g) * mask
    return conditions, exsitu, mask


@pytest.mark.parametrize("npix,levels", [(16, 3), (32, 4), (128, 5)])
def test_shapes_at_every_size(npix: int, levels: int) -> None:
    cfg = CVAEConfig(npix=npix, latent_dim=6, base_channels=4, summary_dim=8, rank=3)
    model = CVAE(cfg)
    conditions, exsitu, _ = maps(3, npix)
    features, summary = model.condition_encoder(conditions)
    assert cfg.levels() == levels and len(features) == levels
    assert [f.shape[-1] for f in features] == [npix // 2**i for i in range(levels)]
    assert summary.shape == (3, 8)
    likelihood, mu, logvar = model(conditions, exsitu)
    assert mu.shape == logvar.shape == (3, 6)
    assert likelihood.loc.shape == likelihood.log_var.shape == (3, 1, npix, npix)
    assert likelihood.factors.shape == (3, 3, npix, npix)


def test_decoder_sees_conditions_at_full_resolution() -> None:
    """The U-net skip: one condition pixel changes the decoded map at and near that pixel."""
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(npix=16, latent_dim=4, base_channels=4, summary_dim=8)).eval()
    conditions, _, _ = maps(1, 16)
    z = torch.zeros(1, 4)
    features, summary = model.condition_encoder(conditions)
    before = model.decoder(z, features, summary).loc[0, 0]
    changed = conditions.clone()
    changed[0, 3, 8, 8] += 5.0
    features, summary = model.condition_encoder(changed)
    after = model.decoder(z, features, summary).loc[0, 0]
    delta = (after - before).abs()
    assert delta[7:10, 7:10].mean() > 3 * delta[0:3, 0:3].mean()


def test_config_from_settings_rejects_bad_sizes() -> None:
    settings = CVAESettings.from_config({"latent_dim": 3, "rank": 2})
    cfg = CVAEConfig.from_settings(settings, 32)
    assert (cfg.latent_dim, cfg.rank) == (3, 2)
    with pytest.raises(InputError, match="power of two"):
        CVAEConfig.from_settings(settings, 24)
    with pytest.raises(InputError, match="cvae.rank"):
        CVAESettings.from_config({"rank": -1})


def test_elbo_is_recon_plus_beta_kl_per_map() -> None:
    assert torch.allclose(kl_per_dim(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2, 3))
    assert torch.allclose(kl_per_dim(torch.ones(1, 1), torch.zeros(1, 1)), torch.tensor([[0.5]]))
    model = CVAE(CVAEConfig(npix=16, latent_dim=5, base_channels=4, summary_dim=8, rank=2))
    conditions, exsitu, mask = maps(4, 16)
    assert torch.equal(galaxy_mask(conditions), mask)
    torch.manual_seed(1)
    loss, extras = model.loss(conditions, exsitu, mask, beta=0.5)
    assert loss.shape == (4,) and extras["kl_dim"].shape == (4, 5)  # per map
    # The reconstruction is the map's NLL summed over its galaxy pixels, the loss is per image pixel.
    torch.manual_seed(1)
    likelihood, _, _ = model(conditions, exsitu)
    assert torch.allclose(extras["recon"], likelihood.nll(exsitu, mask))
    assert torch.allclose(loss * 16**2, extras["recon"] + 0.5 * extras["kl"], rtol=1e-5)
    # Free bits lift every dimension's KL to at least the floor.
    torch.manual_seed(1)
    floored, _ = model.loss(conditions, exsitu, mask, beta=0.5, free_bits=100.0)
    assert torch.allclose(floored * 16**2, extras["recon"] + 0.5 * 5 * 100.0, rtol=1e-5)
