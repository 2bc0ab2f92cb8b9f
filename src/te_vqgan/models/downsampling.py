"""The four downsampling layers the paper compares (docs/REPRODUCTION.md, "Stage 1: the quantizer").

- `strided_conv` (SC): 3x3 conv, stride 2, after a (0, 1, 0, 1) pad. TE-VQGAN uses this one.
- `conv_blurpool` (CB): 3x3 conv, stride 1, then blur-pool.
- `maxpool` (MP): 2x2 max-pool, stride 2.
- `max_blurpool` (MB): 2x2 max-pool, stride 1, then blur-pool.

Blur-pool low-pass filters before subsampling (Zhang, "Making Convolutional Networks
Shift-Invariant Again", 2019). Its filter is written here from the binomial definition.
"""

from __future__ import annotations

from math import comb

import torch
import torch.nn as nn
import torch.nn.functional as F


__all__ = ["DOWNSAMPLE_TYPES", "PADDING_MODES", "BlurPool2d", "Downsample", "binomial_filter"]

DOWNSAMPLE_TYPES = ("strided_conv", "conv_blurpool", "maxpool", "max_blurpool")
PADDING_MODES = ("replicate", "zeros")


def binomial_filter(size: int = 5) -> torch.Tensor:
    """The normalised 2D binomial filter: the outer product of row `size - 1` of Pascal's
    triangle with itself, e.g. `[1, 4, 6, 4, 1]` for size 5. Shape `(size, size)`, sums to 1."""
    if size < 1:
        raise ValueError(f"`size` must be >= 1 (got {size}).")
    row = torch.tensor([comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = torch.outer(row, row)
    return (kernel / kernel.sum()).float()


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int], padding_mode: str) -> torch.Tensor:
    return F.pad(x, pad, mode="constant", value=0.0) if padding_mode == "zeros" else F.pad(x, pad, mode=padding_mode)


class BlurPool2d(nn.Module):
    """Depthwise binomial blur followed by subsampling.

    Args:
        channels (`int`): number of input (and output) channels.
        filter_size (`int`, *optional*, defaults to `5`): size of the binomial filter.
        stride (`int`, *optional*, defaults to `2`): subsampling factor.
        padding_mode (`str`, *optional*, defaults to `"replicate"`): `"replicate"` or `"zeros"`.
    """

    def __init__(self, channels: int, filter_size: int = 5, stride: int = 2, padding_mode: str = "replicate"):
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {PADDING_MODES} (got {padding_mode!r}).")
        self.channels = channels
        self.stride = stride
        self.padding_mode = padding_mode
        left = (filter_size - 1) // 2
        self.pad = (left, filter_size - 1 - left, left, filter_size - 1 - left)
        # A fixed filter, rebuilt from its definition: not a parameter and not saved.
        kernel = binomial_filter(filter_size)[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad(x, self.pad, self.padding_mode)
        return F.conv2d(x, self.kernel.to(x.dtype), stride=self.stride, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter_size={self.kernel.shape[-1]}, stride={self.stride}, padding_mode={self.padding_mode!r}"


class Downsample(nn.Module):
    """Halves the spatial size with one of `DOWNSAMPLE_TYPES`; keeps the channel count.

    Args:
        channels (`int`): number of input (and output) channels.
        downsample_type (`str`, *optional*, defaults to `"strided_conv"`): one of `DOWNSAMPLE_TYPES`.
        padding_mode (`str`, *optional*, defaults to `"replicate"`): padding of convs and blurs.
    """

    def __init__(self, channels: int, downsample_type: str = "strided_conv", padding_mode: str = "replicate"):
        super().__init__()
        if downsample_type not in DOWNSAMPLE_TYPES:
            raise ValueError(f"`downsample_type` must be one of {DOWNSAMPLE_TYPES} (got {downsample_type!r}).")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {PADDING_MODES} (got {padding_mode!r}).")
        self.channels = channels
        self.downsample_type = downsample_type
        self.padding_mode = padding_mode
        if downsample_type == "strided_conv":
            # Asymmetric (0, 1, 0, 1) pad as in taming-transformers: 3x3 / stride 2 on an even size.
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)
        elif downsample_type == "conv_blurpool":
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, padding_mode=padding_mode)
            self.blur = BlurPool2d(channels, padding_mode=padding_mode)
        elif downsample_type == "maxpool":
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        else:  # max_blurpool
            self.pool = nn.MaxPool2d(kernel_size=2, stride=1)
            self.blur = BlurPool2d(channels, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample_type == "strided_conv":
            return self.conv(_pad(x, (0, 1, 0, 1), self.padding_mode))
        if self.downsample_type == "conv_blurpool":
            return self.blur(self.conv(x))
        if self.downsample_type == "maxpool":
            return self.pool(x)
        return self.blur(self.pool(x))

    def extra_repr(self) -> str:
        return f"downsample_type={self.downsample_type!r}, padding_mode={self.padding_mode!r}"
