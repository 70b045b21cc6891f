"""Runs that differ only in their seed: one experiment repeated. Tables show each measured column as the mean over
the seeds with its sample standard deviation and n; figures show the mean curve with a band from the lowest to
the highest seed.

`merge` works on any table whose rows name their run folder in a "run" column (Tables 1-3, a search table);
`mean_std` on rows grouped by any key.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Hashable, Iterable

from voc_dl.config import RESULT_NEUTRAL, comparable, override_key, result_neutral
from voc_dl.report.common import STD
from voc_dl.report.runs import Run

# What a seed changes: the run's seed, and the data split's seed, which follows it (conf/data/voc.yaml)
SEED_KEYS = ("seed", "data.seed")


def config_key(run: Run) -> str:
    """What a run computes, its seed aside: runs with equal keys are the same experiment over other seeds.

    The recorded job config without the seed and the keys that change nothing computed (paths, devices,
    threads, logger; config.RESULT_NEUTRAL), beside the task and the data set. plumbing_keys() would say too
    little: it leaves trainer.max_epochs or data.root out of folder names, not out of what a run computes.
    Runs whose metrics.json has no job config compare their model and data settings, length,
    precision and overrides instead.
    """
    ignore = (*RESULT_NEUTRAL, *SEED_KEYS)
    if "job_config" in run.metrics:
        what = comparable(run.metrics["job_config"], ignore)
    else:
        overrides = [o for o in run.metrics.get("overrides", []) if not result_neutral(override_key(o), ignore)]
        what = {"config": comparable(run.metrics.get("config") or {}, ignore), "overrides": sorted(overrides),
                "max_epochs": run.metrics.get("max_epochs"), "precision": run.metrics.get("precision")}
    return json.dumps([run.task, run.data_name, what], sort_keys=True, default=str)


def groups(runs: Iterable[Run]) -> list[list[Run]]:
    """The finished runs grouped by config_key, in order of first appearance; any other run alone (an
    interrupted or failed run's numbers are never averaged with finished ones)."""
    found: dict[str, list[Run]] = {}
    alone = []
    for r in runs:
        if r.ok:
            found.setdefault(config_key(r), []).append(r)
        else:
            alone.append([r])
    return [*found.values(), *alone]


def siblings(run: Run, runs: Iterable[Run]) -> list[Run]:
    """`run` and the finished runs that differ from it only in seed."""
    if not run.ok:
        return [run]
    key = config_key(run)
    return [r for r in runs if r.ok and config_key(r) == key] or [run]


def _numbers(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]


def mean_std(rows: list[dict], key: Callable[[dict], Hashable | None], measured: Iterable[str],
             seed: Callable[[dict], object] = lambda row: None) -> list[dict]:
    """Rows with equal key merged into one, where the first of them stood: each measured column holds the mean
    and '<column> std' the sample standard deviation (n - 1 in the denominator); 'n' counts the rows merged and
    'seeds' lists their seeds. Other columns keep their value where the rows agree, and list the values where they
    do not. A row whose key is None, and a group of one, stay as they are."""
    measured = list(measured)
    order: dict[Hashable, list[dict]] = {}
    for i, row in enumerate(rows):
        k = key(row)
        order.setdefault(("alone", i) if k is None else ("key", k), []).append(row)
    out = []
    for group in order.values():
        if len(group) == 1:
            out.append(dict(group[0]))
            continue
        merged = {}
        for col in dict.fromkeys(c for row in group for c in row):
            values = [row.get(col) for row in group]
            if col in measured:
                nums = _numbers(values)
                merged[col] = statistics.fmean(nums) if nums else float("nan")
                merged[col + STD] = statistics.stdev(nums) if len(nums) > 1 else float("nan")
            elif col == "run":
                merged[col] = os.path.commonpath(values) if all(values) else values[0]
            else:
                distinct = list(dict.fromkeys(values))
                merged[col] = distinct[0] if len(distinct) == 1 else " / ".join(map(str, distinct))
        merged["n"] = len(group)
        merged["seeds"] = ", ".join(str(seed(row)) for row in group)
        out.append(merged)
    if any("n" in row for row in out):  # beside merged rows, a single finished run says it is one seed
        for row, group in zip(out, order.values(), strict=True):
            if "n" not in row and key(group[0]) is not None:
                row.update(n=1, seeds=str(seed(row)))
    return out


def merge(rows: list[dict], runs: list[Run], measured: Iterable[str]) -> list[dict]:
    """A table's rows, one per run (its folder in the row's "run" column), with the finished runs that differ
    only in seed merged into one row of means, standard deviations and n (mean_std). Rows of no run (baselines)
    and unfinished runs stay as they are."""
    by_path = {str(r.path.resolve()): r for r in runs}
    keys = {path: config_key(r) for path, r in by_path.items() if r.ok}
    return mean_std(rows, lambda row: keys.get(row.get("run")), measured,
                    seed=lambda row: by_path[row["run"]].metrics.get("seed") if row.get("run") in by_path else None)


def mean_curve(runs: list[Run], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per epoch: the mean of a history column over the runs that reached that epoch, their minimum and maximum."""
    by_epoch: dict[int, list[float]] = {}
    for r in runs:
        for epoch, value in zip(*r.curve(key), strict=True):
            by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    return (epochs, [statistics.fmean(by_epoch[e]) for e in epochs], [min(by_epoch[e]) for e in epochs],
            [max(by_epoch[e]) for e in epochs])


def plot_mean(ax, runs: list[Run], key: str, style: str = "-", **kwargs) -> None:
    """One run's curve, or several seeds' mean curve with a band from their minimum to their maximum."""
    x, mean, low, high = mean_curve(runs, key)
    if not x:
        return
    (line,) = ax.plot(x, mean, style, **kwargs)
    if len(runs) > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def group_name(runs: list[Run]) -> str:
    """The overrides that made a run (Run.name), without its seed when the runs are several seeds of it."""
    name = runs[0].name
    return ",".join(p for p in name.split(",") if not p.startswith("seed=")) if len(runs) > 1 else name


def seeds_label(runs: list[Run]) -> str:
    """' (mean of 3 seeds)' for a group, '' for one run."""
    return f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""
