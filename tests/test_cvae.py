"""The cVAE's networks, the likelihood its decoder predicts and the ELBO (eq. 1)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from exsitu.cvae import CVAE, CVAEConfig, active_units, galaxy_mask, kl_per_dim
from exsitu.io import InputError
from exsitu.likelihood import to_logit
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
    features, summary = model.encode_conditions(conditions)
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
    features, summary = model.encode_conditions(conditions)
    before = model.decoder(z, features, summary).loc[0, 0]
    changed = conditions.clone()
    changed[0, 3, 8, 8] += 5.0
    features, summary = model.encode_conditions(changed)
    after = model.decoder(z, features, summary).loc[0, 0]
    delta = (after - before).abs()
    assert delta[7:10, 7:10].mean() > 3 * delta[0:3, 0:3].mean()


@pytest.mark.parametrize("channels_last", [False, True])
def test_decoding_many_latents_per_map_with_shared_features_is_the_decoder_on_repeated_features(
    channels_last: bool,
) -> None:
    """The sampler's shared-skip path (``owner``) is the same function as the concatenation on repeated features,
    in both memory layouts the stages use, for latents out of map order and a map with none."""
    torch.manual_seed(0)
    cfg = CVAEConfig(npix=16, latent_dim=5, base_channels=4, summary_dim=8, rank=2, hurdle=True)
    model = CVAE(cfg).eval()
    conditions, _, _ = maps(3, 16)
    if channels_last:
        model, conditions = (
            model.to(memory_format=torch.channels_last),
            conditions.contiguous(memory_format=torch.channels_last),
        )
    owner = torch.tensor([2, 0, 0, 2, 2, 0])
    z = torch.randn(len(owner), 5)
    with torch.no_grad():
        features, summary = model.encode_conditions(conditions)
        shared = model.decoder(z, features, summary, owner=owner)
        repeated = model.decoder(z, [f[owner] for f in features], summary[owner])
    for name in ("loc", "log_var", "factors", "hurdle"):
        a, b = getattr(shared, name), getattr(repeated, name)
        assert a.shape == b.shape == (len(owner), *b.shape[1:])
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), name
    assert not torch.allclose(shared.loc[1], shared.loc[2])  # each latent decodes its own map


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


@pytest.mark.parametrize("family", ["gaussian", "student_t", "sinh_arcsinh", "student_t_sinh_arcsinh"])
def test_decoder_returns_the_configured_family(family: str) -> None:
    cfg = CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8, rank=2, likelihood=family, logit_eps=0.01)
    likelihood, _, _ = CVAE(cfg)(*maps(2, 16)[:2])
    student_t, sinh_arcsinh = family.startswith("student_t"), family.endswith("sinh_arcsinh")
    assert (likelihood.dof is not None, likelihood.tail is not None) == (student_t, sinh_arcsinh)
    assert likelihood.eps == 0.01
    if likelihood.dof is not None:
        assert likelihood.dof.shape == () and 2 < likelihood.nu < 1000
    if likelihood.tail is not None:
        assert likelihood.tail.shape == (2, 1, 16, 16) and bool(((likelihood.tail > 1) & (likelihood.tail < 3)).all())
    with pytest.raises(InputError, match="cvae.likelihood"):
        CVAEConfig(npix=16, likelihood="laplace")


@pytest.mark.parametrize("family", ["gaussian", "student_t_sinh_arcsinh"])
def test_the_covariance_nll_trains_only_the_covariance_head(family: str) -> None:
    """Faithful gradients in full (Stirn et al. 2023): the trunk, both encoders and the mean head get
    exactly the squared logit error's gradient; the covariance head and the dof exactly the NLL's."""
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8, rank=2, likelihood=family))
    conditions, exsitu, mask = maps(3, 16, seed=2)

    def gradients(loss_of) -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)  # the same z in every pass
        likelihood, _, _ = model(conditions, exsitu)
        loss_of(likelihood).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    full = gradients(lambda lik: lik.training_loss(exsitu, mask))
    squared = gradients(lambda lik: 0.5 * ((to_logit(exsitu) - lik.loc) * mask).pow(2).flatten(1).sum(1))
    covariance = gradients(lambda lik: replace(lik, loc=lik.loc.detach()).nll(exsitu, mask))
    head = {name for name in full if name.startswith(("decoder.covariance_head", "decoder.log_dof"))}
    assert head and set(covariance) == head  # the NLL reaches nothing else
    assert set(squared) == set(full) - head
    for name, grad in full.items():
        assert torch.allclose(grad, (covariance if name in head else squared)[name], atol=1e-6), name


def test_the_hurdle_head_reads_live_features_and_the_family_only_detached_ones() -> None:
    """With ``cvae.hurdle`` the clip classes are a point prediction: their log-likelihood trains the hurdle
    head and the trunk; the family's NLL at the mean detached still trains only the covariance head."""
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8, rank=2, hurdle=True))
    conditions, exsitu, mask = maps(3, 16, seed=2)
    exsitu = torch.where(exsitu < 0.3, 0.0, exsitu)  # a share of the pixels at the clip

    def reached(loss_of) -> set[str]:
        model.zero_grad()
        torch.manual_seed(1)
        likelihood, _, _ = model(conditions, exsitu)
        loss_of(likelihood).sum().backward()
        return {name for name, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}

    likelihood, _, _ = model(conditions, exsitu)
    assert likelihood.hurdle.shape == (3, 2, 16, 16)
    classes = reached(lambda lik: -lik.log_clip_classes(exsitu, mask))
    assert any(n.startswith("decoder.hurdle_head") for n in classes) and any(
        n.startswith("decoder.blocks") for n in classes
    )
    assert not any(n.startswith("decoder.covariance_head") for n in classes)
    family = reached(lambda lik: replace(lik, loc=lik.loc.detach(), hurdle=None).nll(exsitu, mask))
    assert family and all(n.startswith("decoder.covariance_head") for n in family)
    assert model.cfg.clip_model == "hurdle" and CVAEConfig(npix=16).clip_model == "clipped"
    with pytest.raises(InputError, match="'cvae.censored' and 'cvae.hurdle'"):
        CVAEConfig(npix=16, censored=True, hurdle=True)


def test_encode_conditions_is_the_condition_encoder_and_takes_exactly_its_scalars() -> None:
    model = CVAE(CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8)).eval()
    conditions, _, _ = maps(2, 16)
    features, summary = model.encode_conditions(conditions)
    expected_features, expected_summary = model.condition_encoder(conditions)
    assert torch.equal(summary, expected_summary) and all(map(torch.equal, features, expected_features))
    with pytest.raises(InputError, match=r"takes 0 galaxy scalars per map, got scalars of shape \(2, 3\)"):
        model.encode_conditions(conditions, torch.zeros(2, 3))
    with_scalars = CVAE(CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8, n_scalars=2)).eval()
    with pytest.raises(InputError, match="takes 2 galaxy scalars per map, got scalars of shape None"):
        with_scalars.encode_conditions(conditions)
    with pytest.raises(InputError, match=r"takes 2 galaxy scalars per map, got scalars of shape \(2, 3\)"):
        with_scalars.encode_conditions(conditions, torch.zeros(2, 3))


@torch.no_grad()
def test_galaxy_scalars_are_standardised_and_reach_every_level_and_the_summary() -> None:
    model = CVAE(CVAEConfig(npix=16, latent_dim=3, base_channels=4, summary_dim=8, n_scalars=2)).eval()
    encoder = model.condition_encoder
    conditions, _, _ = maps(2, 16)
    training = torch.tensor([[10.0, 0.2], [11.0, 0.6], [10.5, 0.4]])  # log M*, log r_half [kpc]
    encoder.set_scalar_standardisation(training)
    at_mean = training.mean(0).expand(2, 2)
    heavier = at_mean + torch.tensor([0.5, 0.0])
    # FiLM starts as the identity: at initialisation the scalars change the summary vector only.
    base_features, base_summary = model.encode_conditions(conditions, at_mean)
    features, summary = model.encode_conditions(conditions, heavier)
    assert all(map(torch.equal, features, base_features)) and not torch.allclose(summary, base_summary)
    # Standardised with the training maps: scalars at the training mean enter as zeros.
    encoder.scalar_mean.zero_()
    encoder.scalar_std.fill_(1.0)
    assert torch.allclose(model.encode_conditions(conditions, torch.zeros(2, 2))[1], base_summary)
    encoder.set_scalar_standardisation(training)
    # Once FiLM has learned something, every level's features depend on the scalars.
    encoder.film.weight.normal_(generator=torch.Generator().manual_seed(0))
    features, _ = model.encode_conditions(conditions, heavier)
    base_features, _ = model.encode_conditions(conditions, at_mean)
    assert len(features) == 3 and all(not torch.allclose(a, b) for a, b in zip(features, base_features))


def test_active_units_count_dimensions_that_carry_a_tenth_of_a_nat() -> None:
    """A dimension under 0.1 nats (an encoder mean ~0.45 prior sigma from 0) counts as collapsed."""
    mu = torch.tensor([[0.3, 0.5, 2.0, 0.0]])  # KL mu^2 / 2 at unit variance: 0.045, 0.125, 2, 0
    kl = kl_per_dim(mu, torch.zeros_like(mu))[0]
    row = {f"val_kl_dim_{i}": float(v) for i, v in enumerate(kl)} | {"val_loss": -2.0}
    assert active_units(row) == {"active_units": 2.0}
