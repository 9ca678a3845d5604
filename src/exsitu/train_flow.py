"""Stage ``train_flow``: train the conditional MAF p(z | condition summary) on the cVAE latents.

The trained cVAE (``--cvae``) encodes every training and validation map into q(z | eps, theta);
the flow learns from fresh draws of those Gaussians each epoch (never from their means alone),
conditioned on the condition encoder's summary vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from exsitu.checkpoint import load_model
from exsitu.cvae import CVAE
from exsitu.device import resolve_device
from exsitu.flow import FlowConfig, LatentFlow, flow_loss
from exsitu.io import InputError, require, run_stage, stage_parser
from exsitu.sample import encode
from exsitu.training import TrainSettings, add_stage_arguments, data_checksum, fit, load_train_val, save_outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = add_stage_arguments(stage_parser(__doc__.splitlines()[0]))
    parser.add_argument("--cvae", required=True, help="trained cVAE model file (results/models/cvae.pt)")
    args = parser.parse_args(argv)
    settings = args.settings
    device = resolve_device(args.device)
    cvae = load_model(args.cvae, device)
    if not isinstance(cvae, CVAE):
        raise InputError(f"{args.cvae}: holds a {cvae.kind} model, not the cVAE")
    train_settings = TrainSettings.from_config(settings, "flow")
    cfg = FlowConfig(
        latent_dim=cvae.cfg.latent_dim,
        context_dim=cvae.cfg.summary_dim,
        num_layers=int(require(settings, "num_layers", "flow")),
        hidden_features=int(require(settings, "hidden_features", "flow")),
    )
    train, val = load_train_val(args)
    train_data = encode(cvae, train.conditions, train.exsitu)
    val_mu, val_std, val_summary = encode(cvae, val.conditions, val.exsitu)
    # Validation scores one fixed draw per map, so its loss is comparable from epoch to epoch.
    draws = torch.Generator().manual_seed(train_settings.seed)
    val_z = val_mu + val_std * torch.randn(val_mu.shape, generator=draws)
    torch.manual_seed(train_settings.seed)  # the initial weights are part of a seeded run
    flow = LatentFlow(cfg)
    flow.set_standardisation(train_data[0] + train_data[1] * torch.randn(train_data[0].shape, generator=draws), train_data[2])
    result = fit(
        flow,
        flow_loss,
        train_data,
        (val_z, torch.zeros_like(val_std), val_summary),
        train_settings,
        device,
        args.checkpoint,
        {"kind": "flow", "hparams": cfg.to_dict(), "data": data_checksum(train_data)},
        amp=False,
        desc="flow",
    )
    save_outputs(args, flow, result)


if __name__ == "__main__":
    run_stage(main)
