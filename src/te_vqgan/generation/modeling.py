"""The stage-2 generator: a stock `transformers.GPT2LMHeadModel` over the merged vocabulary.

No custom model class: `build_generator_config` gives a `GPT2Config` that also records what
the model was trained with (`image_token_offset`, `codebook_size`, `image_grid`,
`text_length`), so `GPT2LMHeadModel.from_pretrained(path)` alone tells which tokenizer and
which VQ model it fits (`check_compatible`) and which `SequenceLayout` it reads
(`layout_from_config`).

The training objective (`generator_loss`) is the authors' weighted next-token cross-entropy:
each direction has a *target* modality (the image for t2i, the text for i2t) whose loss is
weighted `w` = 7 against the other modality's::

    loss = (other_loss + w * target_loss) / (1 + w)      # t2i: (text + 7 image) / 8

Logits are restricted to the ids the layout allows at the predicted position (the same
mask that `ModalityMaskLogitsProcessor` applies while sampling), so a text position never
spends probability on image tokens and vice versa; structural targets (`<boi>`, `<eoi>` ...)
are forced by that mask and left out of the loss, as are `<pad>` targets.

Example::

    >>> config = build_generator_config(tokenizer, image_grid=(16, 16))   # the authors' size
    >>> model = GPT2LMHeadModel(config)
    >>> layout = layout_from_config(config, tokenizer)
    >>> out = generator_loss(model, layout.t2i_sequence(text_ids, image_ids), layout, "t2i")
    >>> out.loss.backward()
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GPT2Config, PretrainedConfig

from ..models.quantizer import downsample_factor
from .layout import POSITION_SCHEMES, SequenceLayout, _check_direction, _check_scheme


__all__ = [
    "GENERATOR_CONFIG_KEYS",
    "GeneratorLossOutput",
    "build_generator_config",
    "check_compatible",
    "generator_loss",
    "generator_loss_from_logits",
    "init_image_positions_2d",
    "layout_from_config",
    "position_ids_for",
    "position_scheme",
    "sincos_2d",
    "target_log_likelihood",
]

# The keys `build_generator_config` adds to the GPT2Config, beyond GPT-2's own.
GENERATOR_CONFIG_KEYS = ("image_token_offset", "codebook_size", "image_grid", "text_length")

# Set by `build_generator_config` from the tokenizer and the grid; passing them as extra
# GPT-2 kwargs would make the config disagree with the tokenizer.
_DERIVED_KEYS = (
    "vocab_size",
    "n_positions",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "position_scheme",
) + GENERATOR_CONFIG_KEYS


@dataclass
class GeneratorLossOutput:
    """The output of `generator_loss`.

    Args:
        loss (`torch.FloatTensor`): the weighted loss to optimise, a scalar.
        text_loss (`torch.FloatTensor`): mean cross-entropy over the text targets (words and `<eot>`).
        image_loss (`torch.FloatTensor`): mean cross-entropy over the image targets.
    """

    loss: torch.Tensor
    text_loss: torch.Tensor
    image_loss: torch.Tensor


def position_scheme(config: PretrainedConfig) -> str:
    """The generator's position scheme (`SequenceLayout.position_ids`): `config.position_scheme`,
    `"index"` for configs saved before it existed."""
    return getattr(config, "position_scheme", "index")


def position_ids_for(
    config: PretrainedConfig, layout: SequenceLayout, direction: str, length: int, batch: int, device
):
    """`[batch, length]` position ids of the first `length` tokens of `direction` sequences for a
    generator with `config`, or `None` under the `"index"` scheme (GPT-2's own positions)."""
    if position_scheme(config) == "index":
        return None
    return layout.position_ids(direction, position_scheme(config))[:length].to(device).expand(batch, -1)


def build_generator_config(
    tokenizer,
    image_grid: tuple[int, int],
    n_embd: int = 256,
    n_layer: int = 8,
    n_head: int = 8,
    position_scheme: str = "index",
    **gpt2_kwargs,
) -> GPT2Config:
    """The `GPT2Config` of a generator for `tokenizer` and an `image_grid` code map.

    Args:
        tokenizer (`TextImageTokenizer`): gives the vocabulary size, the text length and the
            special token ids.
        image_grid (`tuple[int, int]`): (H, W), the VQ model's code map (16 x 16 for the
            authors' 64 x 64 canvases and f = 4).
        n_embd (`int`, *optional*, defaults to `256`): hidden size (the authors' model).
        n_layer (`int`, *optional*, defaults to `8`): transformer blocks.
        n_head (`int`, *optional*, defaults to `8`): attention heads; must divide `n_embd`.
        position_scheme (`str`, *optional*, defaults to `"index"`): `"index"` (a token's position
            is its index in the sequence) or `"modality"` (positions counted inside each
            modality and shared by both directions, as the authors do; see
            `SequenceLayout.position_ids`). Stored in the config.
        gpt2_kwargs: any other `GPT2Config` argument (`resid_pdrop`, `n_inner`, ...). The
            activation defaults to `"gelu_pytorch_tanh"`: GPT-2's own tanh GELU (`"gelu_new"`,
            the same function to 2.4e-7) computed by torch's fused kernel instead of five
            elementwise operations: forward + backward of the cpu preset's generator 1.26x
            faster on one CPU thread (`benchmarks/bench_train_generator.py`).

    Returns:
        `GPT2Config` with `vocab_size = len(tokenizer)`, `n_positions` = the sequence length,
        `<bot>`/`<eot>`/`<pad>` as bos/eos/pad ids, and the extra keys `image_token_offset`,
        `codebook_size`, `image_grid` ([H, W]) and `text_length`.
    """
    for name, value in (("n_embd", n_embd), ("n_layer", n_layer), ("n_head", n_head)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer (got {value!r}).")
    if n_embd % n_head:
        raise ValueError(f"`n_embd` must be divisible by `n_head` (got `n_embd`: {n_embd} and `n_head`: {n_head}).")
    reserved = sorted(set(gpt2_kwargs) & set(_DERIVED_KEYS))
    if reserved:
        raise ValueError(
            f"{reserved} are set from the tokenizer and `image_grid`; do not pass them to `build_generator_config`."
        )
    _check_scheme(position_scheme)
    layout = SequenceLayout.from_tokenizer(
        tokenizer, tuple(image_grid) if isinstance(image_grid, list) else image_grid
    )
    gpt2_kwargs = {"activation_function": "gelu_pytorch_tanh", **gpt2_kwargs}
    return GPT2Config(
        vocab_size=layout.vocab_size,
        n_positions=layout.num_position_rows(position_scheme),
        position_scheme=position_scheme,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=layout.bot_id,
        eos_token_id=layout.eot_id,
        pad_token_id=layout.pad_id,
        image_token_offset=layout.image_token_offset,
        codebook_size=layout.codebook_size,
        image_grid=list(layout.image_grid),
        text_length=layout.text_length,
        **gpt2_kwargs,
    )


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """`[height * width, dim]` 2-D sine-cosine position codes, row-major: the first half of the
    channels encode the row, the second half the column, each as sines then cosines of
    `dim / 4` frequencies `1 / 10000^(i / (dim / 4))` (the Transformer's 1-D code per axis, as
    MAE and the authors' fixed image positions). `dim` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine positions need a width divisible by 4 (got {dim}).")
    quarter = dim // 4
    frequencies = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for axis in (rows.flatten(), columns.flatten()):
        angles = axis[:, None] * frequencies[None]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


@torch.no_grad()
def init_image_positions_2d(model, layout: SequenceLayout, direction: str = "t2i") -> None:
    """Start the rows of a GPT-2's learned position table (`model.transformer.wpe`) that hold
    `direction`'s image block as 2-D sine-cosine codes of each token's (row, column), scaled to
    the table's initial standard deviation (`config.initializer_range`), so that neighbouring
    codes in the image start with similar positions. The table stays a stock, learnt
    `nn.Embedding`; only its starting values change.

    Under the `"modality"` position scheme both directions share these rows. Under `"index"`
    the two directions put their image blocks at overlapping rows of the one table (t2i after
    the text block, i2t right after `<i2t> <boi>`), so only `direction`'s rows are set:
    text-to-image is the one that must place what it draws.
    """
    _check_direction(direction)
    table = model.transformer.wpe.weight
    height, width = layout.image_grid
    codes = sincos_2d(height, width, table.shape[1])
    codes = codes / codes.std() * model.config.initializer_range
    rows = layout.position_ids(direction, position_scheme(model.config))[layout.image_positions(direction)]
    table[rows] = codes.to(table.dtype)


def _vq_grid(vqmodel) -> tuple[int, int]:
    factor = downsample_factor(vqmodel.config)
    size = vqmodel.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return height // factor, width // factor


def check_compatible(tokenizer, config: PretrainedConfig, vqmodel=None) -> None:
    """Raise a `ValueError` listing every way `tokenizer`, `config` and `vqmodel` disagree.

    Args:
        tokenizer (`TextImageTokenizer`): the merged tokenizer.
        config (`GPT2Config`): a generator's config (`model.config`), made by `build_generator_config`.
        vqmodel (`TEVQModel` or `diffusers.VQModel`, *optional*): the stage-1 model whose codes
            the generator reads and writes; its codebook size and code-map size are checked too.
    """
    if not isinstance(config, PretrainedConfig):
        raise ValueError(f"Expected a transformers config such as `model.config` (got {type(config).__name__}).")
    missing = [key for key in GENERATOR_CONFIG_KEYS if not hasattr(config, key)]
    if missing:
        raise ValueError(
            f"The config has no {missing}: it was not made by `build_generator_config`, so it cannot be checked "
            "against a tokenizer."
        )
    problems = []

    def compare(what: str, config_value, other_name: str, other_value) -> None:
        if config_value != other_value:
            problems.append(f"{what}: config has {config_value!r} but {other_name} has {other_value!r}")

    compare("vocabulary size", config.vocab_size, "len(tokenizer)", len(tokenizer))
    compare("codebook_size", config.codebook_size, "the tokenizer", tokenizer.codebook_size)
    compare("text_length", config.text_length, "the tokenizer", tokenizer.text_length)
    compare("image_token_offset", config.image_token_offset, "the tokenizer", tokenizer.image_token_offset)
    compare("pad_token_id", config.pad_token_id, "the tokenizer", tokenizer.pad_token_id)
    compare("bos_token_id", config.bos_token_id, "the tokenizer", tokenizer.bos_token_id)
    compare("eos_token_id", config.eos_token_id, "the tokenizer", tokenizer.eos_token_id)
    grid = list(config.image_grid)
    scheme = position_scheme(config)
    if scheme not in POSITION_SCHEMES:
        problems.append(f"position_scheme: config has {scheme!r}, expected one of {POSITION_SCHEMES}")
    needed = config.text_length + math.prod(grid) + (4 if scheme == "modality" else 3)
    if config.n_positions < needed:
        problems.append(
            f"n_positions: config has {config.n_positions} but text_length {config.text_length}, "
            f"image_grid {grid} and position_scheme {scheme!r} need {needed}"
        )
    if vqmodel is not None:
        vq_codes = vqmodel.config.num_vq_embeddings
        compare("codebook_size", config.codebook_size, "vqmodel.config.num_vq_embeddings", vq_codes)
        compare("image_grid", grid, "the VQ model (sample_size // downsample factor)", list(_vq_grid(vqmodel)))
    if problems:
        raise ValueError("The generator does not fit its tokenizer or VQ model: " + "; ".join(problems) + ".")


def layout_from_config(config: PretrainedConfig, tokenizer) -> SequenceLayout:
    """The `SequenceLayout` a generator with `config` reads, after `check_compatible(tokenizer, config)`."""
    check_compatible(tokenizer, config)
    return SequenceLayout.from_tokenizer(tokenizer, tuple(config.image_grid))


def _masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    # logits [B, P, V] predicting targets [B, P]; allowed [P, V]. Float32 first: in bf16 the
    # masked log-softmax would lose the small probabilities, and -inf is only added to a row
    # that still has allowed (finite) entries, so it never makes a NaN.
    logits = logits.float().masked_fill(~allowed.to(logits.device), float("-inf"))
    log_probs = F.log_softmax(logits, dim=-1)
    return -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def generator_loss_from_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    layout: SequenceLayout,
    direction: str,
    target_weight: float = 7.0,
) -> GeneratorLossOutput:
    """The weighted, modality-masked next-token loss of `[B, L, V]` logits (see the module docstring).

    The logits at position `p` predict token `p + 1` and may only put probability on
    `layout.allowed_tokens(direction)[p + 1]`. The text loss averages over the words and
    `<eot>` of all text blocks (`<pad>` targets are skipped), the image loss over all image
    targets; structural targets are forced by the mask and skipped.

    Args:
        logits (`torch.FloatTensor`): `[B, L, V]`, any float dtype (the loss is computed in float32).
        input_ids (`torch.LongTensor`): `[B, L]` sequences of `layout.t2i_sequence` / `i2t_sequence`.
        layout (`SequenceLayout`): the layout the sequences follow.
        direction (`str`): `"t2i"` or `"i2t"`.
        target_weight (`float`, *optional*, defaults to `7.0`): w, the weight of the target
            modality (the image for t2i, the text for i2t); the authors use 7.
    """
    _check_direction(direction)
    if not isinstance(target_weight, (int, float)) or not math.isfinite(target_weight) or target_weight < 0:
        raise ValueError(f"`target_weight` must be a finite number >= 0 (got {target_weight!r}).")
    layout.check_sequence(input_ids, direction)
    if input_ids.shape[1] != layout.sequence_length:
        raise ValueError(
            f"Expected full {direction} sequences of length {layout.sequence_length} "
            f"(got shape {tuple(input_ids.shape)})."
        )
    expected = (*input_ids.shape, layout.vocab_size)
    if tuple(logits.shape) != expected:
        raise ValueError(f"Expected logits of shape {expected} (got {tuple(logits.shape)}).")

    allowed = layout.allowed_tokens(direction)
    input_ids = input_ids.long()

    image = layout.image_positions(direction)
    image_ce = _masked_cross_entropy(logits[:, image.start - 1 : image.stop - 1], input_ids[:, image], allowed[image])
    image_loss = image_ce.mean()

    text = layout.text_positions(direction)
    text_targets = input_ids[:, text]
    text_ce = _masked_cross_entropy(logits[:, text.start - 1 : text.stop - 1], text_targets, allowed[text])
    # Indexing (not multiplying by a 0/1 weight): a <pad> target is disallowed, so its CE is inf.
    text_loss = text_ce[text_targets != layout.pad_id].mean()

    target, other = (image_loss, text_loss) if direction == "t2i" else (text_loss, image_loss)
    loss = (other + target_weight * target) / (1 + target_weight)
    return GeneratorLossOutput(loss=loss, text_loss=text_loss, image_loss=image_loss)


def generator_loss(
    model,
    input_ids: torch.Tensor,
    layout: SequenceLayout,
    direction: str,
    target_weight: float = 7.0,
) -> GeneratorLossOutput:
    """One forward of `model` on `[B, L]` sequences and their weighted, masked next-token loss.

    All tokens are attended (the attention mask is all ones, `<pad>` included: see the layout's
    position scheme), so positions are those the model sees when it generates.

    Args:
        model (`GPT2LMHeadModel`): the generator.
        input_ids (`torch.LongTensor`): `[B, L]` sequences of `layout.t2i_sequence` / `i2t_sequence`.
        layout (`SequenceLayout`): the layout the sequences follow (`layout_from_config`).
        direction (`str`): `"t2i"` or `"i2t"`.
        target_weight (`float`, *optional*, defaults to `7.0`): w, see `generator_loss_from_logits`.

    Returns:
        `GeneratorLossOutput` with `loss` = `(other + w * target) / (1 + w)`, `text_loss` and `image_loss`.
    """
    return generator_loss_from_logits(
        _logits(model, input_ids, layout, direction), input_ids, layout, direction, target_weight
    )


def _logits(model, input_ids: torch.Tensor, layout: SequenceLayout, direction: str) -> torch.Tensor:
    # Checked before the forward so a malformed batch fails with the layout's message.
    layout.check_sequence(input_ids, direction)
    attention_mask = torch.ones_like(input_ids)
    batch, length = input_ids.shape
    # Under DDP (`accelerate launch`) the model is wrapped; its positions are the inner model's.
    config = getattr(model, "module", model).config
    positions = position_ids_for(config, layout, direction, length, batch, input_ids.device)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits


def target_log_likelihood(model, input_ids: torch.Tensor, layout: SequenceLayout, direction: str) -> torch.Tensor:
    """`[B]`: the log-probability `model` gives each sequence's target modality after its source,
    `log p(image | caption)` for t2i sequences and `log p(caption | image)` for i2t ones.

    The sum over the target tokens of the masked log-softmax `generator_loss` trains (the image
    codes; the caption's words and `<eot>`, `<pad>` left out), in float32. A caption without
    `<eot>` is scored over the words it has.

    Args:
        model (`GPT2LMHeadModel`): the generator.
        input_ids (`torch.LongTensor`): `[B, L]` full sequences of `layout.t2i_sequence` / `i2t_sequence`.
        layout (`SequenceLayout`): the layout the sequences follow.
        direction (`str`): `"t2i"` or `"i2t"`.
    """
    _check_direction(direction)
    if input_ids.dim() != 2 or input_ids.shape[1] != layout.sequence_length:
        raise ValueError(
            f"Expected full {direction} sequences of length {layout.sequence_length} (got shape {tuple(input_ids.shape)})."
        )
    logits = _logits(model, input_ids, layout, direction)
    input_ids = input_ids.long()
    target = layout.image_positions(direction) if direction == "t2i" else layout.text_positions(direction)
    targets = input_ids[:, target]
    allowed = layout.allowed_tokens(direction)[target]
    nll = _masked_cross_entropy(logits[:, target.start - 1 : target.stop - 1], targets, allowed)
    # Selecting (not multiplying by a 0/1 weight): a <pad> target is disallowed, so its NLL is inf.
    return -torch.where(targets == layout.pad_id, torch.zeros_like(nll), nll).sum(dim=1)
