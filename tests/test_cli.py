"""The command line as users type it: Lightning Trainer arguments, quoting, one-line errors, the demo's ARGS."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from voc_dl.cli import one_line_errors, prepare_overrides
from voc_dl.demo import _quote, merged


def test_any_trainer_argument_is_an_override_and_listed_ones_stay_plain():
    out = prepare_overrides(["-m", "experiment=segmentation", "trainer.fast_dev_run=true",
                             "trainer.limit_train_batches=10", "trainer.max_epochs=3", "trainer=ddp_cpu",
                             "+trainer.profiler=simple"])
    assert out == ["-m", "experiment=segmentation", "++trainer.fast_dev_run=true",
                   "++trainer.limit_train_batches=10", "trainer.max_epochs=3", "trainer=ddp_cpu",
                   "+trainer.profiler=simple"]


def usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        prepare_overrides(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_name_the_trainer_does_not_take_is_refused_with_the_nearest_names(capsys):
    err = usage_error(["trainer.limit_train_batch=10"], capsys)
    assert err.startswith("voc-dl: error: trainer.limit_train_batch is not an argument of Lightning's Trainer; "
                          "did you mean trainer.limit_train_batches")


def test_an_unquoted_path_with_equals_signs_gets_its_quoted_form(capsys):
    path = "outputs/multiruns/autoencoder/2026-01-01_00-00-00/model.code_size=8192,model.loss=mse/best.ckpt"
    err = usage_error([f"ckpt_path={path}"], capsys)
    assert f"""Quote it: "ckpt_path='{path}'\"""" in err
    assert prepare_overrides([f"ckpt_path='{path}'"]) == [f"ckpt_path='{path}'"]


@pytest.mark.parametrize("argv, message", [
    (["voc_dl.train", "model.code_size=1000"],
     "voc-dl: error: model.code_size=1000 is not allowed; allowed: 2048, 4096, 8192"),
    # the same check in two more entry points: an interpreter start each, so in the slow set
    pytest.param(["voc_dl.eval"], "voc-dl: error: ckpt_path is required. Fix: python -m voc_dl.eval "
                 "ckpt_path=<run>/checkpoints/best.ckpt (quote a path that holds '=': \"ckpt_path='<path>'\")",
                 marks=pytest.mark.slow),
    pytest.param(["voc_dl.pseudo_label", "out=masks"], "voc-dl: error: ckpt_path is required. Fix: python -m "
                 "voc_dl.pseudo_label ckpt_path=<teacher run>/checkpoints/best.ckpt out=<folder for the masks>",
                 marks=pytest.mark.slow),
    # its message is checked in-process by test_selftraining; here as a whole interpreter's output, in the slow set
    pytest.param(["voc_dl.train", "experiment=segmentation_selftrain", "data.pseudo_label_ckpt=/t.ckpt"],
                 "voc-dl: error: data.pseudo_label_ckpt is not a data setting: pseudo-labelling is its own step. Fix: "
                 "run python -m voc_dl.pseudo_label ckpt_path=<teacher best.ckpt> out=<folder> [confidence=0.9] "
                 "first, then train with data.extra_masks=<folder>", marks=pytest.mark.slow),
])
def test_errors_are_one_line_without_a_traceback(argv, message, tmp_path):
    # a real interpreter: what its imports print counts too (tests/launch.py forks from one that imported them)
    out = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_a_diverged_run_and_a_failed_weight_download_end_in_one_line(capsys, monkeypatch):
    from types import SimpleNamespace

    import torch
    from torchvision.models import WeightsEnum

    from voc_dl.callbacks import FiniteGuard
    from voc_dl.models.classifiers import load_backbone_weights

    def offline(self, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    diverged = SimpleNamespace(sanity_checking=False, current_epoch=3, callback_metrics={"val/loss": torch.tensor(
        float("nan"))})
    for fails, message in ((lambda: FiniteGuard().on_validation_end(diverged, None),
                            "voc-dl: error: val/loss is nan at epoch 3: training diverged."),
                           (lambda: load_backbone_weights("resnet18", "IMAGENET1K_V1"),
                            "voc-dl: error: downloading resnet18 weights IMAGENET1K_V1 failed")):
        with pytest.raises(SystemExit) as stop, one_line_errors():
            fails()
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(message) and err.count("\n") == 1 and "Fix:" in err, err


@pytest.mark.slow
def test_hydra_full_error_keeps_the_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "voc_dl.train", "model.code_size=1000"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr and "model.code_size=1000" in out.stderr


def test_demo_args_reach_every_run_and_win_over_the_demos_own():
    own = ["-m", "experiment=autoencoder", "trainer.max_epochs=2", "debug=demo", "hydra.sweep.dir=x"]
    assert merged(own, ["debug=fast", "data.root=/v"]) == ["-m", "experiment=autoencoder", "trainer.max_epochs=2",
                                                            "hydra.sweep.dir=x", "debug=fast", "data.root=/v"]
    assert merged(own, ["++trainer.max_epochs=1"])[2:] == ["debug=demo", "hydra.sweep.dir=x",
                                                           "++trainer.max_epochs=1"]


def test_demo_prints_commands_a_shell_takes_back_as_they_ran():
    args = ["-m", "experiment=classification", "model.encoder_ckpt='/o/model.code_size=8192/best.ckpt'",
            "data.classes=[cat,dog]", 'a"b$c']
    line = " ".join(_quote(a) for a in args)
    assert "\"model.encoder_ckpt='/o/model.code_size=8192/best.ckpt'\"" in line
    assert shlex.split(line) == args


def test_make_reads_consumed_runs_from_folders_of_their_own(tmp_path):
    # PRECISION=, EPOCHS= and ARGS= rename sweep job folders: the runs later steps read are single runs in fixed ones
    out = subprocess.run(["make", "-n", "autoencoder", "classifiers", "segmentation", f"STUDY={tmp_path}",
                          "PRECISION=32-true", "ARGS=data.batch_size=2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    steps = [shlex.split(line) for line in out.stdout.replace("\\\n", " ").splitlines() if "voc_dl." in line]

    def step(*words: str) -> int:
        return next(i for i, s in enumerate(steps) if set(words) <= set(s))

    encoder = step("experiment=autoencoder", "model.code_size=8192", "model.loss=mse")
    teacher = step("experiment=segmentation_improved", f"hydra.run.dir={tmp_path}/teacher")
    labels = step("voc_dl.pseudo_label", f"ckpt_path='{tmp_path}/teacher/checkpoints/best.ckpt'")
    student = step("experiment=segmentation_selftrain", f"data.extra_masks='{tmp_path}/pseudo_labels'")
    swept = [s[3:4] == ["-m"] for s in steps]  # python -m voc_dl.train -m ...
    assert f"hydra.run.dir={tmp_path}/encoder" in steps[encoder] and not swept[encoder] and not swept[teacher]
    assert teacher < labels < student
    assert f"out='{tmp_path}/pseudo_labels'" in steps[labels] and "data.batch_size=2" in steps[labels]
    assert f"model.encoder_ckpt='{tmp_path}/encoder/checkpoints/best.ckpt'" in steps[step("model=frozen_encoder")]
    # every sweep covers the other five code size x loss jobs, none of them twice
    jobs = {(c, loss) for s, sweep in zip(steps, swept, strict=True) if "experiment=autoencoder" in s and sweep
            for c in next(w for w in s if w.startswith("model.code_size=")).split("=")[1].split(",")
            for loss in next(w for w in s if w.startswith("model.loss=")).split("=")[1].split(",")}
    assert jobs == {(c, loss) for c in ("2048", "4096", "8192") for loss in ("mse", "mae")} - {("8192", "mse")}


def test_make_demo_passes_args_and_tensorboard_binds_this_machine():
    demo = subprocess.run(["make", "-n", "demo", "ARGS=trainer.max_epochs=1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "-m voc_dl.demo trainer.max_epochs=1" in demo.stdout
    tb = subprocess.run(["make", "-n", "tensorboard", "PORT=7007"], cwd=ROOT, capture_output=True, text=True,
                        timeout=60)
    assert "--host 127.0.0.1 --port 7007" in tb.stdout and "bind_all" not in tb.stdout
