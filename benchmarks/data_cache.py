"""First-load (decode + resize + cache write) versus cached-load time, per task, on a VOC tree.

    python benchmarks/data_cache.py --root ../shared/voc --year 2012 --classes cat dog person

Writes outputs/bench/data_cache.{md,json}. Each cold load uses a fresh cache folder; the warm load
reopens the same entry (checksum verified) and reads one full epoch from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import save  # benchmarks/ is on sys.path when a script runs

from voc_dl.data.datamodule import VOCDataModule
from voc_dl.data.synthetic import make_synthetic_voc

TASKS = {
    "reconstruction": dict(image_size=128, color="rgb"),
    "classification": dict(image_size=128, color="rgb"),
    "segmentation": dict(image_size=64, color="gray"),
}


def epoch_time(dm: VOCDataModule, to_float: bool) -> float:
    """One pass over train and val through the DataLoaders: uint8 batches, optionally made float as in training."""
    t = time.perf_counter()
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for batch in loader:
            if to_float:
                dm.on_after_batch_transfer(batch, 0)
    return time.perf_counter() - t


def bench(root: str, year: str, classes: list[str], repeats: int) -> list[dict]:
    rows = []
    for task, kw in TASKS.items():
        cold, warm, epochs, floats = [], [], [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as cache_dir:
                dm = VOCDataModule(task=task, root=root, year=year, classes=classes, cache_dir=cache_dir, **kw)
                t = time.perf_counter()
                dm.prepare_data()
                dm.setup()
                cold.append(time.perf_counter() - t)
                again = VOCDataModule(task=task, root=root, year=year, classes=classes, cache_dir=cache_dir, **kw)
                t = time.perf_counter()
                again.setup()
                warm.append(time.perf_counter() - t)
                epochs.append(epoch_time(again, to_float=False))
                floats.append(epoch_time(again, to_float=True))
        n = dm.info["train_images"] + dm.info["val_images"]
        row = {"task": task, "train": dm.info["train_images"], "val": dm.info["val_images"],
               "cold_s": statistics.median(cold), "warm_s": statistics.median(warm),
               "epoch_read_s": statistics.median(epochs), "decode_ms_per_image": 1000 * statistics.median(cold) / n,
               "cached_ms_per_image": 1000 * statistics.median(epochs) / n,
               "cached_float_ms_per_image": 1000 * statistics.median(floats) / n,
               "min_max_cold_s": [min(cold), max(cold)], "min_max_warm_s": [min(warm), max(warm)]}
        # decoding yields uint8 pixels, so the like-for-like comparison is the cached uint8 read
        row["speedup_read"] = row["decode_ms_per_image"] / row["cached_ms_per_image"]
        row["speedup_float"] = row["decode_ms_per_image"] / row["cached_float_ms_per_image"]
        if task == "classification":
            row["positives_train"] = dm.info["train_positives"]
            row["positives_val"] = dm.info["val_positives"]
        if task == "segmentation":
            row["val_foreground_fraction"] = round(dm.info["val_foreground_fraction"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="folder holding VOCdevkit/ (default: the synthetic tree)")
    ap.add_argument("--year", default="2009")
    ap.add_argument("--classes", nargs="+", default=["cat", "motorbike", "bottle"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="outputs/bench")
    args = ap.parse_args()
    root = args.root
    if root is None:
        root = "data/synthetic"
        make_synthetic_voc(root, args.year)
    rows = bench(root, str(args.year), args.classes, args.repeats)
    out = Path(args.out)
    meta = {"root": str(Path(root).resolve()), "year": args.year, "classes": args.classes, "repeats": args.repeats}
    lines = [f"# Data: first load versus cache ({meta['root']}, VOC{args.year}, classes {' '.join(args.classes)})",
             "", f"Medians of {args.repeats} repeats.", "",
             "first load = list parsing, JPEG/PNG decode, resize, cache write; cached open = memory map + checksum; "
             "cached ms/img = a full epoch of uint8 batches from the DataLoader (+ float: also made float as in "
             "training).", "",
             "| task | train | val | first load s | cached open s | decode ms/img | cached ms/img | x | "
             "+ float ms/img | x |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['train']} | {r['val']} | {r['cold_s']:.2f} | {r['warm_s']:.3f} | "
                     f"{r['decode_ms_per_image']:.2f} | {r['cached_ms_per_image']:.3f} | {r['speedup_read']:.0f} | "
                     f"{r['cached_float_ms_per_image']:.3f} | {r['speedup_float']:.0f} |")
    save(out, "data_cache", meta, rows, lines)


if __name__ == "__main__":
    main()
