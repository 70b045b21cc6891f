"""Self-training for Section 3: pseudo-masks for the photographs that have no official mask.

A trained segmenter (the teacher, `data.pseudo_label_ckpt`) predicts each unlabelled photograph
with flip test-time augmentation; pixels it is sure about (probability >= c or <= 1 - c, c =
`data.pseudo_label_confidence`) become foreground or background, the rest void, which the
losses and metrics already skip. Unlabelled means: in JPEGImages but in no
ImageSets/Segmentation list, so no validation image ever gets a pseudo-mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from voc_dl.data.voc import VOID, VOCDataError, read_split_ids


def unlabeled_ids(base: Path) -> list[str]:
    """Ids of the photographs that appear in no Segmentation list."""
    labelled: set[str] = set()
    for listing in sorted((base / "ImageSets" / "Segmentation").glob("*.txt")):
        labelled.update(read_split_ids(listing))
    ids = sorted(p.stem for p in (base / "JPEGImages").glob("*.jpg") if p.stem not in labelled)
    if not ids:
        raise VOCDataError(f"data.pseudo_label_ckpt is set, but every photograph in {base}/JPEGImages is in an "
                           "ImageSets/Segmentation list: there is nothing to pseudo-label. "
                           "Fix: unset data.pseudo_label_ckpt")
    return ids


def check_confidence(confidence: float) -> float:
    if not 0.5 < confidence <= 1.0:
        raise VOCDataError(f"data.pseudo_label_confidence={confidence}: must be in (0.5, 1]; pixels whose "
                           "teacher probability lies between 1 - c and c become void")
    return float(confidence)


def load_teacher(ckpt_path: str | Path, image_size: int):
    """The segmentation task of a voc-dl checkpoint, with flip TTA on, and the colour mode it reads.

    The teacher may read another colour than the student (an RGB net labelling for the study's grayscale
    one): the masks are the same either way. It must segment images of the student's size.
    """
    from voc_dl.checkpoints import load_task  # lazy: it imports the tasks, which import this package

    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise VOCDataError(f"data.pseudo_label_ckpt={ckpt_path}: no such file. Fix: point it at a trained "
                           "segmenter, e.g. outputs/study/segmentation_improved/<run>/checkpoints/best.ckpt")
    teacher, data_cfg = load_task(path)
    trained_on = (data_cfg.get("task"), data_cfg.get("image_size"))
    if trained_on != ("segmentation", image_size):
        raise VOCDataError(f"data.pseudo_label_ckpt={ckpt_path} was trained for task/size {trained_on}, "
                           f"but this run segments {image_size}x{image_size} images. "
                           "Fix: use a segmenter trained on the same input size")
    teacher.tta = True
    return teacher, data_cfg.get("color", "rgb")


@torch.no_grad()
def pseudo_masks(teacher, images: np.ndarray, confidence: float, batch_size: int = 64,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 masks (N, H, W) of 0 / 1 / VOID from NHWC uint8 images; `device` is where the teacher is."""
    out = np.empty(images.shape[:3], dtype=np.uint8)
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[start:start + batch_size])).permute(0, 3, 1, 2)  # a writable copy
        prob = torch.sigmoid(teacher.predict_logits(x.to(device).float().div_(255)))[:, 0].cpu()
        mask = torch.full(prob.shape, VOID, dtype=torch.uint8)
        mask[prob >= confidence] = 1
        mask[prob <= 1 - confidence] = 0
        out[start:start + len(x)] = mask.numpy()
    return out
