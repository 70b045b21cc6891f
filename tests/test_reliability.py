"""Real processes: a run killed with SIGKILL resumes to the uninterrupted run's metrics; DDP metrics
are synced across ranks (the same checkpoint scores the same on 2 processes as on 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests import launch
from tests.conftest import ROOT


def cli(module: str, run_dir: Path, synthetic_root: Path, cache: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", module, *overrides, f"data.root={synthetic_root}", f"data.cache_dir={cache}",
            f"hydra.run.dir={run_dir}"]


def run_ok(cmd: list[str], with_log: bool = False, fresh: bool = False):
    """The run's metrics.json (and its console output when with_log); `fresh`: in an interpreter of its own."""
    out = (subprocess.run if fresh else launch.run)(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(next(a for a in cmd if a.startswith("hydra.run.dir=")).split("=", 1)[1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return (metrics, out.stdout + out.stderr) if with_log else metrics


def last_epoch(ckpt: Path) -> int:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):  # not written yet
        return -1


def test_run_killed_mid_training_resumes_to_the_uninterrupted_metrics(tmp_path, synthetic_root):
    # dropout, shuffling and augmentation all draw random numbers: equal metrics need the RNG states resumed too
    args = ["experiment=segmentation", "model.augment=true", "trainer.max_epochs=4", "trainer.deterministic=true",
            "data.batch_size=4", "trainer.limit_train_batches=3", "trainer.limit_val_batches=4", "data.image_size=64",
            "~logger"]
    reference = run_ok(cli("voc_dl.train", tmp_path / "reference", synthetic_root, tmp_path / "cache", *args))

    killed = tmp_path / "killed"
    cmd = cli("voc_dl.train", killed, synthetic_root, tmp_path / "cache", *args)
    proc = launch.popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while last_epoch(killed / "checkpoints" / "last.ckpt") < 1:  # two epochs done, the third under way
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((killed / "metrics.json").read_text())["status"] == "running", "killed before the end"

    # in an interpreter of its own, as a user's next command: another string-hash seed than the reference's
    resumed, log = run_ok([*cmd, "ckpt_path=last"], with_log=True, fresh=True)
    # a deterministic run restarted from scratch would match too: the resume must really start from last.ckpt
    assert f"Restored all states from the checkpoint at {killed / 'checkpoints' / 'last.ckpt'}" in log
    assert resumed["status"] == "ok" and resumed["epochs"] == reference["epochs"] == 4
    assert resumed["best_epoch"] == reference["best_epoch"]
    # deterministic CPU kernels: the tolerance is zero
    assert resumed["val"] == reference["val"]
    assert (killed / "history.csv").read_text() == (tmp_path / "reference" / "history.csv").read_text()


@pytest.mark.slow
def test_resume_without_rng_states_would_differ(tmp_path, synthetic_root):
    """The RNG callback is what makes the resume exact: without it the same kill gives other metrics."""
    args = ["experiment=segmentation", "model.augment=true", "trainer.deterministic=true", "data.batch_size=4",
            "~logger"]
    reference = run_ok(cli("voc_dl.train", tmp_path / "reference", synthetic_root, tmp_path / "cache", *args,
                           "trainer.max_epochs=3"))
    # a clean stop after two epochs, then a third one resumed with the RNG callback switched off
    part = cli("voc_dl.train", tmp_path / "part", synthetic_root, tmp_path / "cache", *args, "callbacks.rng_state=null")
    run_ok([*part, "trainer.max_epochs=2"])
    resumed = run_ok([*part, "trainer.max_epochs=3", "ckpt_path=last"])
    assert resumed["epochs"] == 3
    assert resumed["val"] != reference["val"]


# segmentation by default (the only check of DDP parity): its batch-pooled Dice is the metric most easily broken by
# an unsynced rank
@pytest.mark.parametrize("experiment", ["segmentation", pytest.param("autoencoder", marks=pytest.mark.slow),
                                        pytest.param("classification", marks=pytest.mark.slow)])
def test_ddp_cpu_trains_and_its_metrics_equal_a_single_process_evaluation(tmp_path, synthetic_root, experiment):
    extra = {"autoencoder": ["model.code_size=8192"], "classification": ["data.val_to_train=0"]}.get(experiment, [])
    ddp = run_ok(cli("voc_dl.train", tmp_path / "ddp", synthetic_root, tmp_path / "cache", f"experiment={experiment}",
                     "trainer=ddp_cpu", "debug=tiny", "trainer.limit_val_batches=1.0", "data.batch_size=1",
                     "data.image_size=64", "~logger", *extra))
    assert ddp["status"] == "ok" and ddp["epochs"] == 2
    n_val = ddp["data"]["val_images"]
    assert n_val % 2 == 0, "an odd split would make DistributedSampler repeat a sample"
    # Batches of one image: the loss of a batch is then a per-image value whatever images the sampler
    # groups (DistributedSampler deals them out alternately), so the single-process numbers are the target.
    # The final validation ran on 2 processes, each on half of the split; one process on all of it with
    # the same checkpoint must give the same numbers, which only holds if every metric syncs across ranks.
    single = run_ok(cli("voc_dl.eval", tmp_path / "eval", synthetic_root, tmp_path / "cache",
                        f"ckpt_path={ddp['best_ckpt']}", "data.batch_size=1"))
    assert set(single["val"]) == set(ddp["val"])
    for key, value in single["val"].items():
        assert ddp["val"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    worst = max(abs(ddp["val"][k] - v) / max(abs(v), 1e-12) for k, v in single["val"].items())
    print(f"{experiment}: {n_val} val images, largest relative DDP/single difference {worst:.1e}")


def test_a_failing_job_does_not_take_the_sweep_down(tmp_path, synthetic_root):
    """A bad value and a missing file fail their own jobs only; the report lists them as failed."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "voc_dl.train", "-m", "experiment=classification", "model=pretrained",
           "model.net.weights=null,missing_weights.pth", "model.optimizer.lr=0.001,-1", "debug=fast",
           "data.batch_size=2", f"data.root={synthetic_root}",
           f"data.cache_dir={tmp_path}/cache", f"hydra.sweep.dir={sweep}", "~logger"]
    out = launch.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert len(results) == 4
    ok = [name for name, r in results.items() if r["status"] == "ok"]
    assert len(ok) == 1 and "model.net.weights=null,model.optimizer.lr=0.001," in ok[0]
    missing = next(r for name, r in results.items() if "weights=missing_weights.pth,model.optimizer.lr=0.001," in name)
    assert missing["status"] == "failed" and "model.net.weights=missing_weights.pth: no such file" in missing["error"]
    for name, r in results.items():
        if "lr=-1" in name:  # refused at start-up, before the weights or the data are touched
            assert r["status"] == "failed" and "model.optimizer.lr=-1 must be a positive number" in r["error"]

    from voc_dl.report.__main__ import build

    build(sweep, tmp_path / "report")
    table2 = (tmp_path / "report" / "table2.md").read_text()
    assert table2.count("failed") == 3 and "no such file" in table2


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(compose_cfg, tmp_path, monkeypatch):
    from voc_dl.tasks.segmentation import SegmentationTask
    from voc_dl.train import train

    loss = SegmentationTask.loss

    def poisoned(self, logits, mask):  # fine in epoch 0, NaN from epoch 1 on
        value = loss(self, logits, mask)
        return value * float("nan") if self.training and self.current_epoch >= 1 else value

    monkeypatch.setattr(SegmentationTask, "loss", poisoned)
    cfg = compose_cfg(["experiment=segmentation", "debug=tiny", "trainer.max_epochs=3", "data.batch_size=4"])
    with pytest.raises(FloatingPointError, match=r"val/loss is nan at epoch 1: training diverged.*last.ckpt"):
        train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["status"] == "failed" and "DivergedError" in saved["error"]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 0, "the NaN epoch wrote no checkpoint"
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_slurm_launcher_composes_and_may_run_ddp_inside_each_job(compose_cfg):
    from voc_dl.train import check_no_nested_launch

    cfg = compose_cfg(["experiment=segmentation", "trainer=ddp", "hydra/launcher=slurm", "hydra.mode=MULTIRUN"])
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert cfg.hydra.launcher.timeout_min > 0 and cfg.hydra.launcher.gpus_per_node >= 1
    check_no_nested_launch(cfg)  # one process tree per SLURM job: DDP inside it is safe


@pytest.mark.slow  # a launcher plugin's sweep: the README's sweep command is the default check of sweeps
def test_a_sweep_runs_through_submitit(tmp_path, synthetic_root):
    """The SLURM launcher's engine (submitit), run with its local executor: jobs as separate processes."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "voc_dl.train", "-m", "hydra/launcher=submitit_local", "experiment=segmentation",
           "model.loss=bce,dice", "debug=fast", "data.batch_size=2", f"data.root={synthetic_root}",
           f"data.cache_dir={tmp_path}/cache",
           f"hydra.sweep.dir={sweep}", "~logger"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert sorted(o for r in results for o in r["overrides"] if o.startswith("model.loss=")) == [
        "model.loss=bce", "model.loss=dice"]
