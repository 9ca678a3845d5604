"""The deterministic baseline: the cVAE's condition encoder and decoder without a latent vector.

It is trained on the same censored-Gaussian likelihood as the cVAE (``exsitu.cvae``); its
prediction (``exsitu.sample.predict_baseline``) is that likelihood's mean, E[ex-situ fraction |
conditions] per pixel in [0, 1]: the regression counterpart of the cVAE's posterior mean.
"""

from __future__ import annotations

import torch
from torch import nn

from exsitu.cvae import ConditionEncoder, CVAEConfig, Decoder, censored_gaussian_nll


class Baseline(nn.Module):
    """Conditions -> per-pixel censored-Gaussian ``loc`` and ``log_scale`` (no latent)."""

    kind = "baseline"

    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.condition_encoder = ConditionEncoder(cfg)
        self.decoder = Decoder(cfg, latent_dim=0)

    def hparams(self) -> dict[str, int]:
        return self.cfg.to_dict()

    def forward(self, conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, summary = self.condition_encoder(conditions)
        no_latent = summary.new_zeros(summary.shape[0], 0)
        return self.decoder(no_latent, features, summary)

    def loss(
        self, conditions: torch.Tensor, exsitu: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Masked censored-Gaussian NLL (nats per galaxy pixel), batch mean."""
        loc, log_scale = self(conditions)
        loss = censored_gaussian_nll(exsitu, loc, log_scale, mask).mean()
        return loss, {"recon": loss.detach()}
