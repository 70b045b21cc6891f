"""The files of a run folder: what voc_dl.train writes, and resume, search, eval, demo and the report read."""

from __future__ import annotations

from pathlib import Path

METRICS = "metrics.json"  # the run's record: status, config, val/test metrics, provenance
HISTORY = "history.csv"  # one row per epoch
CHECKPOINTS = "checkpoints"
BEST, LAST = "best", "last"  # checkpoint names without Lightning's ".ckpt"


def best_ckpt(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{BEST}.ckpt"


def last_ckpt(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{LAST}.ckpt"
