"""The report, built from tiny real runs: one row per run, the study's columns, valid PNG figures."""

from __future__ import annotations

import csv
import json

from voc_dl.report.__main__ import build
from voc_dl.train import train

PNG = b"\x89PNG\r\n\x1a\n"


def run_into(compose_cfg, folder, overrides):
    cfg = compose_cfg([*overrides, f"paths.run_dir={folder}", "debug=tiny", "data.batch_size=4"])
    return train(cfg)


def test_report_from_tiny_runs_of_each_section(compose_cfg, tmp_path):
    study = tmp_path / "study"
    for cs in (2048, 8192):
        run_into(compose_cfg, study / "autoencoder" / f"cs{cs}", ["experiment=autoencoder", f"model.code_size={cs}"])
    for loss in ("bce", "dice"):
        run_into(compose_cfg, study / "segmentation" / loss, ["experiment=segmentation", f"model.loss={loss}"])
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
    assert "cannot have 2048/4096/8192 components" in (out / "table1.md").read_text()

    with open(out / "table3.csv") as f:
        t3 = list(csv.DictReader(f))
    nets = [r for r in t3 if r["model"] == "SegNet"]
    assert sorted(r["loss"] for r in nets) == ["bce", "dice"]
    assert any(r["status"].startswith("failed") for r in t3), "a failed run is listed, not dropped"
    assert sum(r["model"].startswith("baseline") for r in t3) == 2
    allfg = next(r for r in t3 if r["model"] == "baseline: all foreground")
    dice = float(allfg["val Dice"])
    assert abs(float(allfg["val IoU"]) - dice / (2 - dice)) < 1e-9

    with open(out / "table2.csv") as f:
        t2 = list(csv.DictReader(f))
    assert len(t2) == 1 and t2[0]["model"] == "deep_cnn" and float(t2[0]["study val acc"]) == 0.6721
    assert "exact-match (subset) accuracy" in (out / "table2.md").read_text()

    names = {p.name for section in written.values() for p in section["figures"]}
    assert names == {"figure_pca.png", "figure2.png", "figure3.png", "figure4.png", "figure5.png", "figure6.png",
                     "figure7.png", "figure8.png"}
    for section in written.values():
        for fig in section["figures"]:
            assert fig.read_bytes()[:8] == PNG and fig.stat().st_size > 5000
