"""Training throughput, posterior-sampling throughput and the paper-sized memory/epoch estimate.

Run: ``python benchmarks/bench_training.py [--threads 2] [--repeats 3]``. Everything is measured
in this one run on the device present (the CPU, and the GPU too when there is one), with the
real training loop (``exsitu.training.fit``: train + validation pass + checkpoint per epoch)
and the real sampler (``exsitu.sample.sample_in_chunks``) on random in-memory maps.

Prints medians over epochs / repeats, and the GPU/CPU ratio when a GPU is present.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from exsitu.baseline import Baseline
from exsitu.cvae import CVAE, CVAEConfig
from exsitu.flow import FlowConfig, LatentFlow
from exsitu.sample import sample_in_chunks
from exsitu.settings import TrainSettings
from exsitu.training import fit

ELBO = {"beta": 7e-5}  # the paper's KL weight
PAPER_TRAIN_MAPS = 18186  # 75% of the paper's 24248 maps
PAPER_VAL_MAPS = 2425


def fake_maps(n: int, npix: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random normalised conditions, ex-situ maps and a disc mask (N maps of npix^2)."""
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.arange(npix) - npix / 2 + 0.5, torch.arange(npix) - npix / 2 + 0.5, indexing="ij")
    mask = (x.hypot(y) < 0.45 * npix).expand(n, 1, npix, npix).contiguous()
    conditions = torch.randn(n, 5, npix, npix, generator=g) * mask
    exsitu = torch.rand(n, 1, npix, npix, generator=g).clamp(0.2, 1) * mask
    return conditions, exsitu, mask


def epoch_throughput(model, train, val, batch_size: int, device: torch.device, epochs: int, **options) -> float:
    """Median training-set maps per second over epochs 2.. of a real ``fit`` run (``options``: fit's keywords)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=1e-4, patience=epochs, seed=0)
        result = fit(model, train, val, settings, device, Path(tmp) / "ck.pt", **options)
    seconds = [row["seconds"] for row in result.history[1:]]
    return train[0].shape[0] / statistics.median(seconds)


def sampling_throughput(
    cvae: CVAE, flow: LatentFlow, conditions: torch.Tensor, k: int, repeats: int, batch_size: int
) -> float:
    """Median (maps x samples) per second of flow-mode posterior sampling (map i seeded i)."""
    seeds = np.arange(conditions.shape[0])
    times = []
    for _ in range(repeats):
        if conditions.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in sample_in_chunks(cvae, conditions, k, "flow", seeds=seeds, flow=flow, pairs_per_pass=batch_size):
            pass
        times.append(time.perf_counter() - start)
    return conditions.shape[0] * k / statistics.median(times)


def activation_bytes(model: CVAE, batch: tuple[torch.Tensor, ...]) -> int:
    """Bytes of tensors autograd keeps for the backward pass of one ELBO step (the activations)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = model.loss(*batch, beta=7e-5)
    loss.mean().backward()
    return total


def bench_device(device: torch.device, repeats: int) -> dict[str, float]:
    print(f"\n== {device} ==")
    out: dict[str, float] = {}
    cfg = CVAEConfig(npix=32, latent_dim=10, base_channels=16)
    train, val = fake_maps(768, 32), fake_maps(96, 32)
    torch.manual_seed(0)
    cvae = CVAE(cfg)
    out["cvae"] = epoch_throughput(cvae, train, val, 64, device, repeats + 1, loss_options=ELBO)
    out["baseline"] = epoch_throughput(Baseline(cfg), train, val, 64, device, repeats + 1)
    z = torch.randn(8192, 10)
    flow = LatentFlow(FlowConfig(latent_dim=10, context_dim=32, num_layers=5, hidden_features=64))
    flow.set_standardisation(z, torch.randn(8192, 32))
    flow_train = (z, torch.full_like(z, 0.1), torch.randn(8192, 32))
    out["flow"] = epoch_throughput(flow, flow_train, flow_train, 256, device, repeats + 1, precision="fp32")
    for name in ("cvae", "baseline", "flow"):
        print(
            f"training throughput {name:8s} (32x32, default config): {out[name]:9.0f} samples/s "
            f"(median of {repeats} epochs)"
        )
    cvae.to(device).eval()
    flow.to(device).eval()
    out["sampling"] = sampling_throughput(cvae, flow, val[0][:32].to(device), 100, repeats, 1024)
    print(f"posterior sampling (flow mode, K=100, 32x32): {out['sampling']:9.0f} maps*samples/s (median of {repeats})")

    # The paper's setup: 128x128 maps, ~18k training maps, batch 64, 200 epochs (benchmarks/bench_gpu_epoch.py
    # times it with the paper's width, per precision and memory format).
    paper = CVAEConfig(npix=128, latent_dim=10, base_channels=16)
    torch.manual_seed(0)
    big = CVAE(paper).to(device)
    batch = tuple(t.to(device) for t in fake_maps(64, 128))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    act = activation_bytes(big, batch)
    params = sum(p.numel() for p in big.parameters())
    # Host memory of the training stages: float16 conditions (5) and target, bool mask, float32 log_sigma.
    data_gb = (PAPER_TRAIN_MAPS + PAPER_VAL_MAPS) * 128 * 128 * (5 * 2 + 2 + 1 + 4) / 1e9
    state_gb = params * 4 * 4 / 1e9  # weights, grads, two AdamW moments (float32)
    print(
        f"paper config: {params / 1e6:.2f} M parameters; data set in host memory (float16) {data_gb:.2f} GB; "
        f"on the device: activations per batch of 64 (float32) {act / 1e9:.2f} GB, weights+grads+AdamW "
        f"{state_gb:.3f} GB"
    )
    n_small = 256 if device.type == "cpu" else 4096
    small_train, small_val = fake_maps(n_small, 128), fake_maps(n_small // 8, 128)
    rate = epoch_throughput(
        big,
        small_train,
        small_val,
        64,
        device,
        2 if device.type == "cpu" else repeats + 1,
        loss_options=ELBO,
    )
    out["paper_rate"] = rate
    epoch_s = PAPER_TRAIN_MAPS / rate
    print(
        f"paper config epoch: {rate:.0f} samples/s -> ~{epoch_s:.0f} s per epoch of {PAPER_TRAIN_MAPS} maps, "
        f"~{epoch_s * 200 / 3600:.1f} h for 200 epochs"
    )
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 1e9
        total = torch.cuda.get_device_properties(device).total_memory / 1e9
        print(f"paper config GPU peak memory (bf16, batch 64): {peak:.2f} GB of {total:.0f} GB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = bench_device(torch.device("cpu"), args.repeats)
    if torch.cuda.is_available():
        gpu = bench_device(torch.device("cuda"), args.repeats)
        print("\nGPU / CPU ratios: " + ", ".join(f"{k} {gpu[k] / cpu[k]:.1f}x" for k in cpu))


if __name__ == "__main__":
    main()
