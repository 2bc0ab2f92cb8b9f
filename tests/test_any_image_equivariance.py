"""Shift equivariance on any images (`image_shift_equivariance`, `te-vqgan equivariance --images`)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from te_vqgan.cli import main as cli
from te_vqgan.metrics import DEFAULT_TOKEN_SHIFTS, image_shift_equivariance, token_shifts_that_fit


class PatchQuantizer:
    """A quantizer that is exactly shift-equivariant: each f x f patch's code depends on its own pixels only
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
    exact = image_shift_equivariance(PatchQuantizer(), images)
    assert exact.score == 1.0 and set(exact.per_shift) == {"0,1", "1,0", "1,1", "0,2", "2,0", "2,2"}
    assert exact.window == 24 and exact.downsample_factor == 4
    positional = image_shift_equivariance(PatchQuantizer(absolute=True), images)
    assert positional.per_shift["0,1"] == 1.0  # a shift along the rows' own direction keeps the row
    assert positional.per_shift["1,0"] < 0.2 and positional.score < 1.0


def test_token_maps_of_one_shift_line_up_with_the_content(images, tmp_path):
    from te_vqgan.metrics import image_shift_token_maps
    from te_vqgan.visualization import save_image_shift_figure

    maps = image_shift_token_maps(PatchQuantizer(), images, (1, 2))
    assert maps.window == 24 and maps.base.shape == maps.moved.shape == (5, 6, 6) and maps.match.shape == (5, 5, 4)
    assert maps.match.all()  # the equivariant toy: the moved crop's token (i, j) is the base crop's (i + 1, j + 2)
    positional = image_shift_token_maps(PatchQuantizer(absolute=True), images, (1, 0))
    assert not positional.match.any()  # every row's code changes with its position
    figure = save_image_shift_figure(
        images[:2], image_shift_token_maps(PatchQuantizer(), images[:2], (1, 1)), 64, tmp_path / "f.png"
    )
    assert figure.is_file()


def test_bad_shifts_and_images_are_refused(images):
    with pytest.raises(ValueError, match=r"not both 0 \(got \[\(0, 0\)\]\)"):
        image_shift_equivariance(PatchQuantizer(), images, shifts=[(0, 0)])
    with pytest.raises(ValueError, match="too small for token shifts up to 8"):
        image_shift_equivariance(PatchQuantizer(), images, shifts=[(8, 0)])
    # 8 tokens a side: a 4-token shift leaves crops of 4 tokens that no longer overlap (once a NaN score).
    with pytest.raises(ValueError, match="too small for token shifts up to 4 at f = 4: their crops' code maps do not"):
        image_shift_equivariance(PatchQuantizer(), images, shifts=[(4, 0)])
    assert image_shift_equivariance(PatchQuantizer(), images, shifts=token_shifts_that_fit(32, 4, [(3, 0)])).score == 1
    assert token_shifts_that_fit(64, 8) == list(DEFAULT_TOKEN_SHIFTS)
    assert token_shifts_that_fit(64, 16) == [(0, 1), (1, 0), (1, 1)]  # a 4x4 code map
    assert token_shifts_that_fit(32, 16) == []


def save_tiny_model(folder):
    """A random f = 4 TEVQModel of 32x32 images, saved to `folder`."""
    from te_vqgan import TEVQModel

    torch.manual_seed(0)
    TEVQModel(
        block_out_channels=(8, 16, 16),
        latent_channels=8,
        vq_embed_dim=8,
        num_vq_embeddings=16,
        norm_num_groups=4,
        sample_size=32,
    ).save_pretrained(folder)


def test_the_command_measures_a_folder_of_images(tmp_path, capsys):

    rng = np.random.default_rng(1)
    for i in range(3):  # other sizes and modes: resized on the shorter side, centre-cropped, converted to RGB
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).convert("L" if i == 2 else "RGB").save(
            tmp_path / f"{i}.png"
        )
    save_tiny_model(tmp_path / "model")
    assert (
        cli(
            [
                "equivariance",
                "--vqmodel",
                str(tmp_path / "model"),
                "--images",
                str(tmp_path),
                "--json",
                str(tmp_path / "e.json"),
                "--output",
                str(tmp_path / "e.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "e.png").is_file()
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["num_images"] == 3 and 0 <= report["image_shift_equivariance"] <= 1 and len(report["per_shift"]) == 6
    assert "shift equivariance on 3 images" in capsys.readouterr().out
    assert cli(["equivariance", "--vqmodel", str(tmp_path / "model"), "--images", str(tmp_path / "model")]) == 2
    assert "is a folder without image files" in capsys.readouterr().err


def _image_folder(folder, n=24):
    rng = np.random.default_rng(2)
    folder.mkdir()
    for i in range(n):  # other sizes and modes than the model's
        image = Image.fromarray(rng.integers(0, 256, (40 + i % 3, 48, 3), dtype=np.uint8))
        image.convert(("RGB", "L", "RGBA", "P")[i % 4]).save(folder / f"{i:02d}.png")
    return folder


def _train_args(tmp_path, data, *extra):
    from train_helpers import write_tiny_config

    return [
        "--model_config",
        str(write_tiny_config(tmp_path)),
        "--output_dir",
        str(tmp_path / "run"),
        "--dataset",
        str(data),
        "--cache_dir",
        str(tmp_path / "cache"),
        "--train_batch_size",
        "4",
        "--max_train_steps",
        "2",
        "--perceptual_weight",
        "0",
        "--disc_start",
        "100",
        "--checkpointing_steps",
        "2",
        "--validation_steps",
        "2",
        "--num_validation_images",
        "6",
        "--report_to",
        "none",
        "--cpu",
        *extra,
    ]


@pytest.mark.slow
def test_train_vqgan_on_a_plain_image_folder(tmp_path):
    from train_helpers import load_training_script

    script = load_training_script("train_vqgan")
    data = _image_folder(tmp_path / "photos")
    result = script.main(
        script.parse_args(
            _train_args(
                tmp_path,
                data,
                "--resolution",
                "32",
                "--validation_fraction",
                "0.25",
                "--random_flip",
                "--max_train_samples",
                "20",
            )
        )
    )
    assert result.global_step == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sample_size"] == 32  # follows --resolution
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["image_shift_equivariance"] <= 1 and "image_shift_equivariance_0_1" in metrics
    assert (
        "sample_size" not in (tmp_path / "run" / "README.md").read_text()
        or "32" in (tmp_path / "run" / "README.md").read_text()
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--resolution", "30"), "not a multiple of the model's downsampling factor f = 4"),
        (("--resolution", "32"), "no 'validation' split for validation"),
    ],
)
def test_bad_image_training_options_are_one_line_errors(tmp_path, extra, message):
    from train_helpers import load_training_script

    script = load_training_script("train_vqgan")
    data = _image_folder(tmp_path / "photos", n=4)
    with pytest.raises(ValueError, match=message):
        script.main(script.parse_args(_train_args(tmp_path, data, *extra)))


def test_a_folder_without_images_is_refused(tmp_path):
    from train_helpers import load_training_script

    script = load_training_script("train_vqgan")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="is a folder without image files"):
        script.main(script.parse_args(_train_args(tmp_path, tmp_path / "empty", "--validation_fraction", "0.5")))


def test_mnist_variants_load_as_image_datasets(fashion_mnist_dir, tmp_path):
    from te_vqgan.data.image_datasets import load_image_dataset

    splits = load_image_dataset("fashion_mnist", mnist_dir=str(fashion_mnist_dir))
    assert {name: len(split) for name, split in splits.items()} == {"train": 60_000, "test": 10_000}
    example = splits["test"][0]
    assert example["image"].size == (28, 28) and example["image"].mode == "L"
    assert splits["test"].features["label"].names[example["label"]] == "Ankle boot"  # Fashion-MNIST's first test item
    # a save_to_disk folder of it reads back the same
    small = splits["test"].select(range(5))
    small.save_to_disk(str(tmp_path / "disk"))
    again = load_image_dataset(str(tmp_path / "disk"))
    assert list(again) == ["train"] and again["train"]["label"] == small["label"]
    with pytest.raises(ValueError, match="--images '.*' is a file"):
        load_image_dataset(str(tmp_path / "disk" / "state.json"), option="--images")


def test_the_command_measures_a_dataset_split(fashion_mnist_dir, tmp_path, capsys):
    save_tiny_model(tmp_path / "model")
    common = ["equivariance", "--vqmodel", str(tmp_path / "model"), "--images", "fashion_mnist"]
    common += ["--mnist-dir", str(fashion_mnist_dir), "--max-images", "8", "--output", str(tmp_path / "e.png")]
    assert cli([*common, "--json", str(tmp_path / "e.json")]) == 0
    assert (tmp_path / "e.png").is_file()
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["split"] == "test" and report["num_images"] == 8 and 0 <= report["image_shift_equivariance"] <= 1
    assert "shift equivariance on 8 images of fashion_mnist (test)" in capsys.readouterr().out
    assert cli([*common, "--split", "validation"]) == 2
    assert "has no split 'validation'" in capsys.readouterr().err


def test_a_stock_vqmodel_is_measured_as_its_converted_twin(images):
    from diffusers import VQModel

    from te_vqgan import TEVQModel

    torch.manual_seed(0)
    stock = VQModel(
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=8,
        vq_embed_dim=8,
        num_vq_embeddings=16,
        norm_num_groups=4,
        sample_size=32,
    ).eval()
    on_stock = image_shift_equivariance(stock, images)
    on_twin = image_shift_equivariance(TEVQModel.from_vq_model(stock).eval(), images)
    assert 0 <= on_stock.score <= 1 and on_stock.per_shift == on_twin.per_shift  # the same network, the same indices
    assert on_stock.downsample_factor == 4
