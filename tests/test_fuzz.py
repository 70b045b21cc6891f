"""Bad-data fuzzing: random corruptions of a small VOC tree end in the documented error or skip, and
never poison a later clean run."""

from __future__ import annotations

import random
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from voc_dl.data.datamodule import VOCDataModule
from voc_dl.data.synthetic import make_synthetic_voc, voc_palette
from voc_dl.data.voc import VOCDataError, voc_dir

KINDS = ["truncate_jpeg", "bitflip_jpeg", "truncate_png", "bitflip_png", "mask_wrong_size", "mask_rgb",
         "mask_bad_values", "unknown_id_in_list", "empty_list", "non_utf8_list", "delete_jpeg"]


def corrupt(base, kind: str, rng: random.Random) -> str:
    ids = sorted(p.stem for p in (base / "JPEGImages").glob("*.jpg"))
    victim = rng.choice(ids)
    jpg, png = base / "JPEGImages" / f"{victim}.jpg", base / "SegmentationClass" / f"{victim}.png"
    if kind.startswith("truncate"):
        path = jpg if kind.endswith("jpeg") else png
        data = path.read_bytes()
        path.write_bytes(data[: rng.randint(1, len(data) - 1)])
    elif kind.startswith("bitflip"):
        path = jpg if kind.endswith("jpeg") else png
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 20)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    elif kind == "mask_wrong_size":
        Image.new("P", (rng.randint(5, 50), rng.randint(5, 50))).save(png)
    elif kind == "mask_rgb":
        Image.new("RGB", Image.open(jpg).size, (128, 0, 0)).save(png)
    elif kind == "mask_bad_values":
        with Image.open(png) as im:
            values = np.asarray(im).copy()
        values[0, : rng.randint(1, 5)] = rng.randint(21, 254)
        bad = Image.fromarray(values, mode="P")
        bad.putpalette(voc_palette())  # with a palette, PNG keeps the raw indices
        bad.save(png)
    elif kind == "unknown_id_in_list":
        for lst in [base / "ImageSets/Segmentation/train.txt", base / "ImageSets/Main/cat_train.txt"]:
            lst.write_text(lst.read_text() + ("nosuch_000 1\n" if "cat_" in lst.name else "nosuch_000\n"))
    elif kind == "empty_list":
        rng.choice([base / "ImageSets/Segmentation/train.txt", base / "ImageSets/Main/cat_train.txt"]).write_text("")
    elif kind == "non_utf8_list":
        lst = rng.choice([base / "ImageSets/Segmentation/val.txt", base / "ImageSets/Main/bottle_val.txt"])
        lst.write_bytes(lst.read_bytes() + b"\xff\xfe\xfa 1\n")
    elif kind == "delete_jpeg":
        jpg.unlink()
    return victim


def load(root, cache, task, on_bad):
    kw = dict(image_size=64, color="gray") if task == "segmentation" else {}
    dm = VOCDataModule(task=task, root=str(root), year=2009, cache_dir=str(cache), on_bad_image=on_bad, **kw)
    dm.prepare_data()
    dm.setup()
    x = dm.train_set.__getitems__(list(range(len(dm.train_set))))
    return dm, x


@pytest.mark.parametrize("seed", [0, 1])
def test_random_corruptions_end_in_documented_errors_or_skips(tmp_path, seed):
    pristine = tmp_path / "pristine"
    make_synthetic_voc(pristine, "2009", n_images=16, seed=7)
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    cache = tmp_path / "cache"  # shared by every case and the clean runs: nothing may poison it
    for case in range(len(KINDS) * 3):
        kind = KINDS[case % len(KINDS)]
        root = tmp_path / f"case{case}"
        shutil.copytree(pristine, root)
        corrupt(voc_dir(root, 2009), kind, rng)
        for task in ("segmentation", "classification"):
            for on_bad in ("error", "skip"):
                try:
                    dm, _ = load(root, cache, task, on_bad)
                    outcomes[(kind, "skipped" if dm.info["skipped"] else "loaded")] += 1
                except VOCDataError as e:
                    assert str(e) and ("Fix" in str(e) or "allowed" in str(e) or "restore" in str(e)), str(e)
                    outcomes[(kind, "error")] += 1
                # anything else (zlib.error, struct.error, IndexError...) fails the test: unexplained
        # a clean run on the pristine tree, same cache folder, still works and sees every image
        dm, x = load(pristine, cache, "segmentation", "error")
        assert len(dm.train_set) == 8 and not dm.info["skipped"]
    # every corruption that hits an image or mask file can be skipped instead of stopping the run
    for kind in ("truncate_jpeg", "delete_jpeg", "mask_wrong_size", "mask_rgb", "mask_bad_values"):
        assert outcomes[(kind, "skipped")] > 0, (kind, outcomes)
    for kind in ("empty_list", "non_utf8_list", "unknown_id_in_list"):  # a list the task reads: named error
        assert outcomes[(kind, "error")] > 0, (kind, outcomes)
    print(sorted(outcomes.items()))
