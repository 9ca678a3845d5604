"""The deterministic baseline: the cVAE's condition encoder and decoder without a latent vector.

It is trained on the same whole-map likelihood as the cVAE (``exsitu.likelihood.MapLikelihood``,
low rank + diagonal in logit space, of the family ``cvae.likelihood``); its prediction
(``exsitu.sample.predict_baseline``) is that likelihood's mean, E[ex-situ fraction | conditions]
per pixel in [0, 1]: the regression counterpart of the cVAE's posterior mean.
"""

from __future__ import annotations

import torch

from exsitu.cvae import ConditionedNetwork, ConditionEncoder, CVAEConfig, Decoder
from exsitu.likelihood import MapLikelihood


class Baseline(ConditionedNetwork):
    """Conditions -> the likelihood of the ex-situ map (``MapLikelihood``; no latent)."""

    kind = "baseline"

    def __init__(self, cfg: CVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.condition_encoder = ConditionEncoder(cfg)
        self.decoder = Decoder(cfg, latent_dim=0)

    def hparams(self) -> dict[str, int | float | str]:
        return self.cfg.to_dict()

    def forward(self, conditions: torch.Tensor, scalars: torch.Tensor | None = None) -> MapLikelihood:
        features, summary = self.encode_conditions(conditions, scalars)
        no_latent = summary.new_zeros(summary.shape[0], 0)
        return self.decoder(no_latent, features, summary)

    def loss(
        self, conditions: torch.Tensor, exsitu: torch.Tensor, mask: torch.Tensor, scalars: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The map NLL as in ``CVAE.loss``, per map (N,): summed over galaxy pixels, divided by P^2.

        Diagnostics: ``recon`` (N,), the NLL in nats per map.
        """
        recon = self(conditions, scalars).training_loss(exsitu, mask)
        return recon / exsitu[0].numel(), {"recon": recon.detach()}
