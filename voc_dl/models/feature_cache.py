"""Memoised features of a frozen extractor, keyed by image content.

A frozen encoder without dropout or batch statistics maps an image to the same features in every
epoch, so recomputing them is wasted work: with the frozen 8192-code encoder, nearly all of a
training step is that forward pass (nothing flows back through a frozen encoder). Keys are hashes of
each image's bytes, so the cache needs no sample indices from the DataLoader and works in any
shuffle order; an augmented image is simply a new key (the classification task switches the cache
off when augmentation is on, so it does not fill with one-off entries). CPU only: hashing a CUDA
batch would need a device-to-host copy every step, and on a GPU the frozen forward is cheap anyway.
The extractor must be deterministic: frozen, no dropout, eval-mode batch-norm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch


class FeatureCache:
    def __init__(self, max_items: int = 50_000):
        self.max_items = max_items
        self.store: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0

    def clear(self) -> None:
        self.store.clear()

    @staticmethod
    def key(img: torch.Tensor) -> bytes:
        # contiguous() makes the key independent of the memory format (channels_last or not); the hash
        # reads the array's buffer directly, without a bytes copy.
        raw = img.detach().contiguous().view(torch.uint8).numpy()
        return hashlib.blake2b(raw, digest_size=16, person=str(img.dtype).encode()[:16]).digest()

    def __call__(self, extract: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.requires_grad:  # cached features carry no gradient back to x
            return extract(x)
        keys = [self.key(img) for img in x]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        found: dict[int, torch.Tensor] = {}
        if missing:
            with torch.no_grad():
                found = dict(zip(missing, extract(x[missing]).detach(), strict=True))
            for i, f in found.items():
                if len(self.store) < self.max_items:
                    self.store[keys[i]] = f.clone()  # clone: do not keep the whole batch alive
        return torch.stack([found[i] if i in found else self.store[k] for i, k in enumerate(keys)])
