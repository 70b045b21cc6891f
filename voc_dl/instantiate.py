"""Hydra's instantiate, with the constructor's own error surfacing (one line for the user) instead of
Hydra's wrapper around it."""

from __future__ import annotations

import hydra
from hydra.errors import InstantiationException


def instantiate(config, **kwargs):
    try:
        return hydra.utils.instantiate(config, **kwargs)
    except InstantiationException as e:
        raise (e.__cause__ or e) from None
