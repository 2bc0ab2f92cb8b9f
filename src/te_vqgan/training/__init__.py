"""Training building blocks for the scripts in `training/` (stage 1 now; stage 2 will reuse them).

The discriminator and the perceptual network live here, apart from the saved quantizer;
`accelerate_utils` holds the Accelerate plumbing (checkpoints, resume, trackers, Hub pushes).
"""

from .discriminator import NLayerDiscriminator
from .perceptual import PerceptualLossUnavailable, load_perceptual_loss
from .vqgan_step import VQGANLossWeights, vqgan_train_step


__all__ = ["NLayerDiscriminator", "PerceptualLossUnavailable", "VQGANLossWeights", "load_perceptual_loss", "vqgan_train_step"]
