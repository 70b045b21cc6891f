"""Wall time per epoch of a whole voc-dl run: `python -m voc_dl.train experiment=<name>` as users run it.

    python benchmarks/epoch_time.py [--experiment autoencoder] [--epochs 6] [overrides ...]

Trains through voc-dl's own trainer (validation, torchmetrics, TensorBoard, checkpoints included) and
times each epoch from its training start to the end of its validation. The first epoch (cuDNN/oneDNN
autotuning, lazy initialisation) is reported apart; the median is over the rest. The cache is built
before the clock starts, so this is training time, not decoding time (benchmarks/data_cache.py times
that). Extra arguments are Hydra overrides, e.g. `dataset=shared_voc_study` for the study's ~650 images.
Writes outputs/bench/epoch_time.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
from common import compose_train, save  # benchmarks/ is on sys.path when a script runs

from voc_dl.hardware import hardware
from voc_dl.train import build


class EpochClock(pl.Callback):
    """Seconds from each training epoch's start to the end of the validation that follows it."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.seconds: list[float] = []
        self.images: list[int] = []  # trained per epoch: limit_train_batches may cut an epoch short

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())
        self.images.append(0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images[-1] += len(batch[0] if isinstance(batch, (list, tuple)) else batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and len(self.seconds) < len(self.starts):
            self.seconds.append(time.perf_counter() - self.starts[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="autoencoder")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", default="outputs/bench")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train(args.experiment, f"{tmp}/run", [f"trainer.max_epochs={args.epochs}",
                                                             "++trainer.enable_progress_bar=false", *args.overrides])
        datamodule, model, trainer = build(cfg)
        datamodule.prepare_data()
        datamodule.setup("fit")  # the cache is built (or opened) here, off the clock
        clock = EpochClock()
        trainer.callbacks.append(clock)
        trainer.fit(model, datamodule=datamodule)
        n_val = len(datamodule.val_dataloader().dataset)
    n_train = clock.images[-1]
    if len(clock.seconds) < 2:
        raise SystemExit(f"only {len(clock.seconds)} epoch(s) timed: pass --epochs 2 or more")
    rest = clock.seconds[1:]
    row = {"experiment": args.experiment, "overrides": args.overrides, "train_images": n_train, "val_images": n_val,
           "batch": cfg.data.batch_size, "precision": str(trainer.precision), "first_epoch_s": clock.seconds[0],
           "median_epoch_s": statistics.median(rest), "min_epoch_s": min(rest), "max_epoch_s": max(rest),
           "train_images_per_s": n_train / statistics.median(rest), "epochs": clock.seconds}
    print(json.dumps(row), flush=True)
    meta = hardware()
    lines = [f"# Seconds per epoch of a whole voc-dl run ({meta['device']}, torch {meta['torch']}, "
             f"{meta['threads']} threads)", "",
             "An epoch = training on every train image + validation on every val image, with voc-dl's metrics, "
             "logging and checkpointing; median over epochs 2..N (epoch 1, with autotuning, apart).", "",
             "| experiment | overrides | train / val images | batch | precision | epoch 1 s "
             "| median epoch s (min-max) |",
             "|---|---|---|---|---|---|---|",
             f"| {args.experiment} | {' '.join(args.overrides) or '-'} | {n_train} / {n_val} | {row['batch']} | "
             f"{row['precision']} | {row['first_epoch_s']:.2f} | {row['median_epoch_s']:.3f} "
             f"({row['min_epoch_s']:.3f}-{row['max_epoch_s']:.3f}) |"]
    save(Path(args.out), "epoch_time", meta, [row], lines)


if __name__ == "__main__":
    main()
