"""Pseudo-label the photographs that have no mask, once, for self-training (Section 3):

    python -m voc_dl.pseudo_label ckpt_path=<teacher>/checkpoints/best.ckpt out=<folder> [dataset=...] [confidence=0.9]
    python -m voc_dl.train experiment=segmentation_selftrain data.extra_masks=<folder> [dataset=...]

The teacher, a trained segmenter, predicts every photograph in no ImageSets/Segmentation list (so never a
validation image) with flip test-time augmentation, reading it at the size and in the colour it was trained on.
Pixels it is sure about (probability >= c or <= 1 - c, c = `confidence`) become object or background, the rest
void, which the losses and metrics skip. The masks and their manifest go to `out` (voc_dl/data/extra_masks.py),
never into the data root; training reads them without running any network.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

import voc_dl  # noqa: F401  (registers the config resolvers)
from voc_dl import cli
from voc_dl.checkpoints import load_task, sha256
from voc_dl.config import ConfigError
from voc_dl.data import extra_masks
from voc_dl.data.voc import VOID
from voc_dl.instantiate import instantiate

log = logging.getLogger("voc_dl")


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


def pseudo_label(cfg: DictConfig) -> dict:
    """Write the teacher's masks of the unlabelled photographs into cfg.out; returns their manifest."""
    for key in ("ckpt_path", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required. Fix: python -m voc_dl.pseudo_label ckpt_path=<teacher run>/"
                              "checkpoints/best.ckpt out=<folder for the masks>")
    if not 0.5 < cfg.confidence <= 1.0:
        raise ConfigError(f"confidence={cfg.confidence}: must be in (0.5, 1]; pixels whose teacher probability "
                          "lies between 1 - confidence and confidence become void")
    ckpt = Path(cfg.ckpt_path).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such file. Fix: point it at a trained segmenter, "
                                "e.g. <run of experiment=segmentation_improved>/checkpoints/best.ckpt")
    teacher, trained_on = load_task(ckpt)
    if trained_on.get("task") != "segmentation":
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} was trained for task={trained_on.get('task')}, not "
                          "segmentation. Fix: give a segmenter's checkpoint (experiment=segmentation*)")
    data_cfg = cfg.data.copy()
    with open_dict(data_cfg):  # the network fixes what it reads; the command's data say which tree
        data_cfg.update(task="segmentation", image_size=trained_on["image_size"],
                        color=trained_on.get("color", "rgb"), extra_masks=None)
    datamodule = instantiate(data_cfg)
    out = Path(cfg.out).expanduser().absolute()
    if out.resolve().is_relative_to(datamodule.root.resolve()):
        raise ConfigError(f"out={cfg.out} is inside the data root {datamodule.root}, which voc-dl only reads. "
                          "Fix: out=<a folder outside it>, e.g. outputs/pseudo_labels")
    photographs = datamodule.unlabeled_photographs()
    # ~1,300 photographs x 2 (flip TTA): a minute on 2 CPU cores, a second on a GPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher.tta = True
    masks = pseudo_masks(teacher.to(device), photographs.arrays["images"], cfg.confidence, device=device)
    manifest = extra_masks.write(out, datamodule.tree, list(photographs.ids), masks,
                                 teacher={"ckpt_path": str(ckpt.resolve()), "sha256": sha256(ckpt)},
                                 confidence=float(cfg.confidence), color=datamodule.color)
    if not masks.size:
        log.warning("every photograph of %s is in an ImageSets/Segmentation list: %s holds no masks, so training "
                    "with it adds no image", manifest["tree"], out)
    log.info("pseudo-labelled %d photographs of %s with %s, reading them in %s (%.0f%% of pixels void): %s",
             manifest["images"], manifest["tree"], ckpt, datamodule.color, 100 * manifest["void_fraction"], out)
    return manifest


@hydra.main(version_base="1.3", config_path="../conf", config_name="pseudo_label.yaml")
def app(cfg: DictConfig) -> None:
    with cli.one_line_errors():
        pseudo_label(cfg)


def main() -> None:
    cli.run(app)


if __name__ == "__main__":
    main()
