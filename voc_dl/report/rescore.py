"""Every network scored on the whole validation split, as the baselines are.

A run trained with trainer.limit_val_batches reports numbers on its first few validation batches only, which
a table cannot set beside a baseline scored on every image. Such a run is scored again here from its best
checkpoint on the whole split; a run that validated everything keeps its own numbers (no cost). Scores are
kept in the report folder (rescored.json), so that a report built again scores each checkpoint once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

from voc_dl.atomic import atomic_write_text
from voc_dl.callbacks import scalar_metrics
from voc_dl.checkpoints import datamodule_from, load_task
from voc_dl.report.runs import Run

log = logging.getLogger("voc_dl")


def validated_images(run: Run) -> int | None:
    """How many validation images the run's own val numbers cover: the batches its best checkpoint's
    validation loop completed, times the batch size; None when the checkpoint does not say."""
    ckpt = run.metrics.get("best_ckpt")
    if not ckpt or not Path(ckpt).is_file():
        return None
    state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
    try:
        batches = state["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]["current"]["completed"]
    except KeyError:
        return None
    return batches * run.data_cfg.get("batch_size", 1)  # a partial last batch counts whole: compare with >=


def on_full_split(runs: list[Run], out: Path) -> list[Run]:
    """The runs with val numbers on the whole validation split, each with `val_scope` saying how they were had."""
    path = out / "rescored.json"
    try:
        scores = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or a torn file: score again
        scores = {}
    runs = [full_split(r, scores) for r in runs]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(scores, indent=1))
    return runs


def full_split(run: Run, scores: dict) -> Run:
    """One run on the whole validation split; `scores` holds the checkpoints scored so far, by path."""
    if "val" not in run.metrics:  # failed before validating: nothing to score
        return run
    total = (run.metrics.get("data") or {}).get("val_images")
    if run.metrics.get("val_scope") == "whole split":  # voc_dl.train scored the best checkpoint on all of it
        return _with(run, run.metrics["val"], {"images": total})
    validated = validated_images(run)
    if validated is not None and total is None:  # a killed run's metrics.json records no split size
        total = len(datamodule_from(run.data_cfg).val_set)
    if validated is not None and validated >= total:
        return _with(run, run.metrics["val"], {"images": total})
    if not run.metrics.get("best_ckpt") or not Path(run.metrics["best_ckpt"]).is_file():
        return _with(run, run.metrics["val"], {"images": None})  # e.g. fast_dev_run: no checkpoint to score
    ckpt = Path(run.metrics["best_ckpt"]).resolve()
    stamp = [ckpt.stat().st_mtime_ns, ckpt.stat().st_size]  # a checkpoint written again is scored again
    if scores.get(str(ckpt), {}).get("stamp") != stamp:
        val, total = score(run)
        scores[str(ckpt)] = {"stamp": stamp, "val": val, "images": total}
    kept = scores[str(ckpt)]
    return _with(run, kept["val"], {"images": kept["images"], "validated": validated})


def score(run: Run) -> tuple[dict, int]:
    """The best checkpoint's validation metrics on the whole split, computed as in training, and how many
    images that is."""
    task, _ = load_task(run.metrics["best_ckpt"], run.model_cfg)
    dm = datamodule_from(run.data_cfg)
    log.info("re-scoring %s on all %d validation images", run.path, len(dm.val_set))
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    val = trainer.validate(task, datamodule=dm, verbose=False)[0]
    return scalar_metrics(val), len(dm.val_set)


def _with(run: Run, val: dict, scope: dict) -> Run:
    return dataclasses.replace(run, metrics={**run.metrics, "val": val, "val_scope": scope})


def scope_cell(run: Run) -> str:
    """The 'val images' cell: how many validation images the row's numbers cover."""
    scope = run.metrics.get("val_scope") or {}
    if not scope:
        return "-"
    if scope["images"] is None:
        return "? (no checkpoint to re-score)"
    if "validated" in scope:
        trained = f"; {scope['validated']} in training" if scope["validated"] is not None else ""
        return f"{scope['images']} (re-scored{trained})"
    return str(scope["images"])


def note(runs: list[Run]) -> list[str]:
    """The table note for re-scored runs, when there are any."""
    if not any("validated" in (r.metrics.get("val_scope") or {}) for r in runs):
        return []
    return ["'re-scored': the run validated a subset of the validation images (trainer.limit_val_batches), so "
            "its best checkpoint was scored again on all of them, as the baselines are; its last-epoch numbers "
            "and curves remain those of the subset."]
