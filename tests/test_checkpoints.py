"""A checkpoint rebuilds its model alone: Lightning's own `<Task>.load_from_checkpoint` in a fresh process
with no Hydra config, `voc_dl.checkpoints.load_task` for any task, and checkpoints of the older format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, assert_fp32_close
from voc_dl.checkpoints import load_task
from voc_dl.config import ConfigError
from voc_dl.train import train

OLD_FORMAT = ROOT / "tests" / "data" / "old_format_unet.ckpt"  # written by voc_dl.train before the change
RUNS = {
    "reconstruction": ["experiment=autoencoder", "model.code_size=2048"],
    "classification": ["experiment=classification", "model=deep_cnn", "model.net.filters=[8,8,8,8,8]"],
    "segmentation": ["experiment=segmentation", "model=unet", "model.net.filters=[4,8,8,8]"],
}
# Runs in a fresh interpreter: for each checkpoint, the class from the task's module and the file, nothing else.
FRESH = """
import json, sys, torch
from voc_dl.data.datamodule import VOCDataModule
for module, cls, ckpt, out in json.loads(sys.argv[1]):
    task = getattr(__import__(module, fromlist=[cls]), cls).load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = VOCDataModule.load_from_checkpoint(ckpt)
    x = torch.rand(2, 1 if dm.hparams.color == "gray" else 3, dm.hparams.image_size, dm.hparams.image_size,
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save({"x": x, "y": task(x).float()}, out)
    print(json.dumps({"data": dict(dm.hparams), "net": type(task.net).__name__}))
"""


def test_checkpoints_of_every_task_rebuild_their_models_in_a_fresh_process(compose_cfg, tmp_path):
    runs = {}
    for task, overrides in RUNS.items():
        cfg = compose_cfg([*overrides, "debug=tiny", "trainer.max_epochs=1", "data.batch_size=2", "data.image_size=64",
                           "~logger",
                           f"paths.run_dir={tmp_path / task}"])
        runs[task] = (train(cfg), cfg.data.image_size)
    jobs = [[*runs[t][0]["config"]["model"]["_target_"].rsplit(".", 1), runs[t][0]["best_ckpt"],
             str(tmp_path / f"{t}.pt")] for t in RUNS]
    out = subprocess.run([sys.executable, "-c", FRESH, json.dumps(jobs)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()[-3:]
    for (task, (result, image_size)), (_, cls, ckpt, saved), line in zip(runs.items(), jobs, lines, strict=True):
        fresh = json.loads(line)
        assert fresh["net"] == result["model"]
        assert fresh["data"]["task"] == task and fresh["data"]["image_size"] == image_size
        # voc-dl's loader finds the class itself and rebuilds the same function
        model, data_cfg = load_task(ckpt)
        assert type(model).__name__ == cls and data_cfg == fresh["data"]
        saved = torch.load(saved)
        with torch.no_grad():
            y = model(saved["x"]).float()
        assert_fp32_close(y, saved["y"], terms=3 * 3 * 256)


def test_a_checkpoint_of_the_older_format_still_loads():
    model, data_cfg = load_task(OLD_FORMAT)
    stored = torch.load(OLD_FORMAT, map_location="cpu", weights_only=False)
    assert "voc_dl_task" not in stored and "voc_dl" in stored  # the format before checkpoints described themselves
    assert type(model).__name__ == "SegmentationTask" and type(model.net).__name__ == "UNet"
    assert [m.out_channels for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)][0] == 4
    for key, value in stored["state_dict"].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert data_cfg["task"] == "segmentation" and data_cfg["image_size"] == 64 and "_target_" not in data_cfg
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_a_checkpoint_without_its_config_is_one_clear_error(tmp_path):
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(ConfigError, match="not written by voc_dl.train") as e:
        load_task(bare)
    assert "\n" not in str(e.value) and str(bare) in str(e.value)


def test_model_overrides_that_are_no_setting_are_refused():
    model, _ = load_task(OLD_FORMAT, overrides={"tta": True})
    assert model.tta
    with pytest.raises(ConfigError, match="model.ttta: not a setting of SegmentationTask"):
        load_task(OLD_FORMAT, overrides={"ttta": True})
