"""A stock `diffusers.VQModel` with the `encode_to_indices` / `decode_indices` API of `TEVQModel`,
so that metrics, tokenised datasets and pipelines take either quantizer.
"""

from __future__ import annotations

import torch

from .quantizer import downsample_factor


__all__ = ["VQModelTokenizer", "as_tokenizer"]


class VQModelTokenizer:
    """Gives a stock `diffusers.VQModel` the `encode_to_indices` / `decode_indices` API.

    Args:
        model (`diffusers.VQModel`): any VQModel; its quantizer's flat indices are reshaped
            to `(B, H / f, W / f)`.
    """

    def __init__(self, model):
        self.model = model

    @property
    def num_codes(self) -> int:
        return self.model.config.num_vq_embeddings

    @property
    def downsample_factor(self) -> int:
        return downsample_factor(self.model.config)

    def parameters(self):
        return self.model.parameters()

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    @torch.no_grad()
    def encode_to_indices(self, images: torch.Tensor) -> torch.LongTensor:
        latents = self.model.encode(images).latents
        _, _, (_, _, indices) = self.model.quantize(latents)
        batch, _, height, width = latents.shape
        return indices.reshape(batch, height, width)

    def decode_indices(self, indices: torch.LongTensor) -> torch.Tensor:
        batch, height, width = indices.shape
        dim = self.model.quantize.vq_embed_dim
        quant = self.model.quantize.get_codebook_entry(indices.reshape(-1), (batch, height, width, dim))
        return self.model.decode(quant, force_not_quantize=True).sample


def as_tokenizer(model):
    """`model` itself if it has `encode_to_indices`, a `VQModelTokenizer` for a stock VQModel."""
    if hasattr(model, "encode_to_indices"):
        return model
    from diffusers import VQModel

    if isinstance(model, VQModel):
        return VQModelTokenizer(model)
    raise TypeError(f"Expected a model with `encode_to_indices` or a diffusers VQModel (got {type(model).__name__}).")
