"""The record of a command that is not a training run (predict, export): metrics.json in its run folder."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from voc_dl import cli
from voc_dl.atomic import atomic_write_text
from voc_dl.run_files import METRICS


def recorded(cfg: DictConfig, work: Callable[[dict], dict]) -> dict:
    """Run `work(result)`, which may fill `result` as it goes, and write the record atomically as `ok` with what
    it returned, or as `failed` with the error (then re-raise), so a folder never holds a half-written record."""
    started = time.time()
    result = {"status": "running", "task_name": cfg.task_name, "overrides": cli.overrides()}
    try:
        result.update(work(result), status="ok", wall_time_s=round(time.time() - started, 1))
    except BaseException as e:
        result.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                      wall_time_s=round(time.time() - started, 1))
        raise
    finally:
        atomic_write_text(Path(cfg.paths.run_dir) / METRICS, json.dumps(result, indent=2))
    return result
