"""The sweeper of conf/hparams_search: Hydra finds sweepers only in the `hydra_plugins` namespace, so this class
registers voc-dl's resumable, failure-tolerant Optuna search (voc_dl/search.py) there."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class SearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        # Optuna is imported when a search starts, not by every run: Hydra imports this module at each start-up
        from voc_dl.search import ResumableOptunaSweeper

        self.sweeper = ResumableOptunaSweeper(**settings)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
