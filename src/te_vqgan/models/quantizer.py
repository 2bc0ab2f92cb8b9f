"""Nearest-neighbour vector quantizer with a straight-through estimator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..losses import vq_loss
from ..torch_utils import check_integer_tensor, first_outside


__all__ = [
    "CODEBOOK_LOOKUPS",
    "CODEBOOK_PARAMETRIZATIONS",
    "QuantizerOutput",
    "TEVectorQuantizer",
    "check_code_indices",
    "downsample_factor",
]


def downsample_factor(config) -> int:
    """f of a VQ model's config (TEVQModel or stock diffusers VQModel): each encoder level but
    the last halves the image."""
    return 2 ** (len(config.block_out_channels) - 1)


def check_code_indices(indices, num_codes: int) -> None:
    """ValueError unless `indices` (a tensor or array) are integers (`INTEGER_DTYPES`) in
    `[0, num_codes)`; the message names the offending minimum and maximum. Empty indices pass."""
    indices = check_integer_tensor("code indices", torch.as_tensor(indices))
    if first_outside(indices, 0, num_codes) is not None:
        low, high = int(indices.min()), int(indices.max())
        raise ValueError(f"Code indices must lie in [0, {num_codes}) (got min {low}, max {high}).")


@dataclass
class QuantizerOutput:
    """Output of `TEVectorQuantizer.forward`.

    Args:
        quantized (`torch.Tensor` of shape `(B, d, H, W)`): the nearest codes, with the straight-through gradient.
        loss (`torch.Tensor`): the VQ loss, codebook term + `commitment_beta` x commitment term.
        indices (`torch.LongTensor` of shape `(B, H, W)`): the index of every nearest code.
    """

    quantized: torch.Tensor
    loss: torch.Tensor
    indices: torch.LongTensor


CODEBOOK_LOOKUPS = ("euclidean", "cosine")
CODEBOOK_PARAMETRIZATIONS = ("direct", "simvq")


class TEVectorQuantizer(nn.Module):
    """Nearest-neighbour quantization onto `K` learnt codes (taming-transformers' VQ layer), with
    two options against codebook collapse.

    Args:
        num_embeddings (`int`): K, the number of codes.
        embedding_dim (`int`): d, the size of each code.
        commitment_beta (`float`, *optional*, defaults to `0.25`): weight of the commitment term.
        lookup (`str`, *optional*, defaults to `"euclidean"`): `"euclidean"` (VQGAN's L2
            nearest code) or `"cosine"`: the latent and the codes are L2-normalised before the
            lookup, and the normalised code is what the decoder sees (Yu et al., "Vector-quantized
            Image Modeling with Improved VQGAN", ICLR 2022, Sec. 3.2). A code's norm then cannot
            make it unreachable, which is one road to dead codes.
        parametrization (`str`, *optional*, defaults to `"direct"`): `"direct"` learns the `(K, d)`
            codes; `"simvq"` keeps a frozen random basis `C` and learns one linear map `W`, the
            codes being `C W` (Zhu et al., "Addressing Representation Collapse in Vector Quantized
            Models with One Linear Layer", 2024): every update of `W` moves every code, so none
            is left behind.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        commitment_beta: float = 0.25,
        lookup: str = "euclidean",
        parametrization: str = "direct",
    ):
        super().__init__()
        if lookup not in CODEBOOK_LOOKUPS:
            raise ValueError(f"`codebook_lookup` must be one of {CODEBOOK_LOOKUPS} (got {lookup!r}).")
        if parametrization not in CODEBOOK_PARAMETRIZATIONS:
            raise ValueError(
                f"`codebook_parametrization` must be one of {CODEBOOK_PARAMETRIZATIONS} (got {parametrization!r})."
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_beta = commitment_beta
        self.lookup = lookup
        self.parametrization = parametrization
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        if parametrization == "simvq":
            # SimVQ: a frozen Gaussian basis (std d^-1/2) and a learnt linear map.
            nn.init.normal_(self.embedding.weight, std=embedding_dim**-0.5)
            self.embedding.weight.requires_grad_(False)
            self.projection = nn.Linear(embedding_dim, embedding_dim, bias=False)
        else:
            self.embedding.weight.data.uniform_(-1.0 / num_embeddings, 1.0 / num_embeddings)
            self.projection = None

    @property
    def codes(self) -> torch.Tensor:
        """The `(K, d)` code vectors the lookup uses (before the cosine lookup's normalisation)."""
        weight = self.embedding.weight
        return self.projection(weight) if self.projection is not None else weight

    def _lookup_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(codes, dim=-1) if self.lookup == "cosine" else codes

    def prepare_latents(self, z: torch.Tensor) -> torch.Tensor:
        """The latents as the lookup compares them: L2-normalised per position for `"cosine"`."""
        return nn.functional.normalize(z, dim=1) if self.lookup == "cosine" else z

    @torch.no_grad()
    def nearest_indices(self, z: torch.Tensor) -> torch.LongTensor:
        """Index of the nearest code for every position of `z` `[B, d, H, W]` -> `[B, H, W]`."""
        batch, dim, height, width = z.shape
        if dim != self.embedding_dim:
            raise ValueError(f"Expected latents with {self.embedding_dim} channels (got {dim}).")
        # float32 and no autocast: in bf16 near-ties between codes would flip at random.
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = self.prepare_latents(z.float()).permute(0, 2, 3, 1).reshape(-1, dim)
            codes = self._lookup_codes(self.codes.float())
            # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 does not change the argmin.
            distances = codes.pow(2).sum(dim=1) - 2.0 * flat @ codes.t()
            indices = distances.argmin(dim=1)
        return indices.view(batch, height, width)

    def embed(self, indices: torch.LongTensor) -> torch.Tensor:
        """Code vectors of `indices` `[B, H, W]` as a feature map `[B, d, H, W]`."""
        codes = self._lookup_codes(self.codes)
        return nn.functional.embedding(indices, codes).permute(0, 3, 1, 2).contiguous()

    def get_codebook_entry(self, indices: torch.LongTensor, shape: tuple[int, ...] | None) -> torch.Tensor:
        """diffusers' `VectorQuantizer` API: flat `indices` and `shape` = `(B, H, W, d)`."""
        z_q = nn.functional.embedding(indices, self._lookup_codes(self.codes))
        if shape is not None:
            z_q = z_q.view(shape).permute(0, 3, 1, 2).contiguous()
        return z_q

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        indices = self.nearest_indices(z)
        z = self.prepare_latents(z)
        z_q = self.embed(indices).to(z.dtype)
        loss = vq_loss(z, z_q, self.commitment_beta)
        # Straight-through estimator. Written as z_q + (z - sg(z)) rather than the usual
        # z + sg(z_q - z): the gradient is the same (identity to z, none to the codebook),
        # and the value is z_q exactly, so the forward sample equals decode_indices(indices).
        quantized = z_q.detach() + (z - z.detach())
        return QuantizerOutput(quantized=quantized, loss=loss, indices=indices)
