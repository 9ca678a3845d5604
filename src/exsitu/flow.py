"""Conditional masked autoregressive flow (nflows) on the cVAE latent space, p(z | condition context).

The context is what the flow knows of a galaxy's observables (``FlowConfig.context``, config
``flow.context``): ``summary``, the condition encoder's summary vector (the paper's choice), or
``pooled``, that vector and the mean of every level's condition feature maps over the grid. The
summary is trained for the decoder and the encoder, never for predicting the latent; the pooled
features add what every resolution level of the condition encoder found, invariant to the square's
symmetries (:func:`flow_context`).

The flow is a stack of nflows ``MaskedAffineAutoregressiveTransform`` + ``ReversePermutation``
layers (nflows' LU/QR linear transforms are avoided: they call torch functions that are gone).
Latents and condition summaries are standardised with training-set statistics stored as
buffers, because the cVAE's latent scale is arbitrary at a small beta.

Sampling inverts the autoregressive transforms one dimension at a time, dividing by scales that
nflows bounds below by 1e-3 only; for some contexts an ordinary base draw (|u| ~ 3) is then
amplified to |z| ~ 1e30 or inf (measured on the default run: 0.02% of the test draws, up to 3%
for one map), which decodes to NaN. Such a draw is a numerical failure of the inverse, not a
draw of the density: its forward transform no longer returns u. :meth:`LatentFlow.sample` checks
that round trip and redraws the failures from the same generator (so sampling stays
deterministic for a seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from nflows.distributions.normal import StandardNormal
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from nflows.transforms.base import CompositeTransform
from nflows.transforms.permutations import ReversePermutation
from torch import nn

#: Round-trip tolerance of a latent draw: |forward(inverse(u)) - u| <= ROUND_TRIP_TOL * (1 + |u|).
ROUND_TRIP_TOL = 1e-3
#: Rounds of redrawing failed draws before sampling gives up.
MAX_REDRAWS = 20
#: What the flow is conditioned on (module doc).
CONTEXTS = ("summary", "pooled")


def flow_context(kind: str, features: list[torch.Tensor], summary: torch.Tensor) -> torch.Tensor:
    """The flow's context (N, D) from the condition encoder's features (one (N, C, H, W) map per level) and
    summary (N, summary_dim): ``summary`` alone, or ``pooled``, the summary and each level's spatial mean."""
    if kind == "summary":
        return summary
    if kind == "pooled":
        return torch.cat([summary, *(f.mean(dim=(2, 3)) for f in features)], dim=1)
    raise ValueError(f"flow context must be one of {CONTEXTS}, got {kind!r}")


def context_dim(kind: str, summary_dim: int, widths: list[int]) -> int:
    """Length of :func:`flow_context`'s rows for a condition encoder of this summary length and level widths."""
    return summary_dim + (sum(widths) if kind == "pooled" else 0)


@dataclass(frozen=True)
class FlowConfig:
    """Hyperparameters that fix the flow's shape (stored in every checkpoint)."""

    latent_dim: int
    context_dim: int
    num_layers: int = 5
    hidden_features: int = 64
    # One of CONTEXTS. The config's default is "pooled"; this one reads flows saved before the option existed.
    context: str = "summary"

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


class LatentFlow(nn.Module):
    """p(z | context) as a conditional MAF; ``log_prob`` in nats, ``sample`` in latent units."""

    kind = "flow"

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        for _ in range(cfg.num_layers):
            layers.append(
                MaskedAffineAutoregressiveTransform(
                    features=cfg.latent_dim, hidden_features=cfg.hidden_features, context_features=cfg.context_dim
                )
            )
            layers.append(ReversePermutation(features=cfg.latent_dim))
        self.transform = CompositeTransform(layers)
        self.base = StandardNormal([cfg.latent_dim])
        self.register_buffer("z_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("z_std", torch.ones(cfg.latent_dim))
        self.register_buffer("c_mean", torch.zeros(cfg.context_dim))
        self.register_buffer("c_std", torch.ones(cfg.context_dim))

    def hparams(self) -> dict[str, int | str]:
        return self.cfg.to_dict()

    def context_of(self, features: list[torch.Tensor], summary: torch.Tensor) -> torch.Tensor:
        """This flow's context of maps from the condition encoder's output (:func:`flow_context`)."""
        return flow_context(self.cfg.context, features, summary)

    def set_standardisation(self, z: torch.Tensor, context: torch.Tensor) -> None:
        """Fix the latent and context standardisation from training samples (N, D)."""
        self.z_mean.copy_(z.mean(0))
        self.z_std.copy_(z.std(0).clamp_min(1e-6))
        self.c_mean.copy_(context.mean(0))
        self.c_std.copy_(context.std(0).clamp_min(1e-6))

    def _context(self, context: torch.Tensor) -> torch.Tensor:
        return (context - self.c_mean) / self.c_std

    def log_prob(self, z: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """log p(z | context) per row, nats (N,)."""
        u, logabsdet = self.transform((z - self.z_mean) / self.z_std, context=self._context(context))
        return self.base.log_prob(u) + logabsdet - self.z_std.log().sum()

    def sample(
        self, n: int, context: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None = None
    ) -> torch.Tensor:
        """``n`` latent draws per context row: (rows, n, latent_dim); failed inversions redrawn (module doc).

        ``generator``: one for all rows, or one per row, each row's draws (and redraws) from its own: the draws
        of ``sample(n, context[i : i + 1], generator[i])`` for every row i, inverted together (a few times
        faster than row by row for the sampler's tens of maps; the batched matrix products may round a last
        bit differently).
        """
        rows = context.shape[0]
        ctx = self._context(context).repeat_interleave(n, dim=0)
        z = torch.empty(rows * n, self.cfg.latent_dim, device=context.device)
        todo = torch.arange(rows * n, device=context.device)
        for _ in range(MAX_REDRAWS):
            u = self._base_draws(todo // n, generator, context.device)
            z[todo], ok = self._invert(u, ctx[todo])
            todo = todo[~ok]
            if len(todo) == 0:
                return (z * self.z_std + self.z_mean).view(rows, n, -1)
        raise FloatingPointError(
            f"the flow's inverse failed for {len(todo)} of {rows * n} latent draws after {MAX_REDRAWS} redraws"
        )

    def _base_draws(
        self,
        owner: torch.Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None,
        device: torch.device,
    ) -> torch.Tensor:
        """Standard normal draws (len(owner), latent_dim) for rows ``owner`` (ascending), from ``generator`` or
        each row's own generator."""
        dim = self.cfg.latent_dim
        if generator is None or isinstance(generator, torch.Generator):
            return torch.randn(len(owner), dim, generator=generator, device=device)
        rows, counts = torch.unique_consecutive(owner, return_counts=True)
        return torch.cat([torch.randn(int(c), dim, generator=generator[int(r)], device=device)
                          for r, c in zip(rows, counts)])  # fmt: skip

    def _invert(self, u: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised z = T^-1(u) and whether each row survives the round trip T(z) = u (module doc)."""
        z, _ = self.transform.inverse(u, context=context)
        back, _ = self.transform(z, context=context)
        error = (back - u).abs() <= ROUND_TRIP_TOL * (1 + u.abs())
        return z, error.all(1) & torch.isfinite(z).all(1)

    def loss(
        self, mu: torch.Tensor, std: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative log-likelihood (nats) per row (N,) of z ~ q(z | eps, theta) = N(mu, std), drawn afresh.

        Training on draws, not on the means, keeps the flow's posterior as wide as the encoder's.
        """
        z = mu + std * torch.randn_like(mu)
        return -self.log_prob(z, context), {}
