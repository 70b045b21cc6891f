"""Self-training for Section 3: which photographs get pseudo-masks, the masks' values, the step that writes them
once with a manifest, and training runs that read them without running a network."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from voc_dl.checkpoints import datamodule_from, load_task
from voc_dl.cli import prepare_overrides
from voc_dl.config import ConfigError
from voc_dl.data import extra_masks
from voc_dl.data.datamodule import VOCDataModule
from voc_dl.data.extra_masks import unlabeled_ids
from voc_dl.data.voc import VOID, VOCDataError
from voc_dl.pseudo_label import pseudo_label, pseudo_masks
from voc_dl.train import train


class FixedTeacher:
    """Returns the same logits for every image: a teacher whose answers are known."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 1, *self.logits.shape[-2:])


def test_pseudo_masks_keep_confident_pixels_and_void_the_rest():
    prob = torch.tensor([[0.95, 0.90, 0.89], [0.5, 0.11, 0.10], [0.05, 0.999, 0.3]])
    images = np.zeros((5, 3, 3, 1), dtype=np.uint8)
    masks = pseudo_masks(FixedTeacher(torch.logit(prob.double()).float()), images, confidence=0.9, batch_size=2)
    v = VOID
    expected = np.array([[1, 1, v], [v, v, 0], [0, 1, v]], dtype=np.uint8)  # p >= 0.9 -> 1, p <= 0.1 -> 0
    assert masks.shape == (5, 3, 3) and masks.dtype == np.uint8
    assert (masks == expected).all()


@pytest.fixture
def partly_labelled_tree(synthetic_root, tmp_path):
    """The synthetic tree with the masks of half its train images withheld from the Segmentation lists."""
    root = tmp_path / "voc"
    shutil.copytree(synthetic_root, root)
    seg = root / "VOCdevkit" / "VOC2009" / "ImageSets" / "Segmentation"
    train_ids = seg.joinpath("train.txt").read_text().split()
    val_ids = seg.joinpath("val.txt").read_text().split()
    kept, withheld = train_ids[: len(train_ids) // 2], train_ids[len(train_ids) // 2:]
    seg.joinpath("train.txt").write_text("".join(f"{i}\n" for i in kept))
    seg.joinpath("trainval.txt").write_text("".join(f"{i}\n" for i in kept + val_ids))
    return root, kept, withheld, val_ids


def test_unlabeled_means_in_no_segmentation_list(partly_labelled_tree):
    root, kept, withheld, val_ids = partly_labelled_tree
    base = root / "VOCdevkit" / "VOC2009"
    ids = unlabeled_ids(base)
    assert ids == sorted(withheld) and not set(ids) & set(val_ids)
    (base / "ImageSets" / "Segmentation" / "extra.txt").write_text("".join(f"{i}\n" for i in withheld))
    assert unlabeled_ids(base) == []


def segmentation_data(root, tmp_path, **kw) -> VOCDataModule:
    return VOCDataModule(**{"task": "segmentation", "root": str(root), "image_size": 16, "color": "gray",
                            "batch_size": 4, "cache_dir": str(tmp_path / "cache"), **kw})


def fake_masks(root, tmp_path, out) -> tuple[list[str], np.ndarray]:
    """Masks of known values for the unlabelled photographs, written as voc_dl.pseudo_label writes them."""
    dm = segmentation_data(root, tmp_path)
    ids = list(dm.unlabeled_photographs().ids)
    masks = np.random.default_rng(0).choice(np.array([0, 1, VOID], dtype=np.uint8), size=(len(ids), 16, 16))
    extra_masks.write(out, dm.tree, ids, masks, teacher={"ckpt_path": "/t.ckpt", "sha256": "0"}, confidence=0.9,
                      color="gray")
    return ids, masks


def test_extra_masks_join_the_training_set_with_no_network_imported(partly_labelled_tree, tmp_path):
    root, kept, withheld, val_ids = partly_labelled_tree
    out = tmp_path / "masks"
    ids, masks = fake_masks(root, tmp_path, out)
    assert ids == sorted(withheld)
    # a fresh process: building and setting up the DataModule imports no task, net or checkpoint loader
    probe = f"""
import json, sys
from voc_dl.data.datamodule import VOCDataModule
dm = VOCDataModule(task="segmentation", root={str(root)!r}, image_size=16, color="rgb", batch_size=4,
                   cache_dir={str(tmp_path / 'cache')!r}, extra_masks={str(out)!r})
dm.prepare_data()
dm.setup()
x, m = dm.train_set.__getitems__(list(range(len(dm.train_set))))
print(json.dumps({{"info": dm.info, "ids": dm.train_ids, "masks": m[:, 0].tolist(), "channels": x.shape[1],
                  "modules": sorted(n for n in sys.modules if n.startswith("voc_dl"))}}))
"""
    got = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    result = json.loads(got.stdout.splitlines()[-1])
    assert not [n for n in result["modules"] if n.startswith(("voc_dl.tasks", "voc_dl.models", "voc_dl.checkpoints",
                                                                 "voc_dl.pseudo_label"))], result["modules"]
    info = result["info"]
    assert info["train_images"] == len(kept) + len(withheld) and info["val_images"] == len(val_ids)
    assert result["ids"][len(kept):] == ids and not set(result["ids"]) & set(val_ids)
    # the masks are served as written, beside the photographs in the student's own colour
    assert (np.array(result["masks"][len(kept):], dtype=np.uint8) == masks).all() and result["channels"] == 3
    assert info["extra_masks"]["images"] == len(withheld) and info["extra_masks"]["folder"] == str(out)
    assert info["extra_masks"]["teacher"]["ckpt_path"] == "/t.ckpt" and info["extra_masks"]["color"] == "gray"
    # reports and evaluation read the labelled data only
    assert len(datamodule_from({"task": "segmentation", "root": str(root), "image_size": 16, "color": "gray",
                                "cache_dir": str(tmp_path / "cache"), "extra_masks": str(out)}).train_set) == len(kept)


def test_a_tree_whose_every_photograph_has_a_mask_gets_an_empty_folder(synthetic_root, tmp_path):
    # the synthetic tree is one: `make segmentation` on it still runs self-training, which then adds nothing
    out = tmp_path / "masks"
    ids, masks = fake_masks(synthetic_root, tmp_path, out)
    assert ids == [] and masks.shape == (0, 16, 16)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == 0 and manifest["void_fraction"] == 0 and sum(manifest["pixels"].values()) == 0
    dm = segmentation_data(synthetic_root, tmp_path, extra_masks=str(out))
    dm.prepare_data()
    dm.setup()
    plain = segmentation_data(synthetic_root, tmp_path)
    plain.prepare_data()
    plain.setup()
    assert dm.info["extra_masks"]["images"] == 0 and dm.train_ids == plain.train_ids and len(dm.train_set) > 0


def test_extra_masks_of_another_tree_size_or_photographs_are_refused(partly_labelled_tree, synthetic_root, tmp_path):
    root, kept, withheld, val_ids = partly_labelled_tree
    out = tmp_path / "masks"
    fake_masks(root, tmp_path, out)
    manifest = out / "manifest.json"
    with pytest.raises(VOCDataError, match=rf"data.extra_masks={tmp_path}/nothing: no {tmp_path}/nothing/manifest"
                                           r".json. Fix: write it with python -m voc_dl.pseudo_label ckpt_path="):
        segmentation_data(root, tmp_path, extra_masks=str(tmp_path / "nothing"))
    with pytest.raises(VOCDataError, match=rf"{manifest} holds 16x16 masks, but this run reads 32x32 images\. "
                                           r"Fix: data.image_size=16"):
        segmentation_data(root, tmp_path, extra_masks=str(out), image_size=32)
    tree, other = (re.escape(str((r / "VOCdevkit" / "VOC2009").resolve())) for r in (root, synthetic_root))
    with pytest.raises(VOCDataError, match=rf"{manifest} labels the photographs of {tree}, but this run reads "
                                           rf"{other}\. Fix: python -m voc_dl.pseudo_label "):
        segmentation_data(synthetic_root, tmp_path, extra_masks=str(out))
    with pytest.raises(VOCDataError, match="data.extra_masks is for task=segmentation, not reconstruction"):
        VOCDataModule(task="reconstruction", root=str(root), extra_masks=str(out))
    # a photograph that got a mask since: the manifest no longer describes the tree's unlabelled photographs
    seg = root / "VOCdevkit" / "VOC2009" / "ImageSets" / "Segmentation"
    seg.joinpath("train.txt").write_text("".join(f"{i}\n" for i in kept + withheld[:1]))
    dm = segmentation_data(root, tmp_path, extra_masks=str(out))
    dm.prepare_data()
    with pytest.raises(VOCDataError, match=rf"{manifest} labels {len(withheld)} photographs, but .* now has "
                                           rf"{len(withheld) - 1} photographs without a mask"):
        dm.setup()


def test_the_masks_folder_is_written_whole_or_not_at_all(partly_labelled_tree, tmp_path, monkeypatch):
    root, *_ = partly_labelled_tree
    out = tmp_path / "masks"
    fake_masks(root, tmp_path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extra_masks.np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fake_masks(root, tmp_path, out)  # a rerun stopped half-way: the earlier folder stays as it was
    with pytest.raises(KeyboardInterrupt):
        fake_masks(root, tmp_path, tmp_path / "new")  # a first run stopped half-way: no folder at all
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "masks", "voc"]  # no temporary folder left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(VOCDataError, match=r"out=.*/mine exists and holds no manifest.json .* choose a new or empty"):
        fake_masks(root, tmp_path, tmp_path / "mine")


def test_pseudo_labelling_then_self_training(compose_cfg, partly_labelled_tree, tmp_path):
    root, kept, withheld, val_ids = partly_labelled_tree
    on_tree = ["experiment=segmentation", "debug=tiny", "data.synthetic=null", f"data.root={root}",
               "data.batch_size=4", "data.image_size=64"]
    teacher = train(compose_cfg(on_tree))
    assert teacher["data"]["train_images"] == len(kept)
    ckpt = tmp_path / "teacher.ckpt"
    shutil.copy(tmp_path / "run" / "checkpoints" / "best.ckpt", ckpt)
    step = ["data.synthetic=null", f"data.root={root}", f"ckpt_path={ckpt}", "confidence=0.6"]

    manifest = pseudo_label(compose_cfg([*step, f"out={tmp_path / 'masks'}"], config_name="pseudo_label.yaml"))
    on_disk = json.loads((tmp_path / "masks" / "manifest.json").read_text())
    masks = np.load(tmp_path / "masks" / "masks.npy")
    assert manifest == on_disk and sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["manifest.json",
                                                                                            "masks.npy"]
    size = teacher["config"]["data"]["image_size"]
    assert on_disk["ids"] == sorted(withheld) and masks.shape == (len(withheld), size, size) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1, VOID}
    assert on_disk["teacher"] == {"ckpt_path": str(ckpt), "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    assert on_disk["confidence"] == 0.6 and on_disk["color"] == "gray" and on_disk["image_size"] == size
    assert on_disk["tree"] == str((root / "VOCdevkit" / "VOC2009").resolve()) and on_disk["images"] == len(withheld)
    assert sum(on_disk["pixels"].values()) == masks.size and on_disk["pixels"]["void"] == (masks == VOID).sum()
    assert on_disk["void_fraction"] == (masks == VOID).mean() and on_disk["foreground_fraction"] == (masks == 1).mean()
    # the masks are the teacher's flip-TTA prediction of those photographs, read as it was trained to
    net, _ = load_task(ckpt)
    net.tta = True
    photographs = segmentation_data(root, tmp_path, image_size=size).unlabeled_photographs()
    assert (pseudo_masks(net, photographs.arrays["images"], 0.6) == masks).all()

    student = train(compose_cfg(["experiment=segmentation_selftrain", *on_tree[1:],
                                 f"data.extra_masks={tmp_path / 'masks'}"]))
    assert student["status"] == "ok" and student["task_name"] == "segmentation_selftrain"
    data = student["data"]
    assert data["train_images"] == len(kept) + len(withheld) and data["val_images"] == len(val_ids)
    assert data["extra_masks"]["images"] == len(withheld) and data["extra_masks"]["teacher"] == on_disk["teacher"]

    with pytest.raises(ConfigError, match=r"confidence=0.4: must be in \(0.5, 1\]"):
        pseudo_label(compose_cfg([*step[:-1], "confidence=0.4", f"out={tmp_path / 'x'}"],
                                 config_name="pseudo_label.yaml"))
    with pytest.raises(ConfigError, match=r"out=.* is inside the data root .*Fix: out=<a folder outside it>"):
        pseudo_label(compose_cfg([*step, f"out={root / 'masks'}"], config_name="pseudo_label.yaml"))
    with pytest.raises(ConfigError, match="out is required. Fix: python -m voc_dl.pseudo_label ckpt_path="):
        pseudo_label(compose_cfg(step, config_name="pseudo_label.yaml"))
    ae = train(compose_cfg(["experiment=autoencoder", "model.code_size=2048", "debug=tiny", "data.batch_size=4",
                            "data.image_size=64"]))
    with pytest.raises(ConfigError, match=r"ckpt_path=.* was trained for task=reconstruction, not segmentation"):
        pseudo_label(compose_cfg([*step[:2], f"ckpt_path={ae['best_ckpt']}", f"out={tmp_path / 'x'}"],
                                 config_name="pseudo_label.yaml"))
    assert not (tmp_path / "x").exists() and not (root / "masks").exists()


def test_the_retired_key_says_what_replaced_it(compose_cfg, capsys, synthetic_root, tmp_path):
    for override in ("data.pseudo_label_ckpt=/t.ckpt", "+data.pseudo_label_confidence=0.6"):
        with pytest.raises(SystemExit):
            prepare_overrides(["experiment=segmentation_selftrain", override])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pseudo-labelling is its own step. Fix: run python -m voc_dl.pseudo_label " \
            "ckpt_path=<teacher best.ckpt> out=<folder> [confidence=0.9] first, then train with " \
            "data.extra_masks=<folder>" in err
    # an older experiment file or saved config that sets it fails at start-up the same way
    from omegaconf import open_dict

    from voc_dl.config import validate

    cfg = compose_cfg(["experiment=segmentation"])
    with open_dict(cfg):
        cfg.data.pseudo_label_ckpt = "/t.ckpt"
    with pytest.raises(ConfigError, match=r"^data.pseudo_label_ckpt is not a data setting: pseudo-labelling is"):
        validate(cfg)
    # the report reads older runs, whose data configs hold both keys, as it reads any: labelled data only
    older = {"task": "segmentation", "root": str(synthetic_root), "image_size": 16, "cache_dir": str(tmp_path),
             "pseudo_label_ckpt": "/t.ckpt", "pseudo_label_confidence": 0.9}
    assert datamodule_from(older).info["train_images"] > 0
