"""Callbacks every run uses: checkpoints, the per-epoch history file, a guard against NaN/Inf, the learning rate."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.callbacks import LearningRateMonitor as LightningLearningRateMonitor
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.seed import _collect_rng_states, _set_rng_states

from voc_dl.atomic import atomic_write_bytes, atomic_write_text
from voc_dl.run_files import BEST, CHECKPOINTS, HISTORY, LAST


def scalar_metrics(metrics: dict) -> dict:
    """The `<stage>/<name>` scalars of a Lightning metrics dict, as plain floats (for metrics.json)."""
    return {k: float(v) for k, v in sorted(metrics.items()) if "/" in k and (not torch.is_tensor(v) or v.numel() == 1)}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all, so a kill mid-save never poisons a resume."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def checkpoint(run_dir: str, monitor: str, mode: str) -> ModelCheckpoint:
    """checkpoints/best.ckpt: the best epoch by `monitor`."""
    return ModelCheckpoint(dirpath=Path(run_dir) / CHECKPOINTS, filename=BEST, monitor=monitor, mode=mode,
                           save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)


def last_checkpoint(run_dir: str) -> ModelCheckpoint:
    """checkpoints/last.ckpt after every epoch, whatever the metric did: what a resume starts from.

    A separate callback because Lightning 2.6's `save_last` only refreshes last.ckpt in epochs that
    also wrote a top-k checkpoint.
    """
    return ModelCheckpoint(dirpath=Path(run_dir) / CHECKPOINTS, filename=LAST, monitor=None, save_top_k=1,
                           every_n_epochs=1, auto_insert_metric_name=False, enable_version_counter=False)


class MetricsHistory(Callback):
    """history.csv: one row per epoch with every epoch-level metric, what figures and reports read."""

    def __init__(self, run_dir: str):
        self.path = Path(run_dir) / HISTORY
        self.rows: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        if self.path.exists() and trainer.ckpt_path:  # resumed (state restored): keep the epochs already recorded
            with open(self.path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < trainer.current_epoch]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        row = {"epoch": trainer.current_epoch}
        for key, value in sorted(trainer.callback_metrics.items()):
            if "/" in key and (value.numel() == 1 if torch.is_tensor(value) else True):
                row[key] = float(value)
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, out.getvalue())


class RngState(Callback):
    """Random-number states in every checkpoint, so a resumed run draws what the uninterrupted one drew.

    Lightning restores weights, optimizer and loop counters but not the torch/numpy/python RNGs that
    shuffle batches and drive dropout and augmentation; without them a resume gives other metrics.
    The states are set back at fit start, before Lightning creates the first epoch's data iterator
    (which draws the shuffle and worker seeds): in an uninterrupted run nothing draws between the
    checkpoint and that point either.
    """

    def __init__(self) -> None:
        self.pending: dict | None = None

    def state_dict(self) -> dict:
        states = _collect_rng_states(include_cuda=torch.cuda.is_available())
        if "numpy" in states:  # as a tensor: checkpoints stay loadable with torch.load(weights_only=True)
            kind, keys, pos, has_gauss, gauss = states["numpy"]
            states["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict) -> None:
        self.pending = state_dict.get("rng")
        if self.pending and "numpy" in self.pending:
            kind, keys, pos, has_gauss, gauss = self.pending["numpy"]
            self.pending["numpy"] = (kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss)

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        if self.pending is not None:
            _set_rng_states(self.pending)
            self.pending = None

    on_train_start = on_fit_start  # strategies that restore callbacks only after setup (FSDP, DeepSpeed)


class DivergedError(FloatingPointError, ValueError):
    """A run whose validation loss is not finite; its message names the last good checkpoint and the fix."""


class FiniteGuard(Callback):
    """Stop at the first validation whose loss is NaN/Inf, before that epoch's checkpoint is written.

    Checked once per epoch, not per step, so training has no extra host sync; the weights a NaN
    step produces make the validation loss NaN too, and last.ckpt keeps the last good epoch.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise DivergedError(
                f"val/loss is {float(loss)} at epoch {trainer.current_epoch}: training diverged. "
                "The last good checkpoint is checkpoints/last.ckpt. Fix: lower model.optimizer.lr, "
                "or use fp32=true to rule out precision"
            )


class LearningRateMonitor(LightningLearningRateMonitor):
    """Lightning's, once per epoch, for runs whose recipe schedules the rate (the task names it `train/lr`, so
    history.csv gets it too). Runs without a logger (`~logger`) or without a schedule are left alone instead of
    failing: a constant rate is in the config."""

    def __init__(self) -> None:
        super().__init__(logging_interval="epoch")
        self.active = False

    def on_train_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        self.active = bool(trainer.loggers and trainer.lr_scheduler_configs)
        if self.active:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if self.active:
            super().on_train_epoch_start(trainer, *args, **kwargs)
