"""One training loop for the cVAE, the flow and the baseline.

The data stay in host memory (the training stages hold maps as float16); each batch is gathered
there, copied to the device (through pinned memory, without blocking, on CUDA) and cast to
float32 on the device. AdamW with a cosine learning-rate schedule, bf16 autocast where the device
computes bfloat16 natively (CUDA, or a CPU with AVX512-BF16 or AMX), channels-last convolutions on
CUDA, per-map loss weights, an optional random transform of every
training batch (augmentation), validation every epoch, early stopping on the validation loss
with the best weights kept, a checkpoint after every epoch that a rerun resumes from, a tqdm bar
and a CSV history. On the CPU a run is deterministic for a seed, resumed or not (the RNG states
are checkpointed).

Resume rules: the checkpoint carries a fingerprint of everything that shapes the run (model
kind and hyperparameters, loss options, training settings, precision, batch transform, data
size and checksum, weights). A checkpoint with another fingerprint, or an unreadable one, is
ignored with a logged warning and training starts over.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from exsitu.checkpoint import read_file, save_model
from exsitu.io import InputError, atomic_output
from exsitu.settings import PRECISIONS, TrainSettings

log = logging.getLogger(__name__)

WEIGHT_DECAY = 1e-4
GRAD_CLIP = 5.0  # max gradient norm: one bad batch must not throw the weights far
CHECKSUM_ROWS = 256  # maps per float64 partial sum of the data checksum (bounds its temporary)

#: A random transform of one training batch (on the device, float32), drawing from ``generator``.
BatchTransform = Callable[[list[torch.Tensor], torch.Generator], list[torch.Tensor]]


@dataclass
class TrainResult:
    """What ``fit`` hands back: history rows (one dict per epoch) and the best epoch (1-based)."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val: float


def save_outputs(
    out: str | os.PathLike, history_csv: str | os.PathLike, model: nn.Module, result: TrainResult, meta: dict[str, Any]
) -> None:
    """Write a training stage's outputs: the best-epoch model file and its per-epoch history CSV."""
    save_model(out, model, {**meta, "best_epoch": result.best_epoch, "best_val": result.best_val})
    write_history(history_csv, result.history)


def data_checksum(tensors: Sequence[torch.Tensor]) -> list[float]:
    """A cheap fingerprint of the training data (sums), so a checkpoint of other data is not resumed.

    Summed ``CHECKSUM_ROWS`` maps at a time: a float64 copy of a float16 data set is four times its size.
    """
    sums = [sum(float(part.double().sum()) for part in t.split(CHECKSUM_ROWS)) for t in tensors]
    return [round(s, 6) for s in sums] + [int(tensors[0].shape[0])]


def transform_name(transform: BatchTransform | None) -> str | None:
    """A stable name of a batch transform for the fingerprint: the function, or the object's repr.

    A ``functools.partial`` is named by its function and arguments; a callable object (e.g. a
    frozen dataclass holding the augmentation's settings) by its repr, which must then be stable.
    """
    if transform is None:
        return None
    if isinstance(transform, functools.partial):
        return f"{transform_name(transform.func)}(*{transform.args!r}, **{transform.keywords!r})"
    if hasattr(transform, "__qualname__"):
        return f"{transform.__module__}.{transform.__qualname__}"
    return repr(transform)


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX-BF16 instructions.

    Elsewhere bfloat16 convolutions are emulated and slower than float32, so "bf16" trains in fp32 there.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: bfloat16 for "bf16" where the device computes it
    natively (``native_bfloat16``), else None (fp32).

    A GPU without bfloat16 runs "bf16" in fp32, with a warning (fp16 would need loss scaling); a CPU without
    it does so silently, since most do.
    """
    if precision not in PRECISIONS:
        raise InputError(f"config key 'train.precision' must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if not native_bfloat16(device):
        if device.type == "cuda":
            log.warning("train.precision 'bf16': this GPU has no bfloat16 support; training in fp32")
        return None
    return torch.bfloat16


def _flatten(prefix: str, extras: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar extras become one column, vectors one column per entry (``kl_dim_3``)."""
    row: dict[str, float] = {}
    for name, value in extras.items():
        value = value.detach().float().cpu().reshape(-1)
        if value.numel() == 1:
            row[prefix + name] = float(value)
        else:
            row.update({f"{prefix}{name}_{i}": float(v) for i, v in enumerate(value)})
    return row


def _check_weights(weights: torch.Tensor | None, n: int, name: str) -> torch.Tensor:
    """Per-map loss weights as (n,) float32 on the CPU (ones when None); bad weights are one clear error."""
    if weights is None:
        return torch.ones(n)
    weights = torch.as_tensor(weights, dtype=torch.float32).detach().cpu()
    if weights.shape != (n,):
        raise InputError(f"{name}: {tuple(weights.shape)} weights for {n} maps; one weight per map is needed")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise InputError(f"{name}: weights must be finite, >= 0 and not all 0")
    return weights


@dataclass
class _Data:
    """One subset as the loop reads it: host tensors with the maps along dim 0 and per-map weights."""

    tensors: list[torch.Tensor]
    weights: torch.Tensor

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


@dataclass
class _Run:
    """What every epoch of one ``fit`` call shares: the model, where it runs and how it steps."""

    model: nn.Module
    device: torch.device
    autocast: torch.dtype | None
    channels_last: bool
    checkpoint: Path
    loss_options: dict[str, Any]
    beta_warmup_epochs: int  # the loss option ``beta`` rises to its value over these training epochs
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # batch order
    transform_generator: torch.Generator  # random numbers of batch_transform
    batch_transform: BatchTransform | None

    def to_device(self, tensor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` of a host tensor on the device, floats as float32 (cast after the copy: half the bytes).

        On CUDA the rows are gathered into pinned memory, so the copy runs without blocking the host.
        """
        if self.device.type == "cuda":
            pinned = torch.empty((idx.numel(), *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
            batch = torch.index_select(tensor, 0, idx, out=pinned).to(self.device, non_blocking=True)
        else:
            batch = tensor.index_select(0, idx)
        if batch.is_floating_point():
            batch = batch.float()
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def epoch_loss_options(self, epoch: int, train: bool) -> dict[str, Any]:
        """The loss options of a training (``train``) or validation pass of 1-based ``epoch``: during the warm-up a
        training pass weighs the KL by ``beta * epoch / beta_warmup_epochs``; validation always by ``beta``."""
        if not train or epoch >= self.beta_warmup_epochs or "beta" not in self.loss_options:
            return self.loss_options
        return {**self.loss_options, "beta": self.loss_options["beta"] * epoch / self.beta_warmup_epochs}

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)


def _run_epoch(
    run: _Run, data: _Data, batch_size: int, epoch: int, train: bool
) -> tuple[float, dict[str, torch.Tensor]]:
    """One pass over ``data`` (a training step per batch when ``train``); weighted mean loss and extras.

    ``model.loss`` returns per-map losses (B,) and extras (B,) or (B, D); a batch's loss is
    sum(w l) / sum(w) with the per-map weights w, and the epoch's values are weighted means.
    The loss is summed on the device and checked once per epoch: a per-batch ``float(loss)``
    would stall a GPU on every batch. A NaN epoch is never checkpointed, so the checkpoint
    still holds the last good one.
    """
    n = len(data)
    order = torch.randperm(n, generator=run.generator) if train else torch.arange(n)
    total = torch.zeros((), device=run.device)
    weight_total = torch.zeros((), device=run.device)
    sums: dict[str, torch.Tensor] = {}
    run.model.train(train)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = [run.to_device(t, idx) for t in data.tensors]
        weights = run.to_device(data.weights, idx)
        if train and run.batch_transform is not None:
            batch = run.batch_transform(batch, run.transform_generator)
        with torch.set_grad_enabled(train), run.autocast_context():
            losses, extras = run.model.loss(*batch, **run.epoch_loss_options(epoch, train))
        losses = losses.float()
        if losses.shape != weights.shape:
            raise ValueError(f"{run.model.kind}.loss must return one loss per map, got shape {tuple(losses.shape)}")
        weighted = (weights * losses).sum()
        if train:
            run.optimizer.zero_grad(set_to_none=True)
            # clamp: a batch whose maps all weigh 0 contributes no gradient instead of 0/0
            (weighted / weights.sum().clamp_min(torch.finfo(torch.float32).tiny)).backward()
            nn.utils.clip_grad_norm_(run.model.parameters(), GRAD_CLIP)
            run.optimizer.step()
        total += weighted.detach()
        weight_total += weights.sum()
        for name, value in extras.items():
            w = weights.view(-1, *[1] * (value.dim() - 1))
            sums[name] = sums.get(name, 0) + (w * value.detach().float()).sum(0)
    mean_loss = float(total / weight_total)
    if not math.isfinite(mean_loss):
        phase = "training" if train else "validation"
        raise InputError(
            f"training diverged: the {phase} loss is {mean_loss} at epoch {epoch}; "
            f"{run.checkpoint} keeps the last good epoch ({epoch - 1}); try a smaller lr"
        )
    return mean_loss, {name: value / weight_total for name, value in sums.items()}


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to this run, else None (with a warning)."""
    if not path.exists():
        return None
    try:
        state = read_file(path, "checkpoint")
    except InputError as err:
        log.warning("ignoring the checkpoint: %s", err)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning(
            "ignoring the checkpoint %s: it was written for other settings or data; training from scratch", path
        )
        return None
    return state


def optimizer_for(model: nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters at learning rate ``lr`` with :data:`WEIGHT_DECAY`, as one multi-tensor
    (foreach) update per step.

    Off CUDA torch loops over the parameter tensors one by one (~120 in the cVAE); foreach does the same
    arithmetic, bit for bit (``test_training``), in 4.4 ms a step against 5.2 for the cVAE and 1.9 against 2.8
    for the flow on the 2-core development CPU: a few seconds a run.
    """
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY, foreach=True)


def fit(
    model: nn.Module,
    train: Sequence[torch.Tensor],
    val: Sequence[torch.Tensor],
    settings: TrainSettings,
    device: torch.device,
    checkpoint: str | os.PathLike,
    *,
    loss_options: dict[str, Any] | None = None,
    beta_warmup_epochs: int = 0,
    precision: str = "bf16",
    epoch_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None,
    train_weights: torch.Tensor | None = None,
    val_weights: torch.Tensor | None = None,
    batch_transform: BatchTransform | None = None,
    channels_last: bool = True,
) -> TrainResult:
    """Train ``model`` on ``model.loss(*batch, **loss_options) -> (per_map_loss, extras)``; keep its best weights.

    ``train`` and ``val`` are host tensors with the maps (or latents) along dim 0, any float
    dtype (float16 keeps a large data set in memory) or bool; each batch is cast to float32 on
    ``device``. ``model.loss`` returns the per-map losses (B,) and a dict of per-map extras (B,)
    or (B, D) that become history columns (``kl_dim_3``). ``train_weights`` and ``val_weights``
    (N,) weigh each map's loss (1 when None): a batch's loss is sum(w l) / sum(w), the history's
    values are weighted means. ``batch_transform(batch, generator)`` transforms every TRAINING
    batch (never validation) on the device, drawing its random numbers from ``generator``, a CPU
    generator of the loop seeded from ``settings.seed`` and checkpointed, so a resumed run is the
    run that was never interrupted.

    ``beta_warmup_epochs``: a KL warm-up (Bowman et al. 2016; Sonderby et al. 2016): the loss option ``beta`` of
    the training passes rises linearly, ``beta * epoch / beta_warmup_epochs``, and is ``beta`` from that epoch on,
    so the decoder learns to use the latent before the KL presses it shut; validation always weighs the KL by
    ``beta``, so the best epoch is chosen on the objective itself.

    ``precision``: "bf16" (bfloat16 autocast where ``native_bfloat16(device)``, else fp32) or "fp32".
    ``channels_last``: convolutional models and 4D batches in channels-last memory format on CUDA
    (no effect on the CPU).

    The checkpoint's fingerprint (see the module doc) is built here. ``epoch_metrics`` derives
    extra history columns from an epoch's row (e.g. active units). Raises ``InputError`` when a
    loss turns NaN/inf, naming the epoch; the checkpoint then still holds the last good epoch.
    """
    loss_options = dict(loss_options or {})
    train, val = list(train), list(val)
    train_data = _Data(train, _check_weights(train_weights, train[0].shape[0], "train_weights"))
    val_data = _Data(val, _check_weights(val_weights, val[0].shape[0], "val_weights"))
    fingerprint = {
        "kind": model.kind, "hparams": model.hparams(), **loss_options, "beta_warmup_epochs": beta_warmup_epochs,
        "data": data_checksum(train), "weights": data_checksum([train_data.weights, val_data.weights]),
        "settings": asdict(settings), "precision": precision, "batch_transform": transform_name(batch_transform),
    }  # fmt: skip
    desc = model.kind
    checkpoint = Path(checkpoint)
    torch.manual_seed(settings.seed)
    convolutional = device.type == "cuda" and channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
    model.to(device)
    if convolutional:
        model.to(memory_format=torch.channels_last)
    optimizer = optimizer_for(model, settings.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=settings.lr / 50)
    run = _Run(
        model=model,
        device=device,
        autocast=autocast_dtype(device, precision),
        channels_last=convolutional,
        checkpoint=checkpoint,
        loss_options=loss_options,
        beta_warmup_epochs=beta_warmup_epochs,
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(settings.seed),
        transform_generator=torch.Generator().manual_seed(settings.seed + 1),
        batch_transform=batch_transform,
    )
    history: list[dict[str, float]] = []
    best_val, best_epoch, bad_epochs, start_epoch, stopped = math.inf, 0, 0, 0, False
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    state = _load_checkpoint(checkpoint, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.generator.set_state(state["generator"])
        run.transform_generator.set_state(state["transform_generator"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        best_state, best_val, best_epoch = state["best_model"], state["best_val"], state["best_epoch"]
        bad_epochs, start_epoch, stopped, history = (
            state["bad_epochs"],
            state["epoch"],
            state["stopped"],
            state["history"],
        )
        log.info("resuming %s from %s at epoch %d of %d", desc, checkpoint, start_epoch + 1, settings.epochs)

    bar = tqdm(
        range(start_epoch, settings.epochs), initial=start_epoch, total=settings.epochs, desc=desc, disable=stopped
    )
    for epoch in bar:
        if stopped:
            break
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_extras = _run_epoch(run, train_data, settings.batch_size, epoch + 1, train=True)
        val_loss, val_extras = _run_epoch(run, val_data, settings.batch_size, epoch + 1, train=False)
        scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss}
        row.update(_flatten("", train_extras))
        row.update(_flatten("val_", val_extras))
        if epoch_metrics is not None:
            row.update(epoch_metrics(row))
        if val_loss < best_val:
            best_val, best_epoch, bad_epochs = val_loss, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        stopped = bad_epochs >= settings.patience
        row.update({"lr": lr, "seconds": time.perf_counter() - started, "best_epoch": best_epoch})
        history.append(row)
        bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}", best=best_epoch)
        log.info(
            "%s epoch %d: train %.5g, val %.5g, lr %.3g, %.1fs",
            desc,
            epoch + 1,
            train_loss,
            val_loss,
            lr,
            row["seconds"],
        )
        with atomic_output(checkpoint) as tmp:
            torch.save(
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": run.generator.get_state(),
                    "transform_generator": run.transform_generator.get_state(),
                    "rng": _rng_state(device),
                    "best_model": best_state,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "stopped": stopped,
                    "history": history,
                },
                tmp,
            )
        if stopped:
            log.info(
                "%s: early stop after epoch %d (no val improvement for %d epochs)", desc, epoch + 1, settings.patience
            )
    bar.close()
    model.load_state_dict(best_state)
    return TrainResult(history=history, best_epoch=best_epoch, best_val=best_val)


def write_history(path: str | os.PathLike, history: Sequence[dict[str, float]]) -> None:
    """Write the per-epoch history rows as CSV (columns: union of the rows' keys, first-seen order)."""
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
