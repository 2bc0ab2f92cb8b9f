"""Losses of the stage-1 quantizer, as pure functions.

The orthogonal regulariser is the paper's Eq. (5); the shift-equivariance regulariser is beyond the
paper (EQ-VAE's idea, for whole-token shifts); the VQ loss is VQ-VAE's codebook and
commitment terms with beta on the commitment term; the adversarial terms are VQGAN's hinge
losses with its adaptive weight (Esser et al., "Taming Transformers", Eq. 7; docs/REPRODUCTION.md,
"Stage 1: the quantizer").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


__all__ = [
    "RECONSTRUCTION_LOSSES",
    "adaptive_gan_weight",
    "hinge_d_loss",
    "hinge_g_loss",
    "orthogonal_loss",
    "reconstruction_loss",
    "shift_equivariance_loss",
    "vq_loss",
]

RECONSTRUCTION_LOSSES = ("l1", "l2", "l1+l2")


def reconstruction_loss(images: torch.Tensor, reconstruction: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """The pixel term of stage 1: mean absolute error (`"l1"`, the paper's, beside LPIPS), mean
    squared error (`"l2"`) or their sum (`"l1+l2"`).

    Without a perceptual term L1 loses colour: a coloured stroke lives in one channel of
    three and covers a few percent of the canvas, and L1's optimum per pixel is the median,
    which is background. L2's is the mean, which keeps the stroke's colour.
    """
    if kind not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"Unknown reconstruction loss {kind!r}; expected one of {RECONSTRUCTION_LOSSES}.")
    difference = images - reconstruction
    l1 = difference.abs().mean() if "l1" in kind else 0.0
    l2 = difference.pow(2).mean() if "l2" in kind else 0.0
    return l1 + l2


def orthogonal_loss(codebook: torch.Tensor, check_finite: bool = True) -> torch.Tensor:
    r"""Orthogonality of a codebook, Eq. (5) of the paper without its weight lambda.

    .. math:: \mathcal{L}_{orth} = \frac{1}{K^2} \lVert \hat{C} \hat{C}^\top - I_K \rVert_F^2

    where :math:`\hat{C}` is the `(K, d)` codebook with each code L2-normalised. It equals
    `mean(cos_sim(c_i, c_j)^2) - 1/K` over all ordered pairs, so it is 0 exactly when the codes
    are pairwise orthogonal (possible only for K <= d) and at most `1 - 1/K`.

    Args:
        codebook (`torch.Tensor` of shape `(K, d)`): the code vectors, one per row.
        check_finite (`bool`, *optional*, defaults to `True`): refuse NaN/Inf codes (on a CPU
            codebook or outside autograd, where it costs no device sync; never while
            `torch.compile` traces, where reading a value back would break the graph).

    Returns:
        `torch.Tensor`: a scalar, computed in float32 whatever the codebook's dtype.

    Example::

        >>> orthogonal_loss(torch.eye(4, 8))
        tensor(0.)
    """
    if codebook.ndim != 2 or 0 in codebook.shape:
        raise ValueError(f"`codebook` must have shape (K, d) with K, d >= 1 (got shape {tuple(codebook.shape)}).")
    # The finiteness check reads the values back: done where it costs no device sync (a CPU
    # codebook, or outside autograd); in training a NaN codebook shows as a NaN loss, which
    # the training engine's divergence guard stops.
    check = (
        check_finite
        and not torch.compiler.is_compiling()
        and (codebook.device.type == "cpu" or not torch.is_grad_enabled())
    )
    if check and not torch.isfinite(codebook).all():
        raise ValueError(f"`codebook` holds {int((~torch.isfinite(codebook)).sum())} NaN or Inf values.")
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


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: `(mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))) / 2`."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Adversarial loss of the generator (the autoencoder): `-mean(D(G(z)))`."""
    return -logits_fake.mean()


def adaptive_gan_weight(
    nll_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    r"""VQGAN's adaptive weight of the adversarial term (Taming Transformers, Eq. 7).

    .. math:: \lambda = \frac{\lVert \nabla_{G_L} \mathcal{L}_{rec} \rVert}{\lVert \nabla_{G_L} \mathcal{L}_{GAN} \rVert + \delta}

    clamped to `[0, max_weight]` and detached; `G_L` is the decoder's last layer. The caller
    multiplies it by `disc_weight` (0.8 in the authors' config).

    Args:
        nll_loss (`torch.Tensor`): the reconstruction (+ perceptual) loss, a scalar with a graph.
        g_loss (`torch.Tensor`): the generator's adversarial loss, a scalar with a graph.
        last_layer (`torch.Tensor`): the weight of the decoder's last layer.
        max_weight (`float`, *optional*, defaults to `1e4`): upper clamp.
        eps (`float`, *optional*, defaults to `1e-4`): delta, keeps the ratio finite.
    """
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.linalg.vector_norm(nll_grads.float()) / (torch.linalg.vector_norm(g_grads.float()) + eps)
    return torch.clamp(weight, 0.0, max_weight).detach()


def shift_equivariance_loss(
    encode, images: torch.Tensor, shift: tuple[int, int], downsample_factor: int
) -> torch.Tensor:
    """A direct shift-equivariance regulariser (beyond the paper; EQ-VAE pulls the latents of a
    transformed image toward the transformed latents, for scale and rotation): the encoder's
    features of an image shifted by `shift = (rows, columns)` whole tokens are pulled toward
    its features, shifted.

    Two crops `shift * f` pixels apart, `A = x[:, :, :H - s_y, :W - s_x]` and
    `B = x[:, :, s_y:, s_x:]`, hold the same pixels at offset `shift` tokens: token `(i, j)` of
    `B` sees what token `(i + rows, j + columns)` of `A` sees. No border is filled; the tokens
    within `shift` of a crop's edge, whose receptive field reaches the edge, are left out:
    the loss is the mean squared difference of `encode(B)[..., :h - 2 rows, :w - 2 columns]`
    and `encode(A)[..., rows:h - rows, columns:w - columns]` (`h`, `w`: tokens of a crop).

    Args:
        encode (`Callable`): images `[N, C, H, W]` -> latents `[N, D, H / f, W / f]` (the features
            that are quantized, e.g. `quant_conv(encoder(x))`).
        images (`torch.Tensor`): `[N, C, H, W]`, `H` and `W` multiples of `downsample_factor`.
        shift (`tuple[int, int]`): whole tokens, each >= 0, not both 0.
        downsample_factor (`int`): pixels per token.
    """
    rows, columns = (int(v) for v in shift)
    f = int(downsample_factor)
    height, width = images.shape[-2] // f, images.shape[-1] // f
    if rows < 0 or columns < 0 or rows + columns == 0:
        raise ValueError(f"`shift` must be two whole token counts >= 0, not both 0 (got {shift!r}).")
    if height - 3 * rows < 1 or width - 3 * columns < 1:
        raise ValueError(
            f"A shift of {shift} tokens leaves no token to compare on a {height}x{width}-token image "
            "(the crops lose `shift`, their edges another `shift` each side)."
        )
    a = encode(images[..., : images.shape[-2] - rows * f, : images.shape[-1] - columns * f])
    b = encode(images[..., rows * f :, columns * f :])
    h, w = a.shape[-2], a.shape[-1]
    return F.mse_loss(b[..., : h - 2 * rows, : w - 2 * columns], a[..., rows : h - rows, columns : w - columns])
