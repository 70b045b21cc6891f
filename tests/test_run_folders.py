"""Run folders: two runs never share one (started in the same second, sweep jobs of one name, a second live
process), and resume=true carries a command on where it stopped: it finds its folder again, skips what
finished, continues what was interrupted and trains again what failed."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf, read_write

from tests.conftest import ROOT
from voc_dl import run_folders
from voc_dl.config import job_config
from voc_dl.run_folders import RunFolderError

STAMP = "2026-01-01_00-00-00"


@pytest.fixture
def started_together(compose_cfg):
    """Compose a command as one launched in the same second as the others: Hydra's `now` pinned to one second."""
    def compose(overrides):
        cfg = compose_cfg(overrides)  # composing registers Hydra's own `now` again
        OmegaConf.register_new_resolver("now", lambda pattern: STAMP, replace=True, use_cache=True)
        return cfg

    yield compose
    setup_globals()


def test_runs_started_in_the_same_second_get_folders_of_their_own(started_together, tmp_path):
    runs = [started_together(["experiment=segmentation"]).hydra.run.dir for _ in range(3)]
    base = tmp_path / "outputs" / "runs" / "segmentation"
    assert runs == [str(base / STAMP), str(base / f"{STAMP}_1"), str(base / f"{STAMP}_2")]
    assert all(Path(r).is_dir() for r in runs)
    sweeps = [started_together(["experiment=segmentation", "hydra.mode=MULTIRUN"]).hydra.sweep.dir for _ in range(2)]
    base = tmp_path / "outputs" / "multiruns" / "segmentation"
    assert sweeps == [str(base / STAMP), str(base / f"{STAMP}_1")]


def _new_folder(base: Path) -> str:
    return str(run_folders.new_folder(base, STAMP))


def test_folders_are_created_atomically_by_processes_racing_for_one_name(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        got = pool.map(_new_folder, [tmp_path] * 12)
    assert len(set(got)) == 12 and {Path(g).name for g in got} == {STAMP} | {f"{STAMP}_{i}" for i in range(1, 12)}


def test_a_sweep_job_never_writes_into_a_folder_another_job_holds(compose_cfg, tmp_path):
    sweep = tmp_path / "sweep"

    def claim(launch: str, num: int, cfg) -> str:  # what hydra.sweep.subdir resolves to, for a job named "defaults"
        return run_folders.job_folder(str(sweep), "defaults", num, launch, cfg)

    # two jobs whose overrides differ only in a key left out of folder names
    short, long = (compose_cfg(["experiment=segmentation", f"trainer.max_epochs={n}"]) for n in (2, 4))
    assert claim("A", 0, short) == "defaults"
    assert claim("A", 1, long) == "defaults_1"
    assert claim("A", 0, short) == "defaults", "resolved again: the job's own folder"
    for name, cfg in (("defaults", short), ("defaults_1", long)):  # what their runs record
        (sweep / name / "metrics.json").write_text(json.dumps({"status": "ok", "job_config": job_config(cfg)}))
    # the same sweep launched again, its jobs in another order: each finds its own run
    assert (claim("B", 1, long), claim("B", 0, short)) == ("defaults_1", "defaults")
    # a job of another config under the same name gets a folder of its own
    assert claim("C", 0, compose_cfg(["experiment=segmentation", "model.loss=bce"])) == "defaults_2"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["defaults", "defaults_1", "defaults_2"]


def test_each_command_is_a_launch_whose_jobs_know_each_other(compose_cfg, tmp_path, monkeypatch):
    """voc_dl.cli.run gives every command a launch id of its own; the jobs of its sweep, in this process or in the
    processes its launcher starts (which inherit the environment), claim their folders under it, so two jobs named
    alike know each other as siblings."""
    from voc_dl import cli
    from voc_dl.cli import LAUNCH_ENV

    monkeypatch.setenv(LAUNCH_ENV, "")
    ids = []
    for _ in range(2):
        monkeypatch.setattr(sys, "argv", ["voc_dl.train", "-m", "model.loss=bce,dice"])
        cli.run(lambda: ids.append(os.environ[LAUNCH_ENV]))
    assert ids[0] != ids[1] and all(ids)
    sweep = tmp_path / "sweep"
    jobs = [compose_cfg(["experiment=segmentation", f"trainer.max_epochs={n}", f"hydra.sweep.dir={sweep}"])
            for n in (1, 2)]
    for num, job in enumerate(jobs):
        with read_write(job.hydra):
            job.hydra.job.num = num
    folders = [sweep / job.hydra.sweep.subdir for job in jobs]  # both named by their overrides: "defaults"
    assert [f.name for f in folders] == ["defaults", "defaults_1"]
    assert [json.loads((f / ".claim").read_text()) for f in folders] == [{"launch": ids[1], "job": 0},
                                                                          {"launch": ids[1], "job": 1}]


def test_a_folder_a_live_run_holds_is_refused(tmp_path):
    with run_folders.in_use(tmp_path):
        with pytest.raises(RunFolderError, match=rf"^{tmp_path} is in use by another run \(pid {os.getpid()} on "):
            with run_folders.in_use(tmp_path):
                pass
    with run_folders.in_use(tmp_path):  # free again once the run ends
        pass


def test_resume_finds_the_newest_sweep_of_the_same_command(tmp_path):
    def sweep(name: str, overrides: list[str]) -> None:
        (tmp_path / name).mkdir()
        record = OmegaConf.create({"hydra": {"overrides": {"task": overrides}}})
        OmegaConf.save(record, tmp_path / name / "multirun.yaml")

    command = ["experiment=segmentation", "model.loss=bce,dice"]
    sweep(STAMP, command)
    sweep(f"{STAMP}_2", command[::-1])
    sweep(f"{STAMP}_10", [*command, "resume=true"])  # newer than _2
    sweep("2026-01-02_00-00-00", ["experiment=segmentation"])  # newest, another command
    later = "2026-01-03_00-00-00"
    assert run_folders.sweep_folder(str(tmp_path), later, True, [*command, "resume=true"]) == f"{STAMP}_10"
    assert run_folders.sweep_folder(str(tmp_path), later, False, command) == later, "resume=false: a new sweep"
    assert run_folders.sweep_folder(str(tmp_path), later, True, ["experiment=autoencoder"]) == f"{later}_1"


def test_resume_skips_what_finished_continues_what_stopped_and_trains_again_what_failed(compose_cfg, tmp_path):
    from voc_dl.train import app, train

    command = ["experiment=segmentation", "model.loss=dice", "debug=tiny", "trainer.max_epochs=1", "data.batch_size=4",
               "~logger", "resume=true"]
    composed = compose_cfg(command)
    first = train(copy.deepcopy(composed))
    run = tmp_path / "run"
    recorded = (run / "metrics.json").read_bytes()
    written = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    # the same command again: nothing trains, and a sweeper receives the recorded value
    assert app(copy.deepcopy(composed)) == first["val"]["val/dice"]
    assert (run / "metrics.json").read_bytes() == recorded
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == written

    def plan(status: str = "ok", **changes) -> tuple[str, str | None]:
        """What the same command, with these config values, would do in the folder of a run with this status."""
        (run / "metrics.json").write_text(json.dumps({**json.loads(recorded), "status": status}))
        cfg = copy.deepcopy(composed)
        for key, value in changes.items():
            OmegaConf.update(cfg, key.replace("__", "."), value)
        step = run_folders.plan(cfg, run)
        return step.action, step.ckpt_path

    last = str(run / "checkpoints" / "last.ckpt")
    assert plan() == ("skip", None)
    assert plan(trainer__max_epochs=3) == ("train", last), "the same job trained longer continues"
    assert plan("interrupted") == plan("running") == ("train", last), "running: killed"
    assert plan("failed") == ("train", None)
    assert plan(resume=False) == ("train", None) and plan(ckpt_path="last") == ("train", "last"), "as asked"
    with pytest.raises(RunFolderError, match=r"holds a run of another config \(model.loss: 'dice' -> 'bce'\)\. "
                                             r"Fix: resume=false trains it again"):
        plan(model__loss="bce")
    assert plan("failed", model__loss="bce") == ("train", None), "a failed run of another config is replaced"
    (run / "checkpoints" / "last.ckpt").unlink()
    assert plan("interrupted") == ("train", None), "stopped before its first checkpoint: from scratch"


def test_ctrl_c_during_training_is_recorded_as_interrupted(compose_cfg, tmp_path, monkeypatch):
    """Lightning answers Ctrl-C with sys.exit(1): the run is still interrupted, not failed, so that resume=true
    continues it."""
    from voc_dl.tasks.segmentation import SegmentationTask
    from voc_dl.train import train

    def ctrl_c(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(SegmentationTask, "training_step", ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            train(compose_cfg(["experiment=segmentation", "debug=tiny", "data.batch_size=4", "~logger"]))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["error"].startswith("SystemExit")


def _epoch(ckpt: Path) -> int:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):  # not written yet
        return -1


@pytest.mark.slow  # three processes, three tiny trainings
def test_a_sweep_stopped_with_ctrl_c_and_run_again_trains_only_what_it_had_not_finished(tmp_path, synthetic_root):
    command = [sys.executable, "-m", "voc_dl.train", "-m", "experiment=segmentation", "model.loss=bce,dice",
               "debug=tiny", "trainer.max_epochs=4", "data.batch_size=4", f"data.root={synthetic_root}",
               f"data.cache_dir={tmp_path}/cache", f"paths.output_dir={tmp_path}/outputs", "~logger", "resume=true"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while True:  # job 1 done, job 2 past its first epoch
            second = list((tmp_path / "outputs").glob("multiruns/segmentation/*/*model.loss=dice"))
            if second and _epoch(second[0] / "checkpoints" / "last.ckpt") >= 0:
                break
            assert proc.poll() is None, "the sweep ended before it could be stopped"
            assert time.time() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) != 0
    finally:
        proc.kill()
        proc.wait()
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "segmentation").iterdir()
    first, second = sweep / "data.batch_size=4,model.loss=bce", sweep / "data.batch_size=4,model.loss=dice"
    assert json.loads((first / "metrics.json").read_text())["status"] == "ok"
    assert json.loads((second / "metrics.json").read_text())["status"] == "interrupted"
    recorded = (first / "metrics.json").read_bytes()
    written = {p: p.stat().st_mtime_ns for p in (first / "checkpoints").iterdir()}

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert [p.name for p in (tmp_path / "outputs" / "multiruns" / "segmentation").iterdir()] == [sweep.name]
    assert f"{first} finished before with the same config" in log
    assert (first / "metrics.json").read_bytes() == recorded, "job 1 is not trained again"
    assert {p: p.stat().st_mtime_ns for p in (first / "checkpoints").iterdir()} == written
    assert f"Restored all states from the checkpoint at {second / 'checkpoints' / 'last.ckpt'}" in log
    resumed = json.loads((second / "metrics.json").read_text())
    assert resumed["status"] == "ok" and resumed["epochs"] == 4
    assert [int(line.split(",")[0]) for line in (second / "history.csv").read_text().splitlines()[1:]] == [0, 1, 2, 3]


@pytest.mark.slow  # a launcher plugin's sweep
def test_parallel_jobs_named_alike_get_folders_of_their_own(tmp_path, synthetic_root):
    """Jobs in joblib workers, in a folder given by hydra.sweep.dir, whose overrides differ only in a key left out of
    folder names: each its own folder, and the same command with resume=true skips all of them."""
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "voc_dl.train", "-m", "hydra/launcher=local_parallel", "experiment=segmentation",
               "trainer.max_epochs=1,2", "debug=fast", "data.batch_size=2", f"data.root={synthetic_root}",
               f"data.cache_dir={tmp_path}/cache", f"hydra.sweep.dir={sweep}", "~logger"]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert sorted(runs) == ["data.batch_size=2", "data.batch_size=2_1"]
    assert sorted(r["job_config"]["trainer"]["max_epochs"] for r in runs.values()) == [1, 2]
    again = subprocess.run([*command, "resume=true"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("finished before with the same config") == 2
