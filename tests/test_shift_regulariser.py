"""The direct shift-equivariance regulariser: zero on an exactly equivariant encoder, positive on a
position-dependent one, differentiable, and wired into stage-1 training."""

import json

import pytest
import torch
import torch.nn.functional as F
from train_helpers import load_training_script, tiny_train_args, write_tiny_config

from te_vqgan.losses import shift_equivariance_loss


F_TOKEN = 4


def equivariant_encode(images):
    """1x1 conv, then f x f average pooling: whole-token shifts of the image shift the latents exactly."""
    weight = torch.arange(6.0).reshape(2, 3, 1, 1) / 6
    return F.avg_pool2d(F.conv2d(images, weight), F_TOKEN)


def position_dependent_encode(images):
    """The same plus a ramp over the token grid: the latents depend on where a pattern is."""
    latents = equivariant_encode(images)
    return latents + torch.linspace(0, 1, latents.shape[-1])


@pytest.mark.parametrize("shift", [(1, 0), (0, 1), (1, 1), (2, 1)])
def test_zero_on_an_equivariant_encoder_positive_on_a_position_dependent_one(shift):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert shift_equivariance_loss(equivariant_encode, images, shift, F_TOKEN).item() == pytest.approx(0.0, abs=1e-12)
    if shift[1]:  # the ramp runs along the columns
        assert shift_equivariance_loss(position_dependent_encode, images, shift, F_TOKEN).item() > 1e-3


def test_it_is_differentiable_and_refuses_bad_shifts():
    conv = torch.nn.Conv2d(3, 2, 3, padding=1, padding_mode="replicate")
    encode = lambda x: F.avg_pool2d(conv(x), F_TOKEN)  # noqa: E731
    images = torch.rand(2, 3, 32, 32)
    loss = shift_equivariance_loss(encode, images, (1, 1), F_TOKEN)
    loss.backward()
    assert loss.item() > 0 and conv.weight.grad.abs().sum() > 0  # the 3x3 border makes it imperfect
    with pytest.raises(ValueError, match="not both 0"):
        shift_equivariance_loss(encode, images, (0, 0), F_TOKEN)
    with pytest.raises(ValueError, match="leaves no token to compare on a 8x8-token image"):
        shift_equivariance_loss(encode, images, (3, 0), F_TOKEN)


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets-cache")


@pytest.mark.slow
def test_stage_one_trains_with_the_term_and_records_it(tmp_path, mnist_dir, dataset_cache, capsys):
    train = load_training_script()
    config = write_tiny_config(tmp_path)
    output = tmp_path / "run"
    args = train.parse_args(
        tiny_train_args(config, output, mnist_dir, dataset_cache, "--shift_equivariance_weight", "1")
    )
    train.main(args)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["shift_equivariance_weight"] == 1.0 and metrics["final_shift_equivariance_loss"] >= 0
    # Each step's shift depends on (seed, step) only, and is never (0, 0).
    stage = train.VQGANStage(args)
    shifts = [stage._shift(step) for step in range(50)]
    assert shifts == [stage._shift(step) for step in range(50)] and (0, 0) not in shifts
    assert {(0, 1), (1, 0), (1, 1)} == set(shifts)
    with pytest.raises(SystemExit):
        train.parse_args(
            tiny_train_args(config, output, mnist_dir, dataset_cache, "--shift_equivariance_weight", "-1")
        )
    assert "--shift_equivariance_weight must be >= 0 (got -1.0)" in capsys.readouterr().err
