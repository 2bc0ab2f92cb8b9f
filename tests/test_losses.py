import math

import pytest
import torch

from te_vqgan.losses import orthogonal_loss, vq_loss


def test_orthogonal_loss_equals_closed_form():
    torch.manual_seed(0)
    codebook = torch.randn(12, 5)
    k = codebook.shape[0]
    # ||C_hat C_hat^T - I||_F^2 / K^2, written out element by element.
    expected = 0.0
    for i in range(k):
        for j in range(k):
            cos = torch.dot(codebook[i], codebook[j]) / (codebook[i].norm() * codebook[j].norm())
            expected += (cos.item() - (1.0 if i == j else 0.0)) ** 2
    expected /= k**2
    assert orthogonal_loss(codebook).item() == pytest.approx(expected, rel=1e-5)


def test_orthogonal_loss_is_mean_squared_cosine_minus_one_over_k():
    torch.manual_seed(1)
    codebook = torch.randn(32, 16)
    cos = torch.nn.functional.cosine_similarity(codebook[:, None], codebook[None], dim=-1)
    assert orthogonal_loss(codebook).item() == pytest.approx(cos.pow(2).mean().item() - 1 / 32, abs=1e-6)


def test_orthogonal_loss_is_zero_for_orthonormal_codebook_whatever_the_norms():
    torch.manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(64, 16))  # 16 orthonormal columns
    codebook = q.t() * torch.linspace(0.1, 5.0, 16)[:, None]  # orthogonal rows of assorted lengths
    assert orthogonal_loss(codebook).item() == pytest.approx(0.0, abs=1e-10)


def test_orthogonal_loss_of_identical_codes_is_its_maximum():
    codebook = torch.ones(8, 4)
    assert orthogonal_loss(codebook).item() == pytest.approx(1 - 1 / 8, abs=1e-6)


def test_orthogonal_loss_gradient_pushes_codes_apart():
    torch.manual_seed(3)
    # Codes that share a common direction: far from orthogonal.
    codebook = (torch.randn(16, 32) + 2.0).requires_grad_()
    optimiser = torch.optim.Adam([codebook], lr=0.05)
    before = orthogonal_loss(codebook).item()
    for _ in range(50):
        optimiser.zero_grad()
        orthogonal_loss(codebook).backward()
        optimiser.step()
    assert before > 0.5
    assert orthogonal_loss(codebook).item() < 0.1 * before


def test_orthogonal_loss_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(K, d\).*\(2, 3, 4\)"):
        orthogonal_loss(torch.randn(2, 3, 4))


def test_vq_loss_puts_beta_on_the_commitment_term():
    torch.manual_seed(4)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q = torch.randn(2, 3, 4, 4, requires_grad=True)
    beta = 0.25
    loss = vq_loss(z, z_q, beta)
    assert loss.item() == pytest.approx((1 + beta) * torch.mean((z - z_q) ** 2).item(), rel=1e-6)
    loss.backward()
    n = z.numel()
    # The encoder (z) gets beta times the gradient the codebook (z_q) gets.
    torch.testing.assert_close(z.grad, beta * 2 * (z - z_q).detach() / n)
    torch.testing.assert_close(z_q.grad, 2 * (z_q - z).detach() / n)
    assert math.isfinite(loss.item())


def test_reconstruction_loss_choices():
    from te_vqgan.losses import reconstruction_loss

    images = torch.zeros(1, 3, 2, 2)
    recon = torch.full((1, 3, 2, 2), 0.5)
    assert reconstruction_loss(images, recon, "l1").item() == pytest.approx(0.5)
    assert reconstruction_loss(images, recon, "l2").item() == pytest.approx(0.25)
    assert reconstruction_loss(images, recon, "l1+l2").item() == pytest.approx(0.75)
    with pytest.raises(
        ValueError, match=r"Unknown reconstruction loss 'l3'; expected one of \('l1', 'l2', 'l1\+l2'\)"
    ):
        reconstruction_loss(images, recon, "l3")
