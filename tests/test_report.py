"""The report, built from tiny real runs: one row per run, the study's columns, valid PNG figures."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import composer
from voc_dl.data.synthetic import MARKER
from voc_dl.report import check, rescore
from voc_dl.report.__main__ import build
from voc_dl.report.runs import Run, collect, read_run
from voc_dl.train import train

PNG = b"\x89PNG\r\n\x1a\n"
# the tests that read the tiny study's report share one build of it: on one xdist worker, once
tiny_report_group = pytest.mark.xdist_group("tiny_report")


def run_into(compose_cfg, folder, overrides):
    # 64 px images, as the demo's: the report reads every section the same way at any size
    cfg = compose_cfg([*overrides, f"paths.run_dir={folder}", "debug=tiny", "data.batch_size=4",
                       "data.image_size=64"])
    return train(cfg)


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory, synthetic_root) -> tuple[Path, Path, dict]:
    """A tiny run of every section (validating 2 batches of 4 images, as debug=tiny does), one failed run, and
    the report built from them: (study folder, report folder, what build wrote)."""
    tmp_path = tmp_path_factory.mktemp("tiny_report")
    compose_cfg = composer(tmp_path, synthetic_root)
    study = tmp_path / "study"
    for cs in (2048, 8192):
        run_into(compose_cfg, study / "autoencoder" / f"cs{cs}", ["experiment=autoencoder", f"model.code_size={cs}"])
    run_into(compose_cfg, study / "autoencoder_improved" / "cs2048", ["experiment=autoencoder_improved"])
    for loss in ("bce", "dice"):  # the BCE run with a test split and tags, the Dice run without
        extra = ["data.test_split=holdout", "data.holdout_fraction=0.5", "tags=[holdout]"] if loss == "bce" else []
        run_into(compose_cfg, study / "segmentation" / loss, ["experiment=segmentation", f"model.loss={loss}", *extra])
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
    GlobalHydra.instance().clear()
    return study, out, written


@tiny_report_group
def test_report_from_tiny_runs_of_each_section(tiny_report):
    study, out, written = tiny_report
    with open(out / "table1.csv") as f:
        t1 = list(csv.DictReader(f))
    ae = [r for r in t1 if r["experiment"] == "autoencoder"]
    assert sorted(int(r["code size"]) for r in ae) == [2048, 8192]
    assert {"val MSE", "val MAE", "PSNR dB", "SSIM", "study MSE", "study MAE", "epochs"} <= set(t1[0])
    assert "test MSE" not in t1[0], "no run of Section 1 has a test split"
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
    # debug=tiny's epochs validated 8 images; the recorded numbers are each best checkpoint on every image,
    # as the baselines are, so the report scores no network again
    n_val = int(allfg["val images"])
    assert n_val > 8 and all(r["val images"] == str(n_val) for r in nets + improved)
    assert "'re-scored'" not in (out / "table3.md").read_text()
    # the test split's numbers beside val, for the run that has one; tables without such runs have no test columns
    tested = json.loads((study / "segmentation" / "bce" / "metrics.json").read_text())
    bce, dice_row = (next(r for r in nets if r["loss"] == loss) for loss in ("bce", "dice"))
    assert float(bce["test Dice"]) == pytest.approx(tested["test"]["test/dice"]) and dice_row["test Dice"] == "nan"
    assert float(bce["test IoU"]) == pytest.approx(tested["test"]["test/iou"])
    assert f"holdout ({tested['data']['test_images']} images)" in (out / "table3.md").read_text()
    assert (out / "table3.md").read_text().startswith("### Table 3: binary segmentation (validation and test)")
    assert (out / "table1.md").read_text().startswith("### Table 1: autoencoder reconstruction (validation)\n")
    assert {r["data"] for r in t3 if not r["status"].startswith("failed")} == {"synthetic"}

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
    assert "Data of these runs: synthetic." in page and "numbers beside ours are for VOC2009" in page
    assert "<td>synthetic</td>" in page, "every row names its data set"
    assert "<th>tags</th>" in page and "<td>holdout</td>" in page and "| tags |" in md
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == len(names) and all(c.startswith(("Figure", "PCA figure")) and c.endswith(".")
                                               for c in captions)
    assert check.broken_links(out / "index.html") == [] and 'href="PCA' not in page
    numbers = re.findall(r'<td class="n">([^<]*)</td>', page)
    decimals = [n for n in numbers if "." in n and "e" not in n]
    assert decimals and all(len(n.lstrip("-").replace(".", "").lstrip("0")) <= 4 for n in decimals), decimals


@tiny_report_group
def test_an_older_run_that_validated_a_subset_is_scored_again_once(tiny_report, monkeypatch, tmp_path):
    study, _, _ = tiny_report
    recorded = [r for r in collect(study) if r.task == "segmentation" and r.ok]
    # runs written before voc_dl.train scored the whole split carry no val_scope
    older = [dataclasses.replace(r, metrics={k: v for k, v in r.metrics.items() if k != "val_scope"})
             for r in recorded]
    scored, score = [], rescore.score
    monkeypatch.setattr(rescore, "score", lambda run: scored.append(run.path) or score(run))
    first = rescore.on_full_split(older, tmp_path)
    assert len(scored) == 2 and all(r.metrics["val_scope"]["validated"] == 8 for r in first)
    for new, old in zip(first, recorded, strict=True):  # the report's scoring and training's agree
        assert new.metrics["val"]["val/dice"] == pytest.approx(old.metrics["val"]["val/dice"], rel=1e-5)
    again = rescore.on_full_split(older, tmp_path)
    assert len(scored) == 2 and [r.metrics["val"] for r in again] == [r.metrics["val"] for r in first]


@tiny_report_group
def test_an_unfinished_run_that_validated_every_image_is_not_called_re_scored(tiny_report, monkeypatch, tmp_path):
    study, _, _ = tiny_report
    run = next(r for r in collect(study) if r.task == "segmentation" and r.ok)
    n_val = run.metrics["data"]["val_images"]
    # a killed run's metrics.json has no split size, and batches x batch size overshoots a partial last batch
    unfinished = dataclasses.replace(run, metrics={k: v for k, v in run.metrics.items()
                                                   if k not in ("val_scope", "data")})
    monkeypatch.setattr(rescore, "validated_images", lambda r: n_val + 7)
    monkeypatch.setattr(rescore, "score", lambda r: pytest.fail("scored again a run that had validated every image"))
    [scoped] = rescore.on_full_split([unfinished], tmp_path)
    assert scoped.metrics["val_scope"] == {"images": n_val} and rescore.scope_cell(scoped) == str(n_val)
    assert scoped.metrics["val"] == run.metrics["val"] and rescore.note([scoped]) == []


@tiny_report_group
@pytest.mark.skipif(check.chromium() is None, reason="no chromium on PATH: the report's browser check needs it "
                    "(Debian: apt-get install -y chromium; .ci/run installs it)")
def test_the_report_in_a_browser_loads_every_image_and_fits_the_page(tiny_report):
    _, out, _ = tiny_report
    found = check.measure(out / "index.html", width=1280)
    assert len(found["images"]) == 8 and all(i["naturalWidth"] > 0 for i in found["images"]), found["images"]
    assert found["width"] == 1280 and found["scrollWidth"] <= found["width"], found["wide"]


def test_numbers_are_formatted_for_their_kind():
    from voc_dl.report.common import fmt

    assert fmt(12.7, "wall s") == "13" and fmt(12345.6, "wall s") == "12,346"
    assert fmt(0.0442381) == "0.04424" and fmt(13.54203) == "13.54" and fmt(0.55) == "0.55"
    assert fmt(980003) == "980,003" and fmt(2048) == "2048" and fmt(float("nan")) == "-" and fmt(None) == "-"


def test_the_data_set_of_a_run_is_named_also_for_runs_that_predate_the_synthetic_flag(tmp_path):
    def named(data=None, cfg=None):
        return Run(tmp_path, {"data": data or {}, "config": {"data": cfg or {}}}).data_name

    assert named({"root": "/x/voc", "year": 2009, "synthetic": False}) == "VOC2009"
    assert named({"root": "/x/outputs/data/synthetic", "year": 2009, "synthetic": True}) == "synthetic"
    assert named({"root": "/x/data/synthetic", "year": 2009}) == "synthetic"  # older metrics.json
    assert named({"root": "/x/VOC", "year": 2012}) == "VOC2012"
    assert named(cfg={"root": None, "year": 2009, "synthetic": {"dir": "/d"}}) == "synthetic"  # stopped early
    assert named() == "?"
    (tmp_path / "VOCdevkit" / "VOC2009").mkdir(parents=True)
    (tmp_path / "VOCdevkit" / "VOC2009" / MARKER).write_text("{}")
    assert named({"root": str(tmp_path), "year": 2009, "synthetic": False}) == "synthetic", "a generated tree as root"


def panel_boxes(fig) -> list[tuple[int, int, int, int]]:
    """Each axes' pixel box (left, top, right, bottom) in the PNG save_figure writes: the figure's tight
    bounding box, padded by savefig's pad_inches, at save_figure's dpi."""
    import matplotlib

    from voc_dl.report.common import DPI

    fig.canvas.draw()  # places the axes: images keep their aspect
    renderer = fig.canvas.get_renderer()
    tight = fig.get_tightbbox(renderer).padded(matplotlib.rcParams["savefig.pad_inches"])
    boxes = []
    for ax in fig.axes:
        e = ax.get_window_extent(renderer)  # display pixels from the bottom left
        inches = (e.x0 / fig.dpi - tight.x0, tight.y1 - e.y1 / fig.dpi, e.x1 / fig.dpi - tight.x0,
                  tight.y1 - e.y0 / fig.dpi)
        boxes.append(tuple(round(v * DPI) for v in inches))
    return boxes


def test_masks_are_drawn_white_object_black_background_grey_void(tmp_path):
    """Figure 8's panels in the saved PNG: an all-foreground prediction is white, an all-background one black,
    and the target shows its object white, background black and void grey, whatever values the mask holds."""
    import numpy as np
    from PIL import Image

    from voc_dl.report.common import save_figure
    from voc_dl.report.segmentation import mask_grid
    from voc_dl.tasks.segmentation import VOID

    size = 32
    target = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    target[..., : size // 2] = 1  # left half object
    target[..., :4, :] = VOID  # top rows void
    preds = [("all foreground", torch.ones(1, 1, size, size, dtype=torch.bool)),
             ("all background", torch.zeros(1, 1, size, size, dtype=torch.bool))]
    fig = mask_grid(torch.rand(1, 1, size, size), target, preds)
    boxes = panel_boxes(fig)
    png = np.asarray(Image.open(save_figure(fig, tmp_path / "masks.png")).convert("L")).astype(int)

    def inside(panel, margin=4):
        left, top, right, bottom = boxes[panel]
        return png[top + margin:bottom - margin, left + margin:right - margin]

    assert inside(2).min() >= 250, "all-foreground prediction: white"
    assert inside(3).max() <= 5, "all-background prediction: black"
    tgt = inside(1, margin=0)  # rows and columns 3 px from an edge (the frame, antialiasing) are not judged
    h, w = tgt.shape
    assert tgt[h // 2:-3, 3:w // 2 - 3].min() >= 250, "object: white"
    assert tgt[h // 2:-3, w // 2 + 3:-3].max() <= 5, "background: black"
    assert np.all(abs(tgt[3:4 * h // size - 3, 3:-3] - 128) <= 2), "void: grey"


def test_make_all_lists_the_three_sections_then_the_report(tmp_path):
    import subprocess

    from tests.conftest import ROOT

    out = subprocess.run(["make", "-n", "all", f"STUDY={tmp_path}", "DATASET=shared_voc", "EPOCHS=3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    steps = [line for line in out.stdout.replace("\\\n", " ").splitlines() if "voc_dl." in line]
    assert f"experiment=autoencoder model.code_size=8192 model.loss=mse hydra.run.dir={tmp_path}/encoder" in steps[0]
    assert "model.code_size=2048,4096 model.loss=mse,mae" in steps[1] and "code_size=8192 model.loss=mae" in steps[2]
    assert any("model=frozen_encoder" in s for s in steps) and any("model=segnet,unet" in s for s in steps)
    order = [next(i for i, s in enumerate(steps) if key in s) for key in
             ("experiment=autoencoder", "experiment=classification", "experiment=segmentation")]
    assert order == sorted(order) and "voc_dl.report" in steps[-1]
    assert all("dataset=shared_voc" in s and "trainer.max_epochs=3" in s for s in steps if "voc_dl.train" in s)
    (tmp_path / "autoencoder").mkdir()
    (tmp_path / "autoencoder" / ".done").touch()
    again = subprocess.run(["make", "-n", "all", f"STUDY={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert "experiment=autoencoder model.code_size=2048" not in again.stdout, "a finished section is skipped"


def test_each_data_set_gets_a_study_folder_and_a_report_of_its_own():
    """`make autoencoder` then `make autoencoder DATASET=shared_voc`: neither resumes, skips or reports the other."""
    import subprocess

    from tests.conftest import ROOT

    # make's defaults, whatever this shell exports or a calling make passes down
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATASET", "DATA", "YEAR", "STUDY", "REPORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def steps(*args):
        out = subprocess.run(["make", "-n", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.replace("\\\n", " ")

    a, b = (hashlib.md5(path.encode()).hexdigest()[:6] for path in ("/data/a/VOC", "/data/b/VOC"))
    for args, name in [((), "synthetic"), (("DATASET=shared_voc",), "shared_voc"),
                       (("DATA=/data/a/VOC/", "YEAR=2012"), f"VOC-2012-{a}"), (("DATA=/data/b/VOC", "YEAR=2012"),
                                                                              f"VOC-2012-{b}")]:
        assert f"hydra.run.dir=outputs/study/{name}/encoder " in steps("autoencoder", *args)
        assert f"--runs outputs/study/{name} --out outputs/report/{name}" in steps("report", *args)


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
                          "data": {"extra_masks": "/masks", "color": "gray"}},
               "data": {"extra_masks": {"images": 1318, "teacher": {"ckpt_path": "/teacher.ckpt"}, "color": "gray"}}}
    (row,) = seg_rows([Run(tmp_path, metrics)])
    assert row["model"] == "UNet + aug + 1318 pseudo-labelled (teacher teacher.ckpt)" and row["val Dice"] == 0.7
    assert row["device"] == "CPU" and "segmentation_selftrain" in TASKS

    # a teacher still in its run folder is named by its own val Dice; one of another colour says so
    teacher = tmp_path / "teacher"
    (teacher / "checkpoints").mkdir(parents=True)
    (teacher / "metrics.json").write_text(json.dumps({"val": {"val/dice": 0.7204}}))
    metrics["data"]["extra_masks"].update(teacher={"ckpt_path": str(teacher / "checkpoints" / "best.ckpt")},
                                          color="rgb")
    metrics["hardware"] = {"device": "NVIDIA H200"}
    (row,) = seg_rows([Run(tmp_path, metrics)])
    assert row["model"] == "UNet + aug + 1318 pseudo-labelled (teacher Dice 0.720, reading rgb)"
    assert row["device"] == "H200"
