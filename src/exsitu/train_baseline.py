"""Stage ``train_baseline``: train the deterministic regressor (the cVAE's condition encoder and
decoder, no latent) on the same split, for the baseline comparison of the evaluation.

Settings are the cvae: section merged with baseline: (so baseline.epochs overrides cvae.epochs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from exsitu.baseline import Baseline, baseline_loss
from exsitu.cvae import CVAEConfig
from exsitu.device import resolve_device
from exsitu.io import run_stage, stage_parser
from exsitu.training import TrainSettings, add_stage_arguments, data_checksum, fit, load_train_val, save_outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = add_stage_arguments(stage_parser(__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    settings = args.settings
    device = resolve_device(args.device)
    train, val = load_train_val(args)
    cfg = CVAEConfig.from_settings(settings, int(train.conditions.shape[-1]), section="baseline")
    train_settings = TrainSettings.from_config(settings, "baseline")
    torch.manual_seed(train_settings.seed)  # the initial weights are part of a seeded run
    model = Baseline(cfg)
    train_data = (train.conditions, train.exsitu, train.mask)
    result = fit(
        model,
        baseline_loss,
        train_data,
        (val.conditions, val.exsitu, val.mask),
        train_settings,
        device,
        args.checkpoint,
        {"kind": "baseline", "hparams": cfg.to_dict(), "data": data_checksum(train_data)},
        desc="baseline",
    )
    save_outputs(args, model, result)


if __name__ == "__main__":
    run_stage(main)
