import json
from pathlib import Path

import pytest
import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin
from safetensors.torch import load_file
from tiny_configs import TINY_TEVQ

from te_vqgan import TEVQModel, TEVQModelOutput, orthogonal_loss, vq_loss
from te_vqgan.models import DOWNSAMPLE_TYPES, BlurPool2d, Downsample, binomial_filter


REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_model(**overrides) -> TEVQModel:
    torch.manual_seed(0)
    return TEVQModel(**{**TINY_TEVQ, **overrides}).eval()


def images(batch=2, size=16, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


def test_default_config_is_the_authors_stage1_model():
    model = TEVQModel()
    config = model.config
    assert isinstance(model, ModelMixin) and isinstance(
        model, ConfigMixin
    )  # a diffusers model (no longer a VQModel subclass)
    assert config.sample_size == 64 and config.num_vq_embeddings == 128 and config.vq_embed_dim == 256
    assert tuple(config.block_out_channels) == (128, 256, 256) and config.layers_per_block == 1
    assert config.downsample_type == "strided_conv" and config.padding_mode == "replicate"
    assert config.orthogonal_reg_weight == 10.0 and config.commitment_beta == 0.25
    assert model.downsample_factor == 4
    assert model.quantize.embedding.weight.shape == (128, 256)
    # Codebook init U(-1/K, 1/K).
    assert model.codebook.abs().max() <= 1 / 128
    with torch.no_grad():
        assert model.encode_to_indices(images(1, 64)).shape == (1, 16, 16)


def test_forward_returns_typed_output_and_tuple():
    model = tiny_model()
    x = images()
    out = model(x)
    assert isinstance(out, TEVQModelOutput)
    assert out.sample.shape == x.shape
    assert out.indices.shape == (2, 4, 4) and out.indices.dtype == torch.int64
    sample, indices, commit_loss, ortho = model(x, return_dict=False)
    assert torch.equal(sample, out.sample) and torch.equal(indices, out.indices)
    assert torch.equal(commit_loss, out.commit_loss) and torch.equal(ortho, out.orthogonal_loss)


def test_decode_of_encode_equals_eval_forward_sample():
    model = tiny_model()
    x = images(3)
    indices = model.encode_to_indices(x)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(indices, out.indices)
        assert torch.equal(model.decode_indices(indices), out.sample)


def test_losses_are_the_pure_functions_with_their_weights():
    model = tiny_model(orthogonal_reg_weight=3.0, commitment_beta=0.5)
    x = images()
    out = model(x)
    expected_ortho = 3.0 * orthogonal_loss(model.codebook)
    torch.testing.assert_close(out.orthogonal_loss, expected_ortho)
    latents = model.encode(x).latents
    z_q = model.quantize.embed(out.indices)
    torch.testing.assert_close(out.commit_loss, vq_loss(latents, z_q, 0.5))


def test_plain_vqgan_has_zero_orthogonal_term():
    out = tiny_model(orthogonal_reg_weight=0.0)(images())
    assert out.orthogonal_loss.item() == 0.0


def test_orthogonal_subset_uses_max_codes_random_codes():
    model = tiny_model(num_vq_embeddings=64, orthogonal_reg_max_codes=8)
    torch.manual_seed(5)
    first = model.compute_orthogonal_loss()
    torch.manual_seed(5)
    again = model.compute_orthogonal_loss()
    torch.manual_seed(5)
    subset = torch.randperm(64)[:8]
    assert torch.equal(first, again)
    torch.testing.assert_close(first, 10.0 * orthogonal_loss(model.codebook[subset]))


def test_training_step_reaches_codebook_encoder_and_decoder():
    model = tiny_model().train()
    out = model(images())
    loss = (out.sample - images()).abs().mean() + out.commit_loss + out.orthogonal_loss
    loss.backward()
    assert model.codebook.grad is not None and model.codebook.grad.abs().sum() > 0
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.decoder.conv_out.weight.grad.abs().sum() > 0


def test_replicate_padding_in_every_padded_conv():
    for mode in ("replicate", "zeros"):
        model = tiny_model(padding_mode=mode)
        padded = [
            m
            for m in list(model.encoder.modules()) + list(model.decoder.modules())
            if isinstance(m, torch.nn.Conv2d) and any(p > 0 for p in m.padding)
        ]
        assert padded and all(m.padding_mode == mode for m in padded)


@pytest.mark.parametrize("downsample_type", DOWNSAMPLE_TYPES)
def test_each_downsample_type_builds_and_round_trips(downsample_type, tmp_path):
    model = tiny_model(downsample_type=downsample_type)
    layers = [m for m in model.encoder.modules() if isinstance(m, Downsample)]
    assert len(layers) == 2 and all(layer.downsample_type == downsample_type for layer in layers)
    x = images()
    with torch.no_grad():
        expected = model(x)
    model.save_pretrained(tmp_path)
    loaded = TEVQModel.from_pretrained(tmp_path).eval()
    assert loaded.config.downsample_type == downsample_type
    with torch.no_grad():
        again = loaded(x)
    assert torch.equal(expected.sample, again.sample) and torch.equal(expected.indices, again.indices)


def test_save_pretrained_writes_config_and_safetensors(tmp_path):
    model = tiny_model(orthogonal_reg_max_codes=4, padding_mode="zeros")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "TEVQModel"
    assert config["padding_mode"] == "zeros" and config["orthogonal_reg_max_codes"] == 4
    weights = list(tmp_path.glob("*.safetensors"))
    assert len(weights) == 1 and not list(tmp_path.glob("*.bin"))
    state = load_file(weights[0])
    assert torch.equal(state["quantize.embedding.weight"], model.codebook.detach())
    loaded = TEVQModel.from_pretrained(tmp_path)

    def public(config):  # JSON turns tuples into lists; private keys record where it was loaded from
        return {k: v for k, v in json.loads(json.dumps(dict(config), default=str)).items() if not k.startswith("_")}

    assert public(loaded.config) == public(model.config)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_downsampling_layers_compute_what_the_paper_describes():
    import torch.nn.functional as F

    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    kernel = binomial_filter(5)[None, None].repeat(4, 1, 1, 1)

    def blur(t):  # 5x5 binomial, replicate pad 2, stride 2, per channel
        return F.conv2d(F.pad(t, (2, 2, 2, 2), mode="replicate"), kernel, stride=2, groups=4)

    sc = Downsample(4, "strided_conv")
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), sc.conv.weight, sc.conv.bias, stride=2)
    torch.testing.assert_close(sc(x), expected)

    sc_zeros = Downsample(4, "strided_conv", padding_mode="zeros")
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), sc_zeros.conv.weight, sc_zeros.conv.bias, stride=2)
    torch.testing.assert_close(sc_zeros(x), expected)

    cb = Downsample(4, "conv_blurpool")
    conv = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), cb.conv.weight, cb.conv.bias)
    torch.testing.assert_close(cb(x), blur(conv))

    torch.testing.assert_close(Downsample(4, "maxpool")(x), F.max_pool2d(x, 2, 2))
    torch.testing.assert_close(Downsample(4, "max_blurpool")(x), blur(F.max_pool2d(x, 2, stride=1)))
    for layer in (sc, cb, Downsample(4, "maxpool"), Downsample(4, "max_blurpool")):
        assert layer(x).shape == (2, 4, 4, 4)


def test_blur_filter_is_the_normalised_binomial():
    kernel = binomial_filter(5)
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    torch.testing.assert_close(kernel, torch.outer(row, row) / 256)
    blur = BlurPool2d(3)
    constant = torch.full((1, 3, 8, 8), 0.7)
    # A constant image stays constant (replicate padding, filter sums to 1) and halves in size.
    torch.testing.assert_close(blur(constant), torch.full((1, 3, 4, 4), 0.7))


@pytest.mark.parametrize("config_file", sorted((REPO_ROOT / "hub_configs").glob("*mnist*-small.json")))
def test_hub_configs_load_with_from_config(config_file):
    config = json.loads(config_file.read_text())
    model = TEVQModel.from_config(config)
    assert model.config.downsample_type == config["downsample_type"]
    assert model.config.orthogonal_reg_weight == config["orthogonal_reg_weight"]
    assert model.downsample_factor == 4


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda: images(channels=1), r"3 channels \(got 1"),
        (lambda: images(size=18), r"divisible by the downsampling factor 4 \(got 18x18\)"),
        (lambda: (images() * 127).to(torch.uint8), r"floating-point images.*torch.uint8"),
        (lambda: images()[0], r"\(batch, channels, height, width\).*\(3, 16, 16\)"),
        (lambda: images().index_fill(2, torch.tensor([0]), float("nan")), r"NaN or Inf"),
        (lambda: images().index_fill(2, torch.tensor([0]), float("inf")), r"NaN or Inf"),
    ],
)
def test_bad_images_raise_value_error(bad, message):
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        model.encode_to_indices(bad())
    with pytest.raises(ValueError, match=message):
        model(bad())


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((1, 4, 4), 16), r"\[0, 16\).*max 16"),
        (torch.full((1, 4, 4), -1), r"\[0, 16\).*min -1"),
        (torch.zeros(1, 4, 4), r"integer indices.*float32"),
        (torch.zeros(4, 4, dtype=torch.long), r"\(batch, height, width\)"),
    ],
)
def test_bad_indices_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_model().decode_indices(bad)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(downsample_type="avgpool"), r"downsample_type.*'avgpool'"),
        (dict(padding_mode="reflect"), r"padding_mode.*'reflect'"),
        (dict(orthogonal_reg_weight=-1.0), r"orthogonal_reg_weight.*-1.0"),
        (dict(orthogonal_reg_max_codes=1), r"orthogonal_reg_max_codes.*1"),
    ],
)
def test_bad_config_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        TEVQModel(**{**TINY_TEVQ, **overrides})
