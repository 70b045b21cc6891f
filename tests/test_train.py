"""End to end: every experiment smoke-runs, runs write their results, a sweep runs, losses go down."""

from __future__ import annotations

import csv
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra
from pytorch_lightning.utilities.exceptions import SIGTERMException

from tests.conftest import ADAM, ROOT, composer
from tests.test_configs import MODELS
from voc_dl.eval import evaluate
from voc_dl.tasks.classification import ClassificationTask
from voc_dl.tasks.reconstruction import ReconstructionTask
from voc_dl.tasks.segmentation import SegmentationTask
from voc_dl.train import train

SMALL = ["data.batch_size=4"]


def tiny_ae(compose_cfg, tmp_path, code_size=8192, *extra):
    cfg = compose_cfg(["experiment=autoencoder", f"model.code_size={code_size}", "debug=tiny", *SMALL, *extra])
    return train(cfg)


@pytest.mark.parametrize("experiment, model", [(e, m) for e, ms in MODELS.items() for m in ms  # these two need
                                               if m != "frozen_encoder" and e != "segmentation_selftrain"])  # a ckpt
def test_every_experiment_runs_with_fast_dev_run(compose_cfg, experiment, model):
    extra = ["model.net.weights=null"] if model == "pretrained" else []
    result = train(compose_cfg([f"experiment={experiment}", f"model={model}", "debug=fast", *SMALL, *extra]))
    assert result["status"] == "ok" and result["val"]["val/loss"] == result["val"]["val/loss"]


@pytest.mark.parametrize("color, channels", [("gray", 1), ("rgb", 3)])
def test_segmenters_take_the_channels_the_data_config_serves(compose_cfg, color, channels):
    for model in ("segnet", "unet"):
        cfg = compose_cfg(["experiment=segmentation_improved", f"model={model}", f"data.color={color}", "debug=fast",
                           *SMALL])
        assert cfg.model.net.in_channels == channels
        result = train(cfg)
        assert result["status"] == "ok" and 0 <= result["val"]["val/dice"] <= 1


@pytest.fixture(scope="session")
def section1_run(tmp_path_factory, synthetic_root) -> tuple[dict, Path]:
    """A tiny run of Section 1's 8192-code autoencoder (the frozen encoder's), shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("section1")
    result = tiny_ae(composer(tmp, synthetic_root), tmp)
    GlobalHydra.instance().clear()
    return result, tmp / "run"


section1_group = pytest.mark.xdist_group("section1")  # one worker builds the shared run once


@section1_group
def test_tiny_run_writes_metrics_history_checkpoints_and_events(section1_run):
    result, run = section1_run
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["epochs"] == 2 and saved["trainable_params"] == 788_899
    assert set(saved["val"]) >= {"val/mse", "val/mae", "val/psnr", "val/ssim", "val/loss"}
    assert saved["val"] == result["val"] and 0 < saved["val"]["val/mse"] < 1
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and "train/loss" in history[0] and "val/mse" in history[0]
    assert len(history) == 3
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert {"train/loss", "val/mse", "val/mae", "val/psnr", "val/ssim"} <= set(acc.Tags()["scalars"])
    assert "val/reconstructions" in acc.Tags()["images"]


@section1_group
def test_frozen_encoder_loads_a_real_section1_checkpoint(compose_cfg, section1_run):
    ckpt = section1_run[1] / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    cfg = compose_cfg(["experiment=classification", "model=frozen_encoder", f"model.encoder_ckpt={ckpt}",
                       "debug=fast", *SMALL])
    import hydra
    from omegaconf import OmegaConf
    task = hydra.utils.instantiate(OmegaConf.to_container(cfg.model, resolve=True), _recursive_=False)
    assert task.trainable_parameters() == 24_579
    task.setup("fit")  # a new training starts from the encoder; a loaded checkpoint holds its weights
    assert torch.equal(task.net.encoder[0].weight, state["net.encoder.0.weight"])
    assert train(cfg)["status"] == "ok"


def test_frozen_encoder_refuses_another_architecture(compose_cfg, tmp_path):
    tiny_ae(compose_cfg, tmp_path, 2048, "data.image_size=64")  # another architecture, at any size
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(["experiment=classification", "model=frozen_encoder", f"model.encoder_ckpt={ckpt}",
                       "debug=fast", *SMALL])
    with pytest.raises(ValueError, match=r"does not hold a 8192-code encoder.*model.code_size=8192"):
        train(cfg)
    cfg = compose_cfg(["experiment=classification", "model=frozen_encoder",
                       f"model.encoder_ckpt={tmp_path}/nope.ckpt", "debug=fast", *SMALL])
    with pytest.raises(FileNotFoundError, match=r"nope.ckpt: no such file.*make autoencoder"):
        train(cfg)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_eval_of_a_classifier_scores_the_validation_set_it_selected_on(compose_cfg, tmp_path):
    # the classification experiment trains on a share of val (val_to_train): eval leaves those images out, as the
    # run did, unless data.val_to_train is given
    cfg = compose_cfg(["experiment=classification", "model=deep_cnn", "debug=tiny", "data.image_size=64", *SMALL])
    assert cfg.data.val_to_train > 0
    trained = train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    again = evaluate(compose_cfg([f"ckpt_path={ckpt}"], config_name="eval.yaml"))
    assert again["data"]["val_images"] == trained["data"]["val_images"]
    assert again["val"]["val/map"] == pytest.approx(trained["val"]["val/map"], rel=1e-5)
    whole = evaluate(compose_cfg([f"ckpt_path={ckpt}", "data.val_to_train=0"], config_name="eval.yaml"))
    assert whole["data"]["val_images"] > trained["data"]["val_images"]


def test_eval_scores_on_the_data_the_run_trained_on_unless_the_command_names_others(compose_cfg, tmp_path,
                                                                                  synthetic_root):
    from voc_dl.data.synthetic import make_synthetic_voc

    own = tmp_path / "own"
    make_synthetic_voc(own, "2009", n_images=24, seed=5)
    trained = train(compose_cfg(["experiment=segmentation", "debug=tiny", f"data.root={own}", "data.void=background",
                                 *SMALL]))
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    # as `voc_dl.eval ckpt_path=...` (with the run's batch size: the loss is a mean of batch means)
    again = evaluate(compose_cfg([f"ckpt_path={ckpt}", *SMALL], config_name="eval.yaml"))
    assert again["data"]["root"] == str(own) and again["data"]["val_images"] == trained["data"]["val_images"]
    for key, value in again["val"].items():
        assert trained["val"][key] == pytest.approx(value, rel=1e-5), key
    other = evaluate(compose_cfg([f"ckpt_path={ckpt}", f"data.root={synthetic_root}"], config_name="eval.yaml"))
    assert other["data"]["root"] == str(synthetic_root) and other["data"]["val_images"] != trained["data"]["val_images"]
    # another tree, the run's labelling: its void pixels are background, as in training, unless data.void is named
    assert trained["data"]["val_void_fraction"] == other["data"]["val_void_fraction"] == 0
    ignored = evaluate(compose_cfg([f"ckpt_path={ckpt}", f"data.root={synthetic_root}", "data.void=ignore"],
                                   config_name="eval.yaml"))
    assert ignored["data"]["val_void_fraction"] > 0


def test_eval_scores_a_checkpoint_on_another_split(compose_cfg, tmp_path):
    cfg = compose_cfg(["experiment=segmentation", "debug=tiny", *SMALL])
    trained = train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    # epochs validated 2 batches (debug=tiny); the recorded numbers are the best checkpoint on the whole split
    whole = evaluate(compose_cfg([f"ckpt_path={ckpt}", f"data.batch_size={cfg.data.batch_size}"],  # pooled loss
                                 config_name="eval.yaml"))
    assert trained["val_scope"] == "whole split" and whole["data"]["val_images"] > 2 * cfg.data.batch_size
    for key, value in whole["val"].items():
        assert trained["val"][key] == pytest.approx(value, rel=1e-5), key
    ecfg = compose_cfg([f"ckpt_path={ckpt}", "split=train"], config_name="eval.yaml")
    result = evaluate(ecfg)
    assert result["status"] == "ok" and result["split"] == "train"
    assert {"val/dice", "val/iou", "val/dice_per_image"} <= set(result["val"])
    assert result["data"]["task"] == "segmentation" and result["data"]["image_shape"] == [1, 64, 64]

    # a setting that leaves the weights alone can be changed at evaluation; a made-up one is refused
    tta = evaluate(compose_cfg([f"ckpt_path={ckpt}", "split=train", "+model.tta=true"], config_name="eval.yaml"))
    assert tta["model_overrides"] == {"tta": True} and set(tta["val"]) == set(result["val"])
    with pytest.raises(ValueError, match="model.nonsense: not a setting of .*SegmentationTask.*tta"):
        evaluate(compose_cfg([f"ckpt_path={ckpt}", "+model.nonsense=1"], config_name="eval.yaml"))


def test_early_stopping_stops_on_a_plateau(compose_cfg):
    cfg = compose_cfg(["experiment=classification", "model=deep_cnn", "model.early_stopping_patience=1",
                       "model.early_stopping_min_delta=100", "trainer.max_epochs=6", "+trainer.limit_train_batches=1",
                       "+trainer.limit_val_batches=1", *SMALL])
    result = train(cfg)
    assert result["epochs"] == 2, "no improvement of at least min_delta after epoch 0: stop after patience=1"


@pytest.mark.parametrize("experiment, metric, mode", [("segmentation", "val/dice", "max"),
                                                      ("autoencoder", "val/loss", "min")])
def test_one_monitor_picks_the_checkpoint_steers_the_task_and_is_what_the_app_returns(
        compose_cfg, experiment, metric, mode):
    from voc_dl.train import app, build

    cfg = compose_cfg([f"experiment={experiment}", "debug=tiny", "trainer.max_epochs=2", "data.batch_size=2",
                       "data.image_size=64", "~logger"])
    assert dict(cfg.monitor) == {"metric": metric, "mode": mode}
    _, task, trainer = build(cfg)
    ckpt = next(c for c in trainer.checkpoint_callbacks if c.monitor)
    assert (ckpt.monitor, ckpt.mode) == (metric, mode) and task.monitor == {"metric": metric, "mode": mode}
    returned = app(cfg)  # what a Hydra sweeper receives
    metrics = json.loads((Path(cfg.paths.run_dir) / "metrics.json").read_text())
    assert returned == metrics["val"][metric] and metrics["monitor"] == {"metric": metric, "mode": mode}
    history = [float(r[metric]) for r in csv.DictReader((Path(cfg.paths.run_dir) / "history.csv").open())]
    best = max(history) if mode == "max" else min(history)
    assert metrics["best_epoch"] == history.index(best)


@pytest.mark.slow  # the README's sweep command runs the same six jobs by default
def test_autoencoder_sweep_runs_six_jobs_named_by_overrides(tmp_path, synthetic_root):
    cmd = [sys.executable, "-m", "voc_dl.train", "-m", "experiment=autoencoder",
           "model.code_size=2048,4096,8192", "model.loss=mse,mae", "debug=fast", "data.batch_size=2",
           f"data.root={synthetic_root}",
           f"data.cache_dir={tmp_path}/cache", f"hydra.sweep.dir={tmp_path}/sweep"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    prefix = "data.batch_size=2,"
    assert jobs == sorted(f"{prefix}model.code_size={c},model.loss={loss}" for c in (2048, 4096, 8192)
                          for loss in ("mse", "mae"))
    for job in jobs:
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert metrics["status"] == "ok", metrics.get("error")


def overfit(task, batch, steps=12):
    opt = task.configure_optimizers()
    task.train()
    losses = []
    for _ in range(steps):
        out = task.training_step(batch, 0)
        opt.zero_grad()
        out.backward()
        opt.step()
        losses.append(out.item())
    return losses


@pytest.mark.numerics
@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_autoencoder_steps_lower_the_loss(loss):
    torch.manual_seed(0)
    task = ReconstructionTask(code_size=8192, loss=loss, optimizer=ADAM, channels_last=False)
    task.log = task.log_dict = lambda *a, **k: None
    # flat colours, far from grey; 64 px: the convolutions do not care, and it is 4x cheaper than 128
    x = (torch.rand(2, 3, 1, 1) * 0.8 + 0.1).expand(2, 3, 64, 64).contiguous()
    losses = overfit(task, x, steps=12)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.numerics
@pytest.mark.parametrize("loss", ["bce", "dice", "bce_dice"])
def test_segmentation_steps_lower_the_loss(loss):
    torch.manual_seed(0)
    task = SegmentationTask({"_target_": "voc_dl.models.segmenter.SegNet", "filters": (32, 16, 16, 8)}, loss=loss,
                            optimizer=ADAM, channels_last=False)
    task.log = task.log_dict = lambda *a, **k: None
    mask = torch.zeros(4, 1, 64, 64, dtype=torch.uint8)
    mask[:, :, 16:48, 16:48] = 1
    mask[:, :, 15, 16:48] = 255
    x = mask.float().clamp(max=1) * 0.6 + 0.2 + 0.05 * torch.randn(4, 1, 64, 64)
    losses = overfit(task, (x, mask), steps=30)
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.numerics
def test_classification_steps_lower_the_loss():
    torch.manual_seed(0)
    net = {"_target_": "voc_dl.models.classifiers.DeepCNN", "num_classes": 3, "filters": (8, 8, 16, 16, 16),
           "dropout": 0.0, "head_dropout": 0.0}
    task = ClassificationTask(net, 3, optimizer=ADAM, channels_last=False)
    task.log = task.log_dict = lambda *a, **k: None
    x, y = torch.rand(8, 3, 128, 128), torch.randint(0, 2, (8, 3)).float()
    losses = overfit(task, (x, y), steps=15)
    assert losses[-1] < 0.9 * losses[0]


def test_resume_from_last_continues_the_run_and_its_history(compose_cfg, tmp_path):
    train(compose_cfg(["experiment=segmentation", "debug=tiny", *SMALL]))
    run = tmp_path / "run"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1, "last.ckpt is refreshed every epoch, improved or not"
    result = train(compose_cfg(["experiment=segmentation", "debug=tiny", "trainer.max_epochs=3", "ckpt_path=last",
                                *SMALL]))
    assert result["status"] == "ok" and result["epochs"] == 3
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]


def test_ckpt_path_last_without_a_checkpoint_says_how_to_resume(compose_cfg):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no .*last.ckpt.*hydra.run.dir"):
        train(compose_cfg(["experiment=segmentation", "debug=tiny", "ckpt_path=last", *SMALL]))


@pytest.mark.parametrize("stop, status", [(SIGTERMException, "interrupted"), (KeyboardInterrupt, "interrupted"),
                                          (RuntimeError, "failed")])
def test_a_killed_run_is_recorded_as_interrupted_and_a_crash_as_failed(compose_cfg, tmp_path, monkeypatch, stop,
                                                                      status):
    def fit(self, *args, **kwargs):
        raise stop()

    monkeypatch.setattr(pl.Trainer, "fit", fit)
    with pytest.raises(stop):
        train(compose_cfg(["experiment=segmentation", "debug=tiny", *SMALL]))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == status and metrics["error"].startswith(stop.__name__)
    assert ("ckpt_path=last" in metrics["error"]) == (status == "interrupted")


def test_ddp_inside_a_local_multirun_is_refused(compose_cfg):
    from voc_dl.train import check_no_nested_launch

    cfg = compose_cfg(["experiment=segmentation", "trainer=ddp", "hydra.mode=MULTIRUN"])
    with pytest.raises(ValueError, match=r"trainer.strategy=ddp with 4 devices inside a local multirun.*nested"):
        check_no_nested_launch(cfg)
    check_no_nested_launch(compose_cfg(["experiment=segmentation", "trainer=ddp"]))  # a single run may
    # ddp_spawn does not re-execute the command line
    check_no_nested_launch(compose_cfg(["experiment=segmentation", "trainer=ddp_cpu", "hydra.mode=MULTIRUN"]))


@pytest.mark.slow  # a launcher plugin's sweep
def test_parallel_sweep_with_joblib_caps_threads(tmp_path, synthetic_root):
    cmd = [sys.executable, "-m", "voc_dl.train", "-m", "hydra/launcher=local_parallel", "experiment=segmentation",
           "model.loss=bce,dice", "debug=fast", "data.batch_size=2", f"data.root={synthetic_root}",
           f"data.cache_dir={tmp_path}/cache",
           f"hydra.sweep.dir={tmp_path}/sweep"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "litlogger" not in out.stdout + out.stderr and "LeafSpec" not in out.stderr, "as quiet as one job"
    runs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(runs) == 2
    import os
    for m in runs:
        metrics = json.loads(m.read_text())
        assert metrics["status"] == "ok"
        assert metrics["hardware"]["threads"] == max(1, (os.cpu_count() or 1) // 2)


def test_segmentation_augmentation_moves_image_and_mask_together():
    torch.manual_seed(1)
    x = torch.rand(6, 1, 16, 16)
    mask = (x > 0.5).to(torch.uint8)  # the mask is a function of the image: it must stay one after augmenting
    for _ in range(5):
        ax, am = SegmentationTask.flip_and_shift(x, mask, max_shift=3)
        real = am != 255
        assert torch.equal(am[real], (ax[real] > 0.5).to(torch.uint8))
        assert (~real).sum() < 0.5 * real.numel()


def test_segmentation_zoom_keeps_image_and_mask_aligned():
    # a bright square and its mask: after zoom + shift the mask must still cover the square's pixels
    x = torch.zeros(4, 1, 64, 64)
    x[..., 20:40, 10:30] = 1
    mask = (x > 0.5).to(torch.uint8)
    torch.manual_seed(0)
    grown = 0
    for _ in range(8):
        ax, am = SegmentationTask.flip_and_shift(x, mask, max_zoom=1.3)
        real = am != 255
        agree = ((ax[real] > 0.5).to(torch.uint8) == am[real]).float().mean()
        assert agree > 0.99
        grown += int((am == 1).sum() > (mask == 1).sum())
    assert grown >= 4  # zoom really enlarges objects


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    # a conv that is not mirror-symmetric: TTA must change its output
    task = SegmentationTask(net={"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1,
                                 "kernel_size": 3, "padding": 1}, optimizer=ADAM, tta=True)
    net = task.net
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        plain, mirrored = net(x), net(x.flip(-1)).flip(-1)
        assert not torch.allclose(plain, mirrored)
        torch.testing.assert_close(task.predict_logits(x), (plain + mirrored) / 2)
        task.tta = False
        torch.testing.assert_close(task.predict_logits(x), plain)


def test_segmentation_rejects_zoom_below_one():
    with pytest.raises(ValueError, match="model.max_zoom"):
        SegmentationTask(net={"_target_": "torch.nn.Identity"}, optimizer=ADAM, max_zoom=0.5)


def test_same_seed_same_metrics_other_seed_other_metrics(compose_cfg, tmp_path):
    def run(seed, folder):
        cfg = compose_cfg(["experiment=segmentation", "debug=tiny", "trainer.deterministic=true", f"seed={seed}",
                           f"paths.run_dir={tmp_path / folder}", *SMALL])
        return train(cfg)["val"]

    first, again, other = run(1, "a"), run(1, "b"), run(2, "c")
    assert first == again
    assert first != other


def test_a_test_split_is_scored_once_by_the_best_checkpoint_and_runs_record_where_they_came_from(
        compose_cfg, tmp_path):
    from tests.test_hparams import post, tensorboard

    cfg = compose_cfg(["experiment=segmentation_improved", "model=segnet", "debug=tiny", *SMALL, "data.image_size=32",
                       "data.test_split=holdout", "data.holdout_fraction=0.5", "tags=[smoke,holdout]"])
    result = train(cfg)
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"] == result["test"] and saved["data"]["test_split"] == "holdout"
    assert set(saved["test"]) == {k.replace("val/", "test/") for k in saved["val"]}
    # the best checkpoint's numbers on that split, as voc_dl.eval's validation code computes them (on the run's
    # holdout: its fraction, 0.5, not the default 0.2)
    ckpt = run / "checkpoints" / "best.ckpt"
    held = evaluate(compose_cfg([f"ckpt_path={ckpt}", "split=holdout", *SMALL], config_name="eval.yaml"))
    assert held["data"]["val_images"] == saved["data"]["test_images"] > 2 * cfg.data.batch_size
    for key, value in held["val"].items():
        assert saved["test"][key.replace("val/", "test/")] == pytest.approx(value, rel=1e-5), key

    # provenance: tags, the code's commit, package versions, hardware, the command line
    assert saved["tags"] == ["smoke", "holdout"]
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert saved["provenance"]["git"]["commit"] == (git.stdout.strip() if git.returncode == 0 else None)
    assert saved["provenance"]["versions"]["torch"] == torch.__version__.split("+")[0]
    assert saved["provenance"]["versions"]["pytorch-lightning"] == pl.__version__
    assert saved["provenance"]["command"] == shlex.join(sys.orig_argv) and saved["hardware"]["cpu"]

    # the cosine schedule's learning rate, once per epoch, in history.csv and TensorBoard
    sched, lr = cfg.model.scheduler, cfg.model.optimizer.lr
    expected = [sched.eta_min + (lr - sched.eta_min) * (1 + math.cos(math.pi * e / sched.T_max)) / 2
                for e in range(cfg.trainer.max_epochs)]
    history = [float(r["train/lr"]) for r in csv.DictReader((run / "history.csv").open())]
    assert history == pytest.approx(expected, rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert {"train/lr", "test/dice", "test/iou", "val/dice"} <= set(acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx(expected, rel=1e-6)
    _, client = tensorboard(run / "tensorboard")
    row = post(client, "session_groups", {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS"],
                                          "startIndex": 0, "sliceSize": 10})["sessionGroups"][0]
    assert row["hparams"]["tags"] == "smoke,holdout" and row["hparams"]["data.test_split"] == "holdout"
    assert row["hparams"]["git.commit"] == saved["provenance"]["git"]["commit"] or "git.commit" not in row["hparams"]
    assert row["hparams"]["version.torch"] == saved["provenance"]["versions"]["torch"]
    final = {m["name"]["tag"]: m["value"] for m in row["metricValues"]}
    assert final["final/test/dice"] == pytest.approx(saved["test"]["test/dice"])


@pytest.mark.parametrize("logger, scheduled", [(False, True), (True, False)])
def test_the_learning_rate_monitor_leaves_runs_without_a_logger_or_a_schedule_alone(tmp_path, logger, scheduled):
    from pytorch_lightning.demos.boring_classes import BoringModel
    from pytorch_lightning.loggers import CSVLogger

    from voc_dl.callbacks import LearningRateMonitor

    class Constant(BoringModel):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    monitor = LearningRateMonitor()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=CSVLogger(tmp_path)
                         if logger else False, callbacks=[monitor], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(BoringModel() if scheduled else Constant())  # Lightning's own raises without a logger
    assert trainer.state.finished and not monitor.active and not monitor.lrs
    assert not any(k.startswith(("lr-", "train/lr")) for k in trainer.callback_metrics)
