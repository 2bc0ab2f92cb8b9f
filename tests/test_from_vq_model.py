"""An existing stock `diffusers.VQModel` made equivariant: `TEVQModel.from_vq_model` computes exactly
the stock outputs, and `train_vqgan.py --pretrained_model_name_or_path STOCK_FOLDER` fine-tunes it
with the orthogonal term."""

import json

import pytest
import torch
from diffusers import VQModel
from train_helpers import load_training_script, tiny_train_args

from te_vqgan import TEVQModel


SMALL = dict(
    block_out_channels=(32, 64, 64),
    latent_channels=16,
    vq_embed_dim=16,
    num_vq_embeddings=32,
    norm_num_groups=8,
    sample_size=32,
)
LAYOUTS = [
    dict(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3),
    dict(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=2,
    ),
    dict(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        mid_block_add_attention=False,
    ),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_converted_model_computes_the_stock_outputs(layout, tmp_path):
    torch.manual_seed(0)
    stock = VQModel(**{**SMALL, **layout}).eval()
    te = TEVQModel.from_vq_model(stock, orthogonal_reg_weight=5.0).eval()
    assert te.computes_stock_network and te.config.orthogonal_reg_weight == 5.0
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = stock.encode(x).latents
        _, _, (_, _, indices) = stock.quantize(latents)
        ours = te.encode_to_indices(x)
        assert torch.equal(indices.reshape(ours.shape), ours)
        torch.testing.assert_close(te.decode_indices(ours), stock.decode(latents).sample, atol=1e-5, rtol=1e-5)
        # Saved, it keeps diffusers' names: the stock class loads it and computes the same.
        te.save_pretrained(tmp_path)
        again = VQModel.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(
            again.decode(again.encode(x).latents).sample, stock.decode(latents).sample, atol=1e-5, rtol=1e-5
        )


def test_bad_conversions_are_refused():
    torch.manual_seed(0)
    stock = VQModel(**SMALL, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    with pytest.raises(ValueError, match=r"only the loss settings .* \(got \['padding_mode'\]\)"):
        TEVQModel.from_vq_model(stock, padding_mode="replicate")
    with pytest.raises(ValueError, match="must be a stock diffusers.VQModel"):
        TEVQModel.from_vq_model(TEVQModel.from_vq_model(stock))
    with pytest.raises(ValueError, match="must be a stock diffusers.VQModel"):
        TEVQModel.from_vq_model("org/model")


@pytest.mark.slow
def test_train_vqgan_fine_tunes_a_stock_folder(tmp_path, mnist_dir):
    torch.manual_seed(0)
    stock = VQModel(
        block_out_channels=(8, 16, 16),
        latent_channels=8,
        vq_embed_dim=8,
        num_vq_embeddings=16,
        norm_num_groups=4,
        sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
    )
    stock.save_pretrained(tmp_path / "stock")
    script = load_training_script("train_vqgan")
    args = tiny_train_args(
        tmp_path / "unused.json", tmp_path / "run", mnist_dir, tmp_path / "cache", "--max_train_steps", "2"
    )
    args = list(args)
    at = args.index("--model_config")
    args[at : at + 2] = ["--pretrained_model_name_or_path", str(tmp_path / "stock")]
    result = script.main(script.parse_args(args))
    assert result.global_step == 2
    tuned = TEVQModel.from_pretrained(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (
        config["_class_name"] == "TEVQModel"
        and config["padding_mode"] == "zeros"
        and config["orthogonal_reg_weight"] == 10.0
    )
    assert config["down_block_types"] == ["DownEncoderBlock2D"] * 3  # still the stock network: loads in VQModel too
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "orthogonal_loss" in json.dumps(metrics) or "final_loss" in metrics
    assert not torch.equal(tuned.codebook, stock.quantize.embedding.weight)  # it was trained
    # The converted model's orthogonal weight is a flag (0: the control without the term).
    args[args.index(str(tmp_path / "run"))] = str(tmp_path / "run0")
    script.main(script.parse_args([*args, "--orthogonal_reg_weight", "0"]))
    assert json.loads((tmp_path / "run0" / "config.json").read_text())["orthogonal_reg_weight"] == 0.0


@pytest.mark.slow
def test_freeze_encoder_keeps_its_weights(tmp_path, mnist_dir):
    torch.manual_seed(0)
    stock = VQModel(
        block_out_channels=(8, 16, 16),
        latent_channels=8,
        vq_embed_dim=8,
        num_vq_embeddings=16,
        norm_num_groups=4,
        sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
    )
    stock.save_pretrained(tmp_path / "stock")
    script = load_training_script("train_vqgan")
    args = tiny_train_args(
        tmp_path / "unused.json",
        tmp_path / "run",
        mnist_dir,
        tmp_path / "cache",
        "--max_train_steps",
        "2",
        "--freeze_encoder",
    )
    at = args.index("--model_config")
    args[at : at + 2] = ["--pretrained_model_name_or_path", str(tmp_path / "stock")]
    script.main(script.parse_args(args))
    tuned = TEVQModel.from_pretrained(tmp_path / "run")
    for name, tensor in stock.encoder.state_dict().items():
        assert torch.equal(tuned.encoder.state_dict()[name], tensor), name
    assert any(not torch.equal(tuned.decoder.state_dict()[n], t) for n, t in stock.decoder.state_dict().items())
