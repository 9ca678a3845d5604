"""Stage ``train_cvae``: train the conditional VAE on the training maps (ELBO, eq. 1 of the paper).

Writes the best-epoch model (``--out``), the per-epoch history (``--history``: losses, KL per
latent dimension, active units, lr, seconds) and a checkpoint every epoch that a rerun resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch

from exsitu.cvae import CVAE, CVAEConfig, elbo_loss
from exsitu.device import resolve_device
from exsitu.io import InputError, require, run_stage, stage_parser
from exsitu.training import TrainSettings, add_stage_arguments, data_checksum, fit, load_train_val, save_outputs

ACTIVE_KL = 0.01  # nats: a latent dimension with less validation KL than this carries nothing


def active_units(row: dict[str, float]) -> dict[str, float]:
    """Number of latent dimensions whose validation KL exceeds ``ACTIVE_KL`` (collapse watch)."""
    kls = [v for k, v in row.items() if k.startswith("val_kl_dim_")]
    return {"active_units": float(sum(kl > ACTIVE_KL for kl in kls))}


def main(argv: Sequence[str] | None = None) -> None:
    parser = add_stage_arguments(stage_parser(__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    settings = args.settings
    device = resolve_device(args.device)
    train, val = load_train_val(args)
    cfg = CVAEConfig.from_settings(settings, int(train.conditions.shape[-1]))
    beta = float(require(settings, "beta", "cvae"))
    free_bits = float(settings.get("free_bits", 0.0))
    if beta < 0 or free_bits < 0:
        raise InputError(f"config keys 'cvae.beta' and 'cvae.free_bits' must be >= 0, got {beta}, {free_bits}")
    train_settings = TrainSettings.from_config(settings, "cvae")
    torch.manual_seed(train_settings.seed)  # the initial weights are part of a seeded run
    model = CVAE(cfg)
    train_data = (train.conditions, train.exsitu, train.mask)
    result = fit(
        model,
        partial(elbo_loss, beta=beta, free_bits=free_bits),
        train_data,
        (val.conditions, val.exsitu, val.mask),
        train_settings,
        device,
        args.checkpoint,
        {"kind": "cvae", "hparams": cfg.to_dict(), "beta": beta, "free_bits": free_bits, "data": data_checksum(train_data)},
        epoch_metrics=active_units,
        desc="cvae",
    )
    save_outputs(args, model, result)


if __name__ == "__main__":
    run_stage(main)
