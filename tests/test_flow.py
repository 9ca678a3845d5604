"""The conditional MAF learns a conditional density and samples from it."""

from __future__ import annotations

import math

import pytest
import torch
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform

from exsitu.flow import FlowConfig, LatentFlow, context_dim, flow_context
from exsitu.settings import TrainSettings
from exsitu.training import fit


def test_untrained_flow_is_a_normalised_density() -> None:
    torch.manual_seed(0)
    flow = LatentFlow(FlowConfig(latent_dim=1, context_dim=2, num_layers=2, hidden_features=8))
    grid = torch.linspace(-12, 12, 4001).view(-1, 1)
    context = torch.tensor([[0.5, -1.0]]).expand(grid.shape[0], 2)
    with torch.no_grad():
        density = flow.log_prob(grid, context).exp()
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1) < 1e-3
    assert flow.sample(7, context[:3]).shape == (3, 7, 1)


def test_flow_learns_a_conditional_gaussian(tmp_path) -> None:
    """z | c ~ N(3 c, 0.5^2) in 2D: the trained flow's samples follow the context."""
    g = torch.Generator().manual_seed(0)
    c = torch.rand(2000, 1, generator=g) * 2 - 1
    mu = torch.cat([3 * c, -3 * c], dim=1) + 10.0
    std = torch.full_like(mu, 0.5)
    flow = LatentFlow(FlowConfig(latent_dim=2, context_dim=1, num_layers=3, hidden_features=32))
    flow.set_standardisation(mu, c)
    settings = TrainSettings(epochs=30, batch_size=256, lr=3e-3, patience=30, seed=0)
    result = fit(flow, (mu, std, c), (mu[:300], std[:300], c[:300]), settings, torch.device("cpu"), tmp_path / "ck.pt")
    # The true conditional density has -log p = log(2 pi 0.25) + 1 = 1.384 nats in 2D.
    assert result.best_val < math.log(2 * math.pi * 0.25) + 1 + 0.25
    draws = flow.sample(4000, torch.tensor([[0.5], [-0.5]]), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(draws.mean(1), torch.tensor([[11.5, 8.5], [8.5, 11.5]]), atol=0.15)
    assert torch.allclose(draws.std(1), torch.full((2, 2), 0.5), atol=0.1)


def _with_scales_of(flow: LatentFlow, unconstrained: float) -> LatentFlow:
    """Every affine layer's scale set to sigmoid(unconstrained + 2) + 1e-3 and its shift to 0, whatever z and c."""
    with torch.no_grad():
        for layer in flow.transform._transforms:
            if isinstance(layer, MaskedAffineAutoregressiveTransform):
                final = layer.autoregressive_net.final_layer
                final.weight.zero_()
                final.bias.zero_()
                final.bias[0::2] = unconstrained  # nflows interleaves (scale, shift) per feature
    return flow


def test_sampling_keeps_consistent_draws_and_stops_on_failed_inversions() -> None:
    # Scales at nflows' floor of 1e-3: each layer's inverse multiplies u by 1000. Two layers: |z| ~ 1e6, still
    # an exact inverse, kept as it is; fourteen layers overflow float32 for every draw: one clear error.
    context = torch.zeros(3, 2)
    two = _with_scales_of(LatentFlow(FlowConfig(latent_dim=2, context_dim=2, num_layers=2, hidden_features=8)), -40)
    two.eval()
    with torch.no_grad():
        z = two.sample(50, context, generator=torch.Generator().manual_seed(0))
    u = torch.randn(150, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.view(-1, 2), u * 1e6, rtol=1e-3, atol=1e-3)  # the first round's draws, all kept
    deep = _with_scales_of(LatentFlow(FlowConfig(latent_dim=2, context_dim=2, num_layers=14, hidden_features=8)), -40)
    with torch.no_grad(), pytest.raises(FloatingPointError, match=r"inverse failed for 150 of 150 latent draws"):
        deep.eval().sample(50, context, generator=torch.Generator().manual_seed(0))


def test_the_pooled_context_is_the_summary_and_each_levels_mean_features() -> None:
    g = torch.Generator().manual_seed(0)
    summary = torch.randn(3, 5, generator=g)
    features = [torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 6, 4, 4, generator=g)]
    assert torch.equal(flow_context("summary", features, summary), summary)
    pooled = flow_context("pooled", features, summary)
    assert pooled.shape == (3, context_dim("pooled", 5, [4, 6])) == (3, 15)
    torch.testing.assert_close(pooled[:, 5:9], features[0].mean(dim=(2, 3)))
    torch.testing.assert_close(pooled[:, 9:], features[1].mean(dim=(2, 3)))
    # Turning a map turns each feature map, not its mean: the pooled part is invariant to the square's symmetries.
    turned = flow_context("pooled", [f.rot90(1, (2, 3)) for f in features], summary)
    torch.testing.assert_close(turned, pooled)
    with pytest.raises(ValueError, match="flow context must be one of"):
        flow_context("mean", features, summary)


def test_one_generator_per_row_gives_each_row_its_own_draws_and_redraws() -> None:
    """Rows sampled together, each from its own generator, are the rows sampled one by one, redraws included.
    Thirteen layers with scales near 1.2e-3 multiply u by ~7e38: float32 overflows where |u| > 0.48, so most
    first draws fail and are redrawn from their row's generator."""
    flow = LatentFlow(FlowConfig(latent_dim=1, context_dim=2, num_layers=13, hidden_features=8))
    flow = _with_scales_of(flow, -10.5).eval()
    context = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(10 + i) for i in range(4)]

    with torch.no_grad():
        together = flow.sample(3, context, generator=generators())
        one_by_one = torch.cat([flow.sample(3, context[i : i + 1], generator=g) for i, g in enumerate(generators())])
    first = torch.cat([torch.randn(3, 1, generator=g) for g in generators()])
    assert bool((first.abs() > 0.48).any()) and bool(torch.isfinite(together).all())  # some rows were redrawn
    assert torch.equal(together, one_by_one)
