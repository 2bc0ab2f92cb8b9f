"""Losses of the stage-1 quantizer, as pure functions.

The orthogonal regulariser is the paper's Eq. (5); the VQ loss is VQ-VAE's codebook and
commitment terms with beta on the commitment term (REFERENCE.md, "Stage 1").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


__all__ = ["orthogonal_loss", "vq_loss"]


def orthogonal_loss(codebook: torch.Tensor) -> torch.Tensor:
    r"""Orthogonality of a codebook, Eq. (5) of the paper without its weight lambda.

    .. math:: \mathcal{L}_{orth} = \frac{1}{K^2} \lVert \hat{C} \hat{C}^\top - I_K \rVert_F^2

    where :math:`\hat{C}` is the `(K, d)` codebook with each code L2-normalised. It equals
    `mean(cos_sim(c_i, c_j)^2) - 1/K` over all ordered pairs, so it is 0 exactly when the codes
    are pairwise orthogonal (possible only for K <= d) and at most `1 - 1/K`.

    Args:
        codebook (`torch.Tensor` of shape `(K, d)`): the code vectors, one per row.

    Returns:
        `torch.Tensor`: a scalar, computed in float32 whatever the codebook's dtype.

    Example::

        >>> orthogonal_loss(torch.eye(4, 8))
        tensor(0.)
    """
    if codebook.ndim != 2:
        raise ValueError(f"`codebook` must have shape (K, d) (got shape {tuple(codebook.shape)}).")
    num_codes = codebook.shape[0]
    # float32: in bf16 the Gram matrix of nearly-orthogonal codes rounds to noise.
    normed = F.normalize(codebook.float(), dim=-1)
    gram = normed @ normed.t()
    identity = torch.eye(num_codes, device=gram.device, dtype=gram.dtype)
    return (gram - identity).pow(2).sum() / num_codes**2


def vq_loss(z: torch.Tensor, z_q: torch.Tensor, commitment_beta: float = 0.25) -> torch.Tensor:
    r"""VQ-VAE's codebook + commitment loss, beta on the commitment (encoder) term.

    .. math:: \lVert z_q - sg(z) \rVert^2 + \beta \lVert sg(z_q) - z \rVert^2

    (diffusers' `VectorQuantizer(legacy=True)` puts beta on the codebook term instead.)

    Args:
        z (`torch.Tensor`): encoder output, any shape.
        z_q (`torch.Tensor`): the nearest codes, same shape as `z`.
        commitment_beta (`float`, *optional*, defaults to `0.25`): weight of the commitment term.
    """
    codebook_term = F.mse_loss(z_q, z.detach())
    commitment_term = F.mse_loss(z, z_q.detach())
    return codebook_term + commitment_beta * commitment_term
