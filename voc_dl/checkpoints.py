"""Rebuilding a trained voc-dl model, and the data it trained on, from its checkpoint file alone.

A checkpoint carries its task's constructor arguments (the network and optimiser as config) and the
DataModule's, so `<Task>.load_from_checkpoint(path)` works on its own; `load_task` also finds the class,
from the checkpoint's `voc_dl_task` entry. Eval, the report, pseudo-labelling and benchmarks all load here.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import hydra
import torch

from voc_dl.config import ConfigError
from voc_dl.tasks.base import TASK_KEY


def init_arguments(cls: type) -> set[str]:
    """Keyword arguments a LightningModule accepts, its bases' included (they receive its **kwargs)."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass.__module__.startswith("voc_dl"):
            names |= {p.name for p in inspect.signature(klass.__init__).parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names


def _saved_config(ckpt: dict, path, model_cfg: dict | None) -> tuple[type, dict, dict]:
    """(task class, constructor arguments, data settings) of a checkpoint, of either format."""
    if TASK_KEY in ckpt:
        return (hydra.utils.get_class(ckpt[TASK_KEY]), dict(ckpt["hyper_parameters"]),
                dict(ckpt.get("datamodule_hyper_parameters") or {}))
    # Written before checkpoints described themselves: voc_dl.train stored the Hydra model and data
    # configs beside the weights (or the run's metrics.json holds them, which the report passes).
    saved = ckpt.get("voc_dl") or ({"model": model_cfg, "data": {}} if model_cfg else None)
    if saved is None:
        raise ConfigError(f"ckpt_path={path} was not written by voc_dl.train (no '{TASK_KEY}' entry), so the "
                          "network cannot be rebuilt from it. Fix: use a checkpoint of a voc-dl run")
    model = dict(saved["model"])
    cls = hydra.utils.get_class(model.pop("_target_"))
    data = {k: v for k, v in (saved.get("data") or {}).items() if k != "_target_"}
    return cls, model, data


def checkpoint_file(value) -> Path:
    """The checkpoint a command's `ckpt_path=` names; a missing file is a one-line error with the fix."""
    ckpt = Path(str(value)).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={value}: no such file. Fix: give a checkpoint such as "
                                "outputs/runs/<experiment>/<time>/checkpoints/best.ckpt")
    return ckpt


def sha256(path: Path) -> str:
    """A checkpoint's digest, recorded by what is derived from it (pseudo-labels, exported files)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def for_inference(task, kind: str, tta: bool, ckpt_path) -> None:
    """Ready a loaded task for images it sees once: the segmenter's flip test-time augmentation when asked
    (a one-line error for other tasks), and no feature cache (nothing to reuse; it hashes images in Python)."""
    if tta:
        if kind != "segmentation":
            raise ConfigError(f"tta=true is the segmenters' flip test-time augmentation; ckpt_path={ckpt_path} "
                              f"is a {kind} model. Fix: drop tta=true")
        task.tta = True
    if getattr(task.net, "feature_cache", None) is not None:
        task.net.feature_cache = None


def load_task(ckpt_path: str | Path, model_cfg: dict | None = None, overrides: dict | None = None):
    """The trained LightningModule of a checkpoint (eval mode, CPU) and the data settings it trained on.

    `overrides` replace constructor arguments that do not change the weights (e.g. `tta`); `model_cfg`
    rebuilds checkpoints that carry no config of their own.
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cls, hparams, data_cfg = _saved_config(ckpt, ckpt_path, model_cfg)
    allowed = set(hparams) | init_arguments(cls)
    unknown = sorted(set(overrides or {}) - allowed)
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: not a setting of {cls.__name__} (it takes: "
                          f"{', '.join(sorted(k for k in allowed if not k.startswith('_')))})")
    task = cls(**{**hparams, **(overrides or {})})
    task.load_state_dict(ckpt["state_dict"])
    return task.eval(), data_cfg


def datamodule_from(data_cfg: dict, **overrides):
    from voc_dl.data.datamodule import VOCDataModule
    from voc_dl.data.extra_masks import RETIRED_KEYS

    # Reports and evaluation read the labelled data only: a self-trained run's extra masks stay out, and so do
    # the self-training keys that older runs' configs hold.
    drop = ("_target_", "extra_masks", *RETIRED_KEYS)
    kwargs = {k: v for k, v in data_cfg.items() if k not in drop} | overrides
    dm = VOCDataModule(**kwargs)
    dm.prepare_data()
    dm.setup()
    return dm
