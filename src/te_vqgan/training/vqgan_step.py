"""One optimisation step of VQGAN (autoencoder, then discriminator), shared by the training
script and the training benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import adaptive_gan_weight, hinge_d_loss, hinge_g_loss, reconstruction_loss, shift_equivariance_loss


__all__ = ["VQGANLossWeights", "vqgan_train_step"]


@dataclass(frozen=True)
class VQGANLossWeights:
    perceptual_weight: float = 1.0  # LPIPS, in the reconstruction (nll) term
    codebook_weight: float = 1.0  # the VQ loss (codebook + beta x commitment)
    disc_weight: float = 0.8  # times the adaptive weight of the generator's GAN term
    disc_start: int = 30001  # the step from which both GAN terms are on
    reconstruction_loss: str = "l1"  # "l1" (the paper's, with LPIPS), "l2" or "l1+l2"
    shift_equivariance_weight: float = 0.0  # the direct shift-equivariance term (beyond the paper; 0: off)


def vqgan_train_step(
    accelerator,
    model,
    discriminator,
    update_ae,
    update_d,
    images: torch.Tensor,
    global_step: int,
    weights: VQGANLossWeights,
    perceptual=None,
    shift: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Run the autoencoder's and (from `disc_start`) the discriminator's update on `images`.

    Call inside `accelerator.accumulate(model, discriminator)`. `model` and `discriminator`
    are the prepared (possibly DDP-wrapped) modules; `update_ae` and `update_d` apply a loss
    (backward, clipping, optimizer and schedule: `te_vqgan.training.OptimizerUpdate`).
    `shift` (whole tokens): the shift of this step's shift-equivariance term, when its weight is on.
    Returns the loss terms, detached.
    """
    unwrapped_disc = accelerator.unwrap_model(discriminator)
    last_layer = accelerator.unwrap_model(model).decoder.conv_out.weight
    gan_active = global_step >= weights.disc_start

    # Autoencoder. The discriminator judges the reconstruction but this loss must not update
    # it: its parameters are frozen, and it is called unwrapped so DDP expects no gradients.
    with accelerator.autocast():
        output = model(images, check_finite=False)  # uint8-decoded images are finite: no device sync
        reconstruction = output.sample
        rec_loss = reconstruction_loss(images, reconstruction, weights.reconstruction_loss)
        p_loss = perceptual(images, reconstruction).mean() if perceptual is not None else rec_loss.new_zeros(())
        nll_loss = rec_loss + weights.perceptual_weight * p_loss
        loss = nll_loss + weights.codebook_weight * output.commit_loss + output.orthogonal_loss
        shift_loss = rec_loss.new_zeros(())
        if weights.shift_equivariance_weight > 0 and shift is not None:
            quantizer = accelerator.unwrap_model(model)
            shift_loss = shift_equivariance_loss(
                lambda x: quantizer.encode(x).latents, images, shift, quantizer.downsample_factor
            )
            loss = loss + weights.shift_equivariance_weight * shift_loss
        g_loss = d_weight = rec_loss.new_zeros(())
        if gan_active:
            unwrapped_disc.requires_grad_(False)
            g_loss = hinge_g_loss(unwrapped_disc(reconstruction))
            d_weight = adaptive_gan_weight(nll_loss, g_loss, last_layer) * weights.disc_weight
            loss = loss + d_weight * g_loss
    update_ae(loss)

    # Discriminator, on the same batch with the reconstruction detached.
    d_loss = rec_loss.new_zeros(())
    if gan_active:
        unwrapped_disc.requires_grad_(True)
        with accelerator.autocast():
            d_loss = hinge_d_loss(discriminator(images), discriminator(reconstruction.detach()))
        update_d(d_loss)

    terms = {
        "loss": loss,
        "rec_loss": rec_loss,
        "p_loss": p_loss,
        "commit_loss": output.commit_loss,
        "orthogonal_loss": output.orthogonal_loss,
        "g_loss": g_loss,
        "d_weight": d_weight,
        "d_loss": d_loss,
    }
    if weights.shift_equivariance_weight > 0:
        terms["shift_equivariance_loss"] = shift_loss
    return {name: value.detach().float() for name, value in terms.items()}
