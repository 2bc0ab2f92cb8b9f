"""te-vqgan: translation-equivariant image tokenization, the Hugging Face way.

>>> from te_vqgan import TEVQModel
>>> model = TEVQModel()                      # the authors' stage-1 TE-VQGAN (random init)
>>> model = TEVQModel.from_pretrained(path)  # a trained one
>>> from te_vqgan import TextToImagePipeline, ImageToTextPipeline   # stage 2, one folder for both
"""

from .losses import orthogonal_loss, vq_loss
from .metrics import CodebookUsage, ShiftEquivarianceResult, codebook_usage, shift_equivariance
from .models import TEVQModel, TEVQModelOutput


__version__ = "0.1.0"

# The pipelines are imported here (not on first use) so that `DiffusionPipeline.from_pretrained`
# finds them once te_vqgan is imported (see `te_vqgan.pipelines.text_image`).
from .generation import TextImageTokenizer  # noqa: E402
from .pipelines import ImageToTextPipeline, TextToImagePipeline  # noqa: E402


_LAZY: dict[str, str] = {}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'te_vqgan' has no attribute {name!r}")


__all__ = [
    "CodebookUsage",
    "ImageToTextPipeline",
    "ShiftEquivarianceResult",
    "TEVQModel",
    "TEVQModelOutput",
    "TextImageTokenizer",
    "TextToImagePipeline",
    "codebook_usage",
    "orthogonal_loss",
    "shift_equivariance",
    "vq_loss",
]
