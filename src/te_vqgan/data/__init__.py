"""Data: the MNIST IDX reader, the canvas layout, the TextMNIST builder and its caption grammar."""

from .captions import (
    CaptionGrammar,
    Triplet,
    caption_vocabulary,
    detokenize_caption,
    generate_captions,
    get_grammar,
    parse_caption,
    render_caption,
    tokenize_caption,
)
from .layout import (
    CANVAS_SIZE,
    CELL_ORIGINS,
    COLOUR_RGB,
    COLOURS,
    LOCATIONS,
    QUADRANTS,
    index_cell,
    render_canvas,
)
from .mnist import (
    MNIST_VARIANTS,
    ChecksumError,
    load_mnist,
    read_idx,
    read_mnist_split,
    resolve_mnist_files,
    verify_file,
)
from .splits import HELD_OUT_COMBINATIONS, SOURCE_POOLS, SPLITS
from .textmnist import TextMNIST, TextMNISTConfig


__all__ = [
    "CANVAS_SIZE",
    "CELL_ORIGINS",
    "COLOURS",
    "COLOUR_RGB",
    "CaptionGrammar",
    "ChecksumError",
    "HELD_OUT_COMBINATIONS",
    "LOCATIONS",
    "MNIST_VARIANTS",
    "QUADRANTS",
    "SOURCE_POOLS",
    "SPLITS",
    "TextMNIST",
    "TextMNISTConfig",
    "Triplet",
    "caption_vocabulary",
    "detokenize_caption",
    "generate_captions",
    "get_grammar",
    "index_cell",
    "load_mnist",
    "parse_caption",
    "read_idx",
    "read_mnist_split",
    "render_canvas",
    "render_caption",
    "resolve_mnist_files",
    "tokenize_caption",
    "verify_file",
]
