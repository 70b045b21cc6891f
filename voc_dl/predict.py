"""Predict on your own images with any voc-dl checkpoint:

    python -m voc_dl.predict ckpt_path=<run>/checkpoints/best.ckpt input=<image, folder or glob> [out=<folder>]
        [threshold=0.5] [tta=true] [batch_size=32] [on_bad_image=skip|error]

The network and the way it reads images (size, colour, scaling) come from the checkpoint; images are decoded
by the data layer's own reader (voc_dl/data/image_files.py). Lightning's `trainer.predict` runs the task's
`predict_step`, and a `BasePredictionWriter` writes each batch's files as it arrives into `out` (default: the
run folder), never beside the inputs:

- segmentation: masks/<name>.png (palette PNG at the image's own size, 0 background, 1 object: the network's
  mask resized back, nearest), overlays/<name>.jpg, and predictions.csv with each image's foreground fraction;
- classification: predictions.csv with each class's probability and the labels above `threshold`;
- reconstruction: reconstructions/<name>.png (the input as the network reads it, beside its reconstruction)
  and predictions.csv with each image's MSE and MAE.

A file that cannot be read is a row with its error, and the others go on (`on_bad_image=error` stops at it
instead). The run folder's metrics.json records what was read and written.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageFilter
from pytorch_lightning.callbacks import BasePredictionWriter

import voc_dl  # noqa: F401  (registers the config resolvers)
from voc_dl import cli
from voc_dl.atomic import atomic_write_bytes
from voc_dl.checkpoints import checkpoint_file, for_inference, load_task
from voc_dl.config import ConfigError
from voc_dl.data.image_files import ImageFilesDataModule, find_images, preprocessing
from voc_dl.data.voc import ON_BAD_IMAGE, VOCDataError
from voc_dl.hardware import hardware, resolve_precision
from voc_dl.instantiate import instantiate
from voc_dl.run_record import recorded

log = logging.getLogger("voc_dl")
CSV_NAME = "predictions.csv"
MASK_PALETTE = [0, 0, 0, 255, 255, 255]  # index 0 background black, 1 object white: viewable, and 0/1 as data
TINT = np.array([230, 25, 75], dtype=np.float32)  # the overlay's foreground colour


def output_names(paths: list[Path]) -> list[str]:
    """One name per input for its output files: its path below the inputs' common folder without the suffix,
    or with it where two inputs would otherwise share a name (photo.jpg and photo.png)."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    base = Path(os.path.commonpath([p.parent for p in absolute]))
    relative = [p.relative_to(base) for p in absolute]
    names = [r.with_suffix("").as_posix() for r in relative]
    taken = Counter(names)
    return [r.as_posix() if taken[n] > 1 else n for r, n in zip(relative, names, strict=True)]


def overlay(photo: Image.Image, foreground: np.ndarray) -> Image.Image:
    """The photograph with the predicted foreground tinted and outlined (the outline grows with the image)."""
    rgb = np.asarray(photo, dtype=np.float32).copy()
    rgb[foreground] = 0.55 * rgb[foreground] + 0.45 * TINT
    width = max(3, min(photo.size) // 150 | 1)  # odd, about 3 px on a VOC photograph
    inner = np.asarray(Image.fromarray(foreground.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(width))) > 0
    rgb[foreground & ~inner] = TINT
    return Image.fromarray(rgb.round().astype(np.uint8))


def write_image(path: Path, image: Image.Image, fmt: str, **options) -> None:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    atomic_write_bytes(path, buffer.getvalue())


def as_uint8_image(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) floats in [0, 1] -> (H, W, 3) uint8."""
    t = t.float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return t.expand(3, -1, -1).permute(1, 2, 0).numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


class PredictionWriter(BasePredictionWriter):
    """Writes each batch's images as the batch arrives and its rows to predictions.csv, which is named
    predictions.csv.partial until the last batch is written."""

    def __init__(self, out: Path, task: str, paths: list[Path], threshold: float, classes: list[str],
                 on_bad_image: str = "skip"):
        super().__init__(write_interval="batch")
        self.out, self.task, self.paths = out, task, paths
        self.names = output_names(paths)
        self.threshold, self.classes, self.on_bad_image = threshold, list(classes), on_bad_image
        self.unreadable = 0
        self.totals: Counter = Counter()  # sums for the run record's summary
        self._file = None

    def columns(self) -> list[str]:
        own = {"segmentation": ["foreground_fraction", "mask", "overlay"],
               "classification": [*self.classes, "labels"],
               "reconstruction": ["mse", "mae", "reconstruction"]}[self.task]
        return ["image", "width", "height", *own, "error"]

    @property
    def partial(self) -> Path:
        return self.out / f"{CSV_NAME}.partial"

    def on_predict_start(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "w", newline="")
        self._csv = csv.DictWriter(self._file, self.columns())
        self._csv.writeheader()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        prediction = {k: v.float().cpu() for k, v in prediction.items()}
        for j, i in enumerate(batch["index"]):
            row = {"image": os.path.abspath(self.paths[i]), "width": batch["width"][j],
                   "height": batch["height"][j], "error": ""}
            if batch["error"][j]:
                if self.on_bad_image == "error":
                    raise VOCDataError(batch["error"][j])
                row["error"] = batch["error"][j].split(". Fix: ")[0]
                self.unreadable += 1
            else:
                row.update(getattr(self, f"_{self.task}")(i, j, prediction, batch))
            self._csv.writerow(row)
        self._file.flush()

    def _segmentation(self, i: int, j: int, prediction: dict, batch: dict) -> dict:
        name = self.names[i]
        small = Image.fromarray((prediction["output"][j, 0].numpy() > self.threshold).astype(np.uint8))
        mask = small.resize((batch["width"][j], batch["height"][j]), Image.NEAREST)
        foreground = np.asarray(mask) > 0
        mask.putpalette(MASK_PALETTE)
        write_image(self.out / "masks" / f"{name}.png", mask, "PNG")
        write_image(self.out / "overlays" / f"{name}.jpg", overlay(batch["original"][j], foreground),
                    "JPEG", quality=90)
        fraction = float(foreground.mean())
        self.totals.update(foreground_fraction=fraction, images=1)
        return {"foreground_fraction": f"{fraction:.6f}", "mask": f"masks/{name}.png",
                "overlay": f"overlays/{name}.jpg"}

    def _classification(self, i: int, j: int, prediction: dict, batch: dict) -> dict:
        probs = prediction["output"][j].tolist()
        labels = [c for c, p in zip(self.classes, probs, strict=True) if p > self.threshold]
        self.totals.update(images=1, **{f"label {c}": 1 for c in labels})
        return {**{c: f"{p:.6f}" for c, p in zip(self.classes, probs, strict=True)}, "labels": " ".join(labels)}

    def _reconstruction(self, i: int, j: int, prediction: dict, batch: dict) -> dict:
        name = self.names[i]
        pair = np.concatenate([as_uint8_image(batch["image"][j]), as_uint8_image(prediction["output"][j])], axis=1)
        write_image(self.out / "reconstructions" / f"{name}.png", Image.fromarray(pair), "PNG")
        mse, mae = float(prediction["mse"][j]), float(prediction["mae"][j])
        self.totals.update(images=1, mse=mse, mae=mae)
        return {"mse": f"{mse:.6g}", "mae": f"{mae:.6g}", "reconstruction": f"reconstructions/{name}.png"}

    def on_predict_end(self, trainer, pl_module) -> None:
        self._file.close()
        os.replace(self.partial, self.out / CSV_NAME)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._file is not None:
            self._file.close()  # predictions.csv.partial keeps the rows written before the stop

    def summary(self) -> dict:
        n = self.totals["images"]
        if self.task == "classification":
            return {"images_per_label": {c: self.totals[f"label {c}"] for c in self.classes}}
        keys = ("foreground_fraction",) if self.task == "segmentation" else ("mse", "mae")
        return {f"mean_{k}": self.totals[k] / n if n else None for k in keys}


def check_out(out: Path, paths: list[Path], spec) -> None:
    """Outputs go to a folder of their own: never one that holds an input, nor inside a folder given as input."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file. Fix: out=<a folder for the predictions>, e.g. outputs/predict")
    target = out.resolve()
    inside = next((p for p in paths if p.resolve().is_relative_to(target)), None)
    folder = Path(os.path.expanduser(str(spec)))
    if inside is not None or (folder.is_dir() and target.is_relative_to(folder.resolve())):
        raise ConfigError(f"out={out} is among the inputs ({inside or folder}): voc-dl only reads your images and "
                          "never writes beside them. Fix: out=<a folder outside them>, e.g. outputs/predict")


def predict(cfg: DictConfig) -> dict:
    """Predict every image `cfg.input` names into `cfg.out`; returns the run record (also metrics.json)."""
    result = recorded(cfg, lambda result: _predict(cfg, result))
    log.info("predicted %d images with %s (%d unreadable, listed with their error): %s", result["images"],
             result["ckpt_path"], result["unreadable"], result["csv"])
    return result


def _predict(cfg: DictConfig, result: dict) -> dict:
    for key in ("ckpt_path", "input"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required. Fix: python -m voc_dl.predict ckpt_path=<run>/checkpoints/"
                              "best.ckpt input=<an image, a folder of images, or a glob such as 'photos/*.jpg'>")
    if cfg.on_bad_image not in ON_BAD_IMAGE:
        raise ConfigError(f"on_bad_image={cfg.on_bad_image!r}; allowed: {', '.join(ON_BAD_IMAGE)} (skip: a CSV row "
                          "with the error)")
    if not 0 <= cfg.threshold <= 1:
        raise ConfigError(f"threshold={cfg.threshold}: a probability in [0, 1]")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} must be at least 1")
    ckpt = checkpoint_file(cfg.ckpt_path)
    specs = list(cfg.input) if OmegaConf.is_list(cfg.input) else [cfg.input]
    paths = list(dict.fromkeys(p for spec in specs for p in find_images(spec)))
    out = Path(cfg.out).expanduser().absolute()
    for spec in specs:
        check_out(out, paths, spec)
    task, trained_on = load_task(ckpt)
    kind = trained_on.get("task")
    for_inference(task, kind, cfg.tta, cfg.ckpt_path)
    image_size, color = trained_on["image_size"], trained_on.get("color", "rgb")
    result.update(ckpt_path=str(ckpt.resolve()), task=kind, input=specs, out=str(out), images=len(paths),
                  threshold=cfg.threshold, tta=bool(cfg.tta), output=task.OUTPUT,
                  preprocessing=preprocessing(image_size, color))
    writer = PredictionWriter(out, kind, paths, cfg.threshold, trained_on.get("classes") or [], cfg.on_bad_image)
    # a segmenter's overlays are drawn on the decoded photograph the batch already holds
    datamodule = ImageFilesDataModule(paths, image_size, color, cfg.batch_size, cfg.num_workers,
                                      keep_original=kind == "segmentation")
    trainer = instantiate(cfg.trainer, devices=1, num_nodes=1, strategy="auto", logger=False, callbacks=[writer],
                          enable_model_summary=False,
                          precision=resolve_precision(cfg.trainer.precision, cfg.fp32, cfg.trainer.accelerator))
    trainer.predict(task, datamodule=datamodule, return_predictions=False)
    return {"csv": str(out / CSV_NAME), "unreadable": writer.unreadable, **writer.summary(),
            "precision": str(trainer.precision), "hardware": hardware()}


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict.yaml")
def app(cfg: DictConfig) -> None:
    with cli.one_line_errors():
        predict(cfg)


def main() -> None:
    cli.run(app)


if __name__ == "__main__":
    main()
