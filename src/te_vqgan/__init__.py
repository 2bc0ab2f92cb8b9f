"""te-vqgan: translation-equivariant image tokenization, the Hugging Face way.

    >>> from te_vqgan import TEVQModel
    >>> model = TEVQModel()                      # the authors' stage-1 TE-VQGAN (random init)
    >>> model = TEVQModel.from_pretrained(path)  # a trained one
"""

from .losses import orthogonal_loss, vq_loss
from .metrics import CodebookUsage, ShiftEquivarianceResult, codebook_usage, shift_equivariance
from .models import TEVQModel, TEVQModelOutput


__version__ = "0.1.0"

__all__ = [
    "CodebookUsage",
    "ShiftEquivarianceResult",
    "TEVQModel",
    "TEVQModelOutput",
    "codebook_usage",
    "orthogonal_loss",
    "shift_equivariance",
    "vq_loss",
]
