"""Run folders: which folder a run or sweep job writes into, and what a job does with what its folder holds.

- Folders named by time (`runs/<task>/<time>`, `multiruns/<task>/<time>`) are created here, atomically: a second
  run started in the same second gets `<time>_1`. A sweep job's folder, named by its overrides, is claimed for
  that job: a sibling of the same sweep with the same name (they differ only in plumbing keys) gets `<name>_1`,
  and so does a job whose name is taken by an earlier run of another config.
- A run holds a lock on its folder while it trains: a second process in the same folder is refused.
- `resume=true`: the same command finds its earlier folder again (the newest run or sweep of the same task with
  the same overrides) and each job carries on from what its folder holds (`plan`).

The folder resolvers run when Hydra resolves `hydra.run.dir` / `hydra.sweep.dir` / `hydra.sweep.subdir`
(conf/hydra/default.yaml), before Hydra writes anything there.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from voc_dl import cli
from voc_dl.atomic import atomic_write_text
from voc_dl.config import differences, job_config, override_key
from voc_dl.run_files import METRICS, last_ckpt

log = logging.getLogger("voc_dl")
CLAIM = ".claim"  # in a sweep job's folder: the launch and job number that write there
LOCK = ".lock"  # in every run folder: held while a run trains there
LENGTH = "trainer.max_epochs"  # the one difference that keeps a job the same job: it trains to another length


class RunFolderError(ValueError):
    """A job that must not run in its folder (taken by a live run, or holding a run of another config)."""


def _resume_key(override: str) -> bool:
    return override_key(override) == "resume"


def same_command(recorded, current) -> bool:
    """Two override lists of the same command: the same overrides in any order, `resume=` aside."""
    def norm(overrides):
        return sorted(str(o) for o in overrides if not _resume_key(o))
    return norm(recorded) == norm(current)


def _by_time(path: Path) -> tuple[str, int]:
    """Sort key of a folder named `<time>` or `<time>_<n>`."""
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", path.name)
    return m.group(1), int(m.group(2) or 0)


def _recorded_overrides(record: Path) -> list[str] | None:
    try:
        cfg = OmegaConf.load(record)
        overrides = cfg.hydra.overrides.task if record.name == "multirun.yaml" else cfg
        return [str(o) for o in overrides]
    except Exception:  # a torn or foreign file: not an earlier run of this command
        return None


def newest_of_command(base: Path, record: str, overrides) -> Path | None:
    """The newest folder under base whose `record` (multirun.yaml of a sweep, .hydra/overrides.yaml of a run)
    holds the same overrides."""
    found = [rec.parent if record == "multirun.yaml" else rec.parent.parent for rec in base.glob(f"*/{record}")
             if (recorded := _recorded_overrides(rec)) is not None and same_command(recorded, overrides)]
    return max(found, key=_by_time) if found else None


def new_folder(base: str | Path, name: str) -> Path:
    """base/name, or base/name_1, base/name_2, ...: the first that did not exist, created by this call (mkdir is
    atomic, so two processes never get the same one)."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for i in itertools.count():
        path = base / (name if i == 0 else f"{name}_{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _found_or_new(base: str, stamp: str, resume, overrides, record: str, what: str) -> Path:
    base = Path(base)
    if resume:
        found = newest_of_command(base, record, overrides)
        if found is not None:
            log.info("resume=true: continuing the %s in %s", what, found)
            return found
        log.info("resume=true: no earlier %s of this command under %s; starting one", what, base)
    return new_folder(base, stamp)


def run_folder(base: str, stamp: str, resume, overrides) -> str:
    """`hydra.run.dir`: a new folder named by time, or with resume=true the newest run of the same command."""
    return str(_found_or_new(base, stamp, resume, overrides, ".hydra/overrides.yaml", "run"))


def sweep_folder(base: str, stamp: str, resume, overrides) -> str:
    """The last part of `hydra.sweep.dir`: a new folder named by time, or with resume=true the newest sweep of the
    same command. Only the name: jobs whose experiment sets another task_name keep their own task's folder."""
    return _found_or_new(base, stamp, resume, overrides, "multirun.yaml", "sweep").name


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def recorded_config(folder: Path) -> dict | None:
    """The job config of the run a folder holds: metrics.json's record, else the .hydra/config.yaml Hydra wrote
    (a job killed before it recorded anything, or a run from before metrics.json held it)."""
    metrics = _read_json(folder / METRICS) or {}
    if "job_config" in metrics:
        return metrics["job_config"]
    try:
        return OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "config.yaml"), resolve=False)
    except Exception:  # nothing readable: the folder tells no config
        return None


def job_folder(sweep_dir: str, name: str, num, launch: str, _root_: DictConfig) -> str:
    """`hydra.sweep.subdir`: the folder of this job, claimed for it (a `.claim` file, under a lock on the sweep
    folder, so parallel jobs decide one at a time).

    In order: the folder this job already claimed (Hydra resolves the name more than once); a folder of an earlier
    launch that holds a run of this job's config; one that holds this job trained to another length
    (trainer.max_epochs); the first free one of name, name_1, ... A folder claimed by a sibling of this launch,
    or holding a run of another config, is never shared.
    """
    sweep = Path(sweep_dir)
    sweep.mkdir(parents=True, exist_ok=True)
    mine = {"launch": launch, "job": int(num)}
    config = job_config(_root_)
    with _locked(sweep / ".claims.lock"):
        taken = []
        for i in itertools.count():
            path = sweep / (name if i == 0 else f"{name}_{i}")
            if not path.exists():
                break
            claim = _read_json(path / CLAIM) or {}
            if claim == mine:
                return path.name
            if claim.get("launch") != launch:
                taken.append((path, recorded_config(path)))
        # a folder that holds nothing (a launch killed before its job started) is as good as free
        earlier = {k: set(differences(old, config)) if old is not None else
                   set() if {p.name for p in k.iterdir()} <= {CLAIM} else None for k, old in taken}
        same = [p for p, diff in earlier.items() if diff == set()]
        longer = [p for p, diff in earlier.items() if diff == {LENGTH}]
        path = (same or longer or [path])[0]
        path.mkdir(exist_ok=True)
        atomic_write_text(path / CLAIM, json.dumps(mine))
        return path.name


def _rank() -> int:
    """This process's rank in a multi-process (DDP) run; 0 for a single process."""
    return max(int(os.environ.get(k) or 0) for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


@contextlib.contextmanager
def in_use(run_dir: Path):
    """Hold run_dir/.lock while a run trains there, so a second process in the same folder is refused. The OS
    drops the lock when the process ends, however it ends (a kill -9 leaves no stale lock). DDP ranks other than
    0 run in rank 0's folder and take no lock."""
    if _rank() > 0:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunFolderError(f"{run_dir} is in use by another run ({f.read().strip() or 'a live process'}): two "
                                 "runs never share a folder. Fix: wait for it to end, or give this run another "
                                 "hydra.run.dir / hydra.sweep.dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield


@dataclass
class Plan:
    """What a job does with its folder: `train` (from scratch, or from ckpt_path), or `skip` (finished before)."""
    action: str
    ckpt_path: str | None = None
    prior: dict | None = None

    def returned(self, metric: str):
        """A skipped job's monitored value, what a sweeper receives."""
        return ((self.prior or {}).get("val") or {}).get(metric)


def _describe(diff: dict, n: int = 3) -> str:
    shown = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(diff.items())[:n]]
    return "; ".join(shown) + (f"; and {len(diff) - n} more" if len(diff) > n else "")


# rank 0's decision, for the DDP processes Lightning starts from this one's command line
RESUMED_FROM = "VOC_DL_RESUMED_FROM"


def plan(cfg: DictConfig, run_dir: Path) -> Plan:
    """With resume=true, what this job does with what its folder holds (its metrics.json and last.ckpt):

    - finished (`ok`) with the same config: skip it;
    - the same config but for trainer.max_epochs, or `interrupted` (or still `running`: killed), with a last.ckpt:
      continue from it;
    - `failed`, never recorded, or stopped before its first checkpoint: train it from scratch;
    - a finished or interrupted run of another config: refused (RunFolderError), the folder left as it is.

    An explicit ckpt_path, and resume=false, train as asked.
    """
    if not cfg.get("resume") or cfg.get("ckpt_path") not in (None, "", "null"):
        return Plan("train", cfg.get("ckpt_path"))
    if _rank() > 0 and RESUMED_FROM in os.environ:
        return Plan("train", os.environ[RESUMED_FROM] or None)
    prior = _read_json(run_dir / METRICS)
    status = (prior or {}).get("status")
    if prior is None or status not in ("ok", "interrupted", "running"):
        if prior is not None:
            error = (prior.get("error") or "-").splitlines()[0]
            log.info("resume=true: training %s again from scratch (it %s: %s)", run_dir, status, error)
        return Plan("train", prior=prior)
    if "job_config" in prior:
        diff = differences(prior["job_config"], job_config(cfg))
    else:  # a run from before metrics.json recorded its config: its command line is what there is
        now = cli.overrides()
        diff = {} if same_command(prior.get("overrides", []), now) else {"overrides": (prior.get("overrides"), now)}
    other = {k: v for k, v in diff.items() if k != LENGTH}
    if other:
        raise RunFolderError(f"resume=true: {run_dir} holds a run of another config ({_describe(other)}). Fix: "
                             "resume=false trains it again from scratch, ckpt_path=last continues it with these "
                             "settings, or give this run another folder")
    last = last_ckpt(run_dir)
    if status == "ok" and not diff:
        monitored = (prior.get("val") or {}).get(cfg.monitor.metric)
        log.info("resume=true: %s finished before with the same config (%s=%s): skipped", run_dir,
                 cfg.monitor.metric, f"{monitored:.4g}" if isinstance(monitored, float) else monitored)
        return Plan("skip", prior=prior)
    if last.is_file():
        why = (f"trainer.max_epochs {diff[LENGTH][0]} -> {diff[LENGTH][1]}" if LENGTH in diff
               else "it was interrupted")
        log.info("resume=true: continuing %s from checkpoints/last.ckpt (%s)", run_dir, why)
        return Plan("train", str(last), prior)
    log.info("resume=true: training %s again from scratch (it %s with no last.ckpt to continue from)", run_dir,
             "finished" if status == "ok" else "stopped")
    return Plan("train", prior=prior)

