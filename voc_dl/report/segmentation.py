"""Section 3 report: Table 3 with trivial baselines, Figures 5-8."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from voc_dl.checkpoints import datamodule_from, load_task
from voc_dl.data.voc import VOID
from voc_dl.report import rescore, seeds
from voc_dl.report.common import no_ticks, save_figure, to_hwc, whole_epochs, write_table
from voc_dl.report.runs import Run, scored_on, test_note, tested
from voc_dl.report.study import TABLE3
from voc_dl.run_files import METRICS
from voc_dl.tasks.segmentation import per_image_dice_iou

TASKS = ("segmentation", "segmentation_improved", "segmentation_selftrain")
FIGURES = {  # file -> caption
    "figure5.png": "Figure 5: a training image as the segmenters see it, and its target mask: object white, background "
                   "black, void grey (the border VOC leaves unlabelled; no loss or metric counts it when "
                   "data.void=ignore).",
    "figure6.png": "Figure 6: training (solid) and validation (dashed) loss per epoch of the best run of each "
                   "segmenter, validation as the run measured it while training; a run over several seeds is their "
                   "mean, in a band from the lowest to the highest seed.",
    "figure7.png": "Figure 7: training (solid) and validation (dashed) Dice, pooled over pixels, per epoch of the "
                   "same runs (over several seeds: their mean and min-max band).",
    "figure8.png": "Figure 8: validation images spread over the split, their targets (void grey) and the mask each "
                   "run's best checkpoint predicts (of a run over several seeds, its first seed's): white where it "
                   "predicts the object, black where background.",
}


def augmentation(model_cfg: dict) -> str:
    if not model_cfg.get("augment"):
        return ""
    zoom = model_cfg.get("max_zoom", 1.0)
    return " + aug" + (f" (zoom {zoom})" if zoom > 1 else "")


def net_name(r: Run) -> str:
    return (r.model_cfg.get("net") or {}).get("_target_", "?").rsplit(".", 1)[-1]


def colour(r: Run) -> str:
    return " RGB" if r.data_cfg.get("color") == "rgb" else ""  # the study's input is grayscale


def teacher_dice(ckpt: str) -> float | None:
    """The val Dice of the run a teacher checkpoint came from, when it sits in its run folder."""
    metrics = Path(ckpt).parent.parent / METRICS
    try:
        return float(json.loads(metrics.read_text())["val"]["val/dice"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pseudo_labels(r: Run) -> str:
    """' + N pseudo-labelled (teacher ...)' for a run trained with data.extra_masks, from the manifest it recorded."""
    if not r.data_cfg.get("extra_masks"):
        return ""
    extra = (r.metrics.get("data") or {}).get("extra_masks") or {}  # none when the run failed before reading it
    ckpt = (extra.get("teacher") or {}).get("ckpt_path")
    if ckpt is None:
        return " + ? pseudo-labelled"
    teacher = [f"Dice {d:.3f}"] if (d := teacher_dice(ckpt)) is not None else [Path(ckpt).name]
    if extra.get("color", r.data_cfg.get("color")) != r.data_cfg.get("color"):
        teacher.append(f"reading {extra['color']}")
    return f" + {extra.get('images', '?')} pseudo-labelled (teacher {', '.join(teacher)})"


def device(r: Run) -> str:
    name = (r.metrics.get("hardware") or {}).get("device", "?")
    return name.removeprefix("NVIDIA ") if "NVIDIA" in name else "CPU"


def featured(groups: list[list[Run]]) -> list[list[Run]]:
    """The runs the figures show, each with the runs that differ from it only in seed: the best of each
    study-faithful (net, loss, colour), and the best beyond them per net, by mean val Dice over the seeds. A figure
    with every run of a sweep would be unreadable."""
    def dice(runs: list[Run]) -> float:
        return sum(r.val("val/dice", -1) for r in runs) / len(runs)

    best: dict[tuple, list[Run]] = {}
    for runs in groups:
        r = runs[0]
        key = (net_name(r), r.model_cfg.get("loss"), colour(r)) if r.task == "segmentation" else (net_name(r),)
        if key not in best or dice(runs) > dice(best[key]):
            best[key] = runs
    return sorted(best.values(), key=lambda g: (g[0].task != "segmentation", net_name(g[0]),
                                                g[0].model_cfg.get("loss") != "bce", colour(g[0])))


def label(r: Run) -> str:
    """'SegNet dice', with the recipe when it is not the study's, and what else sets the run apart."""
    extras = [] if r.task == "segmentation" else ["improved recipe"]
    if colour(r):
        extras.append("RGB")
    if r.data_cfg.get("batch_size", 32) != 32:
        extras.append(f"batch {r.data_cfg['batch_size']}")
    if r.data_cfg.get("extra_masks"):
        extras.append("self-trained")
    return f"{net_name(r)} {r.model_cfg.get('loss')}" + (f" ({', '.join(extras)})" if extras else "")


def _scores(pred: torch.Tensor, mask: torch.Tensor) -> dict:
    valid, target = mask != VOID, mask == 1
    p = pred & valid
    tp, fp, fn = (p & target).sum().item(), (p & ~target).sum().item(), (~p & target & valid).sum().item()
    d_img, i_img = per_image_dice_iou(pred, target, valid)
    return {"val Dice": 2 * tp / max(1, 2 * tp + fp + fn), "val IoU": tp / max(1, tp + fp + fn),
            "Dice per image": d_img.mean().item(), "IoU per image": i_img.mean().item(),
            "pixel acc": ((p == target) & valid).sum().item() / max(1, valid.sum().item())}


def baselines(data_cfg: dict, data_name: str) -> list[dict]:
    """All-foreground, and the best constant per-pixel prior learned from the training masks, on every
    validation image."""
    dm = datamodule_from(data_cfg)
    train = dm.train_set.__getitems__(list(range(len(dm.train_set))))[1]
    val = dm.val_set.__getitems__(list(range(len(dm.val_set))))[1]
    valid = (train != VOID).float()
    freq = ((train == 1).float().sum(0) / valid.sum(0).clamp_min(1))  # P(foreground) at each pixel
    best_t, best = 0.0, -1.0
    for t in np.linspace(0.0, 0.95, 39):  # threshold chosen on train, then applied to val
        s = _scores((freq > t).expand_as(train), train)["val Dice"]
        if s > best:
            best_t, best = float(t), s
    rows = []
    for name, pred in (("all foreground", torch.ones_like(val, dtype=torch.bool)),
                       (f"per-pixel prior > {best_t:.2f} (from train)", (freq > best_t).expand_as(val))):
        rows.append({"experiment": "baseline", "loss": "-", "model": name, "data": data_name, **_scores(pred, val),
                     "val images": len(val), "status": "ok"})
    return rows


# the columns each run measures: over seeds of one config, Table 3 shows their mean ± standard deviation
MEASURED = ("val Dice", "val IoU", "Dice per image", "IoU per image", "pixel acc", "last-epoch Dice", "epochs",
            "best epoch", "Dice - study", "wall s", "test Dice", "test IoU")


def seg_rows(runs: list[Run]) -> list[dict]:
    rows, test = [], tested(runs)
    for r in runs:
        loss = r.model_cfg.get("loss")
        study = TABLE3.get(loss, (float("nan"), float("nan")))
        rows.append({
            "experiment": r.task, "loss": loss,
            "model": net_name(r) + colour(r) + augmentation(r.model_cfg) + pseudo_labels(r), "data": r.data_name,
            "val Dice": r.val("val/dice"), "val IoU": r.val("val/iou"),
            **({"test Dice": r.test("test/dice"), "test IoU": r.test("test/iou")} if test else {}),
            "Dice per image": r.val("val/dice_per_image"), "IoU per image": r.val("val/iou_per_image"),
            "pixel acc": r.val("val/pixel_acc"), "val images": rescore.scope_cell(r),
            # the best epoch is picked on validation Dice, so the last epoch shows how much picking added
            "last-epoch Dice": (r.metrics.get("last") or {}).get("val/dice", float("nan")),
            "epochs": r.metrics.get("epochs"),
            "best epoch": r.metrics.get("best_epoch"), "study Dice": study[0], "study IoU": study[1],
            "Dice - study": r.val("val/dice") - study[0], "wall s": round(r.metrics.get("wall_time_s") or 0),
            "device": device(r),
            "status": r.status_line, "run": str(r.path.resolve()),
        })
    return sorted(rows, key=lambda x: (x["experiment"], x["model"], x["loss"] or ""))


def figure_curves(groups: list[list[Run]], keys: tuple[str, str], ylabel: str, title: str, path: Path) -> Path:
    """One colour per run (solid train, dashed validation); runs that differ only in seed as their mean and
    min-max band."""
    fig, ax = plt.subplots(figsize=(9.6, 3.8))
    for i, runs in enumerate(groups):
        for key, style in zip(keys, ("-", "--"), strict=True):
            seeds.plot_mean(ax, runs, key, style, color=f"C{i % 10}",
                            label=f"{label(runs[0])}{seeds.seeds_label(runs)}: {key}")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    whole_epochs(ax)
    return save_figure(fig, path)


def show_mask(ax, mask: torch.Tensor) -> None:
    """A mask on a fixed scale, whatever values it holds: object (1) white, background black, void grey."""
    m = mask.numpy()
    ax.imshow(np.where(m == VOID, 0.5, m == 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def figure_sample(data_cfg: dict, path: Path) -> Path:
    dm = datamodule_from(data_cfg)
    x, m = dm.train_set[0]
    fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.6))
    axes[0].imshow(to_hwc(x.float() / 255), cmap="gray")
    size = data_cfg.get("image_size", 64)
    axes[0].set_title(f"image ({size}x{size} {data_cfg.get('color', 'gray')})", fontsize=8)
    show_mask(axes[1], m[0])
    axes[1].set_title("target (object white, void grey)", fontsize=8)
    no_ticks(axes)
    fig.suptitle("Figure 5: a training pair", fontsize=10)
    return save_figure(fig, path)


def figure_predictions(runs: list[Run], data_cfg: dict, path: Path, n: int = 5) -> Path | None:
    """Rows of image, target and each run's predicted mask, for validation images spread over the set."""
    if not runs:
        return None
    dm = datamodule_from(data_cfg)
    idx = np.linspace(0, len(dm.val_set) - 1, n).astype(int).tolist()
    x, m = dm.val_set.__getitems__(idx)
    x = x.float() / 255
    inputs = {data_cfg.get("color"): x}  # each net sees the images in the colour it was trained on
    preds = []
    for r in runs:
        color = r.data_cfg.get("color")
        if color not in inputs:
            inputs[color] = datamodule_from(data_cfg, color=color).val_set.__getitems__(idx)[0].float() / 255
        task, _ = load_task(r.metrics["best_ckpt"], r.model_cfg)
        with torch.no_grad():  # as the run was scored: with its test-time augmentation, if it has one
            preds.append((label(r), task.predict_logits(inputs[color]) > 0))
    return save_figure(mask_grid(x, m, preds), path)


def mask_grid(x: torch.Tensor, masks: torch.Tensor, preds: list[tuple[str, torch.Tensor]]):
    """Figure 8: a row per image (N, C, H, W in [0, 1]) with its target and each (label, predicted mask)."""
    n, cols = len(x), 2 + len(preds)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n + 0.5), squeeze=False)
    for i in range(n):
        axes[i][0].imshow(to_hwc(x[i]), cmap="gray")
        show_mask(axes[i][1], masks[i, 0])
        for j, (_, p) in enumerate(preds, 2):
            show_mask(axes[i][j], p[i, 0])
    for j, title in enumerate(["image", "target", *[label for label, _ in preds]]):
        axes[0][j].set_title("\n".join(textwrap.wrap(title, 22)), fontsize=8)  # long labels must not overlap
    no_ticks(axes)
    fig.suptitle("Figure 8: predicted masks on validation images", fontsize=10)
    return fig


def report(runs: list[Run], out: Path) -> dict:
    runs = rescore.on_full_split([r for r in runs if r.task in TASKS], out)
    if not runs:
        return {}
    rows = seeds.merge(seg_rows(runs), runs, MEASURED)
    ok = [r for r in runs if r.ok]
    written: dict = {"figures": []}
    notes = ["Dice and IoU pool every valid pixel of the validation set; 'per image' averages each image's score "
             "(an image with empty target and empty prediction scores 1). Void (255) pixels are excluded when "
             "data.void=ignore.",
             "The study's numbers are for VOC2009 (749 train / 750 val), 40 epochs; ours are the run's data and "
             "epochs as listed.", *rescore.note(runs), *test_note(runs)]
    if ok:
        data_cfg = ok[0].data_cfg
        rows += baselines(data_cfg, ok[0].data_name)
        written["figures"].append(figure_sample(data_cfg, out / "figure5.png"))
        shown = featured(seeds.groups(ok))
        written["figures"].append(figure_curves(shown, ("train/loss", "val/loss"), "loss",
                                                "Figure 6: training and validation loss", out / "figure6.png"))
        written["figures"].append(figure_curves(shown, ("train/dice", "val/dice"), "Dice (pooled)",
                                                "Figure 7: training and validation Dice", out / "figure7.png"))
        # a fast_dev_run run writes no checkpoint: nothing to predict with
        # one checkpoint each: the first seed of a group
        fig8 = figure_predictions([g[0] for g in shown if g[0].metrics.get("best_ckpt")], data_cfg,
                                  out / "figure8.png")
        if fig8:
            written["figures"].append(fig8)
    written["table"] = write_table(out, "table3", f"Table 3: binary segmentation ({scored_on(runs)})", rows, notes)
    return written
