"""Rebuilding a trained voc-dl model, and the data it trained on, from its checkpoint file alone.

Eval, the report, pseudo-labelling and benchmarks all load checkpoints here, so none of them needs an
entry point: data flows VOC tree -> cache -> DataModule -> task -> run folder -> report.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import hydra
import torch

from voc_dl.config import ConfigError


def init_arguments(cls: type) -> set[str]:
    """Keyword arguments a LightningModule accepts, its bases' included (they receive its **kwargs)."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass.__module__.startswith("voc_dl"):
            names |= {p.name for p in inspect.signature(klass.__init__).parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names


def load_task(ckpt_path: str | Path, model_cfg: dict | None = None, overrides: dict | None = None):
    """The trained LightningModule of a checkpoint (eval mode, CPU) and the data config it trained on.

    The network is rebuilt from the config voc_dl.train stores in the checkpoint; `model_cfg` rebuilds
    it instead for checkpoints that predate that. `overrides` replace top-level keys of that config.
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    data_cfg = {}
    if not model_cfg:
        saved = ckpt.get("voc_dl")
        if saved is None:
            raise ConfigError(f"ckpt_path={ckpt_path} was not written by voc_dl.train (no 'voc_dl' entry), so the "
                             "network cannot be rebuilt from it. Fix: use a checkpoint of a voc-dl run")
        model_cfg, data_cfg = saved["model"], saved["data"]
    allowed = set(model_cfg) | init_arguments(hydra.utils.get_class(model_cfg["_target_"]))
    unknown = sorted(set(overrides or {}) - allowed)
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: not a setting of {model_cfg['_target_']} (it takes: "
                         f"{', '.join(sorted(k for k in allowed if not k.startswith('_')))})")
    model_cfg = {**model_cfg, **(overrides or {})}
    if "encoder_ckpt" in model_cfg:
        model_cfg = {**model_cfg, "encoder_ckpt": None}  # the checkpoint holds every weight already
    task = hydra.utils.instantiate(model_cfg, _convert_="all")
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
