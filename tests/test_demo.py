"""`make demo` as a newcomer runs it: every section's networks learn, scored beside the report's baselines."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from voc_dl.demo import DONE, FAILED, shortened
from voc_dl.train import DONE_LINE, FAILED_LINE


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_demo_reads_the_result_lines_train_writes():
    run = "/r/a=1,b=2"
    done = DONE_LINE % ("val/dice", 0.6123, " (test/dice=0.5900)", 7, 10, f"{run}/checkpoints/best.ckpt", run)
    assert DONE.search("[voc_dl][INFO] - " + done).groups() == (
        "done: val/dice=0.6123 (test/dice=0.5900) (best epoch 7 of 10)", run)
    failed = FAILED_LINE % ("/r/seed=3", "FloatingPointError: val/loss is nan")
    assert FAILED.search("[voc_dl][ERROR] - " + failed).groups() == ("/r/seed=3", "FloatingPointError: val/loss is nan")


def test_the_demo_states_what_it_shortened():
    lines = shortened()
    assert any("autoencoders" in line and "64x64" in line and "2048 -> 512" in line for line in lines)
    assert any(line.startswith("classifiers:") for line in lines) and any("segmenters" in line for line in lines)
    assert any("whole validation split" in line for line in lines)


@pytest.mark.slow  # the whole demo: ~5 min on an idle 2-core CPU, ~10 min on a shared one
def test_the_demo_learns_every_section_beside_its_baselines(tmp_path):
    out = subprocess.run([sys.executable, "-m", "voc_dl.demo", "--out", "outputs/demo"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "shortened" in out.stdout and "64x64" in out.stdout and "CPU time" in out.stdout
    report, study = tmp_path / "outputs" / "demo" / "report", tmp_path / "outputs" / "demo" / "study"
    runs = [json.loads(p.read_text()) for p in study.rglob("metrics.json")]
    assert len(runs) == 10 and all(r["status"] == "ok" and r["val_scope"] == "whole split" for r in runs)

    # Table 1: every autoencoder well below PCA with 8 components, on the same validation images
    t1 = rows(report / "table1.csv")
    pca8 = next(r for r in t1 if r["experiment"] == "pca" and r["code size"] == "8")
    nets = [r for r in t1 if r["experiment"].startswith("autoencoder")]
    assert len(nets) == 3 and {r["val images"] for r in nets} == {pca8["val images"]}
    assert all(float(r["val MSE"]) < 0.85 * float(pca8["val MSE"]) for r in nets), (pca8, nets)
    assert min(float(r["val MSE"]) for r in nets) < 0.6 * float(pca8["val MSE"])

    # Table 2: every classifier well above chance on the synthetic shapes
    t2 = rows(report / "table2.csv")
    assert len(t2) == 3 and all(float(r["val mAP"]) >= 0.8 for r in t2), t2

    # Table 3: every segmenter above the per-pixel prior, the best one by 0.10 Dice, on the same images
    t3 = rows(report / "table3.csv")
    prior = next(r for r in t3 if r["model"].startswith("per-pixel prior"))
    nets = [r for r in t3 if r["experiment"] == "segmentation"]
    assert len(nets) == 4 and {r["val images"] for r in nets} == {prior["val images"]}
    assert all(float(r["val Dice"]) > float(prior["val Dice"]) for r in nets), (prior, nets)
    assert max(float(r["val Dice"]) for r in nets) >= float(prior["val Dice"]) + 0.10
