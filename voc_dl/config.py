"""Start-up checks on a composed config, before any data is touched, and run-environment helpers.

Each problem is one line that names the key, the value, and what is allowed, so a typo in a long
sweep fails in a second instead of after an hour of decoding.
"""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from voc_dl.data.extra_masks import RETIRED_KEYS, retired
from voc_dl.data.synthetic import check_writable
from voc_dl.data.voc import CHANNELS, ON_BAD_IMAGE, VOC_CLASSES, VOID_RULES, YEARS, VOCDataError, check_root
from voc_dl.models.autoencoder import CODE_DEPTH
from voc_dl.models.classifiers import BACKBONES
from voc_dl.tasks import reconstruction, segmentation

TASK_OF_MODEL = {
    "voc_dl.tasks.reconstruction.ReconstructionTask": "reconstruction",
    "voc_dl.tasks.classification.ClassificationTask": "classification",
    "voc_dl.tasks.segmentation.SegmentationTask": "segmentation",
}
LOSSES = {"reconstruction": tuple(reconstruction.LOSSES), "segmentation": segmentation.LOSSES}


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@functools.cache
def plumbing_keys() -> frozenset[str]:
    """Override keys that do not tell runs apart (paths, devices, threads, length): sweep folder names leave
    them out, and so do run names in the report. Their one home is conf/hydra/default.yaml."""
    return frozenset(OmegaConf.load(CONF_DIR / "hydra" / "default.yaml").job.config.override_dirname.exclude_keys)


# Keys that say where and on what a run executes, not what it computes: two runs that differ only in these are
# the same job (a resume may move it to a GPU or another cache), and so are the callbacks' folder arguments
# (`run_dir`, or `dirpath` / `path` in records of runs that named the files there). Narrower than
# plumbing_keys(), which also leaves trainer.max_epochs, data.root or model.encoder_ckpt out of folder names
# for readability only.
RESULT_NEUTRAL = ("hydra", "paths", "ckpt_path", "resume", "threads", "logger", "data.cache_dir",
                  "trainer.accelerator", "trainer.devices",
                  "callbacks.model_checkpoint.run_dir", "callbacks.model_checkpoint.dirpath",
                  "callbacks.last_checkpoint.run_dir", "callbacks.last_checkpoint.dirpath",
                  "callbacks.history.run_dir", "callbacks.history.path")


def job_config(cfg: DictConfig) -> dict:
    """A job's composed config without Hydra's node, its interpolations kept (`${paths.run_dir}/...` is the
    same text in every run folder): what a run records so that a later command can tell whether it is the
    same job."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def override_key(override) -> str:
    """The key an override sets: `+data.x=1` and `~data.x` -> `data.x`."""
    return str(override).lstrip("+~").split("=", 1)[0]


def result_neutral(key: str, ignore=RESULT_NEUTRAL) -> bool:
    """Whether a dotted key is, or lies under, one of `ignore`."""
    return any(key == i or key.startswith(i + ".") for i in ignore)


def comparable(config: dict, ignore=RESULT_NEUTRAL) -> dict:
    """A job config as {dotted key: value}, without the keys under `ignore`."""
    return {k: v for k, v in _flat(config).items() if not result_neutral(k, ignore)}


def differences(old: dict, new: dict, ignore=RESULT_NEUTRAL) -> dict[str, tuple]:
    """{dotted key: (old value, new value)} of two job configs, leaving out the keys under `ignore`."""
    a, b = comparable(old, ignore), comparable(new, ignore)
    unset = "<unset>"
    return {k: (a.get(k, unset), b.get(k, unset)) for k in sorted(set(a) | set(b))
            if a.get(k, unset) != b.get(k, unset)}


class ConfigError(ValueError):
    pass


def _allowed(key: str, value, allowed) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with one clear line for the first problem found."""
    data, model = cfg.data, cfg.model
    missing = sorted(OmegaConf.missing_keys(model))
    if "model.encoder_ckpt" in missing:
        raise ConfigError("model.encoder_ckpt is required by this model: the trained 8192-code encoder of "
                          "Section 1. Fix: model.encoder_ckpt=<run>/checkpoints/best.ckpt of experiment=autoencoder "
                          "model.code_size=8192 (make autoencoder trains one)")
    for key in RETIRED_KEYS:  # an older experiment file or saved config that still sets them
        if key in data:
            raise ConfigError(retired(key))
    # An experiment lists the keys it cannot run without (a '???' cannot unset a value set earlier).
    for key, what in (cfg.get("requires") or {}).items():
        if OmegaConf.select(cfg, key, default=None) in (None, ""):
            raise ConfigError(f"{key} is required by experiment={cfg.task_name}: {what}. Fix: {key}=<path>")
    if missing:
        raise ConfigError(f"missing config value(s): {', '.join(missing)}")
    if model.get("encoder_ckpt"):  # read only when training starts: fail now, not after the data are ready
        reconstruction.encoder_file(model.encoder_ckpt)
    task = TASK_OF_MODEL.get(model.get("_target_"))
    if task is None:
        raise _allowed("model._target_", model.get("_target_"), TASK_OF_MODEL)
    if data.task != task:
        raise ConfigError(f"data.task={data.task!r} but model {model._target_.rsplit('.', 1)[-1]} trains "
                          f"{task!r}. Fix: use experiment={'autoencoder' if task == 'reconstruction' else task} "
                          f"or set data.task={task}")
    if task == "reconstruction" and model.code_size not in CODE_DEPTH:
        raise _allowed("model.code_size", model.code_size, CODE_DEPTH)
    if task in LOSSES and model.loss not in LOSSES[task]:
        raise _allowed("model.loss", model.loss, LOSSES[task])
    net = model.get("net") or {}
    if "backbone" in net and net.backbone not in BACKBONES:
        raise _allowed("model.net.backbone", net.backbone, BACKBONES)
    if net.get("code_size") is not None and net.code_size not in CODE_DEPTH:
        raise _allowed("model.net.code_size", net.code_size, CODE_DEPTH)
    lr = model.optimizer.get("lr")
    if lr is None or not lr > 0:
        raise ConfigError(f"model.optimizer.lr={lr} must be a positive number")
    if task != "segmentation":
        bad = [c for c in data.classes if c not in VOC_CLASSES]
        if bad or not data.classes:
            raise ConfigError(f"data.classes={list(data.classes)} holds unknown name(s) {bad}; "
                              f"allowed: {', '.join(VOC_CLASSES)}")
    if str(data.year) not in YEARS:
        raise _allowed("data.year", data.year, YEARS)
    if data.batch_size < 1:
        raise ConfigError(f"data.batch_size={data.batch_size} must be at least 1")
    if not 0 <= data.val_to_train < 1:
        raise ConfigError(f"data.val_to_train={data.val_to_train} must be a fraction in [0, 1)")
    for key, allowed in (("void", VOID_RULES), ("color", tuple(CHANNELS)), ("on_bad_image", ON_BAD_IMAGE)):
        if data[key] not in allowed:
            raise _allowed(f"data.{key}", data[key], allowed)
    if data.root is None and not (data.synthetic or {}).get("dir"):
        raise ConfigError("data.root is not set. Fix: data.root=<folder holding VOCdevkit/>, or dataset=synthetic")
    try:  # the data layer's own checks, run here before anything is read or written
        if data.root is None:
            check_writable(data.synthetic.dir, data.year)
        else:
            check_root(data.root, data.download)
    except VOCDataError as e:
        raise ConfigError(str(e)) from None
    if cfg.trainer.max_epochs is not None and cfg.trainer.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs={cfg.trainer.max_epochs} must be at least 1")
