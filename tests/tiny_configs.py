"""Tiny model configs for fast CPU tests (seconds, not minutes): the one place tests take them from."""

# f=4 like the authors' model, so the metric's 16-pixel shifts are multiples of f.
TINY_TEVQ = dict(
    block_out_channels=(8, 16, 16),
    latent_channels=8,
    vq_embed_dim=8,
    num_vq_embeddings=16,
    norm_num_groups=4,
    sample_size=16,
)

# TINY_TEVQ as a `--model_config` / `TEVQModel` JSON file for 64x64 TextMNIST images (the
# training, tokenising and pipeline tests).
TINY_MODEL_CONFIG = {"_class_name": "TEVQModel", **TINY_TEVQ, "sample_size": 64}

# The regression fixtures' base layout (tests/fixtures/make_te_vq_model_fixtures.py), about 5k
# parameters (~20 KB of float32 weights): channels (2, 4, 4) so f = 4, a 1x1 shortcut (2 -> 4
# channels) and attention in the last encoder level, the first decoder level and the mid block.
FIXTURE_TEVQ = dict(TINY_TEVQ, block_out_channels=(2, 4, 4), norm_num_groups=2, latent_channels=4, vq_embed_dim=4)

TINY_STOCK_VQ = dict(
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 16),
    latent_channels=4,
    num_vq_embeddings=16,
    norm_num_groups=4,
    sample_size=16,
)
