"""Hyperparameter searches (conf/hparams_search): every trial of each Optuna study found beside the runs, with
Optuna's optimisation history and the parameters' importance.

A search keeps its study (SQLite) in the folder that holds its trial folders; the report opens it read-only.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt

from voc_dl.report.common import save_figure, whole_epochs, write_table
from voc_dl.report.runs import Run

TABLE = "search"
MIN_FOR_IMPORTANCE = 2  # completed trials whose parameters differ: a forest needs something to split


def figures(out: Path) -> dict[str, str]:
    """The figures the last report wrote (file -> caption): two per study, named after it."""
    found = {}
    for history in sorted(out.glob("search-*-history.png")):
        study = history.name.removeprefix("search-").removesuffix("-history.png")
        found[history.name] = f"Search '{study}': each trial's value of the monitored metric and the best so far."
        importance = out / f"search-{study}-importance.png"
        if importance.is_file():
            found[importance.name] = (f"Search '{study}': importance of each searched parameter for the monitored "
                                      "metric (Optuna, mean decrease in impurity of a random forest).")
    return found


def search_folders(runs: list[Run]) -> list[Path]:
    """Folders holding trial runs of a search (metrics.json names the trial, or the run was made by one)."""
    return sorted({r.path.parent for r in runs if "search" in r.metrics
                   or any(o.startswith("hparams_search=") for o in r.metrics.get("overrides", []))})


def load_studies(folder: Path) -> list:
    """Every Optuna study in the folder's SQLite files, opened read-only (a report never writes into runs)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = []
    for db in sorted(folder.glob("*.db")):
        url = f"sqlite:///file:{db.resolve()}?mode=ro&uri=true"
        try:
            for summary in optuna.get_all_study_summaries(storage=url):
                studies.append(optuna.load_study(study_name=summary.study_name, storage=url))
        except Exception:  # not an Optuna database: nothing of ours
            continue
    return studies


def trial_rows(study, runs: dict[tuple[str, int], Run]) -> list[dict]:
    """One row per trial; `runs` maps (study, trial) to the trial's run (its metrics.json names both)."""
    definition = study.user_attrs.get("search", {})
    metric = f"{definition.get('metric', 'value')} ({study.direction.name.lower()})"
    names = sorted({k for t in study.trials for k in t.params})
    best = best_number(study)
    rows = []
    for t in study.trials:
        run = runs.get((study.study_name, t.number))
        state = t.state.name
        if run is not None and not run.ok:
            state += f": {run.metrics.get('error', '')[:80]}"
        rows.append({"study": study.study_name, "trial": t.number, "state": state, "metric": metric,
                     "value": t.value, "best": "yes" if t.number == best else "",
                     **{name: t.params.get(name) for name in names},
                     "epochs": run.metrics.get("epochs") if run else None,
                     "wall s": run.metrics.get("wall_time_s") if run else None,
                     "run": str(run.path.resolve()) if run else None})
    return rows


def best_number(study) -> int | None:
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    return study.best_trial.number if complete else None


def figure_history(study, path: Path) -> Path:
    # Optuna's plot switches matplotlib to its own style for good: keep that to this figure
    with plt.rc_context():
        return save_figure(history_axes(study).figure, path)


def history_axes(study):
    """Optuna's optimisation history, which draws COMPLETE trials only, with the pruned trials (at the value they
    last reported) and the failed ones (ticks on the x axis) added, so every trial of the study is on it."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(study)
    pruned = [(t.number, t.value) for t in study.trials if t.state.name == "PRUNED" and t.value is not None]
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), facecolors="none", edgecolors="grey", label="Pruned (last value)")
    failed = [t.number for t in study.trials if t.state.name == "FAIL"]
    if failed:
        ax.scatter(failed, [0] * len(failed), marker="|", s=200, color="crimson", label="Failed",
                   transform=ax.get_xaxis_transform(), clip_on=False)
    ax.set_xlim(-0.5, max(len(study.trials), 1) - 0.5)
    ax.legend(fontsize=8)
    ax.set_title(f"Optimisation history: {study.study_name} ({len(study.trials)} trials)")
    ax.set_xlabel("trial")
    ax.set_ylabel(study.user_attrs.get("search", {}).get("metric", "value"))
    whole_epochs(ax)  # whole trial numbers
    return ax


def importances(study) -> dict[str, float] | None:
    """Optuna's parameter importances, or None when the completed trials cannot tell parameters apart.

    The evaluator is mean decrease in impurity: Optuna 2.10's default (fANOVA) fails on numpy 2.
    """
    import optuna

    complete = [t for t in study.trials if t.state.name == "COMPLETE" and math.isfinite(t.value)]
    varied = {k for k in (complete[0].params if complete else {}) if len({t.params.get(k) for t in complete}) > 1}
    if len(complete) < MIN_FOR_IMPORTANCE or not varied:
        return None
    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return optuna.importance.get_param_importances(study, evaluator=evaluator, params=sorted(varied))


def figure_importance(study, weights: dict[str, float], path: Path) -> Path:
    # drawn here: Optuna 2.10's plot_param_importances calls a matplotlib function removed in 3.9
    names = sorted(weights, key=weights.get)
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)))
    ax.barh(names, [weights[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(weights[n], i, f" {weights[n]:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance for " + study.user_attrs.get("search", {}).get("metric", "the objective"))
    ax.set_xlim(0, 1.15 * max(weights.values(), default=1) or 1)
    ax.set_title(f"Parameter importance: {study.study_name}")
    return save_figure(fig, path)


def report(runs: list[Run], out: Path) -> dict:
    folders = search_folders(runs)
    if not folders:
        return {}
    try:
        import optuna  # noqa: F401
    except ImportError:
        return {"table": write_table(out, TABLE, "Hyperparameter searches", [],
                                     ["Optuna is not installed: pip install -e '.[search]' to read the searches "
                                      f"in {', '.join(map(str, folders))}"]), "figures": []}
    trials = {(r.metrics["search"]["study"], r.metrics["search"]["trial"]): r for r in runs if "search" in r.metrics}
    rows, written, notes = [], [], []
    for folder in folders:
        for study in load_studies(folder):
            rows += trial_rows(study, trials)
            if not study.trials:
                continue
            written.append(figure_history(study, out / f"search-{study.study_name}-history.png"))
            weights = importances(study)
            importance = out / f"search-{study.study_name}-importance.png"
            if weights:
                written.append(figure_importance(study, weights, importance))
            else:
                importance.unlink(missing_ok=True)  # an older report's figure would describe other trials
                notes.append(f"'{study.study_name}': no importance plot: it needs at least {MIN_FOR_IMPORTANCE} "
                             "completed trials with different parameters.")
    if not rows:
        return {}
    notes = ["One row per trial of each Optuna study; value is the trial's monitored metric (its last reported "
             "epoch for a PRUNED trial); FAIL trials have none, their run folder's metrics.json says why. "
             "A search is resumed by running its command again.", *notes]
    return {"table": write_table(out, TABLE, "Hyperparameter searches (Optuna)", rows, notes), "figures": written}
