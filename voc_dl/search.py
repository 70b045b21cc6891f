"""Hyperparameter search (conf/hparams_search): Hydra's Optuna sweeper, resumable and failure-tolerant.

- The Optuna study lives in SQLite in the search folder, and running the same command again continues it:
  finished trials are kept, a trial that a kill left running is trained again in its own folder (from its
  `last.ckpt` when it wrote one), and `n_trials` counts every trial of the study, so only the missing ones run.
- A trial that raises, or returns None (a failed job of `voc_dl.train`) or NaN, is FAIL in the study and
  `failed` in its run folder's metrics.json; the search goes on.
- With `hydra.sweeper.pruning=true`, `Pruning` (a callback in each trial's run) reports the monitored metric
  per epoch to the same study and stops a trial that the pruner rejects; the search records it as PRUNED.

Each trial's run folder is named by its trial number (`hydra.job.num` is the trial number), which is how
a resumed search and the pruning callback find a trial's folder and study entry.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf, open_dict
from optuna.distributions import distribution_to_json
from optuna.trial import TrialState
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn

from voc_dl import cli
from voc_dl.atomic import atomic_write_text
from voc_dl.config import result_neutral
from voc_dl.run_files import METRICS, last_ckpt

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # Optuna's schema set-up lines tell a user nothing

DIRECTIONS = {"min": "minimize", "max": "maximize"}  # monitor.mode -> Optuna's direction
PRUNED_AT = "pruned_at_epoch"  # trial attribute the callback sets when it stops a run
RUN_DIR = "run_dir"  # trial attribute: the trial's run folder, relative to the search folder
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)  # what n_trials counts


class SearchError(ValueError):
    """A search that cannot start; the message names the folder and the fix."""


class ResumableOptunaSweeper(OptunaSweeperImpl):
    """Hydra's OptunaSweeperImpl with its own trial loop (see the module's docstring); search space, fixed
    overrides and samplers are Hydra's (`hydra.sweeper.params`, `interval(...)`, `choice(...)`)."""

    def __init__(self, sampler, direction: str, storage: str, study_name: str, n_trials: int, n_jobs: int = 1,
                 params=None, pruning: bool = False, pruner=None):
        super().__init__(sampler, DIRECTIONS.get(direction, direction), storage, study_name, n_trials, n_jobs,
                         max_failure_rate=1.0, search_space=None, custom_search_space=None, params=params)
        # pruning and pruner are read by the trials' Pruning callback (conf/hparams_search/_search.yaml)

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
        for name in fixed:  # a value given on the command line is not searched
            space.pop(name, None)
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        with cli.one_line_errors(), one_command_per_search(folder):
            self.open(space, fixed, folder)
            try:
                # trials a kill left running (one command drives a study: the lock says no other does) run again
                study = self.load()
                for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    log.info("trial %d was interrupted: running it again", frozen.number)
                    self.run([optuna.trial.Trial(study, frozen._trial_id)],
                             [[f"{k}={v}" for k, v in {**frozen.params, **fixed}.items()]], folder)
                while (to_go := self.n_trials - len(self.load().get_trials(deepcopy=False, states=FINISHED))) > 0:
                    study = self.load()
                    trials = [study.ask() for _ in range(min(to_go, self.n_jobs))]
                    self.run(trials, self._configure_trials(trials, space, fixed), folder)
            except (KeyboardInterrupt, SystemExit):
                log.warning("search interrupted: run the same command again to continue it (%s)", folder)
                raise
            self.summarise(folder)

    def load(self) -> optuna.Study:
        """The study as its storage holds it now. A Study object serves the trials it created from its own
        cache, which misses what the trials' runs wrote since (pruning): each step takes a fresh one."""
        return optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler)

    def open(self, space: dict, fixed: dict, folder: Path) -> None:
        """Create this folder's study or check that it holds this search; seed the sampler."""
        try:  # loaded first: Optuna would refuse a changed direction with an error of its own
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:  # a new search
            study = optuna.create_study(study_name=self.study_name, storage=self.storage,
                                        directions=self._get_directions())
        # where and on what the trials run (threads, devices, cache) may change between sessions of one search
        definition = {"metric": str(self.config.monitor.metric), "directions": self._get_directions(),
                      "fixed": {k: str(v) for k, v in fixed.items() if not result_neutral(k)},
                      "space": {k: json.loads(distribution_to_json(d)) for k, d in sorted(space.items())}}
        known = study.user_attrs.get("search")
        if known is None:
            study.set_user_attr("search", definition)
            known = definition
        # a study's stored definition may hold result-neutral keys: they are not part of what it compares
        known["fixed"] = {k: v for k, v in known["fixed"].items() if not result_neutral(k)}
        if known != definition:
            changed = sorted(k for k in set(known["fixed"]) | set(definition["fixed"])
                             if known["fixed"].get(k) != definition["fixed"].get(k))
            what = ("overrides " + ", ".join(f"{k}: {known['fixed'].get(k)} -> {definition['fixed'].get(k)}"
                                             for k in changed)) if changed else "search space or direction"
            raise SearchError(
                f"{folder} holds search '{self.study_name}' made with other settings ({what}). Fix: re-run its "
                f"own command to continue it, or name a new search with hydra.sweeper.study_name=<name>")
        done = study.get_trials(deepcopy=False, states=FINISHED)
        log.info("search '%s' in %s: %d of %d trials done, direction %s", study.study_name, folder, len(done),
                 self.n_trials, "/".join(self._get_directions()))
        # a resumed search must not draw the points it drew before: the seed moves on with the study's size
        if callable(self.sampler) and not isinstance(self.sampler, optuna.samplers.BaseSampler):  # a partial
            seed = self.sampler.keywords.get("seed")
            self.sampler = self.sampler(**({"seed": seed + len(study.trials)} if seed is not None else {}))

    def run(self, trials: Sequence[optuna.trial.Trial], overrides: Sequence[Sequence[str]], folder: Path) -> None:
        """Train trials (consecutive numbers) as jobs numbered like them, then tell the study each result."""
        jobs = []
        for trial, job in zip(trials, overrides, strict=True):
            run_dir = self.run_dir(trial.number)
            trial.set_user_attr(RUN_DIR, str(run_dir.relative_to(folder)))
            resume = last_ckpt(run_dir).is_file()  # an interrupted trial goes on from there
            jobs.append([*job, *(["ckpt_path=last"] if resume else [])])
        returns = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
        study = self.load()
        for trial, ret in zip(trials, returns, strict=True):
            self.tell(study, trial.number, ret)

    def run_dir(self, number: int) -> Path:
        """The run folder Hydra gives job `number` (hydra.sweep.dir / hydra.sweep.subdir)."""
        cfg = copy.deepcopy(self.config)
        with open_dict(cfg):
            cfg.hydra.job.num = number
        return Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)

    def tell(self, study: optuna.Study, number: int, ret: JobReturn) -> None:
        value, error = job_value(ret)
        pruned = PRUNED_AT in study.trials[number].user_attrs
        state = TrialState.FAIL if error else TrialState.PRUNED if pruned else TrialState.COMPLETE
        run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else self.run_dir(number)
        record_trial(run_dir, study.study_name, number, state, error)
        study.tell(number, state=state, values=[value] if state == TrialState.COMPLETE else None)
        log.info("trial %d: %s, %s", number, state.name,
                 error or (f"stopped after epoch {study.trials[number].user_attrs[PRUNED_AT]}" if pruned
                           else f"value {value}"))

    def summarise(self, folder: Path) -> None:
        """optimization_results.yaml, as Hydra's Optuna sweeper writes it: the best trial's params and value."""
        study = self.load()
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            log.warning("search '%s': no trial completed; see the runs' metrics.json in %s", study.study_name, folder)
            return
        best = study.best_trial
        results = {"name": "optuna", "study": study.study_name, "best_trial": best.number,
                   "best_params": best.params, "best_value": best.value, "best_run": best.user_attrs.get(RUN_DIR)}
        atomic_write_text(folder / "optimization_results.yaml", OmegaConf.to_yaml(results))
        log.info("best: trial %d, value %s, %s", best.number, best.value, best.params)


def job_value(ret: JobReturn) -> tuple[float | None, str | None]:
    """The job's monitored value, or why it has none."""
    if ret.status == JobStatus.FAILED:
        return None, f"{type(ret._return_value).__name__}: {ret._return_value}"
    if ret.return_value is None:  # voc_dl.train's failed job in a multirun
        return None, "the run failed (its metrics.json has the error)"
    try:
        value = float(ret.return_value)
    except (TypeError, ValueError):
        return None, f"the run returned {ret.return_value!r}, not a number"
    if not math.isfinite(value):
        return None, f"the monitored metric is {value}"
    return value, None


def record_trial(run_dir: Path, study_name: str, number: int, state: TrialState, error: str | None) -> None:
    """The trial's study, number and state in its metrics.json; a run that finished with a NaN metric is failed."""
    path = run_dir / METRICS
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # a job that failed before writing one
        metrics = {"status": "failed", "error": error, "run_dir": str(run_dir)}
    if error and metrics.get("status") == "ok":  # it trained to the end, but to a NaN metric
        metrics.update(status="failed", error=error)
    metrics["search"] = {"study": study_name, "trial": number, "state": state.name}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(metrics, indent=2))


@contextlib.contextmanager
def one_command_per_search(folder: Path):
    """Hold the search folder's lock: a second command on the same study would take its running trials for
    interrupted ones. The lock goes with the process, however it ends."""
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchError(f"{folder}: another command is running this search. Fix: wait for it, or name a "
                              "new search with hydra.sweeper.study_name=<name>") from None
        yield


class Pruning(Callback):
    """Optuna pruning from inside a trial's run: report the monitored metric after every validation to the
    trial (`hydra.job.num` is its number) in the search's storage, and stop training when the pruner says so.

    Stopping is Lightning's own (`trainer.should_stop`, as early stopping does), so the run ends like any
    other: its best checkpoint is scored and recorded; the search then marks the trial PRUNED.
    """

    def __init__(self, enabled: bool, storage: str, study_name: str, trial: int, monitor: str, pruner=None):
        self.enabled, self.storage, self.study_name, self.number = enabled, storage, study_name, int(trial)
        self.monitor, self.pruner = monitor, pruner
        self._trial: optuna.trial.Trial | None = None

    def trial(self) -> optuna.trial.Trial:
        if self._trial is None:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer, pl_module) -> None:
        # the epochs' validations only: not the sanity check, nor the scoring of best.ckpt after training
        if not self.enabled or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        prune = False
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.is_global_zero and value is not None:
            trial, epoch = self.trial(), trainer.current_epoch
            trial.report(float(value), epoch)
            prune = trial.should_prune()
            if prune:
                trial.set_user_attr(PRUNED_AT, epoch)
                log.info("trial %d pruned at epoch %d: %s = %.4g", self.number, epoch, self.monitor, float(value))
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
