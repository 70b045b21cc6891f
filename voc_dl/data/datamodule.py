"""One LightningDataModule for the study's three tasks, on any VOCdevkit tree.

- reconstruction: RGB images of the selected classes, `image_size` square, floats in [0, 1];
- classification: the same images and a 0/1 target per selected class;
- segmentation: grayscale images of the Segmentation lists (all classes) and binary masks
  (1 object, 0 background, 255 void when `void=ignore`); with `extra_masks`, the photographs without a
  mask join the training set with the masks `voc_dl.pseudo_label` wrote for them (data/extra_masks.py).

With `test_split`, a third set that model selection never sees: a list of the tree, or `holdout`, a fixed
share of the train split picked by a hash of each image id and taken out of training.

Decoded arrays come from the memory-mapped preprocessing cache; batches leave the loader as uint8
and become floats after the transfer to the device, which keeps the host side nearly free.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from voc_dl.data import cache
from voc_dl.data.extra_masks import read_manifest, read_masks, unlabeled_ids
from voc_dl.data.synthetic import generated, make_synthetic_voc
from voc_dl.data.voc import (
    CHANNELS,
    VOID,
    VOID_RULES,
    VOCDataError,
    check_classes,
    check_root,
    check_tree,
    download_voc,
    load_image,
    load_mask,
    read_class_labels,
    read_split_ids,
    voc_dir,
)

log = logging.getLogger(__name__)
TASKS = ("reconstruction", "classification", "segmentation")
UNLABELED = "unlabeled"  # the pseudo-labelling split: photographs in no Segmentation list
HOLDOUT = "holdout"  # data.test_split=holdout: the share of train_split that in_holdout picks


def in_holdout(image_id: str, fraction: float) -> bool:
    """Whether an image of the train split is held out: the first 8 bytes of sha256(id), read as a number in
    [0, 1), fall below `fraction`. The id alone decides, so the split is the same whatever the seed, list order
    or machine, and a larger fraction only adds images to it."""
    return int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big") / 2**64 < fraction


class ArrayDataset(Dataset):
    """Rows of memory-mapped arrays, possibly from several cache entries (val_to_train).

    `__getitems__` fetches a whole batch with one fancy-index per array, so the loader does no
    per-sample Python work; samples are (image, target) with target None for reconstruction.
    """

    def __init__(self, parts: list[tuple[dict[str, np.ndarray], np.ndarray]], targets: np.ndarray | None,
                 target_key: str | None):
        self.parts = [(arrays, np.asarray(rows, dtype=np.int64)) for arrays, rows in parts]
        self.offsets = np.cumsum([0] + [len(rows) for _, rows in self.parts])
        self.targets = targets
        self.target_key = target_key

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _gather(self, key: str, index: np.ndarray) -> np.ndarray:
        part = np.searchsorted(self.offsets, index, side="right") - 1
        out = None
        for p in np.unique(part):
            arrays, rows = self.parts[p]
            sel = part == p
            chunk = arrays[key][rows[index[sel] - self.offsets[p]]]
            if out is None:
                out = np.empty((len(index), *chunk.shape[1:]), dtype=chunk.dtype)
            out[sel] = chunk
        return out

    def __getitems__(self, indices):
        index = np.asarray(indices, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range 0..{len(self) - 1}")
        # NHWC uint8 -> NCHW view: the permuted tensor is already channels_last in memory.
        images = torch.from_numpy(self._gather("images", index)).permute(0, 3, 1, 2)
        if self.target_key == "masks":
            return images, torch.from_numpy(self._gather("masks", index)).unsqueeze(1)
        if self.targets is not None:
            return images, torch.from_numpy(self.targets[index])
        return images

    def __getitem__(self, i: int):
        batch = self.__getitems__([i])
        return tuple(t[0] for t in batch) if isinstance(batch, tuple) else batch[0]


def _already_batched(batch):
    return batch


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]: the only scaling voc-dl's networks see (no mean/std outside the net)."""
    return images.float().div_(255)


class VOCDataModule(pl.LightningDataModule):
    def __init__(
        self,
        task: str = "reconstruction",
        root: str | None = None,
        year: str | int = 2009,
        classes: tuple[str, ...] | list[str] = ("cat", "motorbike", "bottle"),
        image_size: int = 128,
        color: str = "rgb",
        train_split: str = "train",
        val_split: str = "val",
        difficult_as_positive: bool = False,
        void: str = "ignore",
        val_to_train: float = 0.0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        download: bool = False,
        synthetic: dict | None = None,
        on_bad_image: str = "error",
        cache_dir: str | None = None,
        seed: int = 0,
        extra_masks: str | None = None,
        test_split: str | None = None,
        holdout_fraction: float = 0.2,
    ):
        super().__init__()
        # saved in every checkpoint: LightningDataModule.load_from_checkpoint rebuilds these data settings
        self.save_hyperparameters()
        if task not in TASKS:
            raise VOCDataError(f"data.task={task!r}; allowed: {', '.join(TASKS)}")
        if color not in CHANNELS:
            raise VOCDataError(f"data.color={color!r}; allowed: {', '.join(CHANNELS)}")
        if not 0.0 <= val_to_train < 1.0:
            raise VOCDataError(f"data.val_to_train={val_to_train}; it is a fraction in [0, 1)")
        if void not in VOID_RULES:
            raise VOCDataError(f"data.void={void!r}; allowed: {', '.join(VOID_RULES)}")
        if image_size < 8:
            raise VOCDataError(f"data.image_size={image_size}; it must be at least 8 pixels")
        if test_split in (train_split, val_split):
            raise VOCDataError(f"data.test_split={test_split} is also the train or val split: model selection "
                               f"would see it. Fix: data.test_split={HOLDOUT} (a hash share of the train split) or "
                               "a list of the tree that neither uses")
        if not 0.0 < holdout_fraction < 1.0:
            raise VOCDataError(f"data.holdout_fraction={holdout_fraction}; it is a fraction in (0, 1)")
        # data.root names the user's tree, which voc-dl only reads; without it, data.synthetic generates one
        # in a folder of voc-dl's own. A root wins over data.synthetic, so `data.root=...` alone switches data.
        if root:
            self.generate = False
            if synthetic:
                log.info("data.root=%s is set: training on that tree (data.synthetic only fills voc-dl's own "
                         "folder when data.root is null)", root)
        elif synthetic and synthetic.get("dir"):
            root, self.generate = synthetic["dir"], True
        else:
            raise VOCDataError("data.root is not set. Fix: data.root=<folder holding VOCdevkit/>, or "
                               "dataset=synthetic for the embedded data")
        # `..` is taken out by name: a root recorded through a checkout that has since gone
        # (`<old checkout>/../shared/voc` in a run's config) still finds the tree for eval and the report.
        self.task, self.root, self.year = task, Path(os.path.normpath(os.path.expanduser(root))), str(year)
        self.classes = check_classes(classes) if task != "segmentation" else list(classes)
        self.image_size, self.color = int(image_size), color
        self.train_split, self.val_split = train_split, val_split
        self.test_split, self.holdout_fraction = test_split or None, holdout_fraction
        self.difficult_as_positive, self.void, self.val_to_train = difficult_as_positive, void, val_to_train
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.download, self.synthetic, self.on_bad_image = download, synthetic, on_bad_image
        self.cache_dir = Path(cache_dir) if cache_dir else cache.default_dir()
        self.seed = seed
        if extra_masks and task != "segmentation":
            raise VOCDataError(f"data.extra_masks is for task=segmentation, not {task}. Fix: unset it")
        self.extra_masks = extra_masks or None
        # read here, so a folder of another tree or size stops the run before any data are decoded
        self.extra_manifest = (read_manifest(self.extra_masks, self.tree, self.image_size)
                               if self.extra_masks else None)
        self.train_set: ArrayDataset | None = None
        self.val_set: ArrayDataset | None = None
        self.test_set: ArrayDataset | None = None
        self.info: dict = {}
        # prepare_data's entries, so setup in the same process does not reopen and re-checksum them
        self._entries: dict[str, tuple[cache.CacheEntry, np.ndarray | None]] = {}

    @property
    def tree(self) -> Path:
        """The VOC<year> folder this module reads."""
        return voc_dir(self.root, self.year)

    # -- preparing the tree and the caches ---------------------------------------------------------
    def prepare_data(self) -> None:
        """Runs once per node: generate/download the tree and build the caches that later runs share."""
        self._prepare_tree()
        for split in (self.train_split, self.val_split, self.test_split):
            if split:
                self._entry(self.train_split if split == HOLDOUT else split)
        if self.extra_masks:
            self._entry(UNLABELED)

    def _prepare_tree(self) -> None:
        if self.generate:
            make_synthetic_voc(self.root, self.year, **{k: v for k, v in self.synthetic.items() if k != "dir"})
        elif self.download and not (self.tree / "JPEGImages").is_dir():
            download_voc(self.root, self.year)
        else:
            check_root(self.root, download=False)

    def unlabeled_photographs(self) -> cache.CacheEntry:
        """The photographs in no Segmentation list, at this module's size and colour: what a teacher labels."""
        self._prepare_tree()
        return self._entry(UNLABELED)[0]

    def _selection(self, split: str) -> tuple[list[str], np.ndarray | None]:
        base = check_tree(self.root, self.year)
        if split == UNLABELED:  # photographs without a mask, images only (self-training)
            return unlabeled_ids(base), None
        if self.task == "segmentation":
            return read_split_ids(base / "ImageSets" / "Segmentation" / f"{split}.txt"), None
        ids, labels = read_class_labels(base, self.classes, split, self.difficult_as_positive)
        keep = labels.any(axis=1)
        if not keep.any():
            raise VOCDataError(f"no image of split {split!r} contains any of data.classes={self.classes} "
                               f"in {base}/ImageSets/Main. Fix: choose other classes or another data.root")
        return [i for i, k in zip(ids, keep, strict=True) if k], labels[keep]

    def _entry(self, split: str) -> tuple[cache.CacheEntry, np.ndarray | None]:
        """A split's cached arrays, and its class labels for classification."""
        if split not in self._entries:
            self._entries[split] = self._load_entry(split)
        return self._entries[split]

    def _rows(self, split: str) -> tuple[cache.CacheEntry, np.ndarray, np.ndarray | None]:
        """A split's cache entry, the rows of it that the split takes, and their class labels (classification).
        The holdout is rows of the train split's entry, so its images are decoded and cached once, with train's."""
        entry, labels = self._entry(self.train_split if split == HOLDOUT else split)
        rows = np.arange(len(entry.ids))
        if split == HOLDOUT or (split == self.train_split and self.test_split == HOLDOUT):
            held = np.array([in_holdout(i, self.holdout_fraction) for i in entry.ids], dtype=bool)
            rows = rows[held] if split == HOLDOUT else rows[~held]
            if len(rows) == 0:
                what = "no holdout" if split == HOLDOUT else "no training"
                raise VOCDataError(f"data.holdout_fraction={self.holdout_fraction} leaves {what} image of the "
                                   f"{len(entry.ids)} in split {self.train_split!r}. Fix: choose another "
                                   "data.holdout_fraction")
        return entry, rows, None if labels is None else labels[rows]

    def _load_entry(self, split: str) -> tuple[cache.CacheEntry, np.ndarray | None]:
        base = check_tree(self.root, self.year)
        ids, labels = self._selection(split)
        if split == UNLABELED and not ids:  # every photograph has a mask: an empty set, which a cache cannot hold
            channels = CHANNELS[self.color]
            empty = np.empty((0, self.image_size, self.image_size, channels), dtype=np.uint8)
            return cache.CacheEntry(base, {"images": empty}, [], []), None
        jpeg = [base / "JPEGImages" / f"{i}.jpg" for i in ids]
        spec = {"tree": str(base.resolve()), "split": split, "size": self.image_size, "color": self.color}
        if self.task == "segmentation" and split != UNLABELED:
            png = [base / "SegmentationClass" / f"{i}.png" for i in ids]
            spec.update(kind="segmentation", void=self.void, sources=cache.fingerprint(jpeg + png))

            def load_one(i: str) -> dict[str, np.ndarray]:
                img_path = base / "JPEGImages" / f"{i}.jpg"
                return {"images": load_image(img_path, self.image_size, self.color),
                        "masks": load_mask(base / "SegmentationClass" / f"{i}.png", self.image_size,
                                           img_path, self.void)}
        else:
            spec.update(kind="images", sources=cache.fingerprint(jpeg))

            def load_one(i: str) -> dict[str, np.ndarray]:
                return {"images": load_image(base / "JPEGImages" / f"{i}.jpg", self.image_size, self.color)}

        entry = cache.load_or_build(self.cache_dir, f"voc{self.year}-{split}-{spec['kind']}", spec, ids,
                                    load_one, self.on_bad_image)
        if labels is not None:
            row = {i: n for n, i in enumerate(ids)}
            labels = labels[[row[i] for i in entry.ids]]
        return entry, labels

    # -- datasets -------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, train_rows, train_labels = self._rows(self.train_split)
        val, val_rows, val_labels = self._rows(self.val_split)
        n_val = len(val_rows)
        perm = np.random.default_rng(self.seed).permutation(n_val)
        moved = np.sort(perm[: int(round(self.val_to_train * n_val))])
        kept = np.sort(perm[len(moved):])
        if len(kept) == 0:
            raise VOCDataError(f"data.val_to_train={self.val_to_train} leaves no validation image")
        key = "masks" if self.task == "segmentation" else None
        tr_rows = [(train.arrays, train_rows), (val.arrays, val_rows[moved])]
        va_rows = [(val.arrays, val_rows[kept])]
        if self.task == "classification":
            tr_targets = np.concatenate([train_labels, val_labels[moved]]).astype(np.float32)
            va_targets = val_labels[kept].astype(np.float32)
        else:
            tr_targets = va_targets = None
        extra_ids = []
        if self.extra_manifest:
            photographs = self._entry(UNLABELED)[0]
            extra_ids = list(photographs.ids)
            masks = read_masks(self.extra_masks, self.extra_manifest, self.tree, extra_ids)
            tr_rows.append(({"images": photographs.arrays["images"], "masks": masks}, np.arange(len(extra_ids))))
        self.train_set = ArrayDataset(tr_rows, tr_targets, key)
        self.val_set = ArrayDataset(va_rows, va_targets, key)
        self.train_ids = [train.ids[i] for i in train_rows] + [val.ids[i] for i in val_rows[moved]] + extra_ids
        self.val_ids = [val.ids[i] for i in val_rows[kept]]
        self.test_ids = []
        if self.test_split:
            test, test_rows, test_labels = self._rows(self.test_split)
            self.test_ids = [test.ids[i] for i in test_rows]
            seen = set(self.test_ids) & (set(self.train_ids) | set(self.val_ids))
            if seen:
                raise VOCDataError(f"data.test_split={self.test_split}: {len(seen)} of its images are in the train or "
                                   f"val set too (e.g. {sorted(seen)[0]}), so model selection would see them. Fix: a "
                                   f"test list disjoint from both, or data.test_split={HOLDOUT}")
            self.test_set = ArrayDataset([(test.arrays, test_rows)], test_labels.astype(np.float32)
                                         if self.task == "classification" else None, key)
        self.info = self._describe(train, val, tr_targets, va_targets, len(moved))
        if self.extra_manifest:  # what the report says of the masks: their teacher, confidence, void share
            self.info["extra_masks"] = {"folder": str(Path(self.extra_masks).expanduser().absolute()),
                                        **{k: v for k, v in self.extra_manifest.items()
                                           if k not in ("format", "masks", "photographs", "ids")}}

    def _describe(self, train, val, tr_targets, va_targets, moved: int) -> dict:
        info = {
            "task": self.task, "root": str(self.root), "year": self.year,
            "synthetic": self.generate or generated(self.root, self.year),
            "train_images": len(self.train_set), "val_images": len(self.val_set),
            **({"test_split": self.test_split, "test_images": len(self.test_set)} if self.test_set is not None else {}),
            **({"holdout_fraction": self.holdout_fraction} if HOLDOUT in (self.test_split, self.val_split) else {}),
            "moved_val_to_train": moved,
            "skipped": [s["id"] for s in train.skipped + val.skipped],
            "image_shape": list(self.train_set[0][0].shape if self.task != "reconstruction"
                                else self.train_set[0].shape),
            "cache": [str(train.path), str(val.path)],
        }
        if tr_targets is not None:
            info["classes"] = self.classes
            info["train_positives"] = dict(zip(self.classes, tr_targets.sum(0).astype(int).tolist(), strict=True))
            info["val_positives"] = dict(zip(self.classes, va_targets.sum(0).astype(int).tolist(), strict=True))
        if self.task == "segmentation":
            masks = val.arrays["masks"]
            info["val_foreground_fraction"] = float((masks == 1).sum() / max(1, (masks != VOID).sum()))
            info["val_void_fraction"] = float((masks == VOID).mean())
        return info

    def _loader(self, dataset: ArrayDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=_already_batched,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise VOCDataError(f"no test split: data.test_split is not set. Fix: data.test_split={HOLDOUT} "
                               "(see docs/data.md) or a list of the tree")
        return self._loader(self.test_set, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 -> float in [0, 1] on the device (4x less host-to-device traffic than floats)."""
        if isinstance(batch, torch.Tensor):
            return to_unit_float(batch)
        images, target = batch
        return to_unit_float(images), target
