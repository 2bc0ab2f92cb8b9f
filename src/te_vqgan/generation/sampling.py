"""Sampling images from captions (t2i) and captions from images (i2t) with `model.generate`.

Both directions are plain `GPT2LMHeadModel.generate` calls with top-k sampling (the authors
keep the top 10% of the vocabulary) and one extra logits processor,
`ModalityMaskLogitsProcessor`, which allows at each position only the ids the
`SequenceLayout` allows there. With it, a t2i sample is always exactly H * W image codes and an
i2t sample only ever holds caption words, however poorly the model is trained. In
transformers 5 a processor passed to `generate` runs after the built-in processors such as
`min_new_tokens` and before temperature and top-k, so top-k only ranks allowed ids.

`min_new_tokens` is set to N (not N + 1) for t2i: transformers bans the eos id (`<eoi>`) while
fewer than `min_new_tokens` tokens have been generated, so N + 1 would ban `<eoi>` at the
one position where the mask allows nothing else and every probability would be zero.

Example::

    >>> codes = generate_image_indices(model, tokenizer, tokenizer.encode_captions(["red 7."]),
    ...                                generator=torch.Generator().manual_seed(0))   # [1, H, W]
    >>> images = vqmodel.decode_indices(codes)
    >>> generate_captions(model, tokenizer, tokenizer.encode_image_indices(codes))   # a trained model
    ['the red 7.']

The i2t filler: `generate` drops an all-ones attention mask and appends the pad id to
captions that are done; GPT-2 would then see `<pad>` with no mask and warn that the input
"may be padded". So i2t generation fills with `<eot>` and turns the fill into `<pad>` after.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .layout import SequenceLayout
from .modeling import layout_from_config, position_ids_for


__all__ = [
    "ModalityMaskLogitsProcessor",
    "generate_caption_ids",
    "generate_captions",
    "generate_image_indices",
    "top_k_from_fraction",
]


class ModalityMaskLogitsProcessor(LogitsProcessor):
    """Keeps only the ids a `SequenceLayout` allows at the position being predicted.

    Adds `0` to the scores of allowed ids and `-inf` to all others. The position is
    `input_ids.shape[1]`: the index the next token will have in the sequence, which is the
    layout's position because prompts are never left-padded.

    Args:
        allowed (`torch.BoolTensor`): `[L, V]`, row `p` the ids allowed at position `p`
            (`layout.allowed_tokens(direction)`); every row needs at least one allowed id.

    Example::

        >>> processor = ModalityMaskLogitsProcessor.from_layout(layout, "t2i")
        >>> model.generate(prompt, logits_processor=LogitsProcessorList([processor]), ...)
    """

    def __init__(self, allowed: torch.Tensor):
        if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool or allowed.ndim != 2:
            shape = tuple(allowed.shape) if isinstance(allowed, torch.Tensor) else type(allowed).__name__
            raise ValueError(f"Expected `allowed` as a 2-D bool tensor [positions, vocab] (got {shape}).")
        empty = (~allowed.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"Positions {empty} allow no id at all; every position needs at least one allowed id.")
        # One additive row per position, built once; copies per (device, dtype) are cached so a
        # generation step costs one indexed add.
        self.mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, float("-inf"))
        self._copies: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_layout(cls, layout: SequenceLayout, direction: str) -> ModalityMaskLogitsProcessor:
        """The processor of `layout.allowed_tokens(direction)`."""
        return cls(layout.allowed_tokens(direction))

    @property
    def num_positions(self) -> int:
        return self.mask.shape[0]

    def _mask_like(self, scores: torch.Tensor) -> torch.Tensor:
        key = (scores.device, scores.dtype)
        if key not in self._copies:
            self._copies[key] = self.mask.to(device=scores.device, dtype=scores.dtype)
        return self._copies[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        position = input_ids.shape[1]
        if position >= self.num_positions:
            raise ValueError(
                f"Asked for the token at position {position}, past the layout's {self.num_positions} positions; "
                "generate fewer tokens."
            )
        if scores.shape[-1] != self.mask.shape[1]:
            raise ValueError(
                f"Scores cover {scores.shape[-1]} ids but the mask covers a vocabulary of {self.mask.shape[1]}."
            )
        # Every sequence of the batch is at the same position, so one row serves them all.
        return scores + self._mask_like(scores)[position]


def top_k_from_fraction(vocab_size: int, fraction: float = 0.1) -> int:
    """`k` of top-k sampling as a fraction of the vocabulary: `max(int(fraction * vocab_size), 1)`.

    Args:
        vocab_size (`int`): V.
        fraction (`float`, *optional*, defaults to `0.1`): in (0, 1]; the authors keep 10%.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"`vocab_size` must be a positive integer (got {vocab_size!r}).")
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1] (got {fraction!r}).")
    return max(int(fraction * vocab_size), 1)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _run_seeded(generator: torch.Generator | None, device: torch.device, sample: Callable[[], torch.Tensor]):
    # `generate` samples from the global RNG and takes no torch.Generator. So a seed is drawn
    # from `generator` and the sampling runs on a forked global RNG seeded with it: the same
    # generator state gives the same samples, and the caller's RNG state is restored after.
    if generator is None:
        return sample()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    cuda = device.type == "cuda"
    with ExitStack() as stack:
        if cuda:
            index = device.index if device.index is not None else torch.cuda.current_device()
            stack.enter_context(torch.random.fork_rng(devices=[index], device_type="cuda"))
            torch.random.default_generator.manual_seed(seed)
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        else:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.random.default_generator.manual_seed(seed)
        return sample()


def _check_sampling(temperature: float, top_k_fraction: float) -> None:
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"`temperature` must be a finite number > 0 (got {temperature!r}).")
    if not isinstance(top_k_fraction, (int, float)) or not 0 < top_k_fraction <= 1:
        raise ValueError(f"`top_k_fraction` must be in (0, 1] (got {top_k_fraction!r}).")


def _generate(
    model,
    prompt: torch.Tensor,
    processor: ModalityMaskLogitsProcessor,
    *,
    max_new_tokens: int,
    min_new_tokens: int | None,
    eos_token_id: int,
    pad_token_id: int,
    top_k_fraction: float,
    temperature: float,
    generator: torch.Generator | None,
    use_cache: bool,
    cache_implementation: str | None,
    position_ids: torch.Tensor | None = None,
) -> torch.LongTensor:
    device = _model_device(model)
    prompt = prompt.to(device)
    kwargs = dict(
        attention_mask=torch.ones_like(prompt),
        do_sample=True,
        top_k=top_k_from_fraction(model.config.vocab_size, top_k_fraction),
        temperature=float(temperature),
        logits_processor=LogitsProcessorList([processor]),
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=use_cache,
    )
    if min_new_tokens is not None:
        kwargs["min_new_tokens"] = min_new_tokens
    if cache_implementation is not None:
        kwargs["cache_implementation"] = cache_implementation
    if position_ids is not None:  # `generate` continues them by one per new token
        if not use_cache:
            # Measured with transformers 5.24: without the cache, `generate` does not feed the
            # given position ids to the forward, and a modality-position model would sample from
            # positions it never trained with.
            raise ValueError(
                "`use_cache=False` is not supported for a generator with `position_scheme='modality'`; "
                "sample with the KV cache (the default)."
            )
        kwargs["position_ids"] = position_ids.to(device)
    output = _run_seeded(generator, device, lambda: model.generate(prompt, **kwargs))
    return output[:, prompt.shape[1] :]


def generate_image_indices(
    model,
    tokenizer,
    text_ids: torch.Tensor,
    *,
    top_k_fraction: float = 0.1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    cache_implementation: str | None = None,
) -> torch.LongTensor:
    """Sample a VQ code map for each caption (text to image).

    Generates exactly N + 1 tokens after the `<t2i>` text `<boi>` prompt: the H * W image
    tokens and `<eoi>`.

    Args:
        model (`GPT2LMHeadModel`): a generator (`build_generator_config`).
        tokenizer (`TextImageTokenizer`): its tokenizer.
        text_ids (`torch.LongTensor`): `[B, T]` text blocks (`tokenizer.encode_captions`).
        top_k_fraction (`float`, *optional*, defaults to `0.1`): top-k sampling keeps
            `top_k_from_fraction(V, top_k_fraction)` ids (the authors: 10%).
        temperature (`float`, *optional*, defaults to `1.0`): > 0.
        generator (`torch.Generator`, *optional*): for reproducible samples. `generate` takes no
            generator, so a seed is drawn from it and sampling runs on a forked, seeded global
            RNG (CPU, and the model's CUDA device when on CUDA); the caller's global RNG state
            is left untouched.
        use_cache (`bool`, *optional*, defaults to `True`): reuse keys and values between steps.
        cache_implementation (`str`, *optional*): passed to `generate`, e.g. `"static"` (useful
            with `torch.compile` on CUDA).

    Returns:
        `torch.LongTensor` of shape `[B, H, W]`: codes in `[0, K)`, for `vqmodel.decode_indices`,
        on the device of `text_ids`.
    """
    _check_sampling(temperature, top_k_fraction)
    layout = layout_from_config(model.config, tokenizer)
    prompt = layout.t2i_prompt(text_ids)
    positions = position_ids_for(model.config, layout, "t2i", prompt.shape[1], prompt.shape[0], prompt.device)
    n = layout.num_image_tokens
    new = _generate(
        model,
        prompt,
        ModalityMaskLogitsProcessor.from_layout(layout, "t2i"),
        max_new_tokens=n + 1,
        # Not n + 1: see the module docstring (that would ban <eoi> where it is the only choice).
        min_new_tokens=n,
        eos_token_id=layout.eoi_id,
        pad_token_id=layout.pad_id,
        top_k_fraction=top_k_fraction,
        temperature=temperature,
        generator=generator,
        use_cache=use_cache,
        cache_implementation=cache_implementation,
        position_ids=positions,
    )
    image = new[:, :n]
    offset = layout.image_token_offset
    if (
        new.shape != (prompt.shape[0], n + 1)
        or not ((image >= offset) & (image < offset + layout.codebook_size)).all()
        or not (new[:, n] == layout.eoi_id).all()
    ):
        raise RuntimeError(
            f"t2i generation returned tokens of shape {tuple(new.shape)} that are not {n} image tokens and <eoi>; "
            "the modality mask makes this impossible, so this is a bug."
        )
    return tokenizer.decode_image_indices(image, grid=layout.image_grid).to(text_ids.device)


def generate_caption_ids(
    model,
    tokenizer,
    image_ids: torch.Tensor,
    *,
    top_k_fraction: float = 0.1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    cache_implementation: str | None = None,
) -> torch.LongTensor:
    """Sample caption tokens for each image (image to text).

    Continues the `<i2t>` `<boi>` image `<eoi>` `<bot>` prompt with up to `text_length - 1`
    tokens, stopping once every caption has its `<eot>`.

    Args:
        model (`GPT2LMHeadModel`): a generator (`build_generator_config`).
        tokenizer (`TextImageTokenizer`): its tokenizer.
        image_ids (`torch.LongTensor`): `[B, N]` image token ids (`tokenizer.encode_image_indices`).
        top_k_fraction, temperature, generator, use_cache, cache_implementation: as in
            `generate_image_indices`.

    Returns:
        `torch.LongTensor` of shape `[B, <= text_length - 1]`: caption words, then `<eot>`
        and `<pad>`s (a caption that reached the length limit has no `<eot>`), on the device
        of `image_ids`; read it with `tokenizer.decode_caption`.
    """
    _check_sampling(temperature, top_k_fraction)
    layout = layout_from_config(model.config, tokenizer)
    prompt = layout.i2t_prompt(image_ids)
    positions = position_ids_for(model.config, layout, "i2t", prompt.shape[1], prompt.shape[0], prompt.device)
    new = _generate(
        model,
        prompt,
        ModalityMaskLogitsProcessor.from_layout(layout, "i2t"),
        max_new_tokens=layout.text_length - 1,
        min_new_tokens=None,
        eos_token_id=layout.eot_id,
        # `generate` drops an all-ones attention mask and appends the pad id to finished
        # captions; GPT-2 then sees <pad> without a mask and warns that the input "may be
        # padded". Filling with <eot> instead avoids the false alarm; the fill is turned into
        # <pad> below.
        pad_token_id=layout.eot_id,
        top_k_fraction=top_k_fraction,
        temperature=temperature,
        generator=generator,
        use_cache=use_cache,
        cache_implementation=cache_implementation,
        position_ids=positions,
    ).to(image_ids.device)
    is_eot = new == layout.eot_id
    after_eot = (is_eot.long().cumsum(dim=1) - is_eot.long()) > 0
    new = new.masked_fill(after_eot, layout.pad_id)
    text_ids = torch.tensor(layout.text_word_ids + (layout.eot_id, layout.pad_id), device=new.device)
    if new.shape[1] > layout.text_length - 1 or not torch.isin(new, text_ids).all():
        raise RuntimeError(
            f"i2t generation returned tokens of shape {tuple(new.shape)} that are not only text tokens; "
            "the modality mask makes this impossible, so this is a bug."
        )
    return new


def generate_captions(
    model,
    tokenizer,
    image_ids: torch.Tensor,
    *,
    top_k_fraction: float = 0.1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    cache_implementation: str | None = None,
) -> list[str]:
    """`generate_caption_ids` decoded to strings with `tokenizer.decode_captions` (same arguments)."""
    ids = generate_caption_ids(
        model,
        tokenizer,
        image_ids,
        top_k_fraction=top_k_fraction,
        temperature=temperature,
        generator=generator,
        use_cache=use_cache,
        cache_implementation=cache_implementation,
    )
    return tokenizer.decode_captions(ids)
