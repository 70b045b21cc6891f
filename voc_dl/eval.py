"""Evaluate a checkpoint, by default on the validation split of the data it trained on:

    python -m voc_dl.eval ckpt_path=outputs/.../checkpoints/best.ckpt [dataset=shared_voc] [split=val] [+model.tta=true]

The network is rebuilt from the config that voc_dl.train stores in each checkpoint. The data are the
training run's (its tree or synthetic tree, year, labelling and holdout) unless the command names
others: `dataset=` or `data.root=` another tree, `data.<key>=` one setting; task, image size, colour
mode and classes are always the training run's, since the network fixes them. `+model.<key>=...`
changes a setting of the saved model config that does not change its weights (e.g. the segmenter's
flip test-time augmentation).
Results go to `metrics.json` of the eval run folder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

import voc_dl  # noqa: F401  (registers the config resolvers)
from voc_dl import cli
from voc_dl.atomic import atomic_write_text
from voc_dl.callbacks import scalar_metrics
from voc_dl.checkpoints import checkpoint_file, load_task
from voc_dl.config import ConfigError, override_key
from voc_dl.hardware import hardware, resolve_precision
from voc_dl.instantiate import instantiate
from voc_dl.run_files import METRICS

log = logging.getLogger("voc_dl")

# The data a run trained on, which eval reads unless the command names others: its tree (the command's once it
# names root, synthetic or dataset=), and, each unless named, the tree's year (dataset= sets it), the labelling and
# the holdout split's definition.
TREE = ("root", "synthetic")
PER_KEY = ("year", "difficult_as_positive", "void", "train_split", "holdout_fraction")


def evaluate(cfg: DictConfig) -> dict:
    started = time.time()
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path is required. Fix: python -m voc_dl.eval ckpt_path=<run>/checkpoints/best.ckpt "
                          "(quote a path that holds '=': \"ckpt_path='<path>'\")")
    ckpt = checkpoint_file(cfg.ckpt_path)
    model_overrides = OmegaConf.to_container(cfg.model)
    model, train_data = load_task(ckpt, overrides=model_overrides)
    data_cfg = cfg.data.copy()
    given = {override_key(o) for o in cli.overrides()}
    named = {k.split(".")[1] if k.startswith("data.") else k for k in given}
    if "dataset" in named:
        named.add("year")
    taken = ["task", "image_size", "color", "classes", *(k for k in PER_KEY if k not in named),
             *(TREE if not named & {"dataset", *TREE} else ())]
    with open_dict(data_cfg):
        for key in taken:
            if key in train_data:
                data_cfg[key] = train_data[key]
        if cfg.split == train_data.get("val_split", "val") and "data.val_to_train" not in given:
            # the validation set the run selected on: without the share of val it trained on (val_to_train)
            data_cfg.val_to_train, data_cfg.seed = train_data.get("val_to_train", 0.0), train_data.get("seed", 0)
        data_cfg.val_split = cfg.split
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(data_cfg)
    # the trainer config as given (trainer.limit_val_batches=... works as in training), on one process
    trainer = instantiate(cfg.trainer, devices=1, num_nodes=1, strategy="auto", logger=False, callbacks=[],
                          enable_model_summary=False,
                          precision=resolve_precision(cfg.trainer.precision, cfg.fp32, cfg.trainer.accelerator))
    val = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    result = {"status": "ok", "task_name": cfg.task_name, "ckpt_path": str(ckpt.resolve()),
              "model_overrides": model_overrides,
              "train_run": str(ckpt.resolve().parent.parent), "split": cfg.split, "val": scalar_metrics(val),
              "data": datamodule.info, "hardware": hardware(), "wall_time_s": round(time.time() - started, 1)}
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / METRICS, json.dumps(result, indent=2))
    log.info("eval %s on %s/%s: %s | %s", ckpt, datamodule.info["root"], cfg.split,
             ", ".join(f"{k}={v:.4f}" for k, v in result["val"].items()), run_dir)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval.yaml")
def app(cfg: DictConfig) -> None:
    with cli.one_line_errors():
        evaluate(cfg)


def main() -> None:
    cli.run(app)


if __name__ == "__main__":
    main()
