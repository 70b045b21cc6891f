"""Image files from anywhere (a file, a folder, a glob) served to `trainer.predict`, read as training reads them.

Decoding, colour conversion and resizing are the VOC reader's own (`voc.decode_image`, `voc.image_array`) and
the scaling is the DataModule's (`to_unit_float`), so a network sees a user's photograph exactly as it saw its
training images. A file that cannot be read becomes a row with its error instead of stopping the others.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from voc_dl.data.datamodule import to_unit_float
from voc_dl.data.voc import CHANNELS, VOCDataError, decode_image, image_array

# What a folder given as input is searched for (a file or a glob is taken as given, whatever its name).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
BAD_FILE_FIX = "convert or replace the file, or set on_bad_image=skip to list it in the CSV and go on"


def find_images(spec: str | os.PathLike) -> list[Path]:
    """The image files `spec` names: one file, a folder's image files (not its subfolders), or a glob's
    matches (`**` descends); sorted, so every run reads them in the same order."""
    text = os.path.expanduser(str(spec))
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VOCDataError(f"input={spec}: the folder holds no image file ({', '.join(IMAGE_SUFFIXES)}). "
                               f"Fix: name a folder of images, or a glob such as input='{spec}/**/*.jpg'")
        return files
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise VOCDataError(f"input={spec}: the glob matches no file. Fix: check the pattern (quote it so "
                               "the shell does not expand it)")
        return files
    raise FileNotFoundError(f"input={spec}: no such file or folder. Fix: input=<an image, a folder of images, "
                            "or a glob such as 'photos/*.jpg'>")


def preprocessing(image_size: int, color: str) -> dict[str, str]:
    """What ImageFiles does to a file, in words: recorded with predictions and in exported models."""
    return {
        "decode": "any image Pillow reads, EXIF orientation applied, converted to 8-bit RGB (16-bit keeps its "
                  "top 8 bits, transparency laid over white, CMYK by Pillow's conversion)",
        "color": ("gray: one channel, the ITU-R 601-2 luma of the RGB (Pillow's 'L')" if color == "gray"
                  else "rgb: three channels, R, G, B"),
        "resize": f"bilinear (Pillow) to {image_size}x{image_size}, aspect ratio not kept",
        "scaling": "uint8 / 255, float32 in [0, 1]; no mean/std normalisation outside the network",
        "layout": f"float32 NCHW (batch, {1 if color == 'gray' else 3}, {image_size}, {image_size})",
    }


class ImageFiles(Dataset):
    """Samples {index, image (C, H, W) uint8, width, height, error}: an unreadable file gives a zero image of
    the right shape, width and height 0 and its error, so a batch holding it still runs. With `keep_original`,
    also the decoded RGB picture at its own size (`original`, None when unreadable), for outputs drawn on it."""

    def __init__(self, paths: list[Path], image_size: int, color: str, keep_original: bool = False):
        self.paths, self.image_size, self.color = list(paths), int(image_size), color
        self.keep_original = keep_original

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            im = decode_image(self.paths[i], fix=BAD_FILE_FIX)
            image, (width, height), error = image_array(im, self.image_size, self.color), im.size, ""
        except VOCDataError as e:
            channels = CHANNELS[self.color]
            image, width, height, error = np.zeros((self.image_size, self.image_size, channels), np.uint8), 0, 0, str(e)
            im = None
        sample = {"index": i, "image": image, "width": width, "height": height, "error": error}
        return sample | {"original": im} if self.keep_original else sample


def collate(samples: list[dict]) -> dict:
    # NHWC uint8 -> NCHW view, as the training loader serves it (channels_last in memory)
    batch = {k: [s[k] for s in samples] for k in samples[0]}
    batch["image"] = torch.from_numpy(np.stack(batch["image"])).permute(0, 3, 1, 2)
    return batch


class ImageFilesDataModule(pl.LightningDataModule):
    """`trainer.predict`'s data: image files at a checkpoint's size and colour, scaled on the device as in
    training."""

    def __init__(self, paths: list[Path], image_size: int, color: str, batch_size: int = 32, num_workers: int = 0,
                 keep_original: bool = False):
        super().__init__()
        if color not in CHANNELS:
            raise VOCDataError(f"color={color!r}; allowed: {', '.join(CHANNELS)}")
        self.dataset = ImageFiles(paths, image_size, color, keep_original)
        self.batch_size, self.num_workers = batch_size, num_workers

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return {**batch, "image": to_unit_float(batch["image"])}
