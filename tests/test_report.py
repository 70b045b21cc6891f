"""The report, built from tiny real runs: one row per run, the study's columns, valid PNG figures."""

from __future__ import annotations

import csv
import json

import pytest

from voc_dl.report.__main__ import build
from voc_dl.report.runs import read_run
from voc_dl.train import train

PNG = b"\x89PNG\r\n\x1a\n"


def run_into(compose_cfg, folder, overrides):
    cfg = compose_cfg([*overrides, f"paths.run_dir={folder}", "debug=tiny", "data.batch_size=4"])
    return train(cfg)


def test_report_from_tiny_runs_of_each_section(compose_cfg, tmp_path):
    study = tmp_path / "study"
    for cs in (2048, 8192):
        run_into(compose_cfg, study / "autoencoder" / f"cs{cs}", ["experiment=autoencoder", f"model.code_size={cs}"])
    run_into(compose_cfg, study / "autoencoder_improved" / "cs2048", ["experiment=autoencoder_improved"])
    for loss in ("bce", "dice"):
        run_into(compose_cfg, study / "segmentation" / loss, ["experiment=segmentation", f"model.loss={loss}"])
    # in colour, so that Figure 8 feeds each net the images it was trained on
    run_into(compose_cfg, study / "segmentation_improved" / "unet", ["experiment=segmentation_improved",
                                                                     "data.color=rgb"])
    run_into(compose_cfg, study / "classification" / "cnn", ["experiment=classification", "model=deep_cnn"])
    failed = study / "segmentation" / "broken"
    failed.mkdir(parents=True)
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "task_name": "segmentation",
                                                     "error": "FloatingPointError: val/loss is nan"}))
    out = tmp_path / "report"
    written = build(study, out)

    with open(out / "table1.csv") as f:
        t1 = list(csv.DictReader(f))
    ae = [r for r in t1 if r["experiment"] == "autoencoder"]
    assert sorted(int(r["code size"]) for r in ae) == [2048, 8192]
    assert {"val MSE", "val MAE", "PSNR dB", "SSIM", "study MSE", "study MAE", "epochs"} <= set(t1[0])
    assert [float(r["study MSE"]) for r in sorted(ae, key=lambda r: int(r["code size"]))] == [0.04, 0.01]
    assert any(r["experiment"] == "pca" for r in t1)
    assert [(r["code size"], r["study MSE"]) for r in t1 if r["experiment"] == "autoencoder_improved"] == [
        ("2048", "0.04")]
    assert "cannot have 2048/4096/8192 components" in (out / "table1.md").read_text()

    with open(out / "table3.csv") as f:
        t3 = list(csv.DictReader(f))
    nets = [r for r in t3 if r["model"] == "SegNet"]
    assert sorted(r["loss"] for r in nets) == ["bce", "dice"]
    assert all(0 <= float(r["last-epoch Dice"]) <= 1 for r in nets)
    improved = [r for r in t3 if r["experiment"] == "segmentation_improved"]
    assert [(r["model"], r["loss"]) for r in improved] == [("UNet RGB + aug", "dice")]
    assert any(r["status"].startswith("failed") for r in t3), "a failed run is listed, not dropped"
    assert sum(r["experiment"] == "baseline" for r in t3) == 2
    allfg = next(r for r in t3 if r["model"] == "all foreground")
    dice = float(allfg["val Dice"])
    assert abs(float(allfg["val IoU"]) - dice / (2 - dice)) < 1e-9

    with open(out / "table2.csv") as f:
        t2 = list(csv.DictReader(f))
    assert len(t2) == 1 and t2[0]["model"] == "deep_cnn" and float(t2[0]["study val acc"]) == 0.6721
    with open(study / "classification" / "cnn" / "history.csv") as f:
        hist = list(csv.DictReader(f))
    assert float(t2[0]["last gap"]) == pytest.approx(float(hist[-1]["val/loss"]) - float(hist[-1]["train/loss"]))
    assert "exact-match (subset) accuracy" in (out / "table2.md").read_text()

    names = {p.name for section in written.values() for p in section["figures"]}
    assert names == {"figure_pca.png", "figure2.png", "figure3.png", "figure4.png", "figure5.png", "figure6.png",
                     "figure7.png", "figure8.png"}
    for section in written.values():
        for fig in section["figures"]:
            assert fig.read_bytes()[:8] == PNG and fig.stat().st_size > 5000

    page = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    for text in (page, md):
        assert "Table 1" in text and "Table 2" in text and "Table 3" in text
        assert "FloatingPointError: val/loss is nan" in text, "the failed run is listed with its error"
    assert all(f'src="{n}"' in page for n in names)
    assert page.count("<tr>") >= len(t1) + len(t2) + len(t3) + 6


def test_make_all_lists_the_three_sections_then_the_report(tmp_path):
    import subprocess

    from tests.conftest import ROOT

    out = subprocess.run(["make", "-n", "all", f"STUDY={tmp_path}", "DATASET=shared_voc", "EPOCHS=3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    steps = [line for line in out.stdout.replace("\\\n", " ").splitlines() if "voc_dl." in line]
    assert "experiment=autoencoder model.code_size=2048,4096,8192 model.loss=mse,mae" in steps[0]
    assert any("model=frozen_encoder" in s for s in steps) and any("model=segnet,unet" in s for s in steps)
    order = [next(i for i, s in enumerate(steps) if key in s) for key in
             ("experiment=autoencoder", "experiment=classification", "experiment=segmentation")]
    assert order == sorted(order) and "voc_dl.report" in steps[-1]
    assert all("dataset=shared_voc" in s and "trainer.max_epochs=3" in s for s in steps if "voc_dl.train" in s)
    (tmp_path / "autoencoder").mkdir()
    (tmp_path / "autoencoder" / ".done").touch()
    again = subprocess.run(["make", "-n", "all", f"STUDY={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert "experiment=autoencoder model.code_size=2048" not in again.stdout, "a finished section is skipped"


def test_an_interrupted_run_reports_its_best_epoch_so_far(compose_cfg, tmp_path):
    folder = tmp_path / "seg"
    run_into(compose_cfg, folder, ["experiment=segmentation", "trainer.max_epochs=3"])
    metrics = json.loads((folder / "metrics.json").read_text())
    with open(folder / "history.csv") as f:
        history = list(csv.DictReader(f))
    # as a killed job leaves it: metrics.json still says running, without its final validation
    (folder / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k not in ("val", "epochs")}
                                                    | {"status": "running"}))
    run = read_run(folder)
    best = max(history, key=lambda r: float(r["val/dice"]))
    assert run.status == "interrupted" and run.metrics["best_epoch"] == int(best["epoch"])
    assert run.val("val/dice") == float(best["val/dice"]) and run.metrics["epochs"] == 3
    assert run.status_line.startswith(f"interrupted: val at best epoch {best['epoch']} of 3 (history.csv)")


def test_a_self_trained_run_says_so_in_table3(tmp_path):
    from voc_dl.report.runs import Run
    from voc_dl.report.segmentation import TASKS, seg_rows

    metrics = {"status": "ok", "task_name": "segmentation_selftrain", "val": {"val/dice": 0.7},
               "config": {"model": {"net": {"_target_": "voc_dl.models.segmenter.UNet"}, "loss": "dice",
                                    "augment": True},
                          "data": {"pseudo_label_ckpt": "/teacher.ckpt"}},
               "data": {"pseudo_labeled_images": 1318}}
    (row,) = seg_rows([Run(tmp_path, metrics)])
    assert row["model"] == "UNet + aug + 1318 pseudo-labelled (teacher teacher.ckpt)" and row["val Dice"] == 0.7
    assert row["device"] == "CPU" and "segmentation_selftrain" in TASKS

    # a teacher still in its run folder is named by its own val Dice; one of another colour says so
    teacher = tmp_path / "teacher"
    (teacher / "checkpoints").mkdir(parents=True)
    (teacher / "metrics.json").write_text(json.dumps({"val": {"val/dice": 0.7204}}))
    metrics["config"]["data"].update(pseudo_label_ckpt=str(teacher / "checkpoints" / "best.ckpt"), color="gray")
    metrics["data"]["pseudo_label_teacher_color"] = "rgb"
    metrics["hardware"] = {"device": "NVIDIA H200"}
    (row,) = seg_rows([Run(tmp_path, metrics)])
    assert row["model"] == "UNet + aug + 1318 pseudo-labelled (teacher Dice 0.720, reading rgb)"
    assert row["device"] == "H200"
