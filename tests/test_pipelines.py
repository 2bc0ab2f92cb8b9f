"""Text-to-image and image-to-text pipelines: one folder, save/load (folder and local Hub),
load-time mismatch errors, and the `generate` / `caption` / `tokenize-dataset` commands."""

import json

import numpy as np
import pytest
import torch
from hub_server import local_hub  # noqa: F401  (pytest fixture)
from PIL import Image
from tiny_configs import TINY_MODEL_CONFIG
from train_helpers import state_digest

from te_vqgan import ImageToTextPipeline, TEVQModel, TextImageTokenizer, TextToImagePipeline
from te_vqgan.cli import main as cli
from te_vqgan.generation import build_generator_config


PROMPT = "the red 3 is on the upper left, and white 7 on the bottom right."


def make_pipeline(vqmodel_dir, text_length=48, **tokenizer_overrides):
    from transformers import GPT2LMHeadModel

    vqmodel = TEVQModel.from_pretrained(vqmodel_dir)
    tokenizer = TextImageTokenizer.build(vqmodel.num_codes, text_length=text_length, **tokenizer_overrides)
    grid = vqmodel.config.sample_size // vqmodel.downsample_factor
    torch.manual_seed(0)
    generator = GPT2LMHeadModel(build_generator_config(tokenizer, (grid, grid), n_embd=32, n_layer=2, n_head=2))
    return TextToImagePipeline(vqmodel=vqmodel, generator=generator, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def pipeline_dir(stage2_assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "pipe"
    make_pipeline(stage2_assets[0]).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_one_folder_serves_both_pipelines(pipeline_dir):
    t2i = TextToImagePipeline.from_pretrained(pipeline_dir)
    i2t = ImageToTextPipeline.from_pretrained(pipeline_dir)  # saved as a TextToImagePipeline
    assert state_digest(t2i.generator.state_dict()) == state_digest(i2t.generator.state_dict())
    assert isinstance(t2i.vqmodel, TEVQModel) and isinstance(i2t.tokenizer, TextImageTokenizer)

    out = t2i([PROMPT, "blue 4"], num_images_per_prompt=3, generator=torch.Generator().manual_seed(1))
    assert len(out.images) == 6 and all(im.size == (64, 64) and im.mode == "RGB" for im in out.images)
    assert out.indices.shape == (6, 16, 16) and 0 <= out.indices.min() and out.indices.max() < 16
    again = t2i([PROMPT, "blue 4"], num_images_per_prompt=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.indices, again.indices)  # seeded
    assert len(t2i(PROMPT, num_images_per_prompt=3, batch_size=2).images) == 3
    arrays = t2i(PROMPT, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert arrays.dtype == np.uint8 and arrays.shape == (1, 64, 64, 3)

    captions = i2t(out.images[:2], generator=torch.Generator().manual_seed(0)).captions
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    tensor_captions = i2t(torch.zeros(2, 3, 64, 64), generator=torch.Generator().manual_seed(0)).captions
    assert len(tensor_captions) == 2


def test_bad_input_is_a_clear_error(pipeline_dir):
    t2i = TextToImagePipeline.from_pretrained(pipeline_dir)
    i2t = ImageToTextPipeline.from_pretrained(pipeline_dir)
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['purple'\]"):
        t2i("the purple 3.")
    with pytest.raises(ValueError, match="num_images_per_prompt"):
        t2i(PROMPT, num_images_per_prompt=0)
    with pytest.raises(ValueError, match="mode 'L'"):
        i2t(Image.new("L", (64, 64)))
    with pytest.raises(ValueError, match=r"shape \(32, 32, 3\); expected uint8 RGB of shape \(64, 64, 3\)"):
        i2t(Image.new("RGB", (32, 32)))


def test_parts_that_do_not_fit_are_refused_at_load(stage2_assets, pipeline_dir, tmp_path):
    import shutil

    # A generator config claiming another codebook.
    broken = tmp_path / "codebook"
    shutil.copytree(pipeline_dir, broken)
    config_file = broken / "generator" / "config.json"
    config = json.loads(config_file.read_text())
    config["codebook_size"] = 32
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"codebook_size: config has 32 but the tokenizer has 16"):
        TextToImagePipeline.from_pretrained(broken)

    # A tokenizer of another vocabulary (another codebook size).
    other = tmp_path / "vocabulary"
    shutil.copytree(pipeline_dir, other)
    shutil.rmtree(other / "tokenizer")
    TextImageTokenizer.build(24, text_length=48).save_pretrained(other / "tokenizer")
    with pytest.raises(ValueError, match=r"vocabulary size: config has \d+ but len\(tokenizer\) has \d+"):
        ImageToTextPipeline.from_pretrained(other)

    # A quantizer with another token grid (32x32 images -> 8x8 tokens).
    grid = tmp_path / "grid"
    shutil.copytree(pipeline_dir, grid)
    shutil.rmtree(grid / "vqmodel")
    config = {k: v for k, v in TINY_MODEL_CONFIG.items() if not k.startswith("_")}
    TEVQModel(**{**config, "sample_size": 32}).save_pretrained(grid / "vqmodel")
    with pytest.raises(ValueError, match=r"image_grid: config has \[16, 16\] but the VQ model"):
        TextToImagePipeline.from_pretrained(grid)


@pytest.mark.slow
def test_push_and_load_from_the_hub(pipeline_dir, local_hub):
    from te_vqgan.hub import push_folder_to_hub

    push_folder_to_hub(pipeline_dir, "user/tiny-pipeline")
    assert {"model_index.json", "generator/config.json", "tokenizer/tokenizer.json", "vqmodel/config.json"} <= set(
        local_hub.files("user/tiny-pipeline")
    )
    t2i = TextToImagePipeline.from_pretrained("user/tiny-pipeline")
    i2t = ImageToTextPipeline.from_pretrained("user/tiny-pipeline")
    local = TextToImagePipeline.from_pretrained(pipeline_dir)
    assert state_digest(t2i.generator.state_dict()) == state_digest(local.generator.state_dict())
    assert state_digest(i2t.vqmodel.state_dict()) == state_digest(local.vqmodel.state_dict())
    a = t2i(PROMPT, generator=torch.Generator().manual_seed(0)).indices
    b = local(PROMPT, generator=torch.Generator().manual_seed(0)).indices
    assert torch.equal(a, b)


def test_generate_and_caption_commands(pipeline_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    assert (
        cli(
            [
                "generate",
                "--pipeline",
                str(pipeline_dir),
                "--prompt",
                PROMPT,
                "--num-images",
                "2",
                "--seed",
                "0",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["00-00.png", "00-01.png", "grid.png"]
    capsys.readouterr()
    files = [str(out / "00-00.png"), str(out / "00-01.png")]
    assert cli(["caption", "--pipeline", str(pipeline_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    # Reranked: one output per input still, chosen among 3 candidates.
    assert cli(["caption", "--pipeline", str(pipeline_dir), "--num-candidates", "3", *files]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    reranked = ["generate", "--pipeline", str(pipeline_dir), "--prompt", PROMPT, "--num-images", "1"]
    assert cli([*reranked, "--num-candidates", "3", "--output", str(tmp_path / "best")]) == 0
    assert sorted(p.name for p in (tmp_path / "best").glob("*.png")) == ["00-00.png", "grid.png"]
    assert cli([*reranked, "--num-candidates", "0", "--output", str(tmp_path / "none")]) == 2
    assert "--num-candidates must be an integer >= 1 (got 0)" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

    assert (
        cli(["generate", "--pipeline", str(pipeline_dir), "--prompt", "the purple 3", "--output", str(tmp_path / "x")])
        == 2
    )
    assert "outside the vocabulary: ['purple']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    Image.new("RGB", (32, 32)).save(tmp_path / "small.png")
    assert cli(["caption", "--pipeline", str(pipeline_dir), str(tmp_path / "small.png")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert "Traceback" not in err and len(errors) == 1 and "small.png" in errors[0] and "(64, 64, 3)" in errors[0]


@pytest.mark.slow
def test_tokenize_dataset_command_and_its_refusals(stage2_assets, mnist_dir, tmp_path, capsys):
    import datasets

    from te_vqgan.data.tokenized import load_tokenized_dataset, quantizer_fingerprint

    vqmodel_dir, _, cache = stage2_assets
    out = tmp_path / "tokens"
    argv = [
        "tokenize-dataset",
        "--vqmodel",
        str(vqmodel_dir),
        "--mnist-dir",
        str(mnist_dir),
        "--num-train",
        "40",
        "--num-validation",
        "8",
        "--num-test",
        "8",
        "--cache-dir",
        str(cache),
        "--batch-size",
        "16",
        "--output",
        str(out),
    ]
    assert cli(argv) == 0
    vqmodel = TEVQModel.from_pretrained(vqmodel_dir)
    dataset, info = load_tokenized_dataset(out, vqmodel=vqmodel)
    assert info.fingerprint == quantizer_fingerprint(vqmodel) and info.image_grid == (16, 16) and info.num_codes == 16
    assert {name: len(split) for name, split in dataset.items()} == {
        "train": 40,
        "validation": 8,
        "test": 8,
        "test_seen": 8,
    }
    train = dataset["train"]
    assert "image" not in train.column_names and {"captions", "objects", "indices"} <= set(train.column_names)
    assert isinstance(train.features["indices"], datasets.Array2D)
    # The stored maps are what the quantizer gives for those images.
    from te_vqgan.data.tokenized import load_source_dataset
    from te_vqgan.metrics import images_to_tensor

    source = load_source_dataset(
        "textmnist",
        cache_dir=str(cache),
        builder_options=dict(num_train=40, num_validation=8, num_test=8, data_dir=str(mnist_dir)),
    )
    pixels = images_to_tensor(np.stack([np.asarray(im.convert("RGB")) for im in source["train"][:4]["image"]]))
    assert torch.equal(torch.as_tensor(np.asarray(train[:4]["indices"])).long(), vqmodel.encode_to_indices(pixels))

    capsys.readouterr()
    assert cli(argv) == 2  # occupied output
    assert "exists and is not an empty folder; pass --overwrite" in capsys.readouterr().err
    config_file = tmp_path / "random.json"
    config_file.write_text(json.dumps(TINY_MODEL_CONFIG))
    assert cli([*argv[:2], str(config_file), *argv[3:-1], str(tmp_path / "other")]) == 2
    assert "needs a trained quantizer" in capsys.readouterr().err


@pytest.mark.slow
def test_a_build_dataset_folder_keeps_test_and_test_seen_apart(stage2_assets, mnist_dir, tmp_path):
    from te_vqgan.data.tokenized import load_source_dataset

    _, _, cache = stage2_assets
    built = tmp_path / "built"
    assert (
        cli(
            [
                "build-dataset",
                "--output",
                str(built),
                "--data-dir",
                str(mnist_dir),
                "--num-train",
                "20",
                "--num-validation",
                "6",
                "--num-test",
                "5",
                "--num-test-seen",
                "7",
                "--num-shift-groups",
                "2",
                "--cache-dir",
                str(cache),
                "--num-proc",
                "1",
            ]
        )
        == 0
    )
    dataset = load_source_dataset(str(built), cache_dir=str(cache))
    assert {name: len(split) for name, split in dataset.items()} == {
        "train": 20,
        "validation": 6,
        "test": 5,
        "test_seen": 7,
        "shift": 10,
    }
