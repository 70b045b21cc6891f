"""voc-dl's Lightning training loop against a minimal hand-written PyTorch loop on the same net and data.

    python benchmarks/loop_overhead.py [--experiments segmentation,classification] [--repeats 3]

The Lightning side is exactly what `python -m voc_dl.train experiment=<name>` builds (callbacks,
TensorBoard, torchmetrics, checkpoints); the hand-written side iterates the same DataLoader and
does forward, loss, backward and optimizer step on an identically initialised net, nothing else.
Both are timed per batch in steady state (the first batch of an epoch, which includes the
loader start and oneDNN warm-up, is left out), and the hand-written loop also times how long it
waits for data: the data share of the epoch. Writes outputs/bench/loop_overhead.{md,json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from common import compose_train, save  # benchmarks/ is on sys.path when a script runs
from pytorch_lightning.utilities import move_data_to_device

from voc_dl.hardware import hardware
from voc_dl.train import build


class BatchClock(pl.Callback):
    """Start time of every training batch, one list per epoch, closed by the epoch's end."""

    def __init__(self) -> None:
        self.epochs: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.epochs[-1].append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            self.epochs[-1].append(time.perf_counter())


def steady_images_per_s(epochs: list[list[float]], batch: int) -> float:
    """Median step time over batches 1..last of each epoch (batch 0 holds the loader start and warm-up)."""
    steps = [b - a for e in epochs for a, b in zip(e[1:], e[2:], strict=False)]
    return batch / statistics.median(steps)


def lightning_loop(cfg) -> float:
    datamodule, model, trainer = build(cfg)
    clock = BatchClock()
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=datamodule)
    return steady_images_per_s(clock.epochs, cfg.data.batch_size)


def hand_loop(cfg, batches: int) -> tuple[float, float]:
    """Forward + loss + backward + step over the same loader and batches: images/s and the data share."""
    datamodule, task, trainer = build(cfg)  # the same seed: the same initial weights, the same batches
    datamodule.prepare_data()
    datamodule.setup("fit")
    fmt = torch.channels_last if task.channels_last else torch.contiguous_format
    device = trainer.strategy.root_device  # the device and autocast the Lightning run gets, from its trainer
    task.to(device)
    task.on_fit_start()  # the same memory format and conv routes as the Lightning run
    net = task.net.train()
    opt = task.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    epochs, waited, total = [], 0.0, 0.0
    for _ in range(cfg.trainer.max_epochs):
        times = []
        t0 = t_wait = time.perf_counter()
        for batch in itertools.islice(datamodule.train_dataloader(), batches):
            batch = datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0)
            times.append(time.perf_counter())
            waited += times[-1] - t_wait
            with trainer.precision_plugin.forward_context():
                if cfg.task_name == "segmentation":
                    x, mask = batch
                    loss = task.loss(net(x.contiguous(memory_format=fmt)).float(), mask)
                elif cfg.task_name == "classification":
                    x, y = batch
                    loss = F.binary_cross_entropy_with_logits(net(x.contiguous(memory_format=fmt)).float(), y)
                else:
                    x = batch.contiguous(memory_format=fmt)
                    loss = task.loss_fn(net(x).float(), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t_wait = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        total += times[-1] - t0
        epochs.append(times)
    return steady_images_per_s(epochs, cfg.data.batch_size), waited / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", default="segmentation,classification",
                    help="comma-separated; autoencoder works too (slow: ~3 images/s on 2 CPU cores)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=5, help="training batches per epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in args.experiments.split(","):
            overrides = [f"data.batch_size={args.batch}", "trainer.max_epochs=2", f"data.cache_dir={tmp}/cache",
                         f"++trainer.limit_train_batches={args.batches}", "++trainer.limit_val_batches=0",
                         "++trainer.enable_progress_bar=false", "data.synthetic.n_images=480"]
            if experiment == "classification":  # no validation here, so nothing for early stopping to watch
                overrides = [*overrides, "model.early_stopping_patience=null"]
            ours, hand, share = [], [], []
            for r in range(args.repeats):
                cfg = compose_train(experiment, f"{tmp}/{experiment}-{r}", overrides)
                ours.append(lightning_loop(cfg))
                cfg = compose_train(experiment, f"{tmp}/{experiment}-hand-{r}", overrides)
                ips, s = hand_loop(cfg, args.batches)
                hand.append(ips)
                share.append(s)
            row = {"experiment": experiment, "voc_dl_images_per_s": statistics.median(ours),
                   "hand_images_per_s": statistics.median(hand),
                   "ratio": statistics.median(ours) / statistics.median(hand),
                   "min_max_voc_dl": [min(ours), max(ours)], "min_max_hand": [min(hand), max(hand)],
                   "data_share_of_epoch": statistics.median(share)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {**hardware(), "batch": args.batch, "batches": args.batches, "repeats": args.repeats}
    out = Path(args.out)
    lines = [f"# voc-dl's Lightning loop versus a hand-written loop ({meta['device']}, torch {meta['torch']}, "
             f"{meta['threads']} threads)", "",
             f"batch {args.batch}, {args.batches} batches per epoch, steady-state median of {args.repeats} repeats; "
             "data share = time the hand-written loop waits for the next batch (cache read + uint8->float).", "",
             "| experiment | voc-dl images/s (min-max) | hand-written images/s (min-max) | ratio | data share |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['experiment']} | {r['voc_dl_images_per_s']:.2f} ({r['min_max_voc_dl'][0]:.2f}-"
              f"{r['min_max_voc_dl'][1]:.2f}) | {r['hand_images_per_s']:.2f} ({r['min_max_hand'][0]:.2f}-"
              f"{r['min_max_hand'][1]:.2f}) | {r['ratio']:.3f} | {100 * r['data_share_of_epoch']:.1f}% |" for r in rows]
    save(out, "loop_overhead", meta, rows, lines)


if __name__ == "__main__":
    main()
