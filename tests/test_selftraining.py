"""Self-training for Section 3: which photographs get pseudo-masks, the masks' values, a run that uses them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from voc_dl.data.pseudo import pseudo_masks, unlabeled_ids
from voc_dl.data.voc import VOID, VOCDataError
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
    with pytest.raises(VOCDataError, match="nothing to pseudo-label.*unset data.pseudo_label_ckpt"):
        unlabeled_ids(base)


def test_a_self_trained_run_adds_the_teachers_masks_to_train_only(compose_cfg, partly_labelled_tree, tmp_path):
    root, kept, withheld, val_ids = partly_labelled_tree
    on_tree = ["experiment=segmentation", "debug=tiny", "data.synthetic=null", f"data.root={root}",
               "data.batch_size=4"]
    teacher = train(compose_cfg(on_tree))
    assert teacher["data"]["train_images"] == len(kept)
    ckpt = tmp_path / "teacher.ckpt"
    shutil.copy(tmp_path / "run" / "checkpoints" / "best.ckpt", ckpt)

    student = train(compose_cfg(["experiment=segmentation_selftrain", *on_tree[1:], f"data.pseudo_label_ckpt={ckpt}",
                                 "data.pseudo_label_confidence=0.6"]))
    assert student["status"] == "ok" and student["task_name"] == "segmentation_selftrain"
    data = student["data"]
    assert data["train_images"] == len(kept) + len(withheld) and data["pseudo_labeled_images"] == len(withheld)
    assert data["val_images"] == len(val_ids) and data["val_images"] == teacher["data"]["val_images"]
    assert 0 <= data["pseudo_label_void_fraction"] <= 1 and data["pseudo_label_confidence"] == 0.6
    assert data["pseudo_label_teacher_color"] == "gray"

    # a student of another colour: the grayscale teacher still reads grayscale photographs, so its masks are the
    # same as above (an RGB input would not even fit its first conv)
    rgb = train(compose_cfg(["experiment=segmentation_selftrain", *on_tree[1:], f"data.pseudo_label_ckpt={ckpt}",
                             "data.pseudo_label_confidence=0.6", "data.color=rgb"]))
    assert rgb["status"] == "ok" and rgb["data"]["image_shape"][0] == 3
    for key in ("pseudo_labeled_images", "pseudo_label_void_fraction", "pseudo_label_foreground_fraction"):
        assert rgb["data"][key] == data[key], key

    with pytest.raises(VOCDataError, match=r"data.pseudo_label_confidence=0.4: must be in \(0.5, 1\]"):
        train(compose_cfg([*on_tree, f"data.pseudo_label_ckpt={ckpt}", "data.pseudo_label_confidence=0.4"]))
    ae = train(compose_cfg(["experiment=autoencoder", "model.code_size=2048", "debug=tiny", "data.batch_size=4"]))
    assert ae["status"] == "ok"
    with pytest.raises(VOCDataError, match=r"data.pseudo_label_ckpt=.* trained for .*reconstruction.*same input"):
        train(compose_cfg([*on_tree, f"data.pseudo_label_ckpt={ae['best_ckpt']}"]))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"
