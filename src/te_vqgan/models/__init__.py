from .downsampling import DOWNSAMPLE_TYPES, PADDING_MODES, BlurPool2d, Downsample, binomial_filter
from .quantizer import QuantizerOutput, TEVectorQuantizer
from .te_vq_model import TEVQModel, TEVQModelOutput


__all__ = [
    "DOWNSAMPLE_TYPES",
    "PADDING_MODES",
    "BlurPool2d",
    "Downsample",
    "QuantizerOutput",
    "TEVQModel",
    "TEVQModelOutput",
    "TEVectorQuantizer",
    "binomial_filter",
]
