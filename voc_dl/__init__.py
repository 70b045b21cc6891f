"""voc-dl: the PASCAL VOC-2009 deep-learning study as a Lightning + Hydra experiment framework."""

from omegaconf import OmegaConf

# `${len:${data.classes}}` sizes classifier heads from the class list.
OmegaConf.register_new_resolver("len", lambda x: len(x), replace=True)

__version__ = "0.1.0"
