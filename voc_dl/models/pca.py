"""PCA baseline for Section 1, in torch: the linear subspace an autoencoder is compared with.

With n training images, centred data span at most n - 1 directions, so PCA can keep at most
n - 1 components (much less than the study's 2048-8192 coding variables when n is ~650).
"""

from __future__ import annotations

import torch


class PCA:
    def __init__(self, train: torch.Tensor):
        """train: (n, d) float rows; the components come from an SVD of the centred data."""
        x = train.double()
        self.mean = x.mean(0, keepdim=True)
        _, s, vh = torch.linalg.svd(x - self.mean, full_matrices=False)
        rank = int((s > s[0] * 1e-10).sum()) if len(s) else 0
        self.components = vh[:rank]  # (rank, d), orthonormal rows
        self.max_components = rank

    def reconstruct(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if not 0 <= k <= self.max_components:
            raise ValueError(f"k={k}: this PCA has at most {self.max_components} components")
        v = self.components[:k]
        xc = x.double() - self.mean
        return ((xc @ v.T) @ v + self.mean).to(x.dtype)

    def mse_curve(self, x: torch.Tensor, ks: list[int]) -> list[float]:
        """Validation MSE per element at each k, from one projection (components are orthonormal)."""
        xc = x.double() - self.mean
        coef = xc @ self.components.T
        total = (xc**2).sum()
        explained = torch.cumsum((coef**2).sum(0), 0)
        d = x.shape[0] * x.shape[1]
        return [float((total - (explained[k - 1] if k > 0 else 0.0)) / d) for k in ks]
