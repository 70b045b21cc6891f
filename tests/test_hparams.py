"""The HParams tab over a folder that holds runs of all three sections, as TensorBoard's own backend serves
it: every run's swept keys and every section's final metrics are columns."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import open_dict
from tensorboard.backend.application import TensorBoardWSGIApp
from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams.hparams_plugin import HParamsPlugin
from tensorboard.plugins.hparams.metadata import EXPERIMENT_TAG
from tensorboard.plugins.scalar.scalars_plugin import ScalarsPlugin
from werkzeug.test import Client

from voc_dl.hparams import SESSION_DIR, write_session
from voc_dl.train import train

SECTIONS = {  # a swept key on the command line each; the others come from the experiments' defaults
    "autoencoder": ["experiment=autoencoder", "model.loss=mae"],
    "classification": ["experiment=classification", "model=deep_cnn"],
    "segmentation": ["experiment=segmentation", "model.loss=bce"],
}
TINY = ["debug=tiny", "trainer.max_epochs=1", "data.batch_size=2", "data.image_size=64"]  # 64 px: any size will do


def tensorboard(logdir: Path) -> tuple[EventMultiplexer, Client]:
    """TensorBoard's backend over logdir (its event reader and the scalars and hparams plugins' routes)."""
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    flags = argparse.Namespace(logdir=str(logdir), path_prefix="", samples_per_plugin={}, window_title="")
    app = TensorBoardWSGIApp(flags, [ScalarsPlugin, HParamsPlugin], MultiplexerDataProvider(multiplexer, str(logdir)))
    return multiplexer, Client(app)


def post(client: Client, route: str, request: dict) -> dict:
    """POST to /data/plugin/hparams/<route>, as the HParams dashboard does."""
    response = client.post(f"/data/plugin/hparams/{route}", data=json.dumps(request))
    assert response.status_code == 200, response.get_data(as_text=True)
    return json.loads(response.get_data())


def test_hparams_columns_span_every_section_and_swept_key(compose_cfg, tmp_path):
    logdir = tmp_path / "study"
    for name, overrides in SECTIONS.items():
        cfg = compose_cfg([*overrides, *TINY, f"paths.data_dir={tmp_path}/data"])
        with open_dict(cfg):
            cfg.paths.run_dir = str(logdir / name)
        assert train(cfg)["status"] == "ok"

    multiplexer, client = tensorboard(logdir)
    # one experiment summary anywhere would be taken as the whole folder's columns
    assert not any(EXPERIMENT_TAG in tags for tags in multiplexer.PluginRunToTagToContent("hparams").values())
    experiment = post(client, "experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"model.code_size", "model.loss", "model", "net", "data.root", "data.batch_size", "trainer.max_epochs",
            "model.optimizer.lr", "seed"} <= hparams
    assert {"final/val/mse", "final/val/ssim", "final/val/map", "final/val/subset_acc", "final/val/loss",
            "final/val/dice", "final/val/iou"} <= metrics
    assert "paths.data_dir" not in hparams  # plumbing, not a hyperparameter
    assert all(m.startswith("final/") for m in metrics)  # the curves stay out of the table

    groups = post(client, "session_groups", {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS"],
                                             "startIndex": 0, "sliceSize": 10})["sessionGroups"]
    rows = {g["hparams"]["task"]: g for g in groups}
    assert set(rows) == set(SECTIONS)
    # values the run used, whether the command line or the experiment set them
    autoencoder = rows["autoencoder"]["hparams"]
    assert autoencoder | {"model.code_size": 8192, "model.loss": "mae", "net": "AutoEncoder", "model": "autoencoder",
                          "model.optimizer": "RMSprop", "data.batch_size": 2, "trainer.max_epochs": 1} == autoencoder
    assert rows["segmentation"]["hparams"]["model.loss"] == "bce"
    assert rows["classification"]["hparams"]["model"] == "deep_cnn"
    assert rows["classification"]["hparams"]["net"] == "DeepCNN"
    dice = {m["name"]["tag"]: m["value"] for m in rows["segmentation"]["metricValues"]}["final/val/dice"]
    assert 0 <= dice <= 1


def test_a_resumed_run_replaces_its_session(tmp_path):
    for value in (1.0, 2.0):
        session = write_session(tmp_path, {"seed": 1}, {"final/val/loss": value}, step=3, started=0.0)
    assert session == tmp_path / SESSION_DIR and len(list(session.glob("events.out.tfevents.*"))) == 1
