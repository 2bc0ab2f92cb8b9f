"""Images as arrays and as model inputs: uint8 `[N, H, W, 3]` <-> float `[N, 3, H, W]` in [-1, 1].

The one conversion that datasets, metrics, pipelines and training share (a VQ model reads and
writes `[-1, 1]`).
"""

from __future__ import annotations

import numpy as np
import torch


__all__ = ["images_to_tensor", "tensor_to_images"]


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `[N, H, W, 3]` -> float `[N, 3, H, W]` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def tensor_to_images(pixels: torch.Tensor) -> np.ndarray:
    """float `[N, 3, H, W]` in [-1, 1] (clamped) -> uint8 `[N, H, W, 3]`: the inverse of `images_to_tensor`."""
    return (
        ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
