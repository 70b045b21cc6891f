"""Binary segmentation nets of Section 3 (64x64 grayscale in, one logit per pixel out)."""

from __future__ import annotations

import torch
from torch import nn

from voc_dl.models.autoencoder import conv, init_weights


class SegNet(nn.Module):
    """The study's encoder-decoder: convs 256, 128, 64 (dropout 0.5 before its pool), 32; mirror 32, 64, 128.

    The study's last layer has "3 filters", which cannot express a binary mask; this net ends in one
    channel: a logit whose sigmoid is the foreground probability.
    """

    def __init__(self, in_channels: int = 1, filters=(256, 128, 64, 32), dropout: float = 0.5):
        super().__init__()
        f1, f2, f3, f4 = filters
        self.encoder = nn.Sequential(
            *conv(in_channels, f1), nn.MaxPool2d(2),
            *conv(f1, f2), nn.MaxPool2d(2),
            *conv(f2, f3), nn.Dropout(dropout), nn.MaxPool2d(2),
            *conv(f3, f4),
        )
        self.decoder = nn.Sequential(
            *conv(f4, f4), nn.Upsample(scale_factor=2),
            *conv(f4, f3), nn.Upsample(scale_factor=2),
            *conv(f3, f2), nn.Upsample(scale_factor=2),
            nn.Conv2d(f2, 1, 3, padding=1),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class UNet(nn.Module):
    """The same depth and widths with batch-norm and skip connections: the "beyond" model."""

    def __init__(self, in_channels: int = 1, filters=(32, 64, 128, 256), dropout: float = 0.1):
        super().__init__()
        self.downs = nn.ModuleList()
        cin = in_channels
        for f in filters[:-1]:
            self.downs.append(nn.Sequential(*conv(cin, f, True), *conv(f, f, True)))
            cin = f
        self.bottom = nn.Sequential(*conv(cin, filters[-1], True), nn.Dropout(dropout),
                                    *conv(filters[-1], filters[-1], True))
        self.ups, self.merges = nn.ModuleList(), nn.ModuleList()
        cin = filters[-1]
        for f in reversed(filters[:-1]):
            self.ups.append(nn.ConvTranspose2d(cin, f, 2, stride=2))
            self.merges.append(nn.Sequential(*conv(2 * f, f, True), *conv(f, f, True)))
            cin = f
        self.out = nn.Conv2d(cin, 1, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.ups, self.merges, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.out(x)
