"""Nearest-neighbour vector quantizer with a straight-through estimator."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..losses import vq_loss


__all__ = ["QuantizerOutput", "TEVectorQuantizer", "check_code_indices", "downsample_factor"]


def downsample_factor(config) -> int:
    """f of a VQ model's config (TEVQModel or stock diffusers VQModel): each encoder level but
    the last halves the image."""
    return 2 ** (len(config.block_out_channels) - 1)


def check_code_indices(indices, num_codes: int) -> None:
    """ValueError unless `indices` (a tensor or array) are integers in `[0, num_codes)`; the
    message names the offending minimum or maximum. Empty indices pass."""
    dtype = getattr(indices, "dtype", None)
    is_float = indices.is_floating_point() if isinstance(indices, torch.Tensor) else getattr(dtype, "kind", "i") not in "iu"
    if is_float:
        raise ValueError(f"Expected integer code indices (got dtype {dtype}).")
    size = indices.numel() if isinstance(indices, torch.Tensor) else indices.size
    if size and (indices.min() < 0 or indices.max() >= num_codes):
        low, high = int(indices.min()), int(indices.max())
        raise ValueError(f"Code indices must lie in [0, {num_codes}) (got min {low}, max {high}).")


class QuantizerOutput(NamedTuple):
    """`quantized` `[B, d, H, W]`, `loss` (codebook + beta * commitment), `indices` `[B, H, W]`.

    A 3-tuple, so diffusers' `VQModel.decode` can unpack it as it unpacks its own quantizer's.
    """

    quantized: torch.Tensor
    loss: torch.Tensor
    indices: torch.LongTensor


class TEVectorQuantizer(nn.Module):
    """L2 nearest-neighbour quantization onto `K` learnt codes (taming-transformers' VQ layer).

    Args:
        num_embeddings (`int`): K, the number of codes.
        embedding_dim (`int`): d, the size of each code.
        commitment_beta (`float`, *optional*, defaults to `0.25`): weight of the commitment term.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_beta: float = 0.25):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_beta = commitment_beta
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        self.embedding.weight.data.uniform_(-1.0 / num_embeddings, 1.0 / num_embeddings)

    @torch.no_grad()
    def nearest_indices(self, z: torch.Tensor) -> torch.LongTensor:
        """Index of the nearest code for every position of `z` `[B, d, H, W]` -> `[B, H, W]`."""
        batch, dim, height, width = z.shape
        if dim != self.embedding_dim:
            raise ValueError(f"Expected latents with {self.embedding_dim} channels (got {dim}).")
        # float32 and no autocast: in bf16 near-ties between codes would flip at random.
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.permute(0, 2, 3, 1).reshape(-1, dim).float()
            codes = self.embedding.weight.float()
            # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 does not change the argmin.
            distances = codes.pow(2).sum(dim=1) - 2.0 * flat @ codes.t()
            indices = distances.argmin(dim=1)
        return indices.view(batch, height, width)

    def embed(self, indices: torch.LongTensor) -> torch.Tensor:
        """Code vectors of `indices` `[B, H, W]` as a feature map `[B, d, H, W]`."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def get_codebook_entry(self, indices: torch.LongTensor, shape: tuple[int, ...] | None) -> torch.Tensor:
        """diffusers' `VectorQuantizer` API: flat `indices` and `shape` = `(B, H, W, d)`."""
        z_q = self.embedding(indices)
        if shape is not None:
            z_q = z_q.view(shape).permute(0, 3, 1, 2).contiguous()
        return z_q

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        indices = self.nearest_indices(z)
        z_q = self.embed(indices).to(z.dtype)
        loss = vq_loss(z, z_q, self.commitment_beta)
        # Straight-through estimator. Written as z_q + (z - sg(z)) rather than the usual
        # z + sg(z_q - z): the gradient is the same (identity to z, none to the codebook),
        # and the value is z_q exactly, so the forward sample equals decode_indices(indices).
        quantized = z_q.detach() + (z - z.detach())
        return QuantizerOutput(quantized=quantized, loss=loss, indices=indices)
