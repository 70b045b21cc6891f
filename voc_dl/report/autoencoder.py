"""Section 1 report: Table 1 (autoencoders beside the study and PCA), Figure 2, Figure 3, PCA figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from voc_dl.checkpoints import datamodule_from, load_task
from voc_dl.models.pca import PCA
from voc_dl.report import rescore, seeds
from voc_dl.report.common import no_ticks, save_figure, to_hwc, whole_epochs, write_table
from voc_dl.report.runs import Run, scored_on, test_note, tested
from voc_dl.report.study import TABLE1

TASKS = ("autoencoder", "autoencoder_improved")
FIGURES = {  # file -> caption
    "figure2.png": "Figure 2: training (solid) and validation (dashed) loss per epoch of the 2048-code autoencoder, "
                   "on a log scale; over several seeds their mean, in a band from the lowest to the highest seed.",
    "figure3.png": "Figure 3: one validation image per class (left) and its reconstruction by each autoencoder's "
                   "best checkpoint, one column per code size.",
    "figure_pca.png": "PCA figure: validation MSE of PCA fitted on the training images, against its number of "
                      "components k (black), with each MSE-trained autoencoder's validation MSE as a dashed line.",
}


def _images(dataset) -> torch.Tensor:
    return dataset.__getitems__(list(range(len(dataset)))).float().div_(255)


# the columns each run measures: over seeds of one config, Table 1 shows their mean ± standard deviation
MEASURED = ("val MSE", "val MAE", "PSNR dB", "SSIM", "epochs", "best epoch", "MSE - study", "wall s",
            "test MSE", "test MAE")


def ae_rows(runs: list[Run]) -> list[dict]:
    rows, test = [], tested(runs)
    for r in runs:
        cs, loss = r.model_cfg.get("code_size"), r.model_cfg.get("loss")
        study = TABLE1.get(cs, (float("nan"), float("nan")))
        rows.append({
            "experiment": r.task, "code size": cs, "loss": loss, "data": r.data_name,
            "val MSE": r.val("val/mse"), "val MAE": r.val("val/mae"),
            **({"test MSE": r.test("test/mse"), "test MAE": r.test("test/mae")} if test else {}),
            "PSNR dB": r.val("val/psnr"), "SSIM": r.val("val/ssim"), "val images": rescore.scope_cell(r),
            "epochs": r.metrics.get("epochs"), "best epoch": r.metrics.get("best_epoch"),
            "study MSE": study[0], "study MAE": study[1],
            "MSE - study": r.val("val/mse") - study[0], "PCA k with equal MSE": None,
            "wall s": round(r.metrics.get("wall_time_s") or 0),
            "status": r.status_line,
            "run": str(r.path.resolve()),
        })
    return sorted(rows, key=lambda x: (x["experiment"], x["code size"] or 0, x["loss"] or ""))


def pca_baseline(data_cfg: dict, data_name: str, ks: list[int] | None = None):
    """Validation MSE/MAE/PSNR/SSIM of PCA fitted on the training images, at k components."""
    dm = datamodule_from(data_cfg, val_to_train=0.0)
    train, val = _images(dm.train_set), _images(dm.val_set)
    pca = PCA(train.flatten(1))
    kmax = pca.max_components
    curve_ks = sorted({int(k) for k in np.unique(np.geomspace(1, kmax, 24).astype(int))} | {kmax})
    curve = pca.mse_curve(val.flatten(1), curve_ks)
    rows = []
    for k in ks or [k for k in (8, 32, 128, kmax) if k <= kmax]:
        rec = pca.reconstruct(val.flatten(1), k).view_as(val).clamp(0, 1)
        mse = torch.mean((rec - val) ** 2).item()
        rows.append({"experiment": "pca", "code size": k, "loss": "-", "data": data_name, "val MSE": mse,
                     "val MAE": torch.mean((rec - val).abs()).item(), "PSNR dB": 10 * np.log10(1 / mse),
                     "SSIM": structural_similarity_index_measure(rec, val, data_range=1.0).item(),
                     "val images": len(val), "status": "ok"})
    return rows, (curve_ks, curve), len(train), kmax


def pca_equivalent(ae_mse: float, curve) -> str:
    ks, mses = curve
    for k, m in zip(ks, mses, strict=True):
        if m <= ae_mse:
            return f"<= {k}" if k == ks[0] else str(k)
    return f"> {ks[-1]}"


def figure_pca(curve, ae: list[dict], n_train: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(*curve, "k.-", label=f"PCA (fit on {n_train} train images)")
    lines = [row for row in ae if row["status"] == "ok" and row["loss"] == "mse"]
    dash = 5
    for i, row in enumerate(lines):
        # a categorical colour each, and dashes offset from each other's: lines at nearly the same MSE then
        # alternate colours along their length instead of the last one hiding the others
        ax.axhline(row["val MSE"], lw=1.5, color=f"C{i % 10}", ls=(dash * i, (dash, dash * (len(lines) - 1) + 1)),
                   label=f"{row['experiment']} {row['code size']} codes: {row['val MSE']:.4g}")
    ax.set(xscale="log", yscale="log", xlabel="PCA components k", ylabel="validation MSE",
           title="PCA figure: validation MSE, PCA components versus autoencoders")
    ax.legend(fontsize=7, handlelength=5)  # long enough to show a dash of every offset pattern
    return save_figure(fig, path)


def figure_curves(runs: list[Run], path: Path, title: str) -> Path:
    """The loss curves of one run, or the mean and min-max band of runs that differ only in seed."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, style in (("train/loss", "-"), ("val/loss", "--")):
        seeds.plot_mean(ax, runs, key, style, label=key + seeds.seeds_label(runs))
    ax.set(xlabel="epoch", ylabel=f"loss ({runs[0].model_cfg.get('loss')})", title=title, yscale="log")
    ax.legend()
    whole_epochs(ax)
    return save_figure(fig, path)


def figure_reconstructions(runs: list[Run], data_cfg: dict, path: Path) -> Path | None:
    """One validation image per class (the first showing only that class), and each network's output."""
    classes = data_cfg.get("classes", [])
    dm = datamodule_from({**data_cfg, "task": "classification"}, val_to_train=0.0)
    targets = dm.val_set.targets
    picks = []
    for c in range(len(classes)):
        only = np.where((targets[:, c] == 1) & (targets.sum(1) == 1))[0]
        anyc = np.where(targets[:, c] == 1)[0]
        if len(only) or len(anyc):
            picks.append((classes[c], int((only if len(only) else anyc)[0])))
    if not picks or not runs:
        return None
    x = dm.val_set.__getitems__([i for _, i in picks])[0].float().div(255)
    outputs = []
    for r in runs:
        task, _ = load_task(r.metrics["best_ckpt"], r.model_cfg)
        with torch.no_grad():
            improved = " (improved)" if r.task == "autoencoder_improved" else ""
            unfinished = "" if r.ok else f", epoch {r.metrics['best_epoch']}"
            outputs.append((f"{r.model_cfg['code_size']} codes{improved}{unfinished}", task.net(x)))
    cols = 1 + len(outputs)
    fig, axes = plt.subplots(len(picks), cols, figsize=(2.2 * cols, 2.2 * len(picks)), squeeze=False)
    for i, (cls, _) in enumerate(picks):
        axes[i][0].imshow(to_hwc(x[i]))
        axes[i][0].set_ylabel(cls)
        for j, (label, out) in enumerate(outputs, 1):
            axes[i][j].imshow(to_hwc(out[i]))
            if i == 0:
                axes[i][j].set_title(label, fontsize=9)
        if i == 0:
            axes[i][0].set_title("original", fontsize=9)
    no_ticks(axes)
    fig.suptitle("Figure 3: validation images and their reconstructions", fontsize=10)
    return save_figure(fig, path)


def report(runs: list[Run], out: Path) -> dict:
    """Table 1 and Figures 2, 3 and the PCA figure from the autoencoder runs; returns what it wrote."""
    runs = rescore.on_full_split([r for r in runs if r.task in TASKS], out)
    if not runs:
        return {}
    rows = seeds.merge(ae_rows(runs), runs, MEASURED)
    ok = [r for r in runs if r.ok]
    written: dict = {"figures": []}
    notes = ["The study's numbers are for VOC2009 cat/motorbike/bottle images, 60 epochs; ours are the run's "
             "data and epochs as listed (a shortened run says so in its epochs column).", *rescore.note(runs),
             *test_note(runs)]
    if ok:
        data_cfg = ok[0].data_cfg
        pca_rows, curve, n_train, kmax = pca_baseline(data_cfg, ok[0].data_name)
        for row in rows:
            if row["status"] == "ok":
                row["PCA k with equal MSE"] = pca_equivalent(row["val MSE"], curve)
        rows += pca_rows
        notes.append(f"PCA rows: k components fitted on the same {n_train} training images. Centred data of n "
                     f"images span at most n - 1 = {kmax} directions, so PCA cannot have 2048/4096/8192 "
                     "components here: the study's code sizes are not PCA ranks. 'PCA k with equal MSE' is the "
                     "smallest k whose validation MSE is at or below the network's.")
        written["figures"].append(figure_pca(curve, rows, n_train, out / "figure_pca.png"))
        # the study's recipe, else the improved one (the demo trains only that)
        fig2 = [r for r in ok if r.task in TASKS and r.model_cfg.get("code_size") == 2048]
        fig2 = sorted(fig2, key=lambda r: (r.task != "autoencoder", r.model_cfg.get("loss") != "mse"))
        if fig2:
            recipe = " (improved recipe)" if fig2[0].task == "autoencoder_improved" else ""
            group = seeds.siblings(fig2[0], ok)
            written["figures"].append(figure_curves(group, out / "figure2.png", f"Figure 2: 2048-code autoencoder"
                                                    f"{recipe} ({seeds.group_name(group)})"))
        best_of = {}
        # an interrupted run's best checkpoint so far stands in for a code size that has no finished run
        shown = [r for r in runs if r.metrics.get("best_ckpt") and (r.ok or r.status == "interrupted")]
        for r in sorted(shown, key=lambda r: (r.task != "autoencoder", not r.ok, r.model_cfg.get("loss") != "mse")):
            best_of.setdefault(r.model_cfg.get("code_size"), r)
        trio = [best_of[c] for c in sorted(best_of)]
        # the improved recipe beside the study's nets, where it has a code size of its own best_of did not pick
        improved = [r for r in shown if r.task == "autoencoder_improved" and r not in trio]
        fig3 = figure_reconstructions(trio + sorted(improved, key=lambda r: r.model_cfg.get("code_size")),
                                      data_cfg, out / "figure3.png")
        if fig3:
            written["figures"].append(fig3)
    written["table"] = write_table(out, "table1", f"Table 1: autoencoder reconstruction ({scored_on(runs)})", rows,
                                   notes)
    return written
