"""Channels-last convolutions whose weight gradient is computed in NCHW (a CPU speed fix).

On this project's AVX2 CPU, oneDNN runs a channels-last conv's forward and input gradient faster than NCHW, but its
channels-last *weight* gradient at 2x the time of the NCHW one (measured on AVX2, torch 2.14, batch 16,
one thread: a 256->128 3x3 conv at 64x64 takes 2.3 s channels-last against 1.2 s NCHW for the weight
gradient, 0.75 s against 0.97 s for the input gradient).

`nchw_weight_grad(net)` keeps the channels-last forward and input gradient and computes the weight and
bias gradients from NCHW copies of the input and the output gradient. The copies are memory passes (4% of
the autoencoder's training step). The result is the same gradient up to float rounding (tests compare the
two). Whether a net gains depends on its layers: benchmarks/train_speed.py measures it per net, and the
model configs switch it on where it won. It also depends on the CPU: on an AVX-512/AMX Xeon (2 threads, fp32) the
channels-last weight gradient is fine and the copies make the autoencoder 17% and the U-Net 26% slower, so
`helps_on_this_cpu()` limits it to CPUs without AVX-512.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voc_dl.hardware import cpu_flags


class _NCHWWeightGradConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False])[0]
        if need_w or need_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad.contiguous(), x.contiguous(), weight.contiguous(), [weight.shape[0]] if has_bias else None,
                stride, padding, dilation, False, [0, 0], groups, [False, need_w, need_b and has_bias])
            if grad_w is not None:
                grad_w = grad_w.contiguous(memory_format=torch.channels_last)  # the weight's own layout
        return grad_x, grad_w, grad_b, None, None, None, None


class NCHWWeightGradConv2d(nn.Conv2d):
    """An nn.Conv2d (same parameters and state dict) that takes the route above where it applies."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (x.device.type != "cpu" or not torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")
                or self.padding_mode != "zeros" or isinstance(self.padding, str)
                or not x.is_contiguous(memory_format=torch.channels_last)):
            return super()._conv_forward(x, weight, bias)
        return _NCHWWeightGradConv.apply(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


#: convs with fewer input or output channels keep the plain route: their weight gradient is cheap, and
#: the NCHW copy of their wide side (e.g. 256 channels at 128x128 next to an RGB image) costs more.
MIN_CHANNELS = 16


def nchw_weight_grad(net: nn.Module) -> nn.Module:
    """Switch the plain nn.Conv2d layers of `net` with at least MIN_CHANNELS in and out to
    NCHWWeightGradConv2d, in place (parameters and state dict untouched)."""
    for module in net.modules():
        if type(module) is nn.Conv2d and min(module.in_channels, module.out_channels) >= MIN_CHANNELS:
            module.__class__ = NCHWWeightGradConv2d
    return net


def helps_on_this_cpu() -> bool:
    """Measured faster only where oneDNN runs AVX2 kernels (no AVX-512); see the module docstring."""
    return "avx512f" not in cpu_flags()
