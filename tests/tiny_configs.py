"""Tiny model configs for fast CPU tests (seconds, not minutes)."""

# f=4 like the authors' model, so the metric's 16-pixel shifts are multiples of f.
TINY_TEVQ = dict(
    block_out_channels=(8, 16, 16),
    latent_channels=8,
    vq_embed_dim=8,
    num_vq_embeddings=16,
    norm_num_groups=4,
    sample_size=16,
)

TINY_STOCK_VQ = dict(
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(8, 16, 16),
    latent_channels=4,
    num_vq_embeddings=16,
    norm_num_groups=4,
    sample_size=16,
)
