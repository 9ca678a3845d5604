"""The conditional MAF learns a conditional density and samples from it."""

from __future__ import annotations

import math

import torch

from exsitu.flow import FlowConfig, LatentFlow
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
