"""One training loop for the cVAE, the flow and the baseline.

Whole data set in (device) memory, AdamW with a cosine learning-rate schedule, mixed precision
on CUDA, validation every epoch, early stopping on the validation loss with the best weights
kept, a checkpoint after every epoch that a rerun resumes from, a tqdm bar and a CSV history.
On the CPU a run is deterministic for a seed, resumed or not (the RNG states are checkpointed).

Resume rules: the checkpoint carries a fingerprint of everything that shapes the run (model
kind and hyperparameters, training settings, data size and checksum). A checkpoint with another
fingerprint, or an unreadable one, is ignored with a logged warning and training starts over.
"""

from __future__ import annotations

import contextlib
import csv
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
from exsitu.settings import TrainSettings

log = logging.getLogger(__name__)

WEIGHT_DECAY = 1e-4
GRAD_CLIP = 5.0  # max gradient norm: one bad batch must not throw the weights far


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
    """A cheap fingerprint of the training data (sums), so a checkpoint of other data is not resumed."""
    return [round(float(t.double().sum()), 6) for t in tensors] + [int(tensors[0].shape[0])]


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


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


@dataclass
class _Run:
    """What every epoch of one ``fit`` call shares: the model, where it runs and how it steps."""

    model: nn.Module
    device: torch.device
    amp: bool
    checkpoint: Path
    loss_options: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator


def _run_epoch(
    run: _Run, data: Sequence[torch.Tensor], batch_size: int, epoch: int, train: bool
) -> tuple[float, dict[str, torch.Tensor]]:
    """One pass over ``data`` (a training step per batch when ``train``); mean loss and extras.

    The loss is summed on the device and checked once per epoch: a per-batch ``float(loss)``
    would stall a GPU on every batch. A NaN epoch is never checkpointed, so the checkpoint
    still holds the last good one.
    """
    n = data[0].shape[0]
    order = torch.randperm(n, generator=run.generator) if train else torch.arange(n)
    total = torch.zeros((), device=run.device)
    sums: dict[str, torch.Tensor] = {}
    run.model.train(train)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size].to(run.device)
        batch = [t.index_select(0, idx) for t in data]
        with torch.set_grad_enabled(train), _autocast(run.device, run.amp):
            loss, extras = run.model.loss(*batch, **run.loss_options)
        if train:
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), GRAD_CLIP)
            run.scaler.step(run.optimizer)
            run.scaler.update()
        weight = idx.numel()
        total += loss.detach().float() * weight
        for name, value in extras.items():
            sums[name] = sums.get(name, 0) + value.detach().float() * weight
    mean_loss = float(total) / n
    if not math.isfinite(mean_loss):
        phase = "training" if train else "validation"
        raise InputError(
            f"training diverged: the {phase} loss is {mean_loss} at epoch {epoch}; "
            f"{run.checkpoint} keeps the last good epoch ({epoch - 1}); try a smaller lr"
        )
    return mean_loss, {name: value / n for name, value in sums.items()}


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


def fit(
    model: nn.Module,
    train: Sequence[torch.Tensor],
    val: Sequence[torch.Tensor],
    settings: TrainSettings,
    device: torch.device,
    checkpoint: str | os.PathLike,
    *,
    loss_options: dict[str, Any] | None = None,
    amp: bool = True,
    epoch_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None,
) -> TrainResult:
    """Train ``model`` on ``model.loss(*batch, **loss_options) -> (loss, extras)``; leave the best weights in it.

    ``train`` and ``val`` are tensors with the maps (or latents) along dim 0; they are moved to
    ``device`` once. The checkpoint's fingerprint (see the module doc) is built here from the
    model's ``kind`` and ``hparams()``, ``loss_options``, ``settings`` and the training data.
    ``epoch_metrics`` derives extra history columns from an epoch's row (e.g. active units).
    Raises ``InputError`` when a loss turns NaN/inf, naming the epoch; the checkpoint then still
    holds the last good epoch.
    """
    loss_options = dict(loss_options or {})
    fingerprint = {
        "kind": model.kind, "hparams": model.hparams(), **loss_options,
        "data": data_checksum(train), "settings": asdict(settings),
    }  # fmt: skip
    desc = model.kind
    checkpoint = Path(checkpoint)
    torch.manual_seed(settings.seed)
    model.to(device)
    train = [t.to(device) for t in train]
    val = [t.to(device) for t in val]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=settings.lr / 50)
    scaler = torch.amp.GradScaler(
        device.type, enabled=device.type == "cuda" and amp and not torch.cuda.is_bf16_supported()
    )
    run = _Run(
        model, device, amp, checkpoint, loss_options, optimizer, scaler, torch.Generator().manual_seed(settings.seed)
    )
    history: list[dict[str, float]] = []
    best_val, best_epoch, bad_epochs, start_epoch, stopped = math.inf, 0, 0, 0, False
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    state = _load_checkpoint(checkpoint, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        run.generator.set_state(state["generator"])
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
        train_loss, train_extras = _run_epoch(run, train, settings.batch_size, epoch + 1, train=True)
        val_loss, val_extras = _run_epoch(run, val, settings.batch_size, epoch + 1, train=False)
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
                    "scaler": scaler.state_dict(),
                    "generator": run.generator.get_state(),
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
