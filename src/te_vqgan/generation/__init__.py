"""Stage 2: a stock `GPT2LMHeadModel` over captions and VQ codes, for text-to-image and image-to-text.

>>> from transformers import GPT2LMHeadModel
>>> from te_vqgan.generation import TextImageTokenizer, build_generator_config, generate_image_indices
>>> tokenizer = TextImageTokenizer.build(codebook_size=128, text_length=50)
>>> model = GPT2LMHeadModel(build_generator_config(tokenizer, image_grid=(16, 16)))
>>> codes = generate_image_indices(model, tokenizer, tokenizer.encode_captions(["the red 7."]))  # [1, 16, 16]
"""

from .layout import DIRECTIONS, POSITION_SCHEMES, SequenceLayout
from .modeling import (
    GENERATOR_CONFIG_KEYS,
    GeneratorLossOutput,
    build_generator_config,
    check_compatible,
    generator_loss,
    generator_loss_from_logits,
    init_image_positions_2d,
    layout_from_config,
    position_ids_for,
    position_scheme,
    sincos_2d,
    target_log_likelihood,
)
from .sampling import (
    GENERATION_CONFIG_FILES,
    GumbelSamplingLogitsProcessor,
    ModalityMaskLogitsProcessor,
    check_num_candidates,
    check_top_k_fraction,
    generate_caption_ids,
    generate_image_indices,
    generation_configs,
    top_k_from_fraction,
)
from .tokenizer import SPECIAL_TOKENS, TextImageTokenizer, image_token


__all__ = [
    "DIRECTIONS",
    "POSITION_SCHEMES",
    "GENERATION_CONFIG_FILES",
    "GENERATOR_CONFIG_KEYS",
    "GeneratorLossOutput",
    "GumbelSamplingLogitsProcessor",
    "ModalityMaskLogitsProcessor",
    "SPECIAL_TOKENS",
    "SequenceLayout",
    "TextImageTokenizer",
    "build_generator_config",
    "check_compatible",
    "check_num_candidates",
    "check_top_k_fraction",
    "generate_caption_ids",
    "generate_image_indices",
    "generation_configs",
    "generator_loss",
    "generator_loss_from_logits",
    "image_token",
    "init_image_positions_2d",
    "layout_from_config",
    "position_ids_for",
    "position_scheme",
    "sincos_2d",
    "target_log_likelihood",
    "top_k_from_fraction",
]
