"""Sampling images from captions (t2i) and captions from images (i2t) with `model.generate`.

Both directions are plain `GPT2LMHeadModel.generate` calls with two logits processors:
`ModalityMaskLogitsProcessor`, which allows at each position only the ids the `SequenceLayout`
allows there, then `GumbelSamplingLogitsProcessor`, which does top-k, temperature sampling
(the authors keep the top 10% of the vocabulary) with the caller's `torch.Generator`s, one for
the batch or one per sequence, by adding Gumbel noise before a greedy pick. With the mask, a
t2i sample is always exactly H * W image codes and an i2t sample only ever holds caption words,
however poorly the model is trained; top-k only ranks allowed ids. In transformers 5 the
processors passed to `generate` run after the built-in ones such as `min_new_tokens`.

The stock path needs no te-vqgan code beyond the mask: a saved generator folder holds
`t2i_generation_config.json` and `i2t_generation_config.json` (`generation_configs`), for
`model.generate(prompt, generation_config=..., logits_processor=[ModalityMaskLogitsProcessor(...)])`.

`min_new_tokens` is set to N (not N + 1) for t2i: transformers bans the eos id (`<eoi>`) while
fewer than `min_new_tokens` tokens have been generated, so N + 1 would ban `<eoi>` at the
one position where the mask allows nothing else and every probability would be zero.

Example::

    >>> codes = generate_image_indices(model, tokenizer, tokenizer.encode_captions(["red 7."]),
    ...                                generator=torch.Generator().manual_seed(0))   # [1, H, W]
    >>> images = vqmodel.decode_indices(codes)
    >>> ids = generate_caption_ids(model, tokenizer, tokenizer.encode_image_indices(codes))
    >>> tokenizer.decode_captions(ids)   # a trained model
    ['the red 7.']

The i2t filler: `generate` drops an all-ones attention mask and appends the pad id to
captions that are done; GPT-2 would then see `<pad>` with no mask and warn that the input
"may be padded". So i2t generation fills with `<eot>` and turns the fill into `<pad>` after.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .layout import SequenceLayout
from .modeling import layout_from_config, position_ids_for, target_log_likelihood


__all__ = [
    "GENERATION_CONFIG_FILES",
    "GumbelSamplingLogitsProcessor",
    "ModalityMaskLogitsProcessor",
    "check_num_candidates",
    "check_top_k_fraction",
    "generate_caption_ids",
    "generate_image_indices",
    "generation_configs",
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
    check_top_k_fraction(fraction, "`fraction`")
    return max(int(fraction * vocab_size), 1)


def check_top_k_fraction(fraction: float, name: str = "`top_k_fraction`") -> None:
    """ValueError unless `fraction` (of the vocabulary kept by top-k sampling) is a number in
    (0, 1]; the message names it `name` (e.g. `"--top-k-fraction"` for a flag)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"{name} must be in (0, 1] (got {fraction!r}).")


def check_temperature(temperature: float, name: str = "`temperature`") -> None:
    """ValueError unless the sampling `temperature` is a finite number > 0; the message names it `name`."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0 (got {temperature!r}).")


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _check_generators(generator, batch: int) -> None:
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(
            f"`generator` must be a torch.Generator or a list of them, one per sequence (got {type(generator).__name__})."
        )
    if len(generator) != batch:
        raise ValueError(
            f"Got a list of {len(generator)} generators for {batch} sequences; give one per sequence (or a single one)."
        )


def check_num_candidates(num_candidates: int, name: str = "`num_candidates`") -> None:
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"{name} must be an integer >= 1 (got {num_candidates!r}).")


def _candidates(prompt: torch.Tensor, generator, num_candidates: int):
    """The prompt rows repeated `num_candidates` times (candidates of one input adjacent) and their
    generators: a list of one per input becomes one per candidate, each seeded from its input's
    generator, so that an input's candidates depend only on that input's generator."""
    _check_generators(generator, prompt.shape[0])
    if num_candidates == 1:
        return prompt, generator
    if isinstance(generator, (list, tuple)):
        generator = [
            torch.Generator(g.device).manual_seed(int(torch.randint(2**62, (), generator=g, device=g.device)))
            for g in generator
            for _ in range(num_candidates)
        ]
    return prompt.repeat_interleave(num_candidates, dim=0), generator


def _best_candidates(scores: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """Row indices of the highest-scoring candidate of each input (`scores`: `[B * num_candidates]`)."""
    best = scores.view(-1, num_candidates).argmax(dim=1)
    return torch.arange(best.shape[0], device=best.device) * num_candidates + best


class GumbelSamplingLogitsProcessor(LogitsProcessor):
    """Top-k, temperature sampling as a logits processor, for `generate(do_sample=False)`.

    `generate` samples from the global RNG and takes no `torch.Generator`. This processor instead
    adds Gumbel noise to the temperature-scaled, top-k-filtered scores, so that the greedy pick
    is a sample of `softmax(scores / temperature)` over the top k (the Gumbel-max trick). The noise
    comes from `generator`: one for the whole batch, or a list with one per sequence, in which case
    a sequence's sample depends only on its own generator and prompt, never on the batch's other
    members. Without a generator the noise comes from the global RNG.

    Args:
        top_k (`int`): ids kept at each step (`top_k_from_fraction`).
        temperature (`float`): > 0.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*).
        on_step (`Callable[[int, torch.LongTensor, torch.FloatTensor], torch.FloatTensor | None]`, *optional*):
            called at every step with the step index, the tokens so far and the filtered scores
            (before the noise); a tensor it returns replaces the scores.
    """

    def __init__(self, top_k: int, temperature: float, generator=None, on_step: Callable | None = None):
        self.top_k = int(top_k)
        self.temperature = float(temperature)
        self.generator = generator
        self.on_step = on_step
        self.step = 0

    def _noise(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        if isinstance(self.generator, (list, tuple)):
            uniform = torch.stack([torch.rand(shape[-1], generator=g, device=g.device) for g in self.generator])
        else:
            where = self.generator.device if self.generator is not None else device
            uniform = torch.rand(shape, generator=self.generator, device=where)
        return -torch.log(-torch.log(uniform.to(device)))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.on_step is not None:
            replaced = self.on_step(self.step, input_ids, scores)
            if replaced is not None:
                if not isinstance(replaced, torch.Tensor) or replaced.shape != scores.shape:
                    raise ValueError(
                        f"The step callback returned scores of shape "
                        f"{tuple(replaced.shape) if isinstance(replaced, torch.Tensor) else type(replaced).__name__}; "
                        f"expected a tensor of shape {tuple(scores.shape)}."
                    )
                scores = replaced.float()
        self.step += 1
        return scores + self._noise(scores.shape, scores.device)


def _check_sampling(temperature: float, top_k_fraction: float) -> None:
    check_temperature(temperature)
    check_top_k_fraction(top_k_fraction)


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
    generator,
    use_cache: bool,
    cache_implementation: str | None,
    position_ids: torch.Tensor | None = None,
    on_step: Callable | None = None,
) -> torch.LongTensor:
    _check_generators(generator, prompt.shape[0])
    device = _model_device(model)
    prompt = prompt.to(device)
    sampler = GumbelSamplingLogitsProcessor(
        top_k_from_fraction(model.config.vocab_size, top_k_fraction), temperature, generator, on_step
    )
    # Greedy over the sampler's noisy scores is sampling; an explicit config keeps the model's own
    # sampling defaults (generation_config.json, for the stock `generate()` path) out of it.
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=model.config.bos_token_id,
        use_cache=use_cache,
        cache_implementation=cache_implementation,
    )
    kwargs = dict(
        attention_mask=torch.ones_like(prompt),
        generation_config=config,
        logits_processor=LogitsProcessorList([processor, sampler]),
    )
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
    output = model.generate(prompt, **kwargs)
    return output[:, prompt.shape[1] :]


def generate_image_indices(
    model,
    tokenizer,
    text_ids: torch.Tensor,
    *,
    top_k_fraction: float = 0.1,
    temperature: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    use_cache: bool = True,
    cache_implementation: str | None = None,
    on_step: Callable | None = None,
    num_candidates: int = 1,
) -> torch.LongTensor:
    """Sample a VQ code map for each caption (text to image).

    Generates exactly N + 1 tokens after the `<t2i>` text `<boi>` prompt: the H * W image
    tokens and `<eoi>`. With `num_candidates` > 1 it samples that many code maps per caption
    and keeps the one the generator's image-to-text direction finds likeliest to carry the caption
    (`log p(caption | image)`, `target_log_likelihood`): the bidirectional generator reranks its
    own samples, as DALL-E reranks with CLIP, with no second model.

    Args:
        model (`GPT2LMHeadModel`): a generator (`build_generator_config`).
        tokenizer (`TextImageTokenizer`): its tokenizer.
        text_ids (`torch.LongTensor`): `[B, T]` text blocks (`tokenizer.encode_captions`).
        top_k_fraction (`float`, *optional*, defaults to `0.1`): top-k sampling keeps
            `top_k_from_fraction(V, top_k_fraction)` ids (the authors: 10%).
        temperature (`float`, *optional*, defaults to `1.0`): > 0.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): for reproducible
            samples: one for the batch, or one per caption, which makes each sample independent of
            the batch's other members (`GumbelSamplingLogitsProcessor`). The global RNG is used only
            without one.
        use_cache (`bool`, *optional*, defaults to `True`): reuse keys and values between steps.
        cache_implementation (`str`, *optional*): passed to `generate`, e.g. `"static"` (useful
            with `torch.compile` on CUDA).
        on_step (`Callable`, *optional*): `on_step(step, input_ids, scores)` at every sampling
            step (see `GumbelSamplingLogitsProcessor`); with candidates, `input_ids` has a row per
            candidate (`B * num_candidates`, an input's candidates adjacent).
        num_candidates (`int`, *optional*, defaults to `1`): samples per caption, of which the
            likeliest under image-to-text is returned. A generator list keeps one generator per
            caption; each candidate's is seeded from it.

    Returns:
        `torch.LongTensor` of shape `[B, H, W]`: codes in `[0, K)`, for `vqmodel.decode_indices`,
        on the device of `text_ids`.
    """
    _check_sampling(temperature, top_k_fraction)
    check_num_candidates(num_candidates)
    layout = layout_from_config(model.config, tokenizer)
    prompt, generator = _candidates(layout.t2i_prompt(text_ids), generator, num_candidates)
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
        on_step=on_step,
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
    if num_candidates > 1:
        captions = text_ids.to(image.device).repeat_interleave(num_candidates, dim=0)
        with torch.no_grad():
            scores = target_log_likelihood(model, layout.i2t_sequence(image, captions), layout, "i2t")
        image = image[_best_candidates(scores, num_candidates)]
    return tokenizer.decode_image_indices(image, grid=layout.image_grid).to(text_ids.device)


def generate_caption_ids(
    model,
    tokenizer,
    image_ids: torch.Tensor,
    *,
    top_k_fraction: float = 0.1,
    temperature: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    use_cache: bool = True,
    cache_implementation: str | None = None,
    on_step: Callable | None = None,
    num_candidates: int = 1,
) -> torch.LongTensor:
    """Sample caption tokens for each image (image to text).

    Continues the `<i2t>` `<boi>` image `<eoi>` `<bot>` prompt with up to `text_length - 1`
    tokens, stopping once every caption has its `<eot>`. With `num_candidates` > 1 it samples
    that many captions per image and keeps the one under which the generator's text-to-image
    direction finds the image likeliest (`log p(image | caption)`); a caption that reached the
    length limit without `<eot>` is kept only if every candidate did.

    Args:
        model (`GPT2LMHeadModel`): a generator (`build_generator_config`).
        tokenizer (`TextImageTokenizer`): its tokenizer.
        image_ids (`torch.LongTensor`): `[B, N]` image token ids (`tokenizer.encode_image_indices`).
        top_k_fraction, temperature, generator, use_cache, cache_implementation, on_step,
            num_candidates: as in `generate_image_indices` (a generator list has one per image).

    Returns:
        `torch.LongTensor` of shape `[B, <= text_length - 1]`: caption words, then `<eot>`
        and `<pad>`s (a caption that reached the length limit has no `<eot>`), on the device
        of `image_ids`; read it with `tokenizer.decode_caption`.
    """
    _check_sampling(temperature, top_k_fraction)
    check_num_candidates(num_candidates)
    layout = layout_from_config(model.config, tokenizer)
    prompt, generator = _candidates(layout.i2t_prompt(image_ids), generator, num_candidates)
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
        on_step=on_step,
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
    if num_candidates > 1:
        blocks = torch.full((new.shape[0], layout.text_length), layout.pad_id, dtype=torch.long, device=new.device)
        blocks[:, 0] = layout.bot_id
        blocks[:, 1 : 1 + new.shape[1]] = new
        images = image_ids.to(new.device).repeat_interleave(num_candidates, dim=0)
        with torch.no_grad():
            scores = target_log_likelihood(model, layout.t2i_sequence(blocks, images), layout, "t2i")
        unfinished = ~(new == layout.eot_id).any(dim=1)
        scores = scores.masked_fill(unfinished, float("-inf"))
        new = new[_best_candidates(scores, num_candidates)]
    return new


GENERATION_CONFIG_FILES = {"t2i": "t2i_generation_config.json", "i2t": "i2t_generation_config.json"}


def generation_configs(
    config, layout: SequenceLayout, top_k_fraction: float = 0.1, temperature: float = 1.0
) -> dict[str, GenerationConfig]:
    """What the stock `generate()` needs for each direction, as saved in a generator folder.

    Returns `{"t2i": ..., "i2t": ..., "default": ...}`: sampling on with `top_k =
    top_k_from_fraction(V, top_k_fraction)` and `temperature`; t2i makes exactly H * W + 1 new
    tokens and ends at `<eoi>`, i2t up to `text_length - 1` and ends at `<eot>`. `"default"` (the
    folder's `generation_config.json`, what a plain `model.generate()` uses) samples alike, ends at
    either, and has room for the longer of the two. None of them constrains which ids are drawn:
    pass `ModalityMaskLogitsProcessor.from_layout(layout, direction)` for that. The files are
    `GENERATION_CONFIG_FILES[direction]`, read with `GenerationConfig.from_pretrained(folder, name)`.
    """
    _check_sampling(temperature, top_k_fraction)
    n = layout.num_image_tokens
    shared = dict(
        do_sample=True,
        top_k=top_k_from_fraction(config.vocab_size, top_k_fraction),
        temperature=float(temperature),
        bos_token_id=layout.bot_id,
        pad_token_id=layout.pad_id,
    )
    return {
        # Not min_new_tokens = n + 1: that bans <eoi> where it is the only choice (module docstring).
        "t2i": GenerationConfig(**shared, max_new_tokens=n + 1, min_new_tokens=n, eos_token_id=layout.eoi_id),
        "i2t": GenerationConfig(**shared, max_new_tokens=layout.text_length - 1, eos_token_id=layout.eot_id),
        "default": GenerationConfig(
            **shared, max_new_tokens=max(n + 1, layout.text_length - 1), eos_token_id=[layout.eoi_id, layout.eot_id]
        ),
    }
