"""voc-dl: the PASCAL VOC-2009 deep-learning study as a Lightning + Hydra experiment framework."""

import os
import re

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
OmegaConf.register_new_resolver("channels", lambda color: {"rgb": 3, "gray": 1}.get(color, color), replace=True)

# `${task_of:${model._target_}}`: the task a model trains, the name of its module (voc_dl.tasks.<task>.<Class>),
# so the data config follows the experiment's model instead of each experiment repeating it.
OmegaConf.register_new_resolver("task_of", lambda target: str(target).split(".")[-2], replace=True)

__version__ = "0.1.0"
