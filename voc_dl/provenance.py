"""Where a run came from: the code's git commit, the package versions, the command line and the run's tags.

Recorded in metrics.json and the TensorBoard HParams row, so a number can be traced to the code and
packages that made it. Nothing here may fail a run: what cannot be found is recorded as null.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, ListConfig

# the distributions whose versions change results (import names differ: pytorch_lightning, hydra)
PACKAGES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "torchmetrics", "numpy", "voc-dl")
CODE_DIR = Path(__file__).resolve().parent.parent  # the checkout (or site-packages) holding voc_dl


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(CODE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict:
    """The commit of the code that runs, and whether tracked files differ from it (as `git describe --dirty`
    counts: untracked files do not); both null outside a git checkout (e.g. an installed wheel)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict:
    """git, package versions, and the command line (quoted to paste back into a shell) with its working
    directory."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]  # orig_argv keeps `-m voc_dl.train`
    return {"git": git_state(), "versions": versions(), "command": shlex.join(argv), "cwd": os.getcwd()}


def tags(cfg: DictConfig) -> list[str]:
    """The run's `tags` (conf/train.yaml): a list, or one word (`tags=dev`)."""
    value = cfg.get("tags") or []
    return [str(t) for t in value] if isinstance(value, ListConfig | list | tuple) else [str(value)]
