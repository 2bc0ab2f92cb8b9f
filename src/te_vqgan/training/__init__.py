"""Training building blocks for the scripts in `training/`.

`engine` is the one training loop both stages run (`TrainingEngine` over a `TrainingStage`);
`accelerate_utils` holds its Accelerate plumbing (checkpoints, resume, trackers). The
discriminator and the perceptual network live here, apart from the saved quantizer.
"""

from .discriminator import NLayerDiscriminator
from .engine import OptimizerUpdate, StageParts, TrainingEngine, TrainingResult, TrainingStage
from .perceptual import PerceptualLossUnavailable, load_perceptual_loss
from .vqgan_step import VQGANLossWeights, vqgan_train_step


__all__ = [
    "NLayerDiscriminator",
    "OptimizerUpdate",
    "PerceptualLossUnavailable",
    "StageParts",
    "TrainingEngine",
    "TrainingResult",
    "TrainingStage",
    "VQGANLossWeights",
    "load_perceptual_loss",
    "vqgan_train_step",
]
