"""One paper-size training epoch: maps per second and peak memory, per precision and memory format.

Run: ``python benchmarks/bench_gpu_epoch.py [--maps 2048] [--epochs 2] [--json out.json]``.

The maps are synthetic, of the paper's shapes: 128^2 pixels, five channels, the network of
``config/paper.yaml`` over ``config.yaml`` (base_channels, rank, latent_dim; batch 64). Each
configuration is a real ``exsitu.training.fit`` run, as the training stages call it: the maps
held in host memory as float16, a validation set in the paper's proportion (2425 validation
to 18186 training maps), a checkpoint per epoch. The first epoch is a warm-up (CUDA kernels,
cuDNN autotuning) and is not counted; the median of the others is.

On CUDA it runs fp32 and bf16, each with channels-last off and on, and reports
``torch.cuda.max_memory_allocated``. On the CPU precision and memory format do not apply (the
loop runs fp32, contiguous), so there is one row per model, and the peak is the process's
peak resident set size (VmHWM, reset before each run through /proc/self/clear_refs).
The table gives maps/s of a training epoch (its validation pass and checkpoint included) and
the time that makes for one epoch of the paper's 18186 training maps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import yaml

from exsitu.baseline import Baseline
from exsitu.cvae import CVAE, CVAEConfig
from exsitu.settings import CVAESettings, TrainSettings
from exsitu.training import fit

REPO = Path(__file__).resolve().parents[1]
PAPER_TRAIN_MAPS, PAPER_VAL_MAPS = 18186, 2425  # 75% and 10% of the paper's 24248 maps
NPIX, BATCH = 128, 64


def paper_cvae() -> CVAESettings:
    """The cvae section of config/paper.yaml merged over config.yaml (schema defaults for the rest)."""
    default = yaml.safe_load((REPO / "config.yaml").read_text())["cvae"]
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["cvae"]
    return CVAESettings.from_config({**default, **paper})


def synthetic_maps(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n maps of the paper's shapes as the training stages hold them: float16 conditions and target, bool mask."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(NPIX) - NPIX / 2 + 0.5, torch.arange(NPIX) - NPIX / 2 + 0.5, indexing="ij")
    mask = (x.hypot(y) < 0.45 * NPIX).expand(n, 1, NPIX, NPIX).contiguous()
    conditions = (torch.randn(n, 5, NPIX, NPIX, generator=g) * mask).half()
    exsitu = (torch.rand(n, 1, NPIX, NPIX, generator=g) * mask).half()
    return conditions, exsitu, mask


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    status = Path("/proc/self/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kib * 1024 / 1e9


def run(model_name: str, device: torch.device, precision: str, channels_last: bool, args: argparse.Namespace) -> dict:
    """One configuration: a seeded model, ``args.epochs`` + 1 epochs of ``fit``; its row of the table."""
    settings = paper_cvae()
    cfg = CVAEConfig.from_settings(settings, NPIX)
    torch.manual_seed(0)
    model = CVAE(cfg) if model_name == "cvae" else Baseline(cfg)
    n_val = max(1, round(args.maps * PAPER_VAL_MAPS / PAPER_TRAIN_MAPS))
    train, val = synthetic_maps(args.maps, 0), synthetic_maps(n_val, 1)
    options = {"beta": float(settings.beta)} if model_name == "cvae" else {}
    train_settings = TrainSettings(epochs=args.epochs + 1, batch_size=BATCH, lr=1e-4, patience=100, seed=0)
    reset_peak(device)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(
            model, train, val, train_settings, device, Path(tmp) / "ck.pt",
            loss_options=options, precision=precision, channels_last=channels_last,
        )  # fmt: skip
    seconds = statistics.median(row["seconds"] for row in result.history[1:])
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": model_name,
        "precision": precision,
        "channels_last": channels_last,
        "train_maps": args.maps,
        "val_maps": n_val,
        "batch_size": BATCH,
        "npix": NPIX,
        "base_channels": cfg.base_channels,
        "rank": cfg.rank,
        "epoch_seconds": seconds,
        "maps_per_second": args.maps / seconds,
        "paper_epoch_seconds": seconds * PAPER_TRAIN_MAPS / args.maps,
        "peak_memory_gb": peak_gb(device),
        "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)",
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, help="training maps per epoch (default: 2048 on CUDA, 128 on the CPU)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--models", nargs="+", default=["cvae", "baseline"], choices=["cvae", "baseline"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    args.maps = args.maps or (2048 if cuda else 128)
    configs = [(p, c) for p in ("fp32", "bf16") for c in (False, True)] if cuda else [("fp32", False)]
    rows = [run(model, device, p, c, args) for model in args.models for p, c in configs]
    print(f"\none epoch, {args.maps} training maps of {NPIX}^2, batch {BATCH}, on {rows[0]['device']}")
    print(f"{'model':9s} {'precision':9s} {'ch-last':7s} {'maps/s':>9s} {'paper epoch':>12s} {'peak GB':>8s}")
    for r in rows:
        print(
            f"{r['model']:9s} {r['precision']:9s} {'on' if r['channels_last'] else 'off':7s} "
            f"{r['maps_per_second']:9.1f} {r['paper_epoch_seconds'] / 60:10.1f} m {r['peak_memory_gb']:8.2f}"
        )
    print(f"peak memory: {rows[0]['peak_memory']}")
    if not cuda:
        print("bf16 and channels-last apply on CUDA only: on the CPU the loop runs fp32, contiguous")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
