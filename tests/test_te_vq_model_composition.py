"""`TEVQModel` built by composition: the folders saved when it was a patched `diffusers.VQModel` subclass
load with every weight and compute the same; its network comes from construction, not from patching;
its copied blocks compute what diffusers' compute."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from diffusers import ModelMixin, VQModel
from diffusers.configuration_utils import ConfigMixin
from diffusers.models import downsampling as diffusers_downsampling
from diffusers.models import resnet as diffusers_resnet
from diffusers.models import upsampling as diffusers_upsampling
from diffusers.models.autoencoders import vae as diffusers_vae
from safetensors.torch import load_file
from te_vq_fixtures import LAYOUTS, expected_outputs, materialise

from te_vqgan import TEVQModel
from te_vqgan.models import DOWNSAMPLE_TYPES, PADDING_MODES, BlurPool2d, Downsample
from te_vqgan.models.autoencoder import Decoder, Encoder


TINY = dict(
    block_out_channels=(2, 4, 4),
    norm_num_groups=2,
    latent_channels=4,
    vq_embed_dim=4,
    num_vq_embeddings=16,
    sample_size=16,
)
TE_BLOCKS = dict(
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
)


def public_config(folder: Path) -> dict:
    """config.json without its private keys (the diffusers version, where it was loaded from)."""
    return {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if not k.startswith("_")}


def images(batch=2, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def test_a_diffusers_model_of_its_own():
    assert issubclass(TEVQModel, ModelMixin) and issubclass(TEVQModel, ConfigMixin)
    assert not issubclass(TEVQModel, VQModel)
    model = TEVQModel(**TINY)
    assert type(model.encoder) is Encoder and type(model.decoder) is Decoder


# ------------------------------------------------------------------ the saved folders of before
@pytest.mark.parametrize("name", LAYOUTS)
def test_a_fixture_folder_loads_every_weight_and_computes_the_same(name, tmp_path):
    folder = materialise(name, tmp_path / "fixture")
    model, info = TEVQModel.from_pretrained(folder, output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}
    assert set(model.state_dict()) == set(load_file(folder / "diffusion_pytorch_model.safetensors"))
    expected = expected_outputs(name)
    x = expected["images"]
    model.eval()
    with torch.no_grad():
        latents = model.encode(x).latents
        indices = model.encode_to_indices(x)
        reconstruction = model.decode_indices(indices)
        out = model(x)
    assert torch.equal(indices, expected["indices"])
    torch.testing.assert_close(
        latents, expected["latents"], atol=1e-4, rtol=1e-4
    )  # float32 sums reorder with the thread count
    torch.testing.assert_close(
        reconstruction, expected["reconstruction"], atol=1e-4, rtol=1e-4
    )  # float32 sums reorder with the thread count
    assert torch.equal(out.indices, indices) and torch.equal(out.sample, reconstruction)

    # Saved again, the folder is the same: config (block type names included) and weights.
    model.save_pretrained(tmp_path / "saved")
    assert public_config(tmp_path / "saved") == public_config(folder)
    saved, original = (load_file(p / "diffusion_pytorch_model.safetensors") for p in (tmp_path / "saved", folder))
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)


def test_the_stock_layout_fixture_still_loads_in_diffusers_vqmodel(tmp_path):
    stock, info = VQModel.from_pretrained(materialise("stock_zeros", tmp_path), output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}
    expected = expected_outputs("stock_zeros")
    stock.eval()
    with torch.no_grad():
        latents = stock.encode(expected["images"]).latents
        _, _, (_, _, indices) = stock.quantize(latents)
        sample = stock.decode(latents).sample
    assert torch.equal(indices.reshape(expected["indices"].shape), expected["indices"])
    torch.testing.assert_close(
        latents, expected["latents"], atol=1e-4, rtol=1e-4
    )  # float32 sums reorder with the thread count
    torch.testing.assert_close(
        sample, expected["reconstruction"], atol=1e-4, rtol=1e-4
    )  # float32 sums reorder with the thread count


def test_a_te_fixture_is_still_refused_by_diffusers_vqmodel(tmp_path):
    with pytest.raises(ValueError, match=r"TEVQModel\.DownEncoderBlock2D does not exist"):
        VQModel.from_pretrained(materialise("te_default", tmp_path))


# ------------------------------------------------------------------ built, not patched
DIFFUSERS_PADDED_BLOCKS = (
    diffusers_downsampling.Downsample2D,
    diffusers_upsampling.Upsample2D,
    diffusers_resnet.ResnetBlock2D,
    diffusers_resnet.ResnetBlockCondNorm2D,
    diffusers_vae.Encoder,
    diffusers_vae.Decoder,
)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("downsample_type", DOWNSAMPLE_TYPES)
def test_padding_and_downsampling_come_from_construction(padding_mode, downsample_type, monkeypatch):
    built_with = {}  # id(conv) -> its padding_mode when its __init__ returned
    conv_init = nn.Conv2d.__init__

    def recording_init(self, *args, **kwargs):
        conv_init(self, *args, **kwargs)
        built_with[id(self)] = self.padding_mode

    monkeypatch.setattr(nn.Conv2d, "__init__", recording_init)
    model = TEVQModel(**TINY, padding_mode=padding_mode, downsample_type=downsample_type)
    monkeypatch.undo()

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    padded = [m for m in convs if any(p > 0 for p in m.padding)]
    assert padded and all(m.padding_mode == padding_mode for m in padded)
    assert all(built_with[id(m)] == m.padding_mode for m in convs)  # no conv was changed after its construction

    downsamplers = [block.downsamplers for block in model.encoder.down_blocks if block.downsamplers is not None]
    assert len(downsamplers) == 2 and all(len(d) == 1 and type(d[0]) is Downsample for d in downsamplers)
    assert all(d[0].downsample_type == downsample_type and d[0].padding_mode == padding_mode for d in downsamplers)
    assert all(blur.padding_mode == padding_mode for blur in model.modules() if isinstance(blur, BlurPool2d))
    assert not [type(m).__name__ for m in model.modules() if isinstance(m, DIFFUSERS_PADDED_BLOCKS)]


def test_an_unknown_block_type_is_refused_with_its_name():
    with pytest.raises(ValueError, match=r"`down_block_types` entries must be one of .* \(got 'DownBlock2D'\)"):
        TEVQModel(**TINY, down_block_types=("DownBlock2D",) * 3)
    with pytest.raises(ValueError, match=r"`up_block_types` entries must be one of .* \(got 'UpBlock2D'\)"):
        TEVQModel(**TINY, up_block_types=("UpBlock2D",) * 3)


# ------------------------------------------------------------------ the copies against diffusers' blocks
SYNC_LAYOUTS = {
    "attention": dict(TINY, **TE_BLOCKS),
    "two_layers_no_mid_attention": dict(
        TINY,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        mid_block_add_attention=False,
    ),
    # SpatialNorm has 32 groups of its own, hence the wider channels.
    "spatial_norm": dict(
        block_out_channels=(32, 64),
        norm_num_groups=8,
        latent_channels=4,
        vq_embed_dim=4,
        num_vq_embeddings=8,
        sample_size=8,
        norm_type="spatial",
        down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    ),
}


@pytest.mark.parametrize("layout", list(SYNC_LAYOUTS.values()), ids=list(SYNC_LAYOUTS))
def test_the_copied_blocks_compute_what_diffusers_blocks_compute(layout):
    torch.manual_seed(0)
    stock = VQModel(**layout)
    ours = TEVQModel.from_vq_model(stock)
    assert list(ours.state_dict()) == list(stock.state_dict())  # the same names, in the same order
    x = images(size=layout["sample_size"])
    for training in (False, True):  # the res blocks' shortcut differs between the two (contiguous)
        stock.train(training)
        ours.train(training)
        with torch.no_grad():
            latents = stock.encode(x).latents
            assert torch.equal(ours.encode(x).latents, latents)
            quant = ours.quantize.embed(ours.quantize.nearest_indices(latents))
            assert torch.equal(
                ours.decode(quant, force_not_quantize=True).sample, stock.decode(quant, force_not_quantize=True).sample
            )


def test_decode_takes_latents_quantized_or_not_as_diffusers_vqmodel_does():
    torch.manual_seed(0)
    model = TEVQModel(**TINY).eval()
    lookup = TEVQModel(**TINY, lookup_from_codebook=True).eval()  # `decode` then reads code indices
    lookup.load_state_dict(model.state_dict())
    x = images()
    with torch.no_grad():
        latents = model.encode(x).latents
        indices = model.encode_to_indices(x)
        expected = model.decode_indices(indices)
        decoded = model.decode(latents)
        assert torch.equal(decoded.sample, expected) and decoded.commit_loss.ndim == 0
        sample, commit_loss = model.decode(model.quantize.embed(indices), force_not_quantize=True, return_dict=False)
        assert torch.equal(sample, expected) and torch.equal(commit_loss, torch.zeros(2))
        batch, height, width = indices.shape
        looked_up = lookup.decode(indices.reshape(-1), force_not_quantize=True, shape=(batch, height, width, 4)).sample
        assert torch.equal(looked_up, expected)
        assert torch.equal(model.encode(x, return_dict=False)[0], latents)
