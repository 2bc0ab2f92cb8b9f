"""The TEVQModel regression fixtures as text: weights that are a function of each state-dict key, and what the
pre-composition model computed with them.

Each folder under `tests/fixtures/te_vq_model/` holds the model's `config.json`, `weights.json` (every
state-dict key with its shape, and the few tensors that are not drawn from the key: the codebook spread over
the fixture images' latents, SimVQ's map) and `outputs.json` (latents, indices and reconstruction of
`fixture_images()`, computed at `FIXTURE_COMMIT`). `materialise` writes the folder a test loads: the same
config and a safetensors file of `fixture_weights`. No weight file is tracked; the weights are regenerated,
bit for bit, from the key names (one seeded generator per key, so no draw depends on another key or on
the order of the state dict).

Made by `tests/fixtures/make_te_vq_model_fixtures.py`, run with the model of `FIXTURE_COMMIT` on its path.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file
from tiny_configs import FIXTURE_TEVQ


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "te_vq_model"
# The pre-composition model (a patched `diffusers.VQModel` subclass) whose outputs the fixtures hold.
FIXTURE_COMMIT = "d797ee26223b8a3d507cdfd624e7b21ae59418eb"

# About 5k parameters each: block_out_channels (2, 4, 4), norm_num_groups 2, latent_channels 4,
# vq_embed_dim 4, num_vq_embeddings 16, sample_size 16 (tests/tiny_configs.py).
LAYOUTS = {
    # TE-VQGAN as the authors built it: replicate padding, strided-conv downsampling.
    "te_default": dict(FIXTURE_TEVQ),
    # Another downsampling (a conv with weights, then blur-pool) and two res blocks per level.
    "te_conv_blurpool": dict(FIXTURE_TEVQ, downsample_type="conv_blurpool", layers_per_block=2),
    # Max-pool + blur-pool, no mid-block attention, and the other codebook options (SimVQ weights).
    "te_max_blurpool_simvq": dict(
        FIXTURE_TEVQ,
        downsample_type="max_blurpool",
        mid_block_add_attention=False,
        codebook_lookup="cosine",
        codebook_parametrization="simvq",
    ),
    # Plain max-pool, no attention blocks at all.
    "te_maxpool_no_attention": dict(
        FIXTURE_TEVQ,
        downsample_type="maxpool",
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
    ),
    # diffusers' own network (zero padding, strided conv): the folder loads in a stock VQModel too;
    # latent_channels != vq_embed_dim so quant_conv / post_quant_conv change the width.
    "stock_zeros": dict(FIXTURE_TEVQ, padding_mode="zeros", latent_channels=3),
}


def fixture_images() -> torch.Tensor:
    """The fixed input every fixture's outputs are computed from: `(2, 3, 16, 16)` in [-1, 1]."""
    generator = torch.Generator().manual_seed(1234)
    return torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1


def key_generator(key: str) -> torch.Generator:
    """A generator seeded by the key's name alone (CRC-32), so that a tensor's values do not depend on the others."""
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def fixture_weights(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Float32 weights of a plausible scale for every key: convolutions and linears ~ N(0, 1 / fan-in), norm
    scales 1 + N(0, 0.1^2), biases N(0, 0.05^2)."""
    weights = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=key_generator(key))
        if len(shape) >= 2:
            fan_in = 1
            for size in shape[1:]:
                fan_in *= size
            weights[key] = noise / fan_in**0.5
        elif key.endswith(".weight"):
            weights[key] = 1 + 0.1 * noise
        else:
            weights[key] = 0.05 * noise
    return weights


def read_json(name: str, file: str) -> dict:
    record = json.loads((FIXTURES / name / file).read_text())
    if record["commit"] != FIXTURE_COMMIT or record["layout"] != name:
        raise ValueError(
            f"{FIXTURES / name / file} was made at {record['commit']} for {record['layout']!r}; "
            f"expected {FIXTURE_COMMIT} for {name!r}"
        )
    return record


def saved_weights(name: str) -> dict[str, torch.Tensor]:
    """The weights of fixture `name`: drawn from each key, with the tensors `weights.json` holds put in."""
    record = read_json(name, "weights.json")
    weights = fixture_weights(record["shapes"])
    for key, values in record["set"].items():
        weights[key] = torch.tensor(values, dtype=torch.float32).reshape(record["shapes"][key])
    return weights


def materialise(name: str, folder: Path) -> Path:
    """Write fixture `name` as a saved model folder (its config.json and a safetensors file) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / name / "config.json", folder / "config.json")
    save_file(saved_weights(name), folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    return folder


def expected_outputs(name: str) -> dict[str, torch.Tensor]:
    """What the model of `FIXTURE_COMMIT` computed from `fixture_images()` with `saved_weights(name)`."""
    record = read_json(name, "outputs.json")
    images = fixture_images()
    if abs(float(images.sum()) - record["images_sum"]) > 1e-3:
        raise ValueError(f"fixture_images() sums to {float(images.sum())}, not {record['images_sum']}")
    outputs = {"images": images, "indices": torch.tensor(record["indices"], dtype=torch.long)}
    for key in ("latents", "reconstruction"):
        outputs[key] = torch.tensor(record[key], dtype=torch.float32)
    return outputs
