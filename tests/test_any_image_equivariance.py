"""Shift equivariance on any images (`image_shift_equivariance`, `te-vqgan equivariance --images`)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from te_vqgan.cli import main as cli
from te_vqgan.metrics import image_shift_equivariance


class PatchTokenizer:
    """A tokenizer that is exactly shift-equivariant: each f x f patch's code depends on its own pixels only
    (its mean brightness, in 8 bins); with `absolute=True` the code also depends on where the patch is."""

    num_codes, downsample_factor, training = 64, 4, False

    def __init__(self, absolute=False):
        self.absolute = absolute

    def parameters(self):
        return iter([torch.zeros(1)])

    def encode_to_indices(self, images):
        patches = torch.nn.functional.avg_pool2d(images.mean(1, keepdim=True), 4)[:, 0]
        codes = ((patches + 1) / 2 * 7.999).long().clamp(0, 7)
        if self.absolute:
            rows = torch.arange(codes.shape[-2])[:, None].expand_as(codes[0])
            codes = codes + 8 * (rows % 8)
        return codes


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


def test_an_equivariant_tokenizer_scores_one_and_a_positional_one_less(images):
    exact = image_shift_equivariance(PatchTokenizer(), images)
    assert exact.score == 1.0 and set(exact.per_shift) == {"0,1", "1,0", "1,1", "0,2", "2,0", "2,2"}
    assert exact.window == 24 and exact.downsample_factor == 4
    positional = image_shift_equivariance(PatchTokenizer(absolute=True), images)
    assert positional.per_shift["0,1"] == 1.0  # a shift along the rows' own direction keeps the row
    assert positional.per_shift["1,0"] < 0.2 and positional.score < 1.0


def test_bad_shifts_and_images_are_refused(images):
    with pytest.raises(ValueError, match=r"not both 0 \(got \[\(0, 0\)\]\)"):
        image_shift_equivariance(PatchTokenizer(), images, shifts=[(0, 0)])
    with pytest.raises(ValueError, match="too small for token shifts up to 8"):
        image_shift_equivariance(PatchTokenizer(), images, shifts=[(8, 0)])


def test_the_command_measures_a_folder_of_images(tmp_path, capsys):
    from te_vqgan import TEVQModel

    rng = np.random.default_rng(1)
    for i in range(3):  # other sizes and modes: resized on the shorter side, centre-cropped, converted to RGB
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).convert("L" if i == 2 else "RGB").save(tmp_path / f"{i}.png")
    torch.manual_seed(0)
    TEVQModel(block_out_channels=(8, 16, 16), latent_channels=8, vq_embed_dim=8, num_vq_embeddings=16, norm_num_groups=4,
              sample_size=32).save_pretrained(tmp_path / "model")
    assert cli(["equivariance", "--vqmodel", str(tmp_path / "model"), "--images", str(tmp_path), "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["num_images"] == 3 and 0 <= report["image_shift_equivariance"] <= 1 and len(report["per_shift"]) == 6
    assert "shift equivariance on 3 images" in capsys.readouterr().out
    assert cli(["equivariance", "--vqmodel", str(tmp_path / "model"), "--images", str(tmp_path / "model")]) == 2
    assert "holds no image files" in capsys.readouterr().err
