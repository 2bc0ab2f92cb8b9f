"""The perceptual (LPIPS) loss, from the optional `lpips` package.

`lpips` imports torchvision, and its VGG16 backbone weights are downloaded by torchvision at
first use. On a machine where either is missing the training script stops at start-up with an
error saying how to provide them or how to train without the term (`--perceptual_weight 0`);
it never switches the term off silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


__all__ = ["PerceptualLossUnavailable", "load_perceptual_loss", "vgg16_weights_path"]

# The file torchvision's `vgg16(pretrained=True)` loads (and downloads when missing).
VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
HOW_TO = (
    'To train with the perceptual loss: `pip install "te-vqgan[lpips]"` where torchvision matches your torch, '
    f"and make the VGG16 weights available (downloaded once from {VGG16_URL} to {{path}}). "
    "To train without it, pass `--perceptual_weight 0`."
)


class PerceptualLossUnavailable(RuntimeError):
    """LPIPS cannot be built here; the message says why and what to do."""


def vgg16_weights_path() -> Path:
    """Where torchvision looks for the VGG16 weights: `$TORCH_HOME/hub/checkpoints/`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def load_perceptual_loss(net: str = "vgg", allow_download: bool = False) -> torch.nn.Module:
    """A frozen `lpips.LPIPS` module in eval mode: `(x, y in [-1, 1]) -> (B, 1, 1, 1)` distances.

    Args:
        net (`str`, *optional*, defaults to `"vgg"`): the backbone, as in taming-transformers.
        allow_download (`bool`, *optional*, defaults to `False`): let torchvision download the
            backbone weights when they are missing (needs internet). Otherwise a missing file
            is an error.

    Raises:
        PerceptualLossUnavailable: lpips or torchvision cannot be imported, or the backbone
            weights are missing.
    """
    path = vgg16_weights_path()
    try:
        import lpips
    except (ImportError, RuntimeError, OSError) as error:  # a mismatched torchvision raises RuntimeError
        raise PerceptualLossUnavailable(
            f"The perceptual loss needs the `lpips` package, which could not be imported ({type(error).__name__}: "
            f"{error}). " + HOW_TO.format(path=path)
        ) from error
    if net == "vgg" and not path.is_file() and not allow_download:
        raise PerceptualLossUnavailable(
            f"The LPIPS VGG16 backbone weights are missing at {path} (TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}). "
            + HOW_TO.format(path=path)
        )
    model = lpips.LPIPS(net=net, verbose=False).eval()
    model.requires_grad_(False)
    return model
