"""The pure pieces of stage-1 training: GAN losses, adaptive weight, discriminator, plumbing."""

import json

import pytest
import torch

from te_vqgan.files import write_json_atomic
from te_vqgan.losses import adaptive_gan_weight, hinge_d_loss, hinge_g_loss
from te_vqgan.training import NLayerDiscriminator, PerceptualLossUnavailable, load_perceptual_loss
from te_vqgan.training.accelerate_utils import (
    EpochShuffleSampler,
    derive_seed,
    list_checkpoints,
    resolve_resume_checkpoint,
    scaled_learning_rate,
)


def test_hinge_losses_match_their_definitions():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.5])
    # relu(1 - real) = [0, 0.5, 2] -> 5/6; relu(1 + fake) = [0, 1, 2.5] -> 7/6
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 3.5 / 3))
    assert hinge_g_loss(fake).item() == pytest.approx(-(-0.5 / 3))
    # A perfect discriminator (margins met) has zero loss.
    assert hinge_d_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0


def test_adaptive_weight_is_the_gradient_norm_ratio():
    torch.manual_seed(0)
    last = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(4)
    nll = (last @ x).pow(2).sum()
    g = (last @ x).sum() * 3.0
    grad_nll = torch.autograd.grad(nll, last, retain_graph=True)[0]
    grad_g = torch.autograd.grad(g, last, retain_graph=True)[0]
    expected = grad_nll.norm() / (grad_g.norm() + 1e-4)
    weight = adaptive_gan_weight(nll, g, last)
    assert weight.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not weight.requires_grad
    # Clamped to [0, max_weight].
    assert adaptive_gan_weight(nll, g * 1e-9, last, max_weight=7.0).item() == 7.0


def test_discriminator_is_a_patchgan_with_dcgan_init():
    torch.manual_seed(0)
    disc = NLayerDiscriminator(in_channels=3, ndf=64, num_layers=3)
    assert disc(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 5 and len(norms) == 3
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert abs(convs[1].weight.std().item() - 0.02) < 0.002
    assert abs(norms[0].weight.mean().item() - 1.0) < 0.01
    with pytest.raises(ValueError, match="num_layers.*0"):
        NLayerDiscriminator(num_layers=0)


def test_perceptual_loss_without_lpips_says_what_to_do(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_lpips(name, *args, **kwargs):
        if name == "lpips":
            raise ImportError("No module named 'lpips'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lpips)
    with pytest.raises(PerceptualLossUnavailable, match=r"lpips.*te-vqgan\[lpips\].*--perceptual_weight 0"):
        load_perceptual_loss()


def test_perceptual_loss_without_backbone_weights_says_where_they_go(monkeypatch, tmp_path):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "lpips", types.ModuleType("lpips"))  # importable, but no weights anywhere
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    with pytest.raises(PerceptualLossUnavailable, match=r"backbone weights are missing") as error:
        load_perceptual_loss()
    assert expected in str(error.value) and "--perceptual_weight 0" in str(error.value)


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    a, b = EpochShuffleSampler(50, seed=3), EpochShuffleSampler(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    torch.manual_seed(123)  # the global RNG plays no part
    first = list(a)
    torch.manual_seed(999)
    assert first == list(b) and sorted(first) == list(range(50))
    b.set_epoch(3)
    assert list(b) != first
    with pytest.raises(ValueError, match="num_samples.*0"):
        EpochShuffleSampler(0)


def test_derive_seed_keeps_the_numbers_runs_were_made_with():
    # Resumed runs and saved results depend on these: the three formulas derive_seed replaced.
    assert derive_seed(0, 0) == 0
    assert derive_seed(3, 2) == 3_000_011  # EpochShuffleSampler: seed * 1_000_003 + epoch
    assert derive_seed(42, 7) == 42_000_133
    assert derive_seed(1234, 500) == 1_234_004_202  # train_vqgan's codebook remedies: seed * 1_000_003 + step
    # The engine's batch seed: (seed * 1_000_003 + epoch * 10_007 + batch) % (2**31 - 1).
    assert derive_seed(42, 2, 5) % (2**31 - 1) == 42_020_145
    assert derive_seed(5000, 1, 3) == 5_000_025_010
    assert derive_seed(5000, 1, 3) % (2**31 - 1) == 705_057_716


def test_checkpoint_listing_and_resume_resolution(tmp_path, caplog):
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-30.tmp", "checkpoint-x", "logs", "checkpoint-99"):
        (tmp_path / name).mkdir()
    for name in ("checkpoint-10", "checkpoint-2"):  # complete: the state files and the marker written last
        for file in ("model.safetensors", "random_states_0.pkl", "training_state.json"):
            (tmp_path / name / file).write_text("x")
    # .tmp (an interrupted save) and the empty checkpoint-99 are not checkpoints.
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 10]
    with caplog.at_level("WARNING"):
        assert resolve_resume_checkpoint(tmp_path, "latest") == (tmp_path / "checkpoint-10", 10)
    assert "checkpoint-99" in caplog.text
    assert resolve_resume_checkpoint(tmp_path, "checkpoint-2") == (tmp_path / "checkpoint-2", 2)
    assert resolve_resume_checkpoint(tmp_path, None) is None
    assert resolve_resume_checkpoint(tmp_path / "empty", "latest") is None
    with pytest.raises(ValueError, match="'logs'.*checkpoint-<step>"):
        resolve_resume_checkpoint(tmp_path, "logs")
    with pytest.raises(
        ValueError, match=r"checkpoint-99' is incomplete: it has no \['training_state.json', 'model.safetensors'"
    ):
        resolve_resume_checkpoint(tmp_path, "checkpoint-99")


def test_scaled_learning_rate_reproduces_the_authors():
    assert scaled_learning_rate(8e-6, 96, 1, 2) == pytest.approx(1.536e-3)


def test_write_json_atomic(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "m.json", {"a": 1.5, "t": torch.tensor(2.0), "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": 1.5, "t": 2.0, "p": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_optimizer_update_clips_steps_and_schedules():
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler

    from te_vqgan.training import OptimizerUpdate

    accelerator = Accelerator(cpu=True)
    weight = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=4)
    update = OptimizerUpdate(accelerator, optimizer, [weight], scheduler, max_grad_norm=0.5)
    update((weight * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum())  # gradient norm 50, clipped to 0.5
    assert torch.allclose(weight.detach(), torch.tensor([-0.3, -0.4, 0.0, 0.0]))
    assert weight.grad is None  # cleared for the next step
    assert update.learning_rate == pytest.approx(0.75)  # the linear schedule moved one step of four
