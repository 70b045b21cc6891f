"""Configs compose for every group option, and bad values fail at start-up with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT
from voc_dl.config import ConfigError, validate
from voc_dl.hardware import resolve_precision

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MODELS = {
    "autoencoder": ["autoencoder"], "autoencoder_improved": ["autoencoder"],
    "classification": ["deep_cnn", "encoder", "frozen_encoder", "pretrained"], "classification_improved": ["deep_cnn"],
    "segmentation": ["segnet", "unet"],
    "segmentation_improved": ["unet", "segnet"], "segmentation_selftrain": ["unet"],
}
NEEDS = {"frozen_encoder": "model.encoder_ckpt", "segmentation_selftrain": "data.extra_masks"}


def test_every_experiment_is_covered():
    assert set(EXPERIMENTS) == set(MODELS)


@pytest.mark.parametrize("group", ["data", "dataset", "callbacks", "logger", "trainer", "debug", "paths", "optim"])
def test_every_group_option_composes(compose_cfg, group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = compose_cfg([f"{group}={option}"])
        OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_and_model_composes_and_validates(compose_cfg, experiment, tmp_path):
    (tmp_path / "x.ckpt").touch()
    for model in MODELS[experiment]:
        extra = [f"{NEEDS[k]}={tmp_path}/x.ckpt" for k in (model, experiment) if k in NEEDS]
        cfg = compose_cfg([f"experiment={experiment}", f"model={model}", *extra])
        validate(cfg)
        resolved = OmegaConf.to_container(cfg.model, resolve=True)
        assert resolved["_target_"].startswith("voc_dl.tasks.")
        assert cfg.task_name == experiment
        # the data follow the model: the task module's name is the data task
        assert resolved["_target_"] == f"voc_dl.tasks.{cfg.data.task}.{cfg.data.task.capitalize()}Task"


def test_shared_voc_preset_selects_the_stand_in_classes(compose_cfg):
    cfg = compose_cfg(["experiment=classification", "dataset=shared_voc"])
    assert list(cfg.data.classes) == ["cat", "dog", "person"] and cfg.data.year == 2012
    assert cfg.data.root.endswith("shared/voc") and cfg.model.num_classes == 3
    cfg = compose_cfg(["experiment=classification", "data.classes=[cat,dog,person,car,bus]"])
    assert cfg.model.num_classes == 5 and cfg.model.net.num_classes == 5


@pytest.mark.slow  # the README's `--cfg job` command runs by default
def test_cfg_job_prints_the_composed_config():
    out = subprocess.run([sys.executable, "-m", "voc_dl.train", "experiment=segmentation", "model.loss=bce",
                          "--cfg", "job"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.model.loss == "bce" and cfg.data.task == "segmentation" and cfg.data.image_size == 64


@pytest.mark.parametrize("override, message", [
    (["model.code_size=1000"], r"model.code_size=1000 is not allowed; allowed: 2048, 4096, 8192"),
    (["model.loss=huber"], r"model.loss='huber' is not allowed; allowed: mse, mae"),
    (["model.optimizer.lr=-0.1"], r"model.optimizer.lr=-0.1 must be a positive number"),
    (["data.classes=[cat,kitten]"], r"data.classes=\['cat', 'kitten'\] holds unknown name\(s\) \['kitten'\]"),
    (["dataset=voc2009", "data.root=/no/such/dir"], r"data.root=/no/such/dir does not exist"),
    (["data.task=segmentation"], r"data.task='segmentation' but model ReconstructionTask trains 'reconstruction'"),
    (["data.void=keep"], r"data.void='keep' is not allowed; allowed: ignore, background"),
    (["data.year=2020"], r"data.year=2020 is not allowed; allowed: 2007"),
    (["data.val_to_train=1.5"], r"data.val_to_train=1.5 must be a fraction"),
    (["trainer.max_epochs=0"], r"trainer.max_epochs=0 must be at least 1"),
])
def test_bad_values_give_one_clear_line(compose_cfg, override, message):
    cfg = compose_cfg(["experiment=autoencoder", *override])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


@pytest.mark.parametrize("override, message", [
    (["experiment=segmentation", "model.loss=focal"],
     r"model.loss='focal' is not allowed; allowed: bce, dice, bce_dice"),
    (["experiment=classification", "model=pretrained", "model.net.backbone=vgg99"],
     r"model.net.backbone='vgg99' is not allowed; allowed: alexnet, resnet18"),
    (["experiment=classification", "model=frozen_encoder"], r"model.encoder_ckpt is required"),
    (["experiment=segmentation_selftrain"],
     r"data.extra_masks is required by experiment=segmentation_selftrain: the teacher's masks, a folder written by "
     r"python -m voc_dl.pseudo_label .*Fix: data.extra_masks=<path>"),
])
def test_bad_values_of_other_sections(compose_cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(override))


def test_misspelt_key_is_refused_by_hydra(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.code_sise'"):
        compose_cfg(["experiment=autoencoder", "model.code_sise=2048"])


def test_precision_switch():
    assert resolve_precision("auto", fp32=True, accelerator="auto") == "32-true"
    assert resolve_precision("16-mixed", fp32=False, accelerator="gpu") == "16-mixed"
    assert resolve_precision("auto", fp32=False, accelerator="cpu") in ("bf16-mixed", "32-true")


@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_precision_on_a_gpu_takes_bf16_only_where_it_is_native(monkeypatch, native_bf16, expected):
    import torch

    # torch's default counts emulated bf16, which a pre-Ampere GPU (T4, V100) has and runs slowly
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or native_bf16)
    assert resolve_precision("auto", fp32=False, accelerator="auto") == expected
    assert resolve_precision("auto", fp32=True, accelerator="gpu") == "32-true"


def test_sweep_folders_are_named_by_overrides_and_plumbing_only_jobs_get_their_own(compose_cfg):
    from omegaconf import open_dict, read_write

    cfg = compose_cfg(["experiment=segmentation"])
    with read_write(cfg.hydra), open_dict(cfg):
        cfg.hydra.job.override_dirname = "model.loss=dice"
        assert cfg.hydra.sweep.subdir == "model.loss=dice"
        cfg.hydra.job.override_dirname = "++trainer.limit_train_batches=2,model.loss=dice"  # voc_dl.cli's ++
        assert cfg.hydra.sweep.subdir == "trainer.limit_train_batches=2,model.loss=dice"
        cfg.hydra.job.override_dirname = ""  # e.g. only threads=1 and ~logger, both excluded from names
        assert cfg.hydra.sweep.subdir == "defaults"


def test_a_run_recorded_with_the_callbacks_file_paths_is_the_same_job_but_other_callbacks_are_not(compose_cfg):
    from voc_dl.config import differences, job_config

    new = job_config(compose_cfg(["experiment=segmentation"]))
    # how a run recorded before the callbacks took the run folder names its files
    old = OmegaConf.to_container(OmegaConf.create(new))
    for name, key, value in (("model_checkpoint", "dirpath", "${paths.run_dir}/checkpoints"),
                             ("last_checkpoint", "dirpath", "${paths.run_dir}/checkpoints"),
                             ("history", "path", "${paths.run_dir}/history.csv")):
        del old["callbacks"][name]["run_dir"]
        old["callbacks"][name][key] = value
    assert differences(old, new) == {}
    old["callbacks"]["rng_state"] = None  # resumed draws would differ (tests/test_reliability.py)
    old["callbacks"]["model_checkpoint"]["monitor"] = "val/iou"
    assert set(differences(old, new)) == {"callbacks.rng_state", "callbacks.rng_state._target_",
                                          "callbacks.model_checkpoint.monitor"}
