"""Hyperparameter search (conf/hparams_search, voc_dl/search.py): configs that compose, a study that resumes and
survives failing trials, pruning, and the report's search section.

Optuna is imported inside the tests: a module-level import would cost every pytest-xdist worker its import time
when it collects this file; the group keeps the tests on one worker.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf
from pytorch_lightning.trainer.states import TrainerFn, TrainerState

from tests.conftest import CONF, ROOT
from voc_dl.config import validate
from voc_dl.report import search as search_report
from voc_dl.report.runs import collect

pytestmark = pytest.mark.xdist_group("search")

SEARCHES = {"autoencoder_improved": "autoencoder_improved", "deep_cnn": "classification",
            "segmentation_improved": "segmentation_improved"}  # search -> the experiment it tunes


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_tunes_its_experiment_toward_its_monitor_in_a_folder_of_its_own(compose_cfg, search):
    experiment = OmegaConf.load(CONF / "experiment" / f"{SEARCHES[search]}.yaml")
    cfg = compose_cfg([f"hparams_search={search}"])
    assert cfg.task_name == experiment.task_name
    assert cfg.hydra.mode == RunMode.MULTIRUN  # no -m needed
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == cfg.monitor.mode == experiment.monitor.mode  # interpolated, not restated
    assert set(sweeper.params) and all(OmegaConf.select(cfg, key) is not None for key in sweeper.params), \
        "every searched key is a key of the experiment's config"
    # named by search and data, not by time: the same command finds the same folder and study again
    assert sweeper.study_name == f"{search}-synthetic"
    assert cfg.hydra.sweep.dir == f"{cfg.paths.output_dir}/searches/{search}-synthetic"
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/study.db"
    validate(cfg)
    pruning = OmegaConf.to_container(cfg.callbacks.search_pruning, resolve=True)  # what the trial's run builds
    assert pruning == {**pruning, "monitor": cfg.monitor.metric, "trial": 0, "enabled": False,
                       "storage": sweeper.storage, "study_name": sweeper.study_name}


def test_every_search_is_covered():
    assert set(SEARCHES) == {p.stem for p in (CONF / "hparams_search").glob("*.yaml") if not p.stem.startswith("_")}


def sweeper_on(folder: Path, mode: str = "min", seed: int = 3):
    """The search's sweeper, as Hydra builds it from conf/hydra/sweeper/search.yaml, on a folder."""
    import optuna

    from voc_dl.search import ResumableOptunaSweeper

    sweeper = ResumableOptunaSweeper(sampler=functools.partial(optuna.samplers.TPESampler, seed=seed),
                                     direction=mode, storage=f"sqlite:///{folder / 'study.db'}", study_name="s",
                                     n_trials=4)
    sweeper.config = OmegaConf.create({"monitor": {"metric": "val/dice", "mode": mode}})
    return sweeper


def space() -> dict:
    """A search space as Hydra's Optuna sweeper parses `hydra.sweeper.params`."""
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution

    return {"model.optimizer.lr": LogUniformDistribution(1e-4, 1e-2),
            "data.batch_size": CategoricalDistribution([4, 8])}


def ask(study):
    trial = study.ask()
    for name, distribution in space().items():
        trial._suggest(name, distribution)
    return trial


def opened(sweeper, folder: Path, fixed: dict):
    sweeper.open(space(), fixed, folder)
    return sweeper.load()


def test_a_resumed_study_draws_new_points_and_a_folder_refuses_another_search(tmp_path):
    import optuna

    from voc_dl.search import SearchError, one_command_per_search

    study = opened(sweeper_on(tmp_path), tmp_path, {"dataset": "synthetic"})
    first = [ask(study) for _ in range(2)]
    for trial in first:
        study.tell(trial, 0.5)
    # on another machine: where and how the trials run is not what the search is about
    resumed = opened(sweeper_on(tmp_path), tmp_path, {"dataset": "synthetic", "threads": "1",
                                                      "trainer.accelerator": "gpu"})
    assert len(resumed.trials) == 2
    # the configured seed again would draw trial 0's point again; the resumed sampler moves on
    fresh = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    assert ask(fresh).params == first[0].params
    assert ask(resumed).params not in [t.params for t in first]

    with pytest.raises(SearchError, match=r"dataset: synthetic -> shared_voc.*hydra\.sweeper\.study_name"):
        sweeper_on(tmp_path).open(space(), {"dataset": "shared_voc"}, tmp_path)
    with pytest.raises(SearchError, match="search space or direction"):
        sweeper_on(tmp_path, mode="max").open(space(), {"dataset": "synthetic"}, tmp_path)
    with one_command_per_search(tmp_path), pytest.raises(SearchError, match="another command is running"):
        with one_command_per_search(tmp_path):
            pass


def job(run_dir: Path, status: JobStatus, value, metrics: dict | None) -> JobReturn:
    """What Hydra's launcher hands back for a trial, after voc_dl.train wrote `metrics` in its folder."""
    if metrics is not None:
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    ret = JobReturn(hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}}))
    ret.status, ret.return_value = status, value
    return ret


def run_search(folder: Path, outcomes: list[tuple], mode: str = "max"):
    """Tell a study trial outcomes as the sweeper tells real ones: (status, value, metrics.json or None, pruned)."""
    import optuna

    from voc_dl.search import PRUNED_AT

    folder.mkdir(parents=True, exist_ok=True)
    sweeper = sweeper_on(folder, mode)
    sweeper.open(space(), {"hparams_search": "segmentation_improved"}, folder)
    for status, value, metrics, pruned in outcomes:
        number = ask(sweeper.load()).number
        if pruned:  # as the trial's Pruning callback does, with a Study object of its own
            trial = sweeper.load().trials[number]
            callback_side = optuna.trial.Trial(sweeper.load(), trial._trial_id)
            callback_side.report(0.25, 0)
            callback_side.set_user_attr(PRUNED_AT, 0)
        sweeper.tell(sweeper.load(), number, job(folder / f"trial_{number}", status, value, metrics))
    return sweeper.load()


def ok(value: float, epochs: int = 3) -> dict:
    return {"status": "ok", "val": {"val/dice": value}, "epochs": epochs, "wall_time_s": 2.0}


def test_failed_nan_and_pruned_trials_are_recorded_in_the_study_and_their_run_folders(tmp_path):
    failed = {"status": "failed", "error": "ValueError: dropout probability has to be between 0 and 1"}
    study = run_search(tmp_path, [
        (JobStatus.COMPLETED, 0.5, ok(0.5), False),
        (JobStatus.COMPLETED, None, failed, False),  # voc_dl.train's failed job returns None
        (JobStatus.COMPLETED, float("nan"), ok(float("nan")), False),
        (JobStatus.FAILED, RuntimeError("boom"), None, False),  # raised past the app, no metrics.json
        (JobStatus.COMPLETED, 0.4, ok(0.4, epochs=1), True),
    ])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL", "PRUNED"]
    assert study.trials[0].value == 0.5 and study.trials[4].value == 0.25  # pruned: its last reported value
    written = [json.loads((tmp_path / f"trial_{n}" / "metrics.json").read_text()) for n in range(5)]
    assert [m["search"]["state"] for m in written] == [t.state.name for t in study.trials]
    assert [m["status"] for m in written] == ["ok", "failed", "failed", "failed", "ok"]
    assert written[1]["error"] == failed["error"]  # the run's own error is kept
    assert written[2]["error"] == "the monitored metric is nan"
    assert written[3]["error"] == "RuntimeError: boom"

    # the history figure shows every trial: Optuna's plot has the completed one, voc-dl adds the others
    import matplotlib.pyplot as plt

    with plt.rc_context():  # Optuna's style stays in this figure
        ax = search_report.history_axes(study)
    plt.close(ax.figure)
    drawn = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert drawn["Pruned (last value)"] == [[4, 0.25]]
    assert [x for x, _ in drawn["Failed"]] == [1, 2, 3]
    assert ax.get_xlim() == (-0.5, 4.5)


class StubTrainer:
    """The trainer attributes a callback reads at the end of a validation."""

    def __init__(self, epoch: int, value: float):
        self.current_epoch, self.callback_metrics = epoch, {"val/loss": torch.tensor(value)}
        self.sanity_checking, self.is_global_zero, self.should_stop = False, True, False
        self.state = TrainerState(fn=TrainerFn.FITTING)
        self.strategy = type("Strategy", (), {"broadcast": staticmethod(lambda obj, src=0: obj)})()


def test_pruning_stops_a_trial_worse_than_the_median_of_earlier_ones_at_the_same_epoch(tmp_path):
    import optuna

    from voc_dl.search import PRUNED_AT, Pruning

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    for loss in (1.0, 2.0, 3.0):  # three finished trials: median 2.0 at epoch 1
        trial = study.ask()
        trial.report(loss, 1)
        study.tell(trial, loss)

    def run(epoch: int, loss: float, enabled: bool = True, fn: TrainerFn = TrainerFn.FITTING):
        number = study.ask().number
        callback = Pruning(enabled=enabled, storage=storage, study_name="s", trial=number, monitor="val/loss",
                           pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
        trainer = StubTrainer(epoch, loss)
        trainer.state.fn = fn
        callback.on_validation_end(trainer, None)
        return trainer, optuna.load_study(study_name="s", storage=storage).trials[number]  # as stored

    trainer, trial = run(1, 2.5)
    assert trainer.should_stop and trial.user_attrs[PRUNED_AT] == 1 and trial.intermediate_values == {1: 2.5}
    trainer, trial = run(1, 1.5)
    assert not trainer.should_stop and PRUNED_AT not in trial.user_attrs and trial.intermediate_values == {1: 1.5}
    trainer, trial = run(0, 9.0)  # within the warm-up epochs
    assert not trainer.should_stop and trial.intermediate_values == {0: 9.0}
    trainer, trial = run(1, 9.0, enabled=False)
    assert not trainer.should_stop and trial.intermediate_values == {}
    trainer, trial = run(1, 9.0, fn=TrainerFn.VALIDATING)  # the scoring of best.ckpt after training
    assert not trainer.should_stop and trial.intermediate_values == {}


def test_the_report_tables_every_trial_and_draws_optunas_plots(tmp_path):
    folder = tmp_path / "runs" / "searches" / "unet"
    study = run_search(folder, [(JobStatus.COMPLETED, v, ok(v), False) for v in (0.61, 0.7, 0.65)]
                       + [(JobStatus.COMPLETED, None, {"status": "failed", "error": "ValueError: bad"}, False)])
    out = tmp_path / "report"
    written = search_report.report(collect(tmp_path / "runs"), out)
    rows = list(__import__("csv").DictReader(open(out / "search.csv")))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3]
    assert [r["best"] for r in rows] == ["", "yes", "", ""]  # val/dice is maximised
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 + ["FAIL: ValueError: bad"]
    assert {r["metric"] for r in rows} == {"val/dice (maximize)"}
    assert [float(r["value"]) for r in rows[:3]] == [0.61, 0.7, 0.65] and rows[3]["value"] == ""
    for r, t in zip(rows, study.trials, strict=True):
        assert float(r["model.optimizer.lr"]) == t.params["model.optimizer.lr"]
        assert Path(r["run"]) == (folder / f"trial_{t.number}").resolve()
    assert [p.name for p in written["figures"]] == ["search-s-history.png", "search-s-importance.png"]
    assert set(search_report.figures(out)) == {"search-s-history.png", "search-s-importance.png"}

    # one completed trial cannot rank parameters: no importance plot, a note says why
    single = tmp_path / "single"
    run_search(single / "searches" / "one", [(JobStatus.COMPLETED, 0.5, ok(0.5), False)])
    written = search_report.report(collect(single), out)
    assert [p.name for p in written["figures"]] == ["search-s-history.png"]
    assert "no importance plot" in written["table"] and not (out / "search-s-importance.png").exists()


def search_cmd(tmp_path: Path, synthetic_root: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "voc_dl.train", "hparams_search=deep_cnn", *overrides,
            f"data.root={synthetic_root}", f"data.cache_dir={tmp_path / 'cache'}",
            f"paths.output_dir={tmp_path / 'outputs'}"]


def trial_state(study_db: Path, number: int) -> str | None:
    import optuna

    try:
        study = optuna.load_study(study_name="deep_cnn-synthetic", storage=f"sqlite:///{study_db}")
    except Exception:  # not created yet
        return None
    trials = study.get_trials(deepcopy=False)
    return trials[number].state.name if len(trials) > number else None


@pytest.mark.slow
def test_a_killed_search_resumes_to_n_trials_and_a_failing_trial_does_not_stop_it(tmp_path, synthetic_root):
    # dropout 1.5 makes nn.Dropout raise: seed 15 draws it for trial 0 only (0.25 for trials 1 and 2)
    cmd = search_cmd(tmp_path, synthetic_root, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=15",
                     "model.net.dropout=choice(0.25,1.5)", "debug=tiny", "trainer.max_epochs=4",
                     "data.batch_size=4", "data.image_size=32", "~logger")
    folder = tmp_path / "outputs" / "searches" / "deep_cnn-synthetic"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (folder / "trial_1" / "checkpoints" / "last.ckpt").is_file():  # trial 2 is training
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert trial_state(folder / "study.db", 1) == "RUNNING", "killed during trial 2"
    assert trial_state(folder / "study.db", 2) is None

    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "1 of 3 trials done" in log
    # the interrupted trial goes on from its last checkpoint, in its own folder
    assert f"Restored all states from the checkpoint at {folder / 'trial_1' / 'checkpoints' / 'last.ckpt'}" in log

    import optuna

    study = optuna.load_study(study_name="deep_cnn-synthetic", storage=f"sqlite:///{folder / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2]
    for t in trials:
        metrics = json.loads((folder / f"trial_{t.number}" / "metrics.json").read_text())
        assert metrics["search"] == {"study": "deep_cnn-synthetic", "trial": t.number, "state": t.state.name}
        if t.params["model.net.dropout"] == 1.5:
            assert t.state.name == "FAIL" and t.value is None
            assert metrics["status"] == "failed" and "dropout probability" in metrics["error"]
        else:
            assert t.state.name == "COMPLETE"
            assert metrics["status"] == "ok" and metrics["epochs"] == 4
            assert t.value == pytest.approx(metrics["val"]["val/loss"], rel=1e-6)
    assert [t.state.name for t in trials].count("FAIL") == 1, "one trial failed and the search went on"

    # the same folder with other overrides would mix two searches: one line says what changed and what to do
    other = subprocess.run([*cmd, "trainer.max_epochs=5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1] == (
        f"voc-dl: error: {folder} holds search 'deep_cnn-synthetic' made with other settings (overrides "
        "trainer.max_epochs: 4 -> 5). Fix: re-run its own command to continue it, or name a new search with "
        "hydra.sweeper.study_name=<name>")
