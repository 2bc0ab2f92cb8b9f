"""One word-level tokenizer for captions and image codes: the vocabulary of the stage-2 GPT-2.

The vocabulary has three parts, always in this order::

    <pad> <unk> <bot> <eot> <t2i> <i2t> <boi> <eoi>    special tokens (ids 0-7)
    the upper left is ... , .                           caption words, `caption_vocabulary(variant)`
    <img_0> <img_1> ... <img_{K-1}>                     one token per VQ code, contiguous

`<bot>`/`<eot>` open and close a caption (they are the tokenizer's bos/eos tokens), `<t2i>`
and `<i2t>` name the task of a sequence, `<boi>`/`<eoi>` open and close an image. Because
the image tokens are contiguous, code `k` is token `image_token_offset + k`.

Captions are cut into words by `tokenize_caption` (the same function the grammar uses), so
the tokenizer can never disagree with the captions the dataset holds. The backend
`tokenizers.Tokenizer` (lower-casing, splitting on white space and around "," and ".", a
`WordLevel` model) gives the same words for every caption the grammar emits, and its template adds
`<bot>`/`<eot>`; the image tokens are registered as added tokens so that a decoded `"<img_3>"` encodes
back to the same id.

The saved folder is ready for the stock loader, without remote code::

    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained("PIPELINE/tokenizer")   # a generic fast tokenizer
    >>> batch = tok(["the upper left is blue 9."], padding="max_length", return_tensors="pt")
    >>> # batch.input_ids == TextImageTokenizer.encode_captions([...]); batch.attention_mask marks the words
    >>> tok.decode(batch.input_ids[0], skip_special_tokens=True)
    'the upper left is blue 9.'

There, as in every stock tokenizer, a word outside the vocabulary becomes `<unk>` and a long
caption is cut only with `truncation=True`; this class's `encode_caption(s)` refuse both, naming
the words.

A tokenizer built with `caption_form="canonical"` (the CPU presets' generators) encodes each caption's
canonical wording (`te_vqgan.data.captions.canonical_caption`: clauses in quadrant order, one form);
`encode_caption(s)` and the pipelines do that themselves, the stock tokenizer does not: give it
`canonical_caption(text)`.

Example::

    >>> from te_vqgan.generation import TextImageTokenizer
    >>> tokenizer = TextImageTokenizer.build(codebook_size=128, text_length=50)
    >>> ids = tokenizer.encode_caption("The upper left is blue 9.")   # 50 ids: <bot> words <eot> <pad>...
    >>> tokenizer.decode_caption(ids)
    'the upper left is blue 9.'
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..data.captions import canonical_caption, caption_vocabulary, detokenize_caption, tokenize_caption
from ..data.mnist import MNIST_VARIANTS
from ..torch_utils import check_integer_tensor, first_outside


__all__ = [
    "BOI_TOKEN",
    "BOT_TOKEN",
    "CAPTION_FORMS",
    "EOI_TOKEN",
    "EOT_TOKEN",
    "I2T_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "T2I_TOKEN",
    "TextImageTokenizer",
    "UNK_TOKEN",
    "image_token",
]

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
BOT_TOKEN = "<bot>"  # begin of text
EOT_TOKEN = "<eot>"  # end of text
T2I_TOKEN = "<t2i>"  # task: text to image
I2T_TOKEN = "<i2t>"  # task: image to text
BOI_TOKEN = "<boi>"  # begin of image
EOI_TOKEN = "<eoi>"  # end of image
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    UNK_TOKEN,
    BOT_TOKEN,
    EOT_TOKEN,
    T2I_TOKEN,
    I2T_TOKEN,
    BOI_TOKEN,
    EOI_TOKEN,
)

# How a caption is encoded (`TextImageTokenizer.build(caption_form=...)`).
CAPTION_FORMS = ("as_written", "canonical")

# The task and image markers are named special tokens of their own (`tokenizer.boi_token`,
# `tokenizer.boi_token_id`, ...); transformers saves them in tokenizer_config.json.
_MARKER_ATTRIBUTES: dict[str, str] = {
    "t2i_token": T2I_TOKEN,
    "i2t_token": I2T_TOKEN,
    "boi_token": BOI_TOKEN,
    "eoi_token": EOI_TOKEN,
}


def image_token(code: int) -> str:
    """The token string of VQ code `code`, e.g. `image_token(3) == "<img_3>"`."""
    return f"<img_{code}>"


def _check_integer_tensor(name: str, value: object) -> torch.Tensor:
    value = check_integer_tensor(f"`{name}`", value)
    if value.ndim < 1:
        raise ValueError(f"Expected `{name}` with at least one dimension (got a scalar).")
    return value


class TextImageTokenizer(PreTrainedTokenizerFast):
    """The word-level tokenizer of stage 2: caption words, special tokens and one token per VQ code.

    Build one with `TextImageTokenizer.build(codebook_size, text_length, variant)`; load a
    saved one with `TextImageTokenizer.from_pretrained(path)`.

    The class deliberately has no `__init__`: in transformers 5 a tokenizer subclass with its
    own `__init__` is rebuilt from the vocabulary by `from_pretrained` (as a BPE model, which
    breaks this word-level vocabulary). The settings below are therefore init kwargs, which
    transformers saves in tokenizer_config.json and restores into `init_kwargs`, exposed as
    read-only properties.

    Properties:
        text_length (`int`): tokens in a text block, `<bot>` and `<eot>` and padding included.
        codebook_size (`int`): K, the number of VQ codes (image tokens).
        variant (`str`): the MNIST variant whose caption words are in the vocabulary.
        image_token_offset (`int`): the id of `<img_0>`; code `k` is id `image_token_offset + k`.
    """

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls, codebook_size: int, text_length: int = 50, variant: str = "mnist", caption_form: str = "as_written"
    ) -> TextImageTokenizer:
        """A new tokenizer for `codebook_size` image codes and the captions of `variant`.

        Args:
            codebook_size (`int`): K, the VQ codebook size; adds `<img_0>` ... `<img_{K-1}>`.
            text_length (`int`, *optional*, defaults to `50`): tokens in a text block
                (`<bot>` + words + `<eot>` + padding); the authors use 50.
            variant (`str`, *optional*, defaults to `"mnist"`): `"mnist"` or `"fashion_mnist"`,
                whose caption words make up the text vocabulary.
            caption_form (`str`, *optional*, defaults to `"as_written"`): `"as_written"` encodes a caption's
                words as they are (the authors); `"canonical"` encodes `canonical_caption(caption)`, one fixed
                wording per set of digits (clauses in quadrant order, one form), so that a generator learns what a
                caption says rather than the many ways of saying it (`results/stage2_recipe`).
        """
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
            raise ValueError(f"`codebook_size` must be an integer >= 1 (got {codebook_size!r}).")
        # A text block must hold at least <bot>, one word and <eot>.
        if isinstance(text_length, bool) or not isinstance(text_length, int) or text_length < 3:
            raise ValueError(f"`text_length` must be an integer >= 3 (got {text_length!r}).")
        if variant not in MNIST_VARIANTS:
            raise ValueError(f"Unknown `variant` {variant!r}; expected one of {sorted(MNIST_VARIANTS)}.")
        if caption_form not in CAPTION_FORMS:
            raise ValueError(f"Unknown `caption_form` {caption_form!r}; expected one of {list(CAPTION_FORMS)}.")

        words = caption_vocabulary(variant)
        clashes = sorted(set(words) & set(SPECIAL_TOKENS))
        if clashes:
            raise ValueError(f"Caption words {clashes} of variant {variant!r} clash with the special tokens.")
        images = [image_token(code) for code in range(codebook_size)]
        ordered = list(SPECIAL_TOKENS) + list(words) + images
        vocab = {token: index for index, token in enumerate(ordered)}

        backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
        backend.normalizer = normalizers.Lowercase()
        # "," and "." are words of their own, as in `tokenize_caption`. Not the `Punctuation`
        # pre-tokenizer: it would also split "t-shirt" (a Fashion-MNIST class) into three <unk>s.
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[,.]"), behavior="isolated")]
        )
        # Without this, "<img_3>" would be split at its punctuation and read as <unk>s. They are
        # already in the vocabulary, so registering them keeps their ids.
        backend.add_tokens([AddedToken(token, single_word=False, normalized=False, special=False) for token in images])
        # `decode` writes a caption as the grammar does: words joined by spaces, no space before "," or ".".
        backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)

        return cls(
            tokenizer_object=backend,
            pad_token=PAD_TOKEN,
            unk_token=UNK_TOKEN,
            bos_token=BOT_TOKEN,
            eos_token=EOT_TOKEN,
            extra_special_tokens=dict(_MARKER_ATTRIBUTES),
            text_length=text_length,
            codebook_size=codebook_size,
            variant=variant,
            caption_form=caption_form,
            image_token_offset=len(SPECIAL_TOKENS) + len(words),
            # What makes the stock loader's tokenizer ready: `AutoTokenizer.from_pretrained(folder)(captions,
            # padding="max_length")` gives the text blocks of `encode_captions` (<bot> and <eot> added by the
            # tokenizer's own template, padded to the text block) with an attention mask.
            add_bos_token=True,
            add_eos_token=True,
            model_max_length=text_length,
            padding_side="right",
            truncation_side="right",
        )

    def _setting(self, name: str):
        if name not in self.init_kwargs:
            raise ValueError(
                f"This tokenizer has no `{name}` setting; build it with `TextImageTokenizer.build(...)` "
                "or load one saved by `save_pretrained`."
            )
        return self.init_kwargs[name]

    # ------------------------------------------------------------------ settings
    @property
    def text_length(self) -> int:
        """Tokens in a text block: `<bot>`, the words, `<eot>` and `<pad>`s."""
        return int(self._setting("text_length"))

    @property
    def codebook_size(self) -> int:
        """K, the number of image tokens."""
        return int(self._setting("codebook_size"))

    @property
    def variant(self) -> str:
        """The MNIST variant whose caption words are in the vocabulary."""
        return str(self._setting("variant"))

    @property
    def caption_form(self) -> str:
        """`"as_written"` or `"canonical"` (`build`); a tokenizer saved before the setting existed encodes as written."""
        return str(self.init_kwargs.get("caption_form", "as_written"))

    @property
    def image_token_offset(self) -> int:
        """The id of `<img_0>`: code `k` is token `image_token_offset + k`."""
        return int(self._setting("image_token_offset"))

    @property
    def text_token_ids(self) -> torch.LongTensor:
        """The ids of the caption words (no special tokens), in vocabulary order."""
        return torch.tensor(list(self._word_to_id.values()), dtype=torch.long)

    @property
    def image_token_ids(self) -> range:
        """The ids of `<img_0>` ... `<img_{K-1}>`."""
        return range(self.image_token_offset, self.image_token_offset + self.codebook_size)

    @functools.cached_property
    def _word_to_id(self) -> dict[str, int]:
        # Caption word -> id. Words are only ever looked up here, so a token that merely
        # looks like a word ("<img_3>", "<bot>") in a caption is out of vocabulary.
        return {word: self.convert_tokens_to_ids(word) for word in caption_vocabulary(self.variant)}

    @functools.cached_property
    def _id_to_word(self) -> dict[int, str]:
        return {index: word for word, index in self._word_to_id.items()}

    # ------------------------------------------------------------------ captions
    def encode_caption(self, caption: str) -> list[int]:
        """The text block of one caption: `<bot>` + word ids + `<eot>`, right-padded with `<pad>`.

        Args:
            caption (`str`): e.g. `"the upper left is blue 9."`; cut into words by
                `tokenize_caption` (lower-cased, "," and "." are words of their own).

        Returns:
            `list[int]`: exactly `text_length` ids.

        Raises:
            `ValueError`: the caption has words outside the vocabulary (all are listed), or it
                needs more than `text_length` tokens (it is never truncated).
        """
        if not isinstance(caption, str):
            raise ValueError(f"Expected a caption as a str (got {type(caption).__name__}).")
        words = tokenize_caption(caption)
        if not words:
            raise ValueError(
                f"Caption {caption!r} has no words; a prompt is a caption of the grammar, e.g. 'the red 3.'."
            )
        unknown = [word for word in words if word not in self._word_to_id]
        if unknown:
            raise ValueError(f"Caption {caption!r} has words outside the vocabulary: {unknown}")
        if self.caption_form == "canonical":  # words of the vocabulary, now in the one wording of what they say
            words = tokenize_caption(canonical_caption(caption, self.variant))
        needed = len(words) + 2
        if needed > self.text_length:
            raise ValueError(
                f"Caption {caption!r} needs {needed} tokens ({len(words)} words plus <bot> and <eot>), "
                f"more than `text_length` = {self.text_length}."
            )
        ids = [self.bos_token_id] + [self._word_to_id[word] for word in words] + [self.eos_token_id]
        return ids + [self.pad_token_id] * (self.text_length - len(ids))

    def encode_captions(self, captions: Sequence[str]) -> torch.LongTensor:
        """`encode_caption` of each caption, stacked: a `[B, text_length]` LongTensor."""
        if isinstance(captions, str):
            raise ValueError("Expected a sequence of captions (got a single str); use `encode_caption` for one.")
        blocks = [self.encode_caption(caption) for caption in captions]
        if not blocks:
            return torch.empty(0, self.text_length, dtype=torch.long)
        return torch.tensor(blocks, dtype=torch.long)

    def decode_caption(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The caption a text block (or generated text) holds.

        Reads the tokens after an optional leading `<bot>` up to the first `<eot>` (or the
        end), skips `<pad>`, and joins the words with `detokenize_caption`.

        Args:
            ids (`Sequence[int]` or a 1-D `torch.Tensor`): e.g. a row of `encode_captions`.

        Raises:
            `ValueError`: a token before `<eot>` is not a caption word or `<pad>` (an image or
                task marker, `<unk>`, a second `<bot>`): a caption holds only text tokens.
        """
        if isinstance(ids, torch.Tensor):
            if ids.ndim != 1:
                raise ValueError(
                    f"Expected a 1-D tensor of ids (got shape {tuple(ids.shape)}); use `decode_captions`."
                )
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        if ids and ids[0] == self.bos_token_id:
            ids = ids[1:]
        if self.eos_token_id in ids:
            ids = ids[: ids.index(self.eos_token_id)]
        ids = [i for i in ids if i != self.pad_token_id]
        bad = [i for i in ids if i not in self._id_to_word]
        if bad:
            tokens = [self.convert_ids_to_tokens(i) if 0 <= i < len(self) else "<out of vocabulary>" for i in bad]
            raise ValueError(
                f"Ids {bad} ({tokens}) are not caption words; a caption holds only text tokens "
                "(caption words, <bot>, <eot>, <pad>)."
            )
        return detokenize_caption(self._id_to_word[i] for i in ids)

    def decode_captions(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """`decode_caption` of each row of a `[B, T]` tensor (or a list of id lists)."""
        if isinstance(ids, torch.Tensor) and ids.ndim != 2:
            raise ValueError(f"Expected ids of shape (batch, length) (got shape {tuple(ids.shape)}).")
        return [self.decode_caption(row) for row in ids]

    # ------------------------------------------------------------------ images
    def encode_image_indices(self, indices: torch.Tensor) -> torch.LongTensor:
        """Token ids of VQ code indices: flattened row-major, plus `image_token_offset`.

        Args:
            indices (`torch.LongTensor`): codes in `[0, codebook_size)`, of shape `[B, H, W]`
                (what `TEVQModel.encode_to_indices` returns; any `[..., H, W]` with three or more
                dimensions) or already flat, `[N]` or `[B, N]`. A single code map must be
                given as `[1, H, W]`: a 2-D input is read as `[B, N]`.

        Returns:
            `torch.LongTensor` of shape `[..., H * W]` (or the input's shape when flat).
        """
        indices = _check_integer_tensor("indices", indices)
        if indices.ndim >= 3:
            indices = indices.flatten(-2)
        value = first_outside(indices, 0, self.codebook_size)
        if value is not None:
            raise ValueError(
                f"Code index {value} is outside [0, {self.codebook_size}), the codebook of "
                f"`codebook_size` K = {self.codebook_size}."
            )
        return indices.long() + self.image_token_offset

    def decode_image_indices(self, ids: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.LongTensor:
        """VQ code indices of image token ids (the inverse of `encode_image_indices`).

        Args:
            ids (`torch.LongTensor`): image token ids of shape `[..., N]`.
            grid (`tuple[int, int]`, *optional*): `(H, W)` with `H * W == N`; when given the
                codes are reshaped to `[..., H, W]`, ready for `TEVQModel.decode_indices`.

        Raises:
            `ValueError`: an id is not an image token (the first one is named), or `grid` does
                not match `N`.
        """
        ids = _check_integer_tensor("ids", ids)
        offset = self.image_token_offset
        value = first_outside(ids, offset, offset + self.codebook_size)
        if value is not None:
            token = self.convert_ids_to_tokens(value) if 0 <= value < len(self) else "<out of vocabulary>"
            raise ValueError(
                f"Id {value} ({token!r}) is not an image token; image tokens are ids "
                f"[{offset}, {offset + self.codebook_size})."
            )
        codes = ids.long() - self.image_token_offset
        if grid is None:
            return codes
        if (
            not isinstance(grid, (tuple, list))
            or len(grid) != 2
            or not all(isinstance(side, int) and side >= 1 for side in grid)
        ):
            raise ValueError(f"`grid` must be a pair of positive integers (H, W) (got {grid!r}).")
        height, width = grid
        if height * width != ids.shape[-1]:
            raise ValueError(
                f"`grid` {tuple(grid)} holds {height * width} codes but the ids have {ids.shape[-1]} "
                f"in their last dimension (shape {tuple(ids.shape)})."
            )
        return codes.reshape(*ids.shape[:-1], height, width)
