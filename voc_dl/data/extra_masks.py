"""Masks for the photographs that have no official one: written once by `voc_dl.pseudo_label`, read by the
DataModule as `data.extra_masks=<folder>` (self-training, Section 3).

The folder holds `masks.npy` (uint8, N x size x size: 1 object, 0 background, 255 void where the teacher was not
sure, which losses and metrics skip) and `manifest.json` (which photographs of which tree, at what size, from
which teacher). It appears whole or not at all: it is written into a temporary folder beside it, then renamed.
Unlabelled means in JPEGImages but in no ImageSets/Segmentation list, so no validation image ever gets a mask.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from voc_dl.data.cache import fingerprint
from voc_dl.data.voc import VOID, VOCDataError, read_split_ids

MANIFEST, MASKS = "manifest.json", "masks.npy"
FORMAT = "voc-dl extra masks 1"
WRITE = "python -m voc_dl.pseudo_label ckpt_path=<teacher best.ckpt> out=<folder>"
# Data keys that ran the teacher network inside the DataModule, once per DDP rank; pseudo-labelling is a step
# of its own, so a config or command that names them is refused with the two commands that replace them.
RETIRED_KEYS = ("pseudo_label_ckpt", "pseudo_label_confidence")


def retired(key: str) -> str:
    return (f"data.{key} is not a data setting: pseudo-labelling is its own step. Fix: run {WRITE} "
            "[confidence=0.9] first, then train with data.extra_masks=<folder>")


def unlabeled_ids(base: Path) -> list[str]:
    """Ids of the photographs of a VOC<year> folder that appear in no Segmentation list (none in the synthetic
    tree, whose every photograph has a mask: its self-training run then adds nothing, and says so)."""
    labelled: set[str] = set()
    for listing in sorted((base / "ImageSets" / "Segmentation").glob("*.txt")):
        labelled.update(read_split_ids(listing))
    return sorted(p.stem for p in (base / "JPEGImages").glob("*.jpg") if p.stem not in labelled)


def _photographs(tree: Path, ids: list[str]) -> str:
    return fingerprint([tree / "JPEGImages" / f"{i}.jpg" for i in ids])


def write(out: str | os.PathLike, tree: Path, ids: list[str], masks: np.ndarray, **about) -> dict:
    """Write `masks` (N, H, W) of the photographs `ids` of the VOC<year> folder `tree` into `out`, with a manifest
    that also holds `about` (the teacher, the confidence, the colour it read). Returns the manifest."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise VOCDataError(f"out={out} exists and holds no {MANIFEST} of an earlier pseudo-labelling, so it is left "
                           "alone. Fix: choose a new or empty folder")
    if masks.dtype != np.uint8 or masks.ndim != 3 or len(masks) != len(ids):
        raise ValueError(f"masks of dtype {masks.dtype}, shape {masks.shape} for {len(ids)} photographs")
    counts = {name: int((masks == value).sum()) for name, value in (("background", 0), ("foreground", 1),
                                                                     ("void", VOID))}
    manifest = {
        "format": FORMAT, **about, "tree": str(tree.resolve()), "image_size": int(masks.shape[1]),
        "images": len(ids), "pixels": counts, "void_fraction": counts["void"] / max(1, masks.size),
        "foreground_fraction": counts["foreground"] / max(1, masks.size),
        "masks": MASKS, "photographs": _photographs(tree, ids), "ids": list(ids),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        np.save(tmp / MASKS, masks)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out.exists():  # an earlier output (or an empty folder) moves aside; `out` is never half-written
            old = tmp.with_name(tmp.name + ".old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def read_manifest(folder: str | os.PathLike, tree: Path, image_size: int) -> dict:
    """The manifest of `folder`, checked against the VOC<year> folder and image size of the run that reads it."""
    path = Path(folder).expanduser() / MANIFEST
    redo = f"Fix: {WRITE.replace('<folder>', str(folder))} (with this run's data.root, data.year)"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise VOCDataError(f"data.extra_masks={folder}: no {path}. Fix: write it with "
                           f"{WRITE.replace('<folder>', str(folder))}") from None
    except (OSError, ValueError) as e:
        raise VOCDataError(f"data.extra_masks={folder}: {path} is unreadable ({e}). {redo}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VOCDataError(f"data.extra_masks={folder}: {path} is not a manifest of voc_dl.pseudo_label "
                           f"(format {FORMAT!r}). {redo}")
    if manifest["tree"] != str(tree.resolve()):
        raise VOCDataError(f"data.extra_masks={folder}: {path} labels the photographs of {manifest['tree']}, but "
                           f"this run reads {tree.resolve()}. {redo}")
    if manifest["image_size"] != image_size:
        size = manifest["image_size"]
        raise VOCDataError(f"data.extra_masks={folder}: {path} holds {size}x{size} masks, but this run reads "
                           f"{image_size}x{image_size} images. Fix: data.image_size={size}, or pseudo-label with "
                           f"a teacher trained on {image_size}x{image_size} images")
    return manifest


def read_masks(folder: str | os.PathLike, manifest: dict, tree: Path, ids: list[str]) -> np.ndarray:
    """The masks (memory-mapped) of a checked manifest, if they are still those of the photographs `ids` (the
    tree's unlabelled photographs, in the order the reading run holds them)."""
    path = Path(folder).expanduser() / MANIFEST
    redo = f"Fix: {WRITE.replace('<folder>', str(folder))} again"
    if list(ids) != manifest["ids"]:
        raise VOCDataError(f"data.extra_masks={folder}: {path} labels {manifest['images']} photographs, but "
                           f"{tree} now has {len(ids)} photographs without a mask, not the same ones. {redo}")
    if _photographs(tree, list(ids)) != manifest["photographs"]:
        raise VOCDataError(f"data.extra_masks={folder}: the photographs in {tree}/JPEGImages changed after {path} "
                           f"was written. {redo}")
    try:
        masks = np.load(Path(folder).expanduser() / manifest["masks"], mmap_mode="r")
    except (OSError, ValueError) as e:
        raise VOCDataError(f"data.extra_masks={folder}: {manifest['masks']} is unreadable ({e}). {redo}") from None
    size = manifest["image_size"]
    if masks.shape != (len(ids), size, size) or masks.dtype != np.uint8:
        raise VOCDataError(f"data.extra_masks={folder}: {manifest['masks']} holds {masks.dtype} {masks.shape}, "
                           f"the manifest says uint8 {(len(ids), size, size)}. {redo}")
    return masks
