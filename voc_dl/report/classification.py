"""Section 2 report: Table 2 (with the study's ambiguous "accuracy" pinned down) and Figure 4."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from voc_dl.models.classifiers import NO_WEIGHTS
from voc_dl.report import rescore, seeds
from voc_dl.report.common import save_figure, whole_epochs, write_table
from voc_dl.report.runs import Run, scored_on, test_note, tested
from voc_dl.report.study import STUDY_CLASSES, TABLE2

FIGURES = {  # file -> caption
    "figure4.png": "Figure 4: log-loss (top) and accuracy (bottom) per epoch of each classifier, training solid and "
                   "validation dashed (validation mAP dotted); over several seeds their mean, in a band from the "
                   "lowest to the highest seed.",
}
MODEL_NAMES = {"EncoderClassifier": None, "DeepCNN": "deep_cnn", "PretrainedClassifier": "pretrained"}
TASKS = ("classification", "classification_improved")


def model_name(r: Run) -> str:
    net = r.model_cfg.get("net") or {}
    kind = net.get("_target_", "?").rsplit(".", 1)[-1]
    if kind == "EncoderClassifier":
        return "frozen_encoder" if net.get("freeze_encoder") else "encoder"
    if kind == "PretrainedClassifier":
        weights = net.get("weights")
        weights = "random init" if weights in NO_WEIGHTS else Path(str(weights)).name
        return f"pretrained ({net.get('backbone')}, {weights}, {'frozen' if net.get('freeze') else 'fine-tuned'})"
    return MODEL_NAMES.get(kind) or kind


def run_label(r: Run, augmented: str = " + augmentation") -> str:
    """The classifier, whether it augments, and the experiment when it is not the study's."""
    return (model_name(r) + (augmented if r.model_cfg.get("augment") else "")
            + (f" ({r.task})" if r.task != TASKS[0] else ""))


# the columns each run measures: over seeds of one config, Table 2 shows their mean ± standard deviation
MEASURED = ("val subset acc", "val label acc", "val mAP", "val F1", "train log-loss", "val log-loss", "gap",
            "last train log-loss", "last val log-loss", "last gap", "epochs", "best epoch", "wall s",
            "test mAP", "test subset acc")


def cls_rows(runs: list[Run]) -> list[dict]:
    rows, test = [], tested(runs)
    for r in runs:
        name = model_name(r)
        study = TABLE2.get(name, (float("nan"),) * 3)
        train_ll, val_ll = r.at_best("train/loss"), r.val("val/loss")
        last_train, last_val = r.last("train/loss"), r.last("val/loss")
        rows.append({
            "model": run_label(r),
            "data": r.data_name, "classes": "/".join(r.data_cfg.get("classes", [])),
            "trainable params": r.metrics.get("trainable_params"),
            "val subset acc": r.val("val/subset_acc"), "val label acc": r.val("val/label_acc"),
            "val mAP": r.val("val/map"), "val F1": r.val("val/f1"),
            **({"test mAP": r.test("test/map"), "test subset acc": r.test("test/subset_acc")} if test else {}),
            "val images": rescore.scope_cell(r),
            "train log-loss": train_ll, "val log-loss": val_ll, "gap": val_ll - train_ll,
            "last train log-loss": last_train, "last val log-loss": last_val, "last gap": last_val - last_train,
            "epochs": r.metrics.get("epochs"), "best epoch": r.metrics.get("best_epoch"),
            "study val acc": study[0], "study train log-loss": study[1], "study val log-loss": study[2],
            "wall s": round(r.metrics.get("wall_time_s") or 0),
            "status": r.status_line, "run": str(r.path.resolve()),
        })
    return sorted(rows, key=lambda x: x["model"])


def figure_curves(groups: list[list[Run]], path: Path) -> Path:
    """A column per classifier: one run, or the mean and min-max band of runs that differ only in seed."""
    fig, axes = plt.subplots(2, len(groups), figsize=(3.6 * len(groups), 5.4), squeeze=False)
    for j, runs in enumerate(groups):
        r = runs[0]
        for key, style in (("train/loss", "-"), ("val/loss", "--")):
            seeds.plot_mean(axes[0][j], runs, key, style, label=key)
        for key, style in (("train/subset_acc", "-"), ("val/subset_acc", "--"), ("val/map", ":")):
            seeds.plot_mean(axes[1][j], runs, key, style, label=key)
        axes[0][j].set_title(run_label(r, " + aug") + seeds.seeds_label(runs), fontsize=9)
        axes[0][j].set_ylabel("log-loss")
        axes[1][j].set_ylabel("accuracy / mAP")
        axes[1][j].set_xlabel("epoch")
        for ax in axes[:, j]:
            ax.legend(fontsize=7)
            whole_epochs(ax)
    fig.suptitle("Figure 4: training and validation log-loss and accuracy")
    return save_figure(fig, path)


def report(runs: list[Run], out: Path) -> dict:
    runs = rescore.on_full_split([r for r in runs if r.task in TASKS], out)
    if not runs:
        return {}
    rows = seeds.merge(cls_rows(runs), runs, MEASURED)
    ok = [r for r in runs if r.ok]
    classes = {tuple(r.data_cfg.get("classes", [])) for r in ok}
    notes = ["'study val acc' is compared with our exact-match (subset) accuracy: an image counts as right only "
             "when all its labels are; per-label accuracy, mAP and F1 are shown too.",
             "train log-loss is read at the best epoch (the checkpoint evaluated); gap = val - train log-loss. "
             "The last-epoch columns show how far each model overfits when trained on (the study's Table 2 "
             "reports log-losses after its full run).", *rescore.note(runs), *test_note(runs)]
    if any(list(c) != STUDY_CLASSES for c in classes):
        notes.append(f"Our classes ({', '.join('/'.join(c) for c in classes)}) differ from the study's "
                     "cat/motorbike/bottle, so the comparison is indicative, not like for like.")
    written: dict = {"figures": [figure_curves(seeds.groups(ok), out / "figure4.png")] if ok else []}
    written["table"] = write_table(out, "table2", f"Table 2: multi-label classifiers ({scored_on(runs)})", rows, notes)
    return written
