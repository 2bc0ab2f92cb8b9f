"""Where each token of a stage-2 sequence sits, and which tokens each position may hold.

One GPT-2 learns both directions. With `T = text_length` (a text block: `<bot>` words
`<eot>` `<pad>`...) and `N = H * W` image tokens (the code map, flattened row-major)::

    t2i:  <t2i> | <bot> w1 .. wn <eot> <pad> .. | <boi> | img_1 .. img_N | <eoi>
    i2t:  <i2t> | <boi> | img_1 .. img_N | <eoi> | <bot> w1 .. wn <eot> <pad> ..

Both are `sequence_length = T + N + 3` tokens long (309 for the authors' T = 50 and a 16x16
code map, N = 256).

Positions. GPT-2's learned absolute position of a token is simply its index in the
sequence. Padding tokens are ordinary tokens: they are attended to like any other token and
only their *targets* are left out of the loss. So every sequence of one direction has the
same length and the same layout: image token (r, c) always sits at the same position, and
the model sees the same positions when it generates as when it learns. That matters for
`model.generate`, which derives position ids from the cumulative sum of the attention mask:
with no left-padding and an all-ones mask, the positions during generation equal the
training positions. That is the `"index"` scheme. The authors instead counted positions
inside each modality; the `"modality"` scheme (`position_ids`) does so in the one position
table of a stock `GPT2LMHeadModel`, shared by both directions, and is passed as
`position_ids` in training and to `generate` (which continues the prompt's last position id
by one per new token, as the scheme's blocks do). The authors also masked the padding keys;
we attend to padding (a documented deviation).

Masks. `allowed_tokens(direction)[p]` is the set of ids that may appear *at* position `p`:
one id at a structural position (`<t2i>`, `<bot>`, `<boi>`, `<eoi>` ...), the image tokens at
an image position, the caption words and `<eot>` at a text position after `<bot>`. `<pad>`
is never a target (the loss skips it and generation stops at `<eot>`), so it is not allowed
anywhere; `check_sequence` accepts it only after the `<eot>` of a text block.

Example::

    >>> layout = SequenceLayout.from_tokenizer(tokenizer, image_grid=(16, 16))
    >>> layout.sequence_length
    309
    >>> batch = layout.t2i_sequence(tokenizer.encode_captions(captions), tokenizer.encode_image_indices(codes))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..torch_utils import check_integer_tensor, first_outside


__all__ = ["DIRECTIONS", "POSITION_SCHEMES", "SequenceLayout"]

DIRECTIONS = ("t2i", "i2t")
# How a token's index in its sequence maps to a row of GPT-2's position table (`position_ids`).
POSITION_SCHEMES = ("index", "modality")


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"`direction` must be one of {DIRECTIONS} (got {direction!r}).")


def _check_scheme(scheme: str) -> None:
    if scheme not in POSITION_SCHEMES:
        raise ValueError(f"`position_scheme` must be one of {POSITION_SCHEMES} (got {scheme!r}).")


def _check_ids(name: str, ids: object, width: int, what: str) -> torch.Tensor:
    check_integer_tensor(f"`{name}`", ids)
    if ids.ndim != 2 or ids.shape[1] != width:
        raise ValueError(f"Expected `{name}` of shape (batch, {width}) ({what}) (got shape {tuple(ids.shape)}).")
    return ids.long()


@dataclass(frozen=True)
class SequenceLayout:
    """The token layout of the t2i and i2t sequences (see the module docstring).

    Build one with `SequenceLayout.from_tokenizer(tokenizer, image_grid)`.

    Args:
        text_length (`int`): T, tokens in a text block.
        image_grid (`tuple[int, int]`): (H, W), the code-map size; N = H * W image tokens.
        vocab_size (`int`): V, the size of the merged vocabulary (`len(tokenizer)`).
        pad_id, bot_id, eot_id, t2i_id, i2t_id, boi_id, eoi_id (`int`): the special tokens' ids.
        image_token_offset (`int`): the id of `<img_0>`.
        codebook_size (`int`): K; the image tokens are ids `[image_token_offset, image_token_offset + K)`.
        text_word_ids (`tuple[int, ...]`): the ids of the caption words.
    """

    text_length: int
    image_grid: tuple[int, int]
    vocab_size: int
    pad_id: int
    bot_id: int
    eot_id: int
    t2i_id: int
    i2t_id: int
    boi_id: int
    eoi_id: int
    image_token_offset: int
    codebook_size: int
    text_word_ids: tuple[int, ...]

    def __post_init__(self):
        if not isinstance(self.text_length, int) or self.text_length < 3:
            raise ValueError(f"`text_length` must be an integer >= 3 (got {self.text_length!r}).")
        grid = self.image_grid
        if (
            not isinstance(grid, tuple)
            or len(grid) != 2
            or not all(isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in grid)
        ):
            raise ValueError(f"`image_grid` must be a tuple of two positive integers (H, W) (got {grid!r}).")
        if self.codebook_size < 1:
            raise ValueError(f"`codebook_size` must be >= 1 (got {self.codebook_size}).")
        if not self.text_word_ids:
            raise ValueError("`text_word_ids` is empty; a layout needs at least one caption word.")
        ids = {
            "pad_id": self.pad_id,
            "bot_id": self.bot_id,
            "eot_id": self.eot_id,
            "t2i_id": self.t2i_id,
            "i2t_id": self.i2t_id,
            "boi_id": self.boi_id,
            "eoi_id": self.eoi_id,
            "last image token": self.image_token_offset + self.codebook_size - 1,
            "first image token": self.image_token_offset,
            "smallest caption word": min(self.text_word_ids),
            "largest caption word": max(self.text_word_ids),
        }
        for name, value in ids.items():
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"Id of {name} ({value}) is outside the vocabulary [0, {self.vocab_size}).")
        specials = [self.pad_id, self.bot_id, self.eot_id, self.t2i_id, self.i2t_id, self.boi_id, self.eoi_id]
        if len(set(specials)) != len(specials):
            raise ValueError(f"The special token ids must be distinct (got {specials}).")
        images = set(self.image_ids.tolist())
        overlap = sorted((set(specials) | set(self.text_word_ids)) & images)
        if overlap:
            raise ValueError(f"Ids {overlap} are both image tokens and text or special tokens.")

    @classmethod
    def from_tokenizer(cls, tokenizer, image_grid: tuple[int, int]) -> SequenceLayout:
        """The layout of `tokenizer` (a `TextImageTokenizer`) and an `image_grid` = (H, W) code map."""
        if isinstance(image_grid, list):
            image_grid = tuple(image_grid)
        return cls(
            text_length=tokenizer.text_length,
            image_grid=image_grid,
            vocab_size=len(tokenizer),
            pad_id=tokenizer.pad_token_id,
            bot_id=tokenizer.bos_token_id,
            eot_id=tokenizer.eos_token_id,
            t2i_id=tokenizer.t2i_token_id,
            i2t_id=tokenizer.i2t_token_id,
            boi_id=tokenizer.boi_token_id,
            eoi_id=tokenizer.eoi_token_id,
            image_token_offset=tokenizer.image_token_offset,
            codebook_size=tokenizer.codebook_size,
            text_word_ids=tuple(tokenizer.text_token_ids.tolist()),
        )

    # ------------------------------------------------------------------ sizes
    @property
    def num_image_tokens(self) -> int:
        """N = H * W."""
        return self.image_grid[0] * self.image_grid[1]

    @property
    def sequence_length(self) -> int:
        """L = T + N + 3: the task token, the text block, `<boi>`, the image, `<eoi>`."""
        return self.text_length + self.num_image_tokens + 3

    @property
    def image_ids(self) -> torch.LongTensor:
        """The ids of the image tokens."""
        return torch.arange(self.image_token_offset, self.image_token_offset + self.codebook_size)

    def prompt_length(self, direction: str) -> int:
        """Tokens of the prompt that `t2i_prompt` / `i2t_prompt` build (up to `<boi>` / `<bot>`)."""
        _check_direction(direction)
        if direction == "t2i":
            return self.text_length + 2
        return self.num_image_tokens + 4

    # ------------------------------------------------------------------ positions
    def num_position_rows(self, scheme: str = "index") -> int:
        """Rows of the position table a generator with `scheme` needs (`n_positions`)."""
        _check_scheme(scheme)
        return self.sequence_length + (1 if scheme == "modality" else 0)

    def position_ids(self, direction: str, scheme: str = "index") -> torch.LongTensor:
        """`[L]`: the position-table row of each token of a `direction` sequence.

        `"index"`: the token's index in the sequence (GPT-2's default). `"modality"`: positions
        counted inside each modality, as the authors do, and shared by both directions: row 0
        `<t2i>`, row 1 `<i2t>`, rows 2 .. T + 1 the text block (`<bot>` first), row T + 2
        `<boi>`, rows T + 3 .. T + N + 2 the image (row-major), row T + N + 3 `<eoi>`. Within a
        block the rows rise by one per token, so `generate`, which continues the prompt's last
        position id by one per new token, gives generated tokens the rows they trained with.
        """
        _check_direction(direction)
        _check_scheme(scheme)
        length = self.sequence_length
        if scheme == "index":
            return torch.arange(length)
        text_rows = torch.arange(2, 2 + self.text_length)
        image_rows = torch.arange(self.text_length + 3, self.text_length + 3 + self.num_image_tokens)
        boi, eoi = self.text_length + 2, self.text_length + self.num_image_tokens + 3
        if direction == "t2i":
            parts = [torch.tensor([0]), text_rows, torch.tensor([boi]), image_rows, torch.tensor([eoi])]
        else:
            parts = [torch.tensor([1, boi]), image_rows, torch.tensor([eoi]), text_rows]
        return torch.cat(parts)

    def _text_block_start(self, direction: str) -> int:
        return 1 if direction == "t2i" else self.num_image_tokens + 3

    def _image_start(self, direction: str) -> int:
        return self.text_length + 2 if direction == "t2i" else 2

    def image_positions(self, direction: str) -> slice:
        """The N positions of the image tokens."""
        _check_direction(direction)
        start = self._image_start(direction)
        return slice(start, start + self.num_image_tokens)

    def text_block_positions(self, direction: str) -> slice:
        """The T positions of the text block, `<bot>` included."""
        _check_direction(direction)
        start = self._text_block_start(direction)
        return slice(start, start + self.text_length)

    def text_positions(self, direction: str) -> slice:
        """The T - 1 text-content positions after `<bot>` (words, `<eot>`, `<pad>`s)."""
        block = self.text_block_positions(direction)
        return slice(block.start + 1, block.stop)

    def structural_positions(self, direction: str) -> dict[int, int]:
        """Position -> the one id a structural position holds (task token, `<bot>`, `<boi>`, `<eoi>`)."""
        _check_direction(direction)
        task = self.t2i_id if direction == "t2i" else self.i2t_id
        image = self.image_positions(direction)
        return {
            0: task,
            self._text_block_start(direction): self.bot_id,
            image.start - 1: self.boi_id,
            image.stop: self.eoi_id,
        }

    def allowed_tokens(self, direction: str) -> torch.BoolTensor:
        """Which ids may appear at each position: a `[L, V]` bool tensor.

        Row `p` allows exactly one id at a structural position, only the image tokens at an
        image position, and the caption words plus `<eot>` at a text position after `<bot>`.
        `<pad>` is allowed nowhere: it is never a target.
        """
        _check_direction(direction)
        allowed = torch.zeros(self.sequence_length, self.vocab_size, dtype=torch.bool)
        for position, token in self.structural_positions(direction).items():
            allowed[position, token] = True
        image = self.image_positions(direction)
        allowed[image, self.image_token_offset : self.image_token_offset + self.codebook_size] = True
        text = self.text_positions(direction)
        words = torch.tensor(self.text_word_ids + (self.eot_id,))
        allowed[text.start : text.stop, words] = True
        return allowed

    # ------------------------------------------------------------------ checks
    def check_sequence(self, input_ids: torch.Tensor, direction: str) -> None:
        """Raise a `ValueError` if `input_ids` (`[B, L]`, or a `[B, P]` prefix) breaks the layout.

        Every position must hold an allowed id (`allowed_tokens`), except the text content,
        which reads words, then at most one `<eot>`, then only `<pad>`s.
        """
        _check_direction(direction)
        check_integer_tensor("`input_ids`", input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"Expected `input_ids` of shape (batch, length) (got shape {tuple(input_ids.shape)}).")
        length = input_ids.shape[1]
        if length > self.sequence_length:
            raise ValueError(
                f"`input_ids` has {length} positions, more than the {direction} sequence length {self.sequence_length}."
            )
        if input_ids.numel() == 0:
            return
        ids = input_ids.long()
        value = first_outside(ids, 0, self.vocab_size)
        if value is not None:
            raise ValueError(f"Id {value} in `input_ids` is outside the vocabulary [0, {self.vocab_size}).")
        allowed = self.allowed_tokens(direction)[:length].to(ids.device)
        positions = torch.arange(length, device=ids.device).expand_as(ids)
        valid = allowed[positions, ids]

        text = self.text_positions(direction)
        stop = min(text.stop, length)
        if text.start < stop:
            content = ids[:, text.start : stop]
            is_eot = content == self.eot_id
            is_pad = content == self.pad_id
            after_eot = (is_eot.long().cumsum(dim=1) - is_eot.long()) > 0
            # Before the <eot>: a word or the <eot> itself (the allowed mask); after it: only <pad>.
            valid[:, text.start : stop] = torch.where(after_eot, is_pad, valid[:, text.start : stop])

        if not valid.all():
            row, position = (~valid).nonzero()[0].tolist()
            value = ids[row, position].item()
            expected = self._describe_position(direction, position)
            raise ValueError(
                f"Sequence {row} of the {direction} batch holds id {value} at position {position}, "
                f"where the layout expects {expected}."
            )

    def _describe_position(self, direction: str, position: int) -> str:
        structural = self.structural_positions(direction)
        if position in structural:
            return f"id {structural[position]}"
        image = self.image_positions(direction)
        if image.start <= position < image.stop:
            return f"an image token in [{self.image_token_offset}, {self.image_token_offset + self.codebook_size})"
        return f"a caption word or <eot> ({self.eot_id}), or <pad> ({self.pad_id}) after <eot>"

    # ------------------------------------------------------------------ sequences
    def _check_pair(self, text_ids: torch.Tensor, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text_ids = _check_ids("text_ids", text_ids, self.text_length, "text blocks from `encode_captions`")
        image_ids = _check_ids(
            "image_ids", image_ids, self.num_image_tokens, "image token ids from `encode_image_indices`"
        )
        if text_ids.shape[0] != image_ids.shape[0]:
            raise ValueError(
                "`text_ids` and `image_ids` need the same batch size "
                f"(got {text_ids.shape[0]} and {image_ids.shape[0]})."
            )
        if text_ids.device != image_ids.device:
            raise ValueError(
                f"`text_ids` and `image_ids` are on different devices ({text_ids.device} and {image_ids.device})."
            )
        return text_ids, image_ids

    def _column(self, token: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((like.shape[0], 1), token, dtype=torch.long, device=like.device)

    def t2i_sequence(self, text_ids: torch.Tensor, image_ids: torch.Tensor) -> torch.LongTensor:
        """`<t2i>` text block `<boi>` image `<eoi>`: a `[B, L]` training sequence.

        Args:
            text_ids (`torch.LongTensor`): `[B, T]` text blocks (`tokenizer.encode_captions`).
            image_ids (`torch.LongTensor`): `[B, N]` image token ids (`tokenizer.encode_image_indices`).
        """
        text_ids, image_ids = self._check_pair(text_ids, image_ids)
        sequence = torch.cat(
            [
                self._column(self.t2i_id, text_ids),
                text_ids,
                self._column(self.boi_id, text_ids),
                image_ids,
                self._column(self.eoi_id, text_ids),
            ],
            dim=1,
        )
        self.check_sequence(sequence, "t2i")
        return sequence

    def i2t_sequence(self, image_ids: torch.Tensor, text_ids: torch.Tensor) -> torch.LongTensor:
        """`<i2t>` `<boi>` image `<eoi>` text block: a `[B, L]` training sequence (arguments as `t2i_sequence`)."""
        text_ids, image_ids = self._check_pair(text_ids, image_ids)
        sequence = torch.cat(
            [
                self._column(self.i2t_id, text_ids),
                self._column(self.boi_id, text_ids),
                image_ids,
                self._column(self.eoi_id, text_ids),
                text_ids,
            ],
            dim=1,
        )
        self.check_sequence(sequence, "i2t")
        return sequence

    def t2i_prompt(self, text_ids: torch.Tensor) -> torch.LongTensor:
        """`<t2i>` text block `<boi>`: the `[B, T + 2]` prompt that generation continues with the image."""
        text_ids = _check_ids("text_ids", text_ids, self.text_length, "text blocks from `encode_captions`")
        prompt = torch.cat([self._column(self.t2i_id, text_ids), text_ids, self._column(self.boi_id, text_ids)], dim=1)
        self.check_sequence(prompt, "t2i")
        return prompt

    def i2t_prompt(self, image_ids: torch.Tensor) -> torch.LongTensor:
        """`<i2t>` `<boi>` image `<eoi>` `<bot>`: the `[B, N + 4]` prompt that generation continues with words."""
        image_ids = _check_ids(
            "image_ids", image_ids, self.num_image_tokens, "image token ids from `encode_image_indices`"
        )
        prompt = torch.cat(
            [
                self._column(self.i2t_id, image_ids),
                self._column(self.boi_id, image_ids),
                image_ids,
                self._column(self.eoi_id, image_ids),
                self._column(self.bot_id, image_ids),
            ],
            dim=1,
        )
        self.check_sequence(prompt, "i2t")
        return prompt
