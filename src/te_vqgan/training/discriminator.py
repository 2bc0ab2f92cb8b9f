"""VQGAN's PatchGAN discriminator (pix2pix's `NLayerDiscriminator`, as taming-transformers uses it).

It belongs to training: it is saved in training checkpoints, never inside the quantizer.
"""

from __future__ import annotations

import torch
import torch.nn as nn


__all__ = ["NLayerDiscriminator"]


class NLayerDiscriminator(nn.Module):
    """A PatchGAN: a logit per overlapping patch of the input (70x70 receptive field at 3 layers).

    Args:
        in_channels (`int`, *optional*, defaults to `3`): image channels.
        ndf (`int`, *optional*, defaults to `64`): filters of the first layer.
        num_layers (`int`, *optional*, defaults to `3`): stride-2 layers.

    Shapes: `(B, in_channels, H, W)` -> `(B, 1, H', W')`, for 64x64 input `H' = W' = 6`.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be >= 1 (got {num_layers}).")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        multiplier = 1
        for n in range(1, num_layers + 1):
            previous, multiplier = multiplier, min(2**n, 8)
            stride = 2 if n < num_layers else 1  # the last feature layer keeps the resolution
            layers += [
                nn.Conv2d(ndf * previous, ndf * multiplier, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * multiplier),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * multiplier, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images)


def _init_weights(module: nn.Module) -> None:
    # DCGAN initialisation, as in pix2pix and taming-transformers.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
