"""Reading a VOCdevkit tree: image lists, image-level labels, images and segmentation masks.

Works for any year 2007-2012 of the official layout:

    <root>/VOCdevkit/VOC<year>/{JPEGImages, SegmentationClass, ImageSets/Main, ImageSets/Segmentation}
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOID = 255
YEARS = tuple(str(y) for y in range(2007, 2013))
# data.color -> input channels of the networks; data.void and data.on_bad_image settings.
CHANNELS = {"rgb": 3, "gray": 1}
VOID_RULES = ("ignore", "background")
ON_BAD_IMAGE = ("error", "skip")


# What a damaged JPEG or PNG can raise from inside Pillow's decoders.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
                 IndexError)


class VOCDataError(ValueError):
    """Bad or missing VOC input. The message names the file or config key and the fix."""


def voc_dir(root: str | os.PathLike, year: str | int) -> Path:
    return Path(root).expanduser() / "VOCdevkit" / f"VOC{year}"


def check_root(root: str | os.PathLike, download: bool) -> None:
    """A data root exists, unless a download is to create it: voc-dl reads data roots, it never creates them."""
    if not download and not Path(root).expanduser().is_dir():
        raise VOCDataError(f"data.root={root} does not exist (voc-dl reads data roots, it never creates them). "
                           "Fix: point data.root at the folder that holds VOCdevkit/, or add data.download=true "
                           "to fetch VOC there")


def check_tree(root: str | os.PathLike, year: str | int) -> Path:
    """The VOC<year> folder, or a VOCDataError that says where it looked and how to fix it."""
    year = str(year)
    if year not in YEARS:
        raise VOCDataError(f"data.year={year!r} is not a VOC year; allowed: {', '.join(YEARS)}")
    base = voc_dir(root, year)
    missing = [d for d in ("JPEGImages", "ImageSets") if not (base / d).is_dir()]
    if missing:
        found = sorted(p.name for p in (Path(root) / "VOCdevkit").glob("VOC*")) if Path(root).is_dir() else []
        hint = f" (found {', '.join(found)} there: set data.year accordingly)" if found else ""
        raise VOCDataError(
            f"VOC {year} not found: looked for {base}/{{{','.join(missing)}}}{hint}. "
            "Fix: set data.root to the folder that contains VOCdevkit/, or add data.download=true "
            f"to fetch the official VOC{year} trainval tar."
        )
    return base


def check_classes(classes) -> list[str]:
    classes = list(classes)
    if not classes:
        raise VOCDataError(f"data.classes is empty; choose from: {', '.join(VOC_CLASSES)}")
    unknown = [c for c in classes if c not in VOC_CLASSES]
    if unknown:
        raise VOCDataError(
            f"data.classes: unknown class name(s) {unknown}; allowed: {', '.join(VOC_CLASSES)}"
        )
    if len(set(classes)) != len(classes):
        raise VOCDataError(f"data.classes lists a class twice: {classes}")
    return classes


def _read_list(path: Path) -> list[list[str]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise VOCDataError(f"list file missing: {path}. Fix: check data.root/data.year and the split name") from None
    except UnicodeDecodeError as e:
        raise VOCDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); the file is corrupt: "
                           "restore it from the VOC tar") from None
    return [line.split() for line in text.splitlines() if line.strip()]


def read_split_ids(path: Path) -> list[str]:
    """Ids of an `ImageSets/*/<split>.txt` file (one id per line)."""
    rows = _read_list(path)
    if not rows:
        raise VOCDataError(f"{path} is empty: no image ids. Fix: restore the file or choose another split")
    return [r[0] for r in rows]


def read_class_labels(base: Path, classes, split: str, difficult_as_positive: bool) -> tuple[list[str], np.ndarray]:
    """Image ids of `split` and their (N, C) 0/1 label matrix, from ImageSets/Main/<cls>_<split>.txt.

    Flags: 1 present, -1 absent, 0 "difficult only" (the object is there but marked difficult); the
    config value `difficult_as_positive` decides whether 0 counts as present.
    """
    classes = check_classes(classes)
    per_class: list[dict[str, int]] = []
    for cls in classes:
        path = base / "ImageSets" / "Main" / f"{cls}_{split}.txt"
        rows = _read_list(path)
        if not rows:
            raise VOCDataError(f"{path} is empty. Fix: restore it from the VOC tar")
        flags = {}
        for n, row in enumerate(rows, 1):
            if len(row) != 2 or row[1] not in ("1", "-1", "0"):
                raise VOCDataError(f"{path}:{n}: expected '<id> 1|-1|0', got {' '.join(row)!r}")
            flags[row[0]] = int(row[1])
        per_class.append(flags)
    ids = sorted(set().union(*per_class))
    positive = {1, 0} if difficult_as_positive else {1}
    labels = np.array([[f.get(i, -1) in positive for f in per_class] for i in ids], dtype=np.uint8)
    return ids, labels.reshape(len(ids), len(classes))


BAD_IMAGE_FIX = "replace the file from the VOC tar, or set data.on_bad_image=skip to leave it out"


def decode_image(path: Path, fix: str = BAD_IMAGE_FIX) -> Image.Image:
    """Decode any image file Pillow reads into 8-bit RGB, upright; a VOCDataError naming the file otherwise.

    Photographs that are not 8-bit RGB are converted, not refused: 16-bit PNGs and TIFFs keep their top
    8 bits (Pillow's own conversion would clip them to white), transparent pixels are laid over white,
    CMYK goes through Pillow's conversion (no ICC profile), grayscale and palette images become gray RGB.
    A camera's EXIF orientation is applied, so the pixels are the picture a viewer shows.
    """
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                # 16 bits (Pillow reads 16-bit grayscale as I;16 or I): scale to 8, do not clip
                wide = np.asarray(im, dtype=np.int64)
                im = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
            elif im.mode == "F":
                im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
            if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            return im.convert("RGB")
    except FileNotFoundError:
        raise VOCDataError(f"image listed but missing: {path}. Fix: restore JPEGImages/ from the VOC tar, "
                           "or set data.on_bad_image=skip") from None
    except DECODE_ERRORS as e:
        raise VOCDataError(f"corrupt or truncated image {path}: {e}. Fix: {fix}") from None


def image_array(im: Image.Image, size: int, mode: str) -> np.ndarray:
    """An RGB image as the networks read it: (size, size, C) uint8, C=3 for 'rgb', 1 for 'gray'.

    Gray is Pillow's ITU-R 601-2 luma of the RGB; the resize is bilinear to a square, ignoring aspect ratio.
    """
    im = im.convert("L") if mode == "gray" else im
    im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
    arr = np.asarray(im, dtype=np.uint8)
    return arr if arr.ndim == 3 else arr[:, :, None]


def load_image(path: Path, size: int, mode: str) -> np.ndarray:
    """Decode and resize an image to (size, size, C) uint8; C=3 for 'rgb', 1 for 'gray'."""
    return image_array(decode_image(path), size, mode)


def load_mask(path: Path, size: int, image_path: Path | None, void: str) -> np.ndarray:
    """Binary (size, size) uint8 mask from a palette PNG: 1 where a class 1..20 is, 0 background.

    VOID (255) border pixels stay 255 when void='ignore' (loss and metrics skip them) or become 0
    when void='background'. Nearest-neighbour resize, so no label is ever interpolated.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise VOCDataError(f"mask {path} has mode {im.mode}; VOC masks are palette (P) PNGs with "
                                   "class indices. Fix: restore SegmentationClass/ from the VOC tar")
            labels = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise VOCDataError(f"mask listed but missing: {path}. Fix: restore SegmentationClass/ "
                           "or set data.on_bad_image=skip") from None
    except DECODE_ERRORS as e:
        if isinstance(e, VOCDataError):
            raise
        raise VOCDataError(f"corrupt or truncated mask {path}: {e}. Fix: replace it from the VOC tar, "
                           "or set data.on_bad_image=skip") from None
    if image_path is not None:
        try:
            with Image.open(image_path) as im:
                image_size = im.size
        except DECODE_ERRORS as e:
            raise VOCDataError(f"corrupt or missing image {image_path} (paired with mask {path}): {e}. Fix: "
                               "replace it from the VOC tar, or set data.on_bad_image=skip") from None
        if image_size != (labels.shape[1], labels.shape[0]):
            raise VOCDataError(
                f"mask {path} is {labels.shape[1]}x{labels.shape[0]} but its image {image_path} is "
                f"{image_size[0]}x{image_size[1]}: they must match. Fix: restore the pair from the VOC tar, "
                "or set data.on_bad_image=skip"
            )
    bad = np.setdiff1d(np.unique(labels), np.r_[np.arange(21), VOID])
    if bad.size:
        raise VOCDataError(f"mask {path} holds values {bad.tolist()} outside 0..20 and 255: not a VOC class "
                           "mask. Fix: restore it from the VOC tar, or set data.on_bad_image=skip")
    small = np.asarray(Image.fromarray(labels).resize((size, size), Image.NEAREST), dtype=np.uint8)
    out = ((small > 0) & (small != VOID)).astype(np.uint8)
    if void == "ignore":
        out[small == VOID] = VOID
    elif void not in VOID_RULES:
        raise VOCDataError(f"data.void={void!r}; allowed: {', '.join(VOID_RULES)}")
    return out


def download_voc(root: str | os.PathLike, year: str = "2009") -> Path:
    """Fetch and MD5-verify the official VOC trainval tar, then add its VOC<year> folder to `root`.

    The archive goes to `<root>/.voc_dl_download/` (kept for a re-extraction) and is extracted into a
    temporary folder beside the target, then renamed into place: an interrupted download or extraction
    leaves no half-written tree, and nothing already in `root` is replaced.
    """
    import shutil
    import tempfile

    from torchvision.datasets.utils import download_url, extract_archive
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    year = str(year)
    if year not in DATASET_YEAR_DICT:
        raise VOCDataError(f"data.year={year!r} cannot be downloaded; allowed: {', '.join(DATASET_YEAR_DICT)}")
    info = DATASET_YEAR_DICT[year]
    target = voc_dir(root, year)
    if target.exists():
        raise VOCDataError(f"{target} exists but is not a complete VOC tree (no JPEGImages/); voc-dl will not "
                           "replace it. Fix: move it away, or set data.download=false and repair it")
    archive_dir = Path(root).expanduser() / ".voc_dl_download"
    try:
        download_url(info["url"], str(archive_dir), filename=info["filename"], md5=info["md5"])
    except Exception as e:  # network or checksum failure: say what to do instead
        raise VOCDataError(
            f"download of VOC{year} from {info['url']} failed: {e}. Fix: check the network, or download "
            f"{info['filename']} by hand, extract it under {root} and set data.download=false"
        ) from e
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".VOC{year}-extract-", dir=target.parent))
    try:
        extract_archive(str(archive_dir / info["filename"]), str(tmp))
        extracted = tmp / "VOCdevkit" / f"VOC{year}"
        if not (extracted / "JPEGImages").is_dir():
            raise VOCDataError(f"{archive_dir / info['filename']} holds no VOCdevkit/VOC{year}/JPEGImages. "
                               f"Fix: delete it and download again")
        os.rename(extracted, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
