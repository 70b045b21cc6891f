"""voc-dl: the PASCAL VOC-2009 deep-learning study as a Lightning + Hydra experiment framework."""

import importlib.metadata
import os
import re
import uuid

from omegaconf import OmegaConf

# `${len:${data.classes}}` sizes classifier heads from the class list.
OmegaConf.register_new_resolver("len", lambda x: len(x), replace=True)
# `${or_default:${hydra.job.override_dirname}}`: a sweep job whose overrides are all plumbing gets a folder
# of its own ("defaults") instead of writing into the sweep folder itself.
# `++trainer.x=1` (how voc_dl.cli passes Trainer arguments the config does not list) is named `trainer.x=1`.
OmegaConf.register_new_resolver("or_default", lambda x: re.sub(r"(^|,)\+{1,2}", r"\1", x) or "defaults",
                                replace=True)
# `${cwd:}`: where the command runs (Hydra does not change it). Unlike `${hydra:runtime.cwd}` it resolves
# before Hydra's per-job config exists, which `hydra.sweep.dir` needs when a multirun starts.
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)

# `${channels:${data.color}}` gives a net the input channels of the images the data config serves.
def _channels(color):
    from voc_dl.data.voc import CHANNELS

    return CHANNELS.get(color, color)


OmegaConf.register_new_resolver("channels", _channels, replace=True)

# `${task_of:${model._target_}}`: the task a model trains, the name of its module (voc_dl.tasks.<task>.<Class>),
# so the data config follows the experiment's model instead of each experiment repeating it.
OmegaConf.register_new_resolver("task_of", lambda target: str(target).split(".")[-2], replace=True)


# Run folders (voc_dl/run_folders.py, imported when first resolved: it needs torch-heavy modules).
# `${run_folder:base,time,resume,overrides}` (hydra.run.dir) and `${sweep_folder:...}` (hydra.sweep.dir's last part)
# create a new folder named by time (<time>_1 when taken) or, with resume=true, find the newest of the same
# command. Cached: Hydra copies a launch's resolver cache into every job, so each job gets the launch's folder.
def _run_folder(base, stamp, resume, overrides):
    from voc_dl import run_folders

    return run_folders.run_folder(base, stamp, resume, overrides)


def _sweep_folder(base, stamp, resume, overrides):
    from voc_dl import run_folders

    return run_folders.sweep_folder(base, stamp, resume, overrides)


# `${job_folder:sweep_dir,name,job_num,launch}` (hydra.sweep.subdir): the job's folder, claimed for it; resolved
# per job, so not cached. `${launch:}`: the id of this launch of a command, which all its jobs share: voc_dl.cli.run
# sets a new one for every command, and the processes a launcher starts (joblib workers, SLURM jobs) inherit it.
# (Hydra's resolver cache would not do: with hydra.sweep.dir given, the launching process resolves nothing of it.)
def _job_folder(sweep_dir, name, num, launch, _root_):
    from voc_dl import run_folders

    return run_folders.job_folder(sweep_dir, name, num, launch, _root_)


OmegaConf.register_new_resolver("run_folder", _run_folder, replace=True, use_cache=True)
OmegaConf.register_new_resolver("sweep_folder", _sweep_folder, replace=True, use_cache=True)
OmegaConf.register_new_resolver("job_folder", _job_folder, replace=True)
def _launch():
    from voc_dl.cli import LAUNCH_ENV

    return os.environ.setdefault(LAUNCH_ENV, uuid.uuid4().hex)


OmegaConf.register_new_resolver("launch", _launch, replace=True)

try:  # pyproject.toml holds the version
    __version__ = importlib.metadata.version("voc-dl")
except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "unknown"
