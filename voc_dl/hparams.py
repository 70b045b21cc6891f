"""TensorBoard HParams rows that compare runs of every section side by side.

TensorBoard's hparams plugin (tensorboard/plugins/hparams/backend_context.py) takes its columns from the
first `_hparams_/experiment` summary it finds in the whole log folder, so a run that wrote one would impose
its own hyperparameters and its own section's metrics on every other run. A run here writes none: only a
session (`session_start_info` with its hyperparameters, `session_end_info` with its status) and its final
metrics as scalars beside it. Without an experiment summary the plugin builds one from the sessions: the
hparam columns are the union of every session's hyperparameters, the metric columns every scalar tag in
a session's folder or below it. Each session gets a folder of its own inside the logger's, so the metric
columns are the final metrics, not the training curves one level up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from google.protobuf import struct_pb2
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from voc_dl.config import override_key
from voc_dl.provenance import tags

#: the session's folder inside the TensorBoard logger's log_dir
SESSION_DIR = "hparams"


def _hydra() -> tuple[dict, set[str]]:
    """The config group options this run was composed from (experiment, model, debug...), and the keys
    its sweep folders leave out of their names as plumbing (paths, threads, devices)."""
    try:
        hydra = HydraConfig.get()
    except ValueError:  # composed outside Hydra
        return {}, set()
    return dict(hydra.runtime.choices), set(hydra.job.config.override_dirname.exclude_keys)


def _plain(value):
    """A value the plugin can hold (number, string, bool); lists as comma-joined text."""
    if isinstance(value, ListConfig | list | tuple):
        return ",".join(map(str, value))
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(OmegaConf.to_container(value) if isinstance(value, DictConfig) else value)


def _class_name(node: DictConfig | None) -> str | None:
    target = node.get("_target_") if node else None
    return str(target).rsplit(".", 1)[-1] if target else None


def _overridden(cfg: DictConfig, overrides: list[str], choices: dict, plumbing: set[str]) -> dict:
    """Each command-line key with the value the run used: a config group names its option, any other key
    reads the composed config (so `model.code_size=4096` reads back as the number 4096)."""
    values = {}
    for override in overrides:
        key = override_key(override)
        if "=" not in override or override.startswith("~") or key in plumbing or key.startswith(("hydra.", "hydra/")):
            continue
        values[key] = choices[key] if key in choices else _plain(OmegaConf.select(cfg, key))
    return values


def run_hparams(cfg: DictConfig, net: str, overrides: list[str], provenance: dict | None = None,
                device: str | None = None) -> dict:
    """The hyperparameters of a run, read from its composed config: the swept keys whether the command
    line or the experiment set them, and the command line's other keys but plumbing. (The keys sweep folder
    names leave out are plumbing, or read here anyway: experiment, debug, data set, epochs.) With the run's
    provenance (voc_dl/provenance.py) and device, its git commit, package versions, command line and hardware
    too, so the HParams tab tells apart runs of other code or machines."""
    choices, plumbing = _hydra()
    data = cfg.data
    used = {
        "task": cfg.task_name,
        "experiment": choices.get("experiment"),
        "model": choices.get("model"),
        "optim": choices.get("optim"),
        "net": net,
        "debug": choices.get("debug"),
        "model.code_size": cfg.model.get("code_size"),
        "model.loss": cfg.model.get("loss"),
        "model.optimizer": _class_name(cfg.model.get("optimizer")),
        "model.optimizer.lr": OmegaConf.select(cfg, "model.optimizer.lr"),
        # a root wins over data.synthetic, as in the datamodule
        "data.root": os.path.normpath(data.root) if data.root else "synthetic",
        "data.year": data.year,
        "data.classes": data.classes,
        "data.batch_size": data.batch_size,
        "trainer.max_epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
        "data.test_split": data.get("test_split"),
        "tags": tags(cfg) or None,
        "device": device,
    }
    if provenance:
        git = provenance.get("git") or {}
        used |= {"git.commit": git.get("commit"), "git.dirty": git.get("dirty"), "command": provenance.get("command"),
                 **{f"version.{k}": v for k, v in (provenance.get("versions") or {}).items()}}
    values = _overridden(cfg, overrides, choices, plumbing) | {k: _plain(v) for k, v in used.items()}
    return {k: v for k, v in values.items() if v is not None}


def _value(value: bool | int | float | str) -> struct_pb2.Value:
    if isinstance(value, bool):  # before numbers: a bool is an int
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int | float):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=value)


def _summary(tag: str, **plugin_data) -> Summary:
    content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **plugin_data)
    summary = Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(content), tensor=metadata.NULL_TENSOR)
    return summary


@rank_zero_only
def write_session(log_dir: str | Path, hparams: dict, metrics: dict[str, float], step: int,
                  started: float) -> Path:
    """One HParams row: the run's hyperparameters, final metrics and success, in `<log_dir>/hparams`."""
    session = Path(log_dir) / SESSION_DIR
    for old in session.glob("events.out.tfevents.*"):
        old.unlink()  # a resumed run replaces its row rather than adding a second session
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=started)
    for key, value in hparams.items():
        start.hparams[key].CopyFrom(_value(value))
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    with SummaryWriter(str(session)) as writer:
        writer.file_writer.add_summary(_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start))
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        writer.file_writer.add_summary(_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))
    return session


def log_final(loggers: list[Logger], hparams: dict, metrics: dict[str, float], step: int, started: float) -> None:
    """Hand a finished run's hyperparameters and final metrics to every logger."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            write_session(logger.log_dir, hparams, metrics, step, started)
        else:
            logger.log_hyperparams(hparams, metrics)
