"""Seeds as an axis: runs that differ only in seed are one row of mean ± std (n) in the report's tables and one
mean curve with a min-max band in its figures; `make SEEDS=3` runs every job of the sections over seeds 1..3."""

from __future__ import annotations

import csv
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from tests.conftest import ROOT
from voc_dl.report import seeds
from voc_dl.report.__main__ import build
from voc_dl.report.common import fmt_spread
from voc_dl.report.runs import Run, read_run

HISTORY_KEYS = ("train/loss", "val/loss", "train/subset_acc", "val/subset_acc", "val/map")


def classifier_run(folder: Path, seed: int, val: dict, *, status="ok", augment=False, max_epochs=4,
                   history=(), experiment="classification") -> Path:
    """A run folder as voc_dl.train leaves it for experiment=classification model=deep_cnn, with these numbers."""
    folder.mkdir(parents=True)
    job = {"task_name": experiment, "seed": seed, "resume": False, "threads": None,
           "paths": {"run_dir": "${hydra:runtime.output_dir}", "output_dir": f"/elsewhere/{seed}"},
           "model": {"_target_": "voc_dl.tasks.classification.ClassificationTask", "augment": augment,
                     "net": {"_target_": "voc_dl.models.classifiers.DeepCNN"}},
           "data": {"classes": ["cat", "dog"], "seed": "${seed}", "cache_dir": f"/cache/{seed}"},
           "trainer": {"max_epochs": max_epochs, "accelerator": "cpu" if seed % 2 else "gpu"}}
    metrics = {"status": status, "task_name": experiment, "seed": seed,
               "overrides": [f"experiment={experiment}", "model=deep_cnn", f"seed={seed}"],
               "val": {f"val/{k}": v for k, v in val.items()}, "val_scope": "whole split",
               "data": {"val_images": 20, "synthetic": True},
               "config": {"model": {"net": {"_target_": "voc_dl.models.classifiers.DeepCNN"}, "augment": augment},
                          "data": {"classes": ["cat", "dog"], "batch_size": 4}},
               "epochs": len(history), "best_epoch": 1, "wall_time_s": 10.0 * seed, "job_config": job}
    if status != "ok":
        metrics["error"] = "KeyboardInterrupt (resume: ckpt_path=last)"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", *HISTORY_KEYS])
        writer.writeheader()
        writer.writerows({"epoch": e, **dict(zip(HISTORY_KEYS, values, strict=True))} for e, values in
                         enumerate(history))
    return folder


def test_table2_shows_mean_and_sample_std_over_seeds_and_leaves_single_runs_as_they_are(tmp_path):
    study = tmp_path / "study"
    curve = [(0.7, 0.8, 0.2, 0.1, 0.4), (0.6, 0.7, 0.3, 0.2, 0.5)]
    # seeds 1 and 2 of one config (they ran on other devices, with other caches: that changes nothing computed)
    classifier_run(study / "sweep" / "seed=1", 1, {"map": 0.5, "loss": 0.7, "subset_acc": 0.2}, history=curve)
    classifier_run(study / "sweep" / "seed=2", 2, {"map": 0.6, "loss": 0.62, "subset_acc": 0.3}, history=curve)
    # the same config interrupted, another config (augmentation) and another length: rows of their own
    classifier_run(study / "sweep" / "seed=3", 3, {"map": 0.9, "loss": 0.1}, status="interrupted", history=curve)
    classifier_run(study / "augmented" / "seed=1", 1, {"map": 0.7, "loss": 0.5}, augment=True, history=curve)
    classifier_run(study / "long" / "seed=1", 1, {"map": 0.65, "loss": 0.55}, max_epochs=60, history=curve)
    classifier_run(study / "improved" / "seed=1", 1, {"map": 0.68, "loss": 0.5}, augment=True, history=curve,
                   experiment="classification_improved")
    out = tmp_path / "report"
    written = build(study, out, sections=("classification",))

    with open(out / "table2.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    improved = next(r for r in rows if r["val mAP"] == "0.68")
    assert improved["model"] == "deep_cnn + augmentation (classification_improved)"
    merged = next(r for r in rows if r["n"] == "2")
    assert merged["seeds"] == "1, 2" and merged["status"] == "ok" and merged["run"] == str(study / "sweep")
    assert float(merged["val mAP"]) == pytest.approx(0.55)
    assert float(merged["val mAP std"]) == pytest.approx(statistics.stdev([0.5, 0.6]))  # sample std: n - 1
    assert float(merged["val log-loss std"]) == pytest.approx(0.08 / 2 ** 0.5)
    assert float(merged["wall s"]) == 15 and float(merged["wall s std"]) == pytest.approx(50 ** 0.5)
    singles = [r for r in rows if r is not merged]
    assert sorted(r["n"] for r in singles) == ["", "1", "1", "1"], "finished single runs are one seed each"
    interrupted = next(r for r in singles if r["status"].startswith("interrupted"))
    assert float(interrupted["val mAP"]) == 0.9 and interrupted["val mAP std"] == ""

    md = (out / "table2.md").read_text()
    header = md.splitlines()[2]
    assert "| n | seeds |" in header and "std" not in header, "the std is shown inside its column"
    merged_line = next(line for line in md.splitlines() if "| 1, 2 |" in line)
    assert "| 0.550 ± 0.071 |" in merged_line and "| 0.660 ± 0.057 |" in merged_line
    assert "| 15.0 ± 7.1 |" in merged_line
    page = (out / "index.html").read_text()
    assert '<td class="n">0.550 ± 0.071</td>' in page
    assert written["classification"]["figures"][0].name == "figure4.png"


def test_a_table_without_repeated_seeds_prints_as_before():
    rows = [{"model": "a", "val mAP": 0.5, "run": "/r/a"}, {"model": "b", "val mAP": 0.6, "run": "/r/b"}]
    assert seeds.mean_std(rows, key=lambda row: row["model"], measured=["val mAP"]) == rows
    # any key merges, e.g. a search table's rows by their trial parameters
    merged = seeds.mean_std([*rows, {"model": "a", "val mAP": 0.7, "run": "/r/c"}], key=lambda row: row["model"],
                            measured=["val mAP"], seed=lambda row: row["run"][-1])
    assert merged[0] == {"model": "a", "val mAP": pytest.approx(0.6), "val mAP std": pytest.approx(0.02 ** 0.5),
                         "run": "/r", "n": 2, "seeds": "a, c"}
    assert merged[1] == {**rows[1], "n": 1, "seeds": "b"}


def test_spread_is_written_to_the_second_significant_digit_of_the_std():
    assert fmt_spread(0.55, 0.0707107) == "0.550 ± 0.071"
    assert fmt_spread(0.012345, 0.000567) == "0.01235 ± 0.00057"
    assert fmt_spread(1234.4, 56.1) == "1234 ± 56"
    assert fmt_spread(0.5, 0.0) == "0.5 ± 0" and fmt_spread(0.5, float("nan")) == "0.5"
    assert fmt_spread(0.1, 1.4e-17) == "0.1 ± 0", "round-off between seeds is no spread"


def test_curves_of_several_seeds_are_their_mean_in_a_min_max_band(tmp_path):
    def run(seed, losses):
        history = [{"epoch": str(e), "val/loss": str(v)} for e, v in enumerate(losses)]
        return Run(tmp_path / str(seed), {"status": "ok", "seed": seed}, history)

    # the third seed stopped early: the last epoch is the mean of the seeds that reached it
    runs = [run(1, [1.0, 0.5, 0.4]), run(2, [0.8, 0.7, 0.2]), run(3, [0.9, 0.3])]
    fig, ax = plt.subplots()
    seeds.plot_mean(ax, runs, "val/loss", "--")
    (line,) = ax.lines
    assert list(line.get_xdata()) == [0, 1, 2]
    assert list(line.get_ydata()) == pytest.approx([0.9, 0.5, 0.3])
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(0.2) and max(ys) == pytest.approx(1.0)
    seeds.plot_mean(ax, runs[:1], "val/loss")
    assert len(ax.collections) == 1, "one run: a line, no band"
    plt.close(fig)


def test_runs_of_one_config_over_other_seeds_are_siblings_and_other_configs_are_not(tmp_path):
    a = read_run(classifier_run(tmp_path / "a", 1, {"map": 0.5}))
    b = read_run(classifier_run(tmp_path / "b", 7, {"map": 0.6}))
    other = read_run(classifier_run(tmp_path / "c", 7, {"map": 0.6}, augment=True))
    assert seeds.siblings(a, [a, b, other]) == [a, b]
    assert seeds.groups([a, other, b]) == [[a, b], [other]]
    # runs from before metrics.json recorded the job config: model, data, length, precision and overrides
    old = [Run(r.path, {k: v for k, v in r.metrics.items() if k != "job_config"}) for r in (a, b, other)]
    assert [len(g) for g in seeds.groups(old)] == [2, 1]


def make_steps(*args: str) -> list[list[str]]:
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.replace("\\\n", " ").splitlines() if "voc_dl.train" in line]


def test_make_seeds_runs_every_job_of_the_sections_over_seeds_one_to_n(tmp_path):
    steps = make_steps("autoencoder", "classifiers", "segmentation", f"STUDY={tmp_path}", "SEEDS=3")
    jobs = []
    for s in steps:
        values = {w.split("=", 1)[0]: w.split("=", 1)[1].split(",") for w in s if w.startswith("seed=")}
        assert "seed" in values, f"no seed in {shlex.join(s)}"
        assert "resume=true" in s, "the section targets carry on where they stopped"
        swept = {w.split("=", 1)[0]: w.split("=", 1)[1].split(",") for w in s[3:] if "=" in w and "," in w
                 and not w.startswith(("seed=", '"', "'", "data.", "hydra."))}
        fixed = tuple(sorted(w for w in s[3:] if w.startswith(("experiment=", "model=", "model.")) and "," not in w))
        combos = [()]
        for key, options in swept.items():
            combos = [(*c, f"{key}={o}") for c in combos for o in options]
        jobs += [(fixed + c, seed) for c in combos for seed in values["seed"]]
    encoder = (("experiment=autoencoder", "model.code_size=8192", "model.loss=mse"), "1")
    assert [j for j in set(jobs) if jobs.count(j) > 1] == [encoder], "only the encoder, which two targets name"
    by_config: dict = {}
    for config, seed in set(jobs):
        by_config.setdefault(config, set()).add(seed)
    assert all(found == {"1", "2", "3"} for found in by_config.values()), by_config
    ae = {c for c in by_config if "experiment=autoencoder" in c}
    assert len(ae) == 6, "every code size x loss, the encoder's 8192/MSE included"
    # the runs later steps read are seed 1's, in their fixed folders
    assert any(f"hydra.run.dir={tmp_path}/encoder" in s and "seed=1" in s for s in steps)
    assert any(f"hydra.run.dir={tmp_path}/teacher" in s and "seed=1" in s for s in steps)

    plain = make_steps("autoencoder", f"STUDY={tmp_path}", "FORCE=1")
    assert all("resume=false" in s and not any(w.startswith("seed=") for w in s) for s in plain)
    bad = subprocess.run(["make", "-n", "autoencoder", "SEEDS=three"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "SEEDS=three: give the number of seeds, e.g. SEEDS=3" in bad.stderr


@pytest.mark.slow  # two tiny trainings in a sweep process, then the report in another
def test_a_sweep_over_two_seeds_shows_mean_and_std_in_the_report(tmp_path, synthetic_root):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "voc_dl.train", "-m", "experiment=classification", "model=deep_cnn", "seed=1,2",
           "debug=tiny", "data.batch_size=4", f"data.root={synthetic_root}", f"data.cache_dir={tmp_path}/cache",
           f"hydra.sweep.dir={sweep}", "~logger"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert sorted(results) == ["data.batch_size=4,model=deep_cnn,seed=1", "data.batch_size=4,model=deep_cnn,seed=2"]
    loss = [results[f"data.batch_size=4,model=deep_cnn,seed={s}"]["val"]["val/loss"] for s in (1, 2)]
    assert loss[0] != loss[1], "two seeds, two trainings"

    report = subprocess.run([sys.executable, "-m", "voc_dl.report", "--runs", str(sweep), "--out",
                             str(tmp_path / "report"), "--section", "classification"], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert report.returncode == 0, report.stderr[-3000:]
    with open(tmp_path / "report" / "table2.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["n"] == "2" and row["seeds"] == "1, 2" and row["run"] == str(sweep)
    assert float(row["val log-loss"]) == pytest.approx(statistics.fmean(loss))
    assert float(row["val log-loss std"]) == pytest.approx(statistics.stdev(loss))
    assert fmt_spread(statistics.fmean(loss), statistics.stdev(loss)) in report.stdout
