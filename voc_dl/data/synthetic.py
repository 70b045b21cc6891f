"""A small synthetic VOCdevkit tree, deterministic from a seed: the embedded default data.

Each image holds one or two large objects side by side, drawn as class-specific shapes (a cat is a head
with ears, a motorbike two wheels, a frame and handlebars, a bottle a body and neck, ...) in the class's
hue, lit to stand out from a smooth dark or light background also in grayscale, and now and then a small
distractor. That makes the study's three tasks learnable in the few minutes `make demo` gives them. The
tree has everything voc-dl reads: JPEGs, Main lists for all 20 classes (with 0 = difficult-only flags for
tiny objects), Segmentation lists and palette masks with the 255 void border. It is generated on first
use and never committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from voc_dl.data.voc import VOC_CLASSES, VOID, VOCDataError, voc_dir

# Shapes for these classes; the others get a generic blob in a class-specific colour.
DRAWN = ("cat", "motorbike", "bottle", "dog", "person", "car", "bird")
MARKER = ".voc_dl_synthetic.json"
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL converts to grayscale
DISTRACTORS = ("car", "bird", "chair", "sheep")


def voc_palette() -> list[int]:
    """The official VOC colour map (bit-interleaved), 256 RGB entries."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _background(rng: np.random.Generator, w: int, h: int, dark: bool) -> np.ndarray:
    """A smooth tinted background, dark or light: a base colour, a gentle gradient and faint noise."""
    base = rng.uniform(15, 80, size=3) if dark else rng.uniform(175, 240, size=3)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    gradient = rng.uniform(-20, 20, size=3) * xx[..., None] + rng.uniform(-20, 20, size=3) * yy[..., None]
    noise = rng.normal(0, 3, size=(h, w, 3))
    return np.clip(base + gradient + noise, 0, 255).astype(np.uint8)


def _draw(draw: ImageDraw.ImageDraw, cls: str, box, fill) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if cls == "cat":  # round head with two pointed ears
        draw.ellipse((x0, y0 + h * 0.3, x1, y1), fill=fill)
        draw.polygon([(x0, y0 + h * 0.45), (x0 + w * 0.15, y0), (x0 + w * 0.4, y0 + h * 0.35)], fill=fill)
        draw.polygon([(x1, y0 + h * 0.45), (x1 - w * 0.15, y0), (x1 - w * 0.4, y0 + h * 0.35)], fill=fill)
    elif cls == "motorbike":  # two wheels apart, a frame between them and handlebars on a post
        r = min(w * 0.2, h * 0.35)
        draw.ellipse((x0, y1 - 2 * r, x0 + 2 * r, y1), fill=fill)
        draw.ellipse((x1 - 2 * r, y1 - 2 * r, x1, y1), fill=fill)
        draw.rectangle((x0 + r, y1 - r * 1.5, x1 - r, y1 - r * 0.8), fill=fill)
        draw.rectangle((x0 + w * 0.42, y0 + h * 0.1, x1 - w * 0.42, y1 - r), fill=fill)
        draw.rectangle((x0 + w * 0.25, y0, x1 - w * 0.25, y0 + h * 0.15), fill=fill)
    elif cls == "bottle":  # tall body and a narrow neck
        draw.rectangle((x0 + w * 0.2, y0 + h * 0.35, x1 - w * 0.2, y1), fill=fill)
        draw.rectangle((x0 + w * 0.4, y0, x1 - w * 0.4, y0 + h * 0.4), fill=fill)
    elif cls == "dog":  # long body, head, legs
        draw.rectangle((x0, y0 + h * 0.3, x1 - w * 0.25, y0 + h * 0.7), fill=fill)
        draw.ellipse((x1 - w * 0.35, y0, x1, y0 + h * 0.45), fill=fill)
        for fx in (0.05, 0.55):
            draw.rectangle((x0 + w * fx, y0 + h * 0.6, x0 + w * (fx + 0.12), y1), fill=fill)
    elif cls == "person":  # head over a torso
        draw.ellipse((x0 + w * 0.3, y0, x1 - w * 0.3, y0 + h * 0.25), fill=fill)
        draw.rectangle((x0 + w * 0.15, y0 + h * 0.25, x1 - w * 0.15, y1), fill=fill)
    elif cls == "car":  # box body with a cabin
        draw.rectangle((x0, y0 + h * 0.4, x1, y1 - h * 0.15), fill=fill)
        draw.rectangle((x0 + w * 0.25, y0, x1 - w * 0.25, y0 + h * 0.45), fill=fill)
        draw.ellipse((x0 + w * 0.1, y1 - h * 0.3, x0 + w * 0.3, y1), fill=fill)
        draw.ellipse((x1 - w * 0.3, y1 - h * 0.3, x1 - w * 0.1, y1), fill=fill)
    elif cls == "bird":
        draw.polygon([(x0, y0 + h / 2), (x1, y0), (x1 - w * 0.3, y0 + h / 2), (x1, y1)], fill=fill)
    else:
        draw.rounded_rectangle(box, radius=min(w, h) / 4, fill=fill)


def _colour(rng: np.random.Generator, cls: str, dark_background: bool) -> tuple[int, int, int]:
    """The class's hue, lit to stand out from the background also in grayscale (luminance 165-215 on a dark
    background, 45-95 on a light one)."""
    hue = VOC_CLASSES.index(cls) / len(VOC_CLASSES)
    rgb = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 90 + 140 + rng.normal(0, 10, 3)
    target = rng.uniform(165, 215) if dark_background else rng.uniform(45, 95)
    rgb = rgb * target / float(rgb @ LUMA)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _make_image(rng: np.random.Generator, classes: list[str], tiny: str | None = None):
    """An image holding `classes` as large shapes (and `tiny`, if given, as a small one), its mask and flags."""
    w, h = int(rng.integers(150, 260)), int(rng.integers(120, 200))
    dark = bool(rng.random() < 0.5)
    img = Image.fromarray(_background(rng, w, h, dark))
    draw = ImageDraw.Draw(img)
    mask = Image.new("L", (w, h), 0)
    flags: dict[str, int] = {}
    # the large shapes side by side, each in its own slot of the width (none hides another); the small one anywhere
    slot = w // len(classes)
    places = [(c, (0.4, 0.75), i * slot, slot) for i, c in enumerate(classes)]
    for cls, (lo, hi), left, width in [*places, *([(tiny, (0.08, 0.12), 0, w)] if tiny else [])]:
        scale = rng.uniform(lo, hi)
        bw, bh = int(w * scale * rng.uniform(0.8, 1.2)), int(h * scale * rng.uniform(0.9, 1.4))
        bw, bh = min(max(bw, 8), width - 2), min(max(bh, 8), h - 2)
        x0, y0 = left + int(rng.integers(0, max(1, width - bw))), int(rng.integers(0, max(1, h - bh)))
        box = (x0, y0, x0 + bw, y0 + bh)
        obj = Image.new("L", (w, h), 0)
        _draw(ImageDraw.Draw(obj), cls, box, 255)
        _draw(draw, cls, box, _colour(rng, cls, dark))
        inside = np.asarray(obj) > 0
        # VOC draws a void band along object borders; do the same, 255 where the band leaves background.
        band = (np.asarray(obj.filter(ImageFilter.MaxFilter(5))) > 0) & ~inside
        m = np.asarray(mask).copy()
        m[band & (m == 0)] = VOID
        m[inside] = VOC_CLASSES.index(cls) + 1
        mask = Image.fromarray(m)
        small = inside.mean() < 0.02  # tiny objects are "difficult only" (flag 0) unless seen large too
        flags[cls] = max(flags.get(cls, -1), 0 if small else 1)
    return img, mask, flags


def generated(root: str | os.PathLike, year: str | int) -> bool:
    """True for a tree this generator wrote: its folder's marker, or the VOC<year> one of older trees."""
    return (Path(root) / MARKER).is_file() or (voc_dir(root, year) / MARKER).is_file()


def check_writable(root: str | os.PathLike, year: str | int) -> None:
    """Refuse, before anything is written, a folder that may hold someone's data."""
    root = Path(root)
    target = voc_dir(root, year)
    if not _may_write(root) or (target.exists() and not (target / MARKER).is_file()):
        raise VOCDataError(
            f"data.synthetic.dir={root} holds files the synthetic generator did not write, so it will not write "
            f"there. Fix: to train on a VOC tree in it, set data.root={root}; for synthetic data, choose an "
            "empty or new folder")


def _may_write(root: Path) -> bool:
    """True when voc-dl may write in `root`: missing, empty, or made by this generator (its markers)."""
    if not root.exists():
        return True
    if not root.is_dir():
        return False
    entries = [p for p in root.iterdir() if not p.name.startswith(".synthetic-")]
    if not entries or (root / MARKER).is_file():
        return True
    # trees generated before the folder-level marker: only VOCdevkit/, every VOC<year> in it marked
    devkit = root / "VOCdevkit"
    return ([p.name for p in entries] == ["VOCdevkit"] and devkit.is_dir()
            and all((d / MARKER).is_file() for d in devkit.iterdir() if not d.name.startswith(".")))


def make_synthetic_voc(root: str | os.PathLike, year: str = "2009", n_images: int = 320, seed: int = 0) -> Path:
    """Write (once) a synthetic VOCdevkit tree under `root`; returns the VOC<year> folder.

    `root` must be missing, empty or a folder this generator made: anything else may be someone's
    data and is refused, never overwritten. The tree is built in a temporary folder and renamed into
    place, so a killed generation leaves nothing half-written; a tree with the same parameters is reused.
    """
    root = Path(root)
    check_writable(root, year)
    target = voc_dir(root, year)
    params = {"year": str(year), "n_images": n_images, "seed": seed, "version": 3}
    marker = target / MARKER
    if marker.exists() and json.loads(marker.read_text()) == params:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(json.dumps({"written_by": "voc-dl's synthetic generator"}))
    with _generating(target.parent):  # runs started side by side (the demo, a parallel sweep) generate it once
        if marker.exists() and json.loads(marker.read_text()) == params:
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=target.parent))
        try:
            _write_tree(tmp, str(year), n_images, seed)
            (tmp / MARKER).write_text(json.dumps(params))
            if target.exists():  # an older generation with other parameters (marked: ours to replace)
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _generating(folder: Path):
    """An exclusive lock on `folder` itself among processes (POSIX flock; nothing is left in it)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): generate unlocked
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_tree(base: Path, year: str, n_images: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    palette = voc_palette()
    weights = np.array([3, 3, 3, 2, 2, 1, 1], dtype=float)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    flags_of: dict[str, dict[str, int]] = {}
    for i in range(n_images):
        image_id = f"{year}_{i:06d}"
        n_obj = int(rng.choice([1, 1, 1, 2]))
        if rng.random() < 0.1:  # some images hold none of the study's classes
            chosen = list(rng.choice(DISTRACTORS, size=n_obj))
        else:
            chosen = list(rng.choice(DRAWN, size=n_obj, p=weights / weights.sum()))
        # now and then a small distractor besides: a "difficult only" (flag 0) object, as VOC has
        tiny = str(rng.choice(DISTRACTORS)) if rng.random() < 0.15 else None
        img, mask, flags = _make_image(rng, chosen, tiny)
        img.save(base / "JPEGImages" / f"{image_id}.jpg", quality=92)
        mask.putpalette(palette)
        mask.save(base / "SegmentationClass" / f"{image_id}.png")
        split = "train" if i % 2 == 0 else "val"
        splits[split].append(image_id)
        flags_of[image_id] = flags
    for split, ids in [*splits.items(), ("trainval", splits["train"] + splits["val"])]:
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for cls in VOC_CLASSES:
            lines = "".join(f"{i} {flags_of[i].get(cls, -1):2d}\n" for i in ids)
            (base / "ImageSets" / "Main" / f"{cls}_{split}.txt").write_text(lines)
