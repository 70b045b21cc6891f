"""Preprocessing cache: decode and resize once, then memory-map uint8 arrays.

One cache entry is a folder `<cache_dir>/<name>-<key>/` with one `.npy` file per array and a
`meta.json`. The key hashes everything that changes the arrays (tree, year, ids, size, colour mode,
void rule, and the size and mtime of every source file), so a changed source makes a new key. Entries
are built in a temporary folder and renamed into place, so a killed build never leaves a half entry,
and concurrent builders (jobs of a multirun, DDP ranks) each end up reading one complete copy.
`np.load(mmap_mode="r")` lets DataLoader workers and DDP processes share pages, and a dataset larger
than RAM still trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from voc_dl.data.voc import ON_BAD_IMAGE, VOCDataError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def default_dir() -> Path:
    """Where caches go when no data.cache_dir is given: the user's cache folder, never the data root."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voc_dl"


def fingerprint(paths: Sequence[Path]) -> str:
    """Cheap identity of the source files: their names, sizes and mtimes (missing files count too)."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        except FileNotFoundError:
            h.update(f"{p.name}:missing;".encode())
    return h.hexdigest()


def spec_key(spec: dict) -> str:
    return hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=8).hexdigest()


def _digest(arr: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    flat = arr.reshape(-1)
    step = 1 << 24  # hash in 16 MB slices: a memory-mapped array is never read into RAM whole
    for i in range(0, flat.size, step):
        h.update(np.ascontiguousarray(flat[i : i + step]).data)
    return h.hexdigest()


class CacheEntry:
    """Arrays (memory-mapped, read-only) plus the ids they hold, in order, and the ids that were skipped."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], ids: list[str], skipped: list[dict]):
        self.path, self.arrays, self.ids, self.skipped = path, arrays, ids, skipped


def _load(path: Path, spec: dict) -> CacheEntry:
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("spec") != spec or meta.get("format") != FORMAT_VERSION:
        raise ValueError("spec differs")
    arrays = {}
    for name, info in meta["arrays"].items():
        arr = np.load(path / f"{name}.npy", mmap_mode="r")
        if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
            raise ValueError(f"{name}.npy has shape {arr.shape}, meta says {info['shape']}")
        if _digest(arr) != info["digest"]:
            raise ValueError(f"{name}.npy content does not match its checksum")
        arrays[name] = arr
    return CacheEntry(path, arrays, meta["ids"], meta["skipped"])


def load_or_build(
    cache_dir: str | os.PathLike,
    name: str,
    spec: dict,
    ids: Sequence[str],
    load_one: Callable[[str], dict[str, np.ndarray]],
    on_bad_image: str = "error",
) -> CacheEntry:
    """The cached entry for `spec`, built from `load_one(id)` for every id when absent or invalid.

    `load_one` returns the arrays of one sample and raises VOCDataError for bad input: with
    on_bad_image='error' that error propagates, with 'skip' the sample is left out and recorded.
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise VOCDataError(f"data.on_bad_image={on_bad_image!r}; allowed: {', '.join(ON_BAD_IMAGE)}")
    spec = {**spec, "ids": hashlib.blake2b("\n".join(ids).encode(), digest_size=16).hexdigest()}
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{name}-{spec_key(spec)}"
    if path.exists():
        try:
            entry = _load(path, spec)
            log.info("cache hit: %s (%d samples)", path, len(entry.ids))
            return entry
        except Exception as e:  # any damage at all means rebuild; the sources are still there
            log.warning("cache %s is unusable (%s): rebuilding it", path, e)
            shutil.rmtree(path, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=cache_dir))
    try:
        _build(tmp, spec, ids, load_one, on_bad_image, desc=f"decoding {name}")
        try:
            os.rename(tmp, path)  # atomic on one file system
        except OSError:
            if not path.exists():
                raise
            log.info("cache %s was built concurrently by another process: using that one", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    entry = _load(path, spec)
    if entry.skipped:
        log.warning("skipped %d bad sample(s) (data.on_bad_image=skip): %s", len(entry.skipped),
                    "; ".join(f"{s['id']}: {s['reason']}" for s in entry.skipped))
    return entry


def _build(tmp: Path, spec: dict, ids, load_one, on_bad_image: str, desc: str) -> None:
    buffers: dict[str, np.ndarray] = {}
    kept: list[str] = []
    skipped: list[dict] = []
    for sample_id in tqdm(ids, desc=desc, unit="img", leave=False, mininterval=1.0):
        try:
            sample = load_one(sample_id)
        except VOCDataError as e:
            if on_bad_image == "error":
                raise
            skipped.append({"id": sample_id, "reason": str(e)})
            continue
        if not buffers:
            for key, arr in sample.items():
                buffers[key] = np.lib.format.open_memmap(
                    tmp / f"{key}.full.npy", mode="w+", dtype=arr.dtype, shape=(len(ids), *arr.shape))
        for key, arr in sample.items():
            buffers[key][len(kept)] = arr
        kept.append(sample_id)
    if not kept:
        raise VOCDataError(f"every one of the {len(ids)} samples was bad; first: {skipped[0]['reason']}"
                           if skipped else "no samples selected: check data.classes and data splits")
    meta_arrays = {}
    for key, buf in buffers.items():
        out = np.lib.format.open_memmap(tmp / f"{key}.npy", mode="w+", dtype=buf.dtype,
                                        shape=(len(kept), *buf.shape[1:]))
        out[:] = buf[: len(kept)]
        out.flush()
        meta_arrays[key] = {"shape": list(out.shape), "dtype": str(out.dtype), "digest": _digest(out)}
        del out, buf
        (tmp / f"{key}.full.npy").unlink()
    buffers.clear()
    meta = {"format": FORMAT_VERSION, "spec": spec, "ids": kept, "skipped": skipped, "arrays": meta_arrays}
    (tmp / "meta.json").write_text(json.dumps(meta))
