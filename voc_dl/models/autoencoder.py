"""The study's convolutional autoencoder (Section 1).

Encoder: 3x3 'same' convs with ReLU, filters 256, 128, 64, 32, 16, 8 truncated by depth, a 2x2
max-pool after each of the first three convs (128 -> 16). The code is `last_filters x 16 x 16`:
6 convs -> 8x16x16 = 2048, 5 -> 16x16x16 = 4096, 4 -> 32x16x16 = 8192 coding variables.
Decoder: the mirror image (each encoder conv transposed in channels, at the same resolution,
three 2x2 upsamplings), ending in a 3-channel conv with a sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

FILTERS = (256, 128, 64, 32, 16, 8)
POOLS = 3
CODE_DEPTH = {2048: 6, 4096: 5, 8192: 4}


def check_code_size(code_size: int) -> int:
    if code_size not in CODE_DEPTH:
        raise ValueError(
            f"model.code_size={code_size} cannot be produced by the study's encoder; "
            f"allowed: {', '.join(map(str, CODE_DEPTH))}"
        )
    return CODE_DEPTH[code_size]


def init_weights(module: nn.Module) -> nn.Module:
    """Glorot-uniform kernels and zero biases, the defaults of Keras, which the study used.

    PyTorch's default (Kaiming-uniform with a=sqrt(5)) starts these plain ReLU stacks with
    activations that shrink layer by layer; the study-faithful nets train as reported only with
    Keras' initialisation.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def conv(cin: int, cout: int, norm: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    return layers + [nn.ReLU(inplace=True)]


class ConvEncoder(nn.Sequential):
    def __init__(self, code_size: int = 8192, in_channels: int = 3, norm: bool = False):
        depth = check_code_size(code_size)
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(FILTERS[:depth]):
            layers += conv(cin, cout, norm)
            if i < POOLS:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        super().__init__(*layers)
        self.code_size, self.out_channels = code_size, cin


class ConvDecoder(nn.Sequential):
    def __init__(self, code_size: int = 8192, out_channels: int = 3, norm: bool = False):
        depth = check_code_size(code_size)
        chans = FILTERS[:depth]
        layers: list[nn.Module] = []
        # Walk the encoder backwards: conv i (chans[i-1] <- chans[i]) runs at conv i's resolution,
        # and an upsampling follows whenever the encoder had pooled before conv i.
        for i in range(depth - 1, 0, -1):
            layers += conv(chans[i], chans[i - 1], norm)
            if i <= POOLS:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers += [nn.Conv2d(chans[0], out_channels, 3, padding=1), nn.Sigmoid()]
        super().__init__(*layers)


class AutoEncoder(nn.Module):
    def __init__(self, code_size: int = 8192, channels: int = 3, norm: bool = False):
        super().__init__()
        self.encoder = ConvEncoder(code_size, channels, norm)
        self.decoder = ConvDecoder(code_size, channels, norm)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
