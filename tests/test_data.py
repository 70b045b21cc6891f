"""The data layer on synthetic and hand-made VOC trees: shapes, labels, masks, cache, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import SHARED_VOC
from voc_dl.data import cache
from voc_dl.data.datamodule import VOCDataModule, in_holdout
from voc_dl.data.synthetic import make_synthetic_voc, voc_palette
from voc_dl.data.voc import VOC_CLASSES, VOCDataError, load_mask, read_split_ids, voc_dir


def datamodule(root, tmp_path, **kw) -> VOCDataModule:
    kw.setdefault("year", 2009)
    dm = VOCDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), batch_size=8, **kw)
    dm.prepare_data()
    dm.setup()
    return dm


def read_flags(base, cls, split):
    return {i: int(f) for i, f in (line.split() for line in (base / "ImageSets/Main" / f"{cls}_{split}.txt")
                                   .read_text().splitlines())}


@pytest.fixture
def tree(tmp_path):
    """A private, mutable synthetic tree for tests that damage files."""
    root = tmp_path / "tree"
    make_synthetic_voc(root, "2009", n_images=16, seed=5)
    return root


def test_reconstruction_batches_are_rgb_128_in_unit_range(synthetic_root, tmp_path):
    dm = datamodule(synthetic_root, tmp_path, task="reconstruction")
    raw = next(iter(dm.train_dataloader()))
    assert raw.dtype == torch.uint8 and raw.shape == (8, 3, 128, 128)
    x = dm.on_after_batch_transfer(raw, 0)
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_a_root_recorded_through_a_folder_that_is_gone_still_finds_the_tree(synthetic_root, tmp_path):
    gone = tmp_path / "old_checkout"  # never created, as after `git worktree remove`
    recorded = f"{gone}/{os.path.relpath(synthetic_root, gone)}"  # e.g. <tmp>/old_checkout/../../voc0
    dm = datamodule(recorded, tmp_path, task="reconstruction")
    assert dm.root == synthetic_root and len(dm.train_set) > 0


def test_classification_labels_match_the_main_lists(synthetic_root, tmp_path):
    classes = ["cat", "motorbike", "bottle"]
    dm = datamodule(synthetic_root, tmp_path, task="classification", classes=classes)
    base = voc_dir(synthetic_root, 2009)
    flags = {c: read_flags(base, c, "train") for c in classes}
    expected_ids = sorted(i for i in flags["cat"] if any(flags[c][i] == 1 for c in classes))
    assert dm.train_ids == expected_ids
    targets = dm.train_set.targets
    for row, image_id in enumerate(dm.train_ids):
        assert targets[row].tolist() == [float(flags[c][image_id] == 1) for c in classes]
    x, y = dm.train_set.__getitems__([0, 1])
    assert x.shape == (2, 3, 128, 128) and y.shape == (2, 3) and y.dtype == torch.float32


def test_difficult_flag_is_a_config_choice(synthetic_root, tmp_path):
    base = voc_dir(synthetic_root, 2009)
    classes = list(VOC_CLASSES[:20])
    zeros = sum(f == 0 for c in classes for f in read_flags(base, c, "train").values())
    assert zeros > 0, "the synthetic tree should hold some difficult-only (0) flags"
    strict = datamodule(synthetic_root, tmp_path, task="classification", classes=classes)
    loose = datamodule(synthetic_root, tmp_path, task="classification", classes=classes,
                       difficult_as_positive=True)
    assert loose.train_set.targets.sum() - strict.train_set.targets.sum() == pytest.approx(
        sum(f == 0 for c in classes for i, f in read_flags(base, c, "train").items() if i in loose.train_ids))


def test_val_to_train_moves_that_fraction(synthetic_root, tmp_path):
    base = datamodule(synthetic_root, tmp_path, task="classification")
    moved = datamodule(synthetic_root, tmp_path, task="classification", val_to_train=0.25)
    n_val = len(base.val_set)
    k = round(0.25 * n_val)
    assert len(moved.val_set) == n_val - k
    assert len(moved.train_set) == len(base.train_set) + k
    assert not set(moved.train_ids) & set(moved.val_ids)
    assert set(moved.train_ids) | set(moved.val_ids) == set(base.train_ids) | set(base.val_ids)
    # images and targets of moved rows stay paired
    row = len(base.train_set)
    src = base.val_ids.index(moved.train_ids[row])
    assert torch.equal(moved.train_set[row][0], base.val_set[src][0])
    assert torch.equal(moved.train_set[row][1], base.val_set[src][1])


def test_segmentation_gray_64_with_binary_masks_and_void(synthetic_root, tmp_path):
    dm = datamodule(synthetic_root, tmp_path, task="segmentation", image_size=64, color="gray")
    x, m = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 64, 64) and m.shape == (8, 1, 64, 64) and m.dtype == torch.uint8
    assert set(torch.unique(m).tolist()) <= {0, 1, 255} and (m == 255).any() and (m == 1).any()
    bg = datamodule(synthetic_root, tmp_path, task="segmentation", image_size=64, color="gray", void="background")
    _, m2 = next(iter(bg.val_dataloader()))
    assert set(torch.unique(m2).tolist()) <= {0, 1}
    assert len(dm.train_set) == 24 and len(dm.val_set) == 24  # all images, every class


def test_synthetic_objects_are_large_and_stand_out_also_in_gray(synthetic_root, tmp_path):
    # What the demo relies on to learn in minutes: a few large shapes per image, each clearly lighter or darker
    # than its smooth background in grayscale (the segmenters' input), on every image.
    dm = datamodule(synthetic_root, tmp_path, task="segmentation", image_size=64, color="gray")
    x, m = dm.val_set.__getitems__(list(range(len(dm.val_set))))
    x, m = x.float()[:, 0], m[:, 0]
    fg, bg = m == 1, m == 0
    assert fg.any(dim=(1, 2)).float().mean() >= 0.9, "nearly every image holds an object"
    frac = fg.float().mean(dim=(1, 2))
    assert 0.15 <= frac.mean() <= 0.45, f"objects cover {frac.mean():.2f} of an image on average"
    for i in range(len(x)):
        if fg[i].sum() >= 20:
            contrast = (x[i][fg[i]].median() - x[i][bg[i]].median()).abs()
            assert contrast >= 50, f"image {i}: object and background differ by {contrast:.0f} of 255 in gray"
    # the background is smooth: its pixels stay close to a plane (no texture the networks must copy)
    for i in range(len(x)):
        yy, xx = torch.nonzero(bg[i], as_tuple=True)
        if len(yy) > 100:
            design = torch.stack([torch.ones_like(yy), yy, xx], 1).float()
            coef = torch.linalg.lstsq(design, x[i][bg[i]].unsqueeze(1)).solution
            residual = x[i][bg[i]] - (design @ coef).squeeze(1)
            assert residual.std() < 8, f"image {i}: background texture {residual.std():.1f} of 255"


def write_mask(path, values: np.ndarray):
    im = Image.fromarray(values.astype(np.uint8), mode="P")
    im.putpalette(voc_palette())
    im.save(path)


def test_mask_binarisation_and_void_on_a_hand_made_mask(tmp_path):
    labels = np.array([[0, 0, 255, 8],
                       [0, 15, 255, 8],
                       [20, 255, 0, 0],
                       [1, 0, 0, 0]])
    write_mask(tmp_path / "m.png", labels)
    Image.new("RGB", (4, 4)).save(tmp_path / "i.jpg")
    ignore = load_mask(tmp_path / "m.png", 4, tmp_path / "i.jpg", "ignore")
    assert ignore.tolist() == [[0, 0, 255, 1], [0, 1, 255, 1], [1, 255, 0, 0], [1, 0, 0, 0]]
    background = load_mask(tmp_path / "m.png", 4, None, "background")
    assert background.tolist() == [[0, 0, 0, 1], [0, 1, 0, 1], [1, 0, 0, 0], [1, 0, 0, 0]]
    # nearest-neighbour downsizing never invents values between classes and void
    big = np.kron(labels, np.ones((4, 4), dtype=int))
    write_mask(tmp_path / "big.png", big)
    assert load_mask(tmp_path / "big.png", 4, None, "ignore").tolist() == ignore.tolist()


def test_cache_hit_miss_and_rebuild_after_corruption(tmp_path):
    calls = []

    def load_one(i):
        calls.append(i)
        return {"images": np.full((4, 4, 3), int(i), np.uint8)}

    ids = ["1", "2", "3"]
    spec = {"size": 4}
    e1 = cache.load_or_build(tmp_path, "t", spec, ids, load_one)
    assert len(calls) == 3 and e1.arrays["images"][2, 0, 0, 0] == 3
    e2 = cache.load_or_build(tmp_path, "t", spec, ids, load_one)
    assert len(calls) == 3, "a hit must not decode again"
    assert isinstance(e2.arrays["images"], np.memmap)
    cache.load_or_build(tmp_path, "t", {"size": 5}, ids, load_one)
    assert len(calls) == 6, "another spec is another entry"
    # flip one byte of the array: the checksum catches it and the entry is rebuilt
    npy = e1.path / "images.npy"
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    e3 = cache.load_or_build(tmp_path, "t", spec, ids, load_one)
    assert len(calls) == 9 and e3.arrays["images"][2, 0, 0, 0] == 3
    # a missing meta.json (a build killed before rename cannot leave one, but a user might delete it)
    (e3.path / "meta.json").unlink()
    cache.load_or_build(tmp_path, "t", spec, ids, load_one)
    assert len(calls) == 12
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folders left behind"


def test_cache_is_shared_and_stale_when_a_source_changes(tree, tmp_path):
    dm = datamodule(tree, tmp_path, task="reconstruction")
    first = dm.info["cache"]
    again = datamodule(tree, tmp_path, task="reconstruction")
    assert again.info["cache"] == first
    jpg = voc_dir(tree, 2009) / "JPEGImages" / f"{again.train_ids[0]}.jpg"
    Image.new("RGB", (50, 40), (255, 0, 0)).save(jpg)
    changed = datamodule(tree, tmp_path, task="reconstruction")
    assert changed.info["cache"][0] != first[0]
    assert changed.train_set[0].float().mean() != again.train_set[0].float().mean()


# -- bad input: every case names the file or key and says how to fix it -------------------------------

def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(VOCDataError, match=r"data.root=.*nowhere does not exist.*data.download=true"):
        datamodule(tmp_path / "nowhere", tmp_path)
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(VOCDataError, match=r"looked for .*VOC2009.*data.root.*data.download=true"):
        datamodule(tmp_path / "empty", tmp_path)


def test_wrong_year_points_to_the_years_present(tree, tmp_path):
    with pytest.raises(VOCDataError, match=r"found VOC2009 there: set data.year"):
        datamodule(tree, tmp_path, year=2012)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_jpeg_is_named_and_can_be_skipped(tree, tmp_path, damage):
    base = voc_dir(tree, 2009)
    victim = base / "JPEGImages" / "2009_000000.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"not a jpeg at all" * 10)
    with pytest.raises(VOCDataError, match=r"corrupt or truncated image .*2009_000000.jpg.*on_bad_image=skip"):
        datamodule(tree, tmp_path, task="segmentation", image_size=64, color="gray")
    dm = datamodule(tree, tmp_path, task="segmentation", image_size=64, color="gray", on_bad_image="skip")
    assert dm.info["skipped"] == ["2009_000000"] and "2009_000000" not in dm.train_ids
    assert len(dm.train_set) == 7


def test_listed_but_missing_image(tree, tmp_path):
    (voc_dir(tree, 2009) / "JPEGImages" / "2009_000002.jpg").unlink()
    with pytest.raises(VOCDataError, match=r"listed but missing: .*2009_000002.jpg"):
        datamodule(tree, tmp_path, task="segmentation", image_size=64, color="gray")


def test_mask_of_another_size(tree, tmp_path):
    png = voc_dir(tree, 2009) / "SegmentationClass" / "2009_000004.png"
    write_mask(png, np.zeros((10, 12)))
    with pytest.raises(VOCDataError, match=r"mask .*2009_000004.png is 12x10 but its image .* must match"):
        datamodule(tree, tmp_path, task="segmentation", image_size=64, color="gray")


def test_mask_value_outside_voc_classes(tree, tmp_path):
    base = voc_dir(tree, 2009)
    png = base / "SegmentationClass" / "2009_000006.png"
    with Image.open(png) as im:
        values = np.asarray(im).copy()
    values[0, 0] = 42
    write_mask(png, values)
    with pytest.raises(VOCDataError, match=r"2009_000006.png holds values \[42\] outside 0..20 and 255"):
        datamodule(tree, tmp_path, task="segmentation", image_size=64, color="gray")


def test_unknown_class_name(synthetic_root, tmp_path):
    with pytest.raises(VOCDataError, match=r"data.classes: unknown class name\(s\) \['kitten'\]; allowed: aeroplane"):
        datamodule(synthetic_root, tmp_path, task="classification", classes=["cat", "kitten"])


def test_empty_selection(synthetic_root, tmp_path):
    with pytest.raises(VOCDataError, match=r"no image of split 'train' contains any of data.classes=\['sofa'\]"):
        datamodule(synthetic_root, tmp_path, task="classification", classes=["sofa"])


def test_non_utf8_list_file(tree, tmp_path):
    (voc_dir(tree, 2009) / "ImageSets/Main/cat_train.txt").write_bytes(b"2009_000000 1\n\xff\xfe 1\n")
    with pytest.raises(VOCDataError, match=r"cat_train.txt: not UTF-8"):
        datamodule(tree, tmp_path, task="classification")


@pytest.mark.skipif(not (SHARED_VOC / "VOCdevkit" / "VOC2012").is_dir(), reason="../shared/voc is not present")
def test_shared_voc_subset_loads(tmp_path):
    dm = VOCDataModule(task="segmentation", root=str(SHARED_VOC), year=2012, image_size=64, color="gray",
                       cache_dir=str(tmp_path / "cache"))
    ids = dm._selection("train")[0]
    assert len(ids) == 366 and len(dm._selection("val")[0]) == 363
    ids, labels = dm.__class__(task="classification", root=str(SHARED_VOC), year=2012,
                               classes=["cat", "dog", "person"])._selection("train")
    assert labels.shape == (len(ids), 3) and labels.any(axis=1).all()
    # decode a handful of real images and masks through the same code the cache uses
    from voc_dl.data.voc import load_image
    base = voc_dir(SHARED_VOC, 2012)
    seg_ids = dm._selection("val")[0][:5]
    for i in seg_ids:
        img = load_image(base / "JPEGImages" / f"{i}.jpg", 64, "gray")
        mask = load_mask(base / "SegmentationClass" / f"{i}.png", 64, base / "JPEGImages" / f"{i}.jpg", "ignore")
        assert img.shape == (64, 64, 1) and mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1, 255}


def _tar_of(tree, tmp_path):
    import hashlib
    import tarfile

    tar = tmp_path / "VOCtrainval.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tree / "VOCdevkit", arcname="VOCdevkit")
    return tar, hashlib.md5(tar.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over tmp_path: the real downloader runs, nothing leaves the machine."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_fetches_verifies_and_extracts(tree, tmp_path, monkeypatch, served):
    """The real download path (torchvision's downloader and MD5 check) against a local server."""
    from torchvision.datasets import voc as tv_voc

    tar, md5 = _tar_of(tree, tmp_path)
    monkeypatch.setitem(tv_voc.DATASET_YEAR_DICT, "2009", {"url": f"{served}/{tar.name}", "filename": "VOC.tar",
                                                           "md5": md5, "base_dir": "VOCdevkit/VOC2009"})
    dest = tmp_path / "downloaded"
    dm = datamodule(dest, tmp_path, task="segmentation", image_size=64, color="gray", download=True)
    assert len(dm.train_set) == 8 and (dest / "VOCdevkit" / "VOC2009" / "JPEGImages").is_dir()


def test_download_with_a_bad_checksum_fails_clearly(tree, tmp_path, monkeypatch, served):
    from torchvision.datasets import voc as tv_voc

    tar, _ = _tar_of(tree, tmp_path)
    monkeypatch.setitem(tv_voc.DATASET_YEAR_DICT, "2009", {"url": f"{served}/{tar.name}", "filename": "VOC.tar",
                                                           "md5": "0" * 32, "base_dir": "VOCdevkit/VOC2009"})
    with pytest.raises(VOCDataError, match=r"download of VOC2009 from http://127.0.0.1.* failed.*download=false"):
        datamodule(tmp_path / "dl", tmp_path, download=True)


# -- the test split (data.test_split) -----------------------------------------------------------------------------
def test_holdout_is_a_fixed_share_of_train_kept_out_of_training_and_selection(synthetic_root, tmp_path):
    plain = datamodule(synthetic_root, tmp_path, task="classification", val_to_train=0.25)
    held = datamodule(synthetic_root, tmp_path, task="classification", val_to_train=0.25, test_split="holdout",
                      holdout_fraction=0.5)
    train_list = read_split_ids(voc_dir(synthetic_root, 2009) / "ImageSets" / "Main" / "train.txt")
    expected = [i for i in plain.train_ids if i in train_list and in_holdout(i, 0.5)]
    assert held.test_ids == expected and 0 < len(expected) < len(train_list)
    assert not set(held.test_ids) & (set(held.train_ids) | set(held.val_ids)), "model selection never sees it"
    assert set(held.train_ids) | set(held.test_ids) == set(plain.train_ids) and held.val_ids == plain.val_ids
    assert held.info["test_images"] == len(held.test_set) == len(expected)
    # a test image comes with its own pixels and labels
    j = expected[-1]
    assert torch.equal(held.test_set[len(expected) - 1][0], plain.train_set[plain.train_ids.index(j)][0])
    assert torch.equal(held.test_set[len(expected) - 1][1], plain.train_set[plain.train_ids.index(j)][1])
    # the id alone decides: another seed or a larger fraction keeps every held-out image
    other = datamodule(synthetic_root, tmp_path, task="classification", val_to_train=0.25, test_split="holdout",
                       holdout_fraction=0.75, seed=7)
    assert set(held.test_ids) < set(other.test_ids)
    assert np.mean([in_holdout(f"2008_{i:06d}", 0.2) for i in range(4000)]) == pytest.approx(0.2, abs=0.03)


def test_a_test_split_that_model_selection_sees_is_refused(synthetic_root, tmp_path):
    with pytest.raises(VOCDataError, match=r"data.test_split=val is also the train or val split.*holdout"):
        datamodule(synthetic_root, tmp_path, task="segmentation", test_split="val")
    with pytest.raises(VOCDataError, match=r"data.test_split=trainval: 48 of its images are in the train or val set"):
        datamodule(synthetic_root, tmp_path, task="segmentation", image_size=16, test_split="trainval")
    with pytest.raises(VOCDataError, match=r"data.holdout_fraction=0.001 leaves no holdout image of the 24"):
        datamodule(synthetic_root, tmp_path, task="segmentation", image_size=16, test_split="holdout",
                   holdout_fraction=0.001)


def no_pixels(monkeypatch):
    """The real lists and the real split code, without decoding (the ids are what is tested)."""
    from voc_dl.data import datamodule as dm_module
    monkeypatch.setattr(dm_module, "load_image", lambda path, size, mode: np.zeros((size, size, 3), np.uint8))
    monkeypatch.setattr(dm_module, "load_mask", lambda path, size, image, void: np.zeros((size, size), np.uint8))


def real_holdout(tmp_path, task, classes, val_to_train=0.0) -> VOCDataModule:
    dm = VOCDataModule(task=task, root=str(SHARED_VOC), year=2012, classes=classes, image_size=8,
                       val_to_train=val_to_train, test_split="holdout", cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.mark.skipif(not (SHARED_VOC / "VOCdevkit" / "VOC2012").is_dir(), reason="../shared/voc is not present")
@pytest.mark.parametrize("task, classes, val_to_train, counts", [  # (train, val, test) as docs/data.md lists them
    ("reconstruction", ["cat", "motorbike", "bottle"], 0.0, (261, 328, 87)),  # dataset=shared_voc_study
    ("classification", ["cat", "dog", "person"], 0.25, (809, 557, 174)),      # experiment=classification
    ("segmentation", ["cat"], 0.0, (293, 363, 73)),
])
def test_the_holdout_of_the_real_tree_is_disjoint_from_model_selection(tmp_path, monkeypatch, task, classes,
                                                                       val_to_train, counts):
    no_pixels(monkeypatch)
    dm = real_holdout(tmp_path, task, classes, val_to_train)
    test = set(dm.test_ids)
    assert not test & (set(dm.train_ids) | set(dm.val_ids))
    if task == "segmentation":  # nor do the photographs self-training labels (those in no Segmentation list)
        from voc_dl.data.extra_masks import unlabeled_ids
        assert not test & set(unlabeled_ids(voc_dir(SHARED_VOC, 2012)))
    assert (len(dm.train_ids), len(dm.val_ids), len(dm.test_ids)) == counts


@pytest.mark.skipif(not (SHARED_VOC / "VOCdevkit" / "VOC2012").is_dir(), reason="../shared/voc is not present")
def test_a_model_trained_with_the_holdout_never_saw_another_tasks_test_images(tmp_path, monkeypatch):
    """The id alone decides, so the frozen encoder (Section 1) and a teacher (Section 3) trained with the holdout
    kept out every image that the classifiers or students are tested on."""
    no_pixels(monkeypatch)
    encoder = real_holdout(tmp_path, "reconstruction", ["cat", "motorbike", "bottle"])
    classifier = real_holdout(tmp_path, "classification", ["cat", "dog", "person"], val_to_train=0.25)
    segmenter = real_holdout(tmp_path, "segmentation", ["cat"])
    for upstream in (encoder, segmenter):
        for downstream in (classifier, segmenter, encoder):
            assert not set(upstream.train_ids) & set(downstream.test_ids)
