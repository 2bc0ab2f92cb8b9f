"""The caption grammar of TextMNIST and its rule-based parser.

Every caption describes each digit on the canvas with one *clause*; clauses are joined by
commas or "and" in a shuffled order and the caption ends with a period::

    the lower right is blue nine, and the white 2 is on the top left.

The grammar is data (`LOCATED_FORMS`, `CENTRE_FORMS`, `LOCATION_PHRASES`, `DIGIT_WORDS`,
`JOINERS`), so the builder that emits captions, the parser that reads them back and the
word-level tokenizer of stage 2 (`caption_vocabulary`, `tokenize_caption`) cannot drift
apart::

    caption   := clause (joiner clause)* "."
    joiner    := "," | "and" | "," "and"
    clause    := one of LOCATED_FORMS      (a digit in a quadrant)
               | one of CENTRE_FORMS       (the single digit at the centre: no location)
    location  := ("upper" | "top") ("left" | "right") | ("lower" | "bottom") ("left" | "right")
    colour    := "white" | "red" | "green" | "blue"
    item      := "0" .. "9" | "zero" .. "nine"          (mnist)
               | a Fashion-MNIST class name             (fashion_mnist, e.g. "ankle boot")

A clause without a location means the centre. Forms that say "number" ("the number 9 is
blue") are used for MNIST only, where the item is a digit.

`parse_caption` inverts every caption the grammar can emit (a property test checks this)
and reads noisy generated text as well as it can: it fills a (location, colour, item)
clause from the words it knows, skips the words it does not, and, with `strict=True`,
raises a `ValueError` naming them instead.

Example::

    >>> from te_vqgan.data.captions import parse_caption
    >>> sorted(parse_caption("the lower right is blue nine, and the white 2 is on the top left."))
    [Triplet(location='lower_right', colour='blue', digit=9), Triplet(location='upper_left', colour='white', digit=2)]
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .layout import COLOURS, LOCATIONS, QUADRANTS
from .mnist import MNIST_VARIANTS


__all__ = [
    "CENTRE_FORMS",
    "CaptionGrammar",
    "ClauseForm",
    "DIGIT_WORDS",
    "JOINERS",
    "LOCATED_FORMS",
    "LOCATION_PHRASES",
    "Triplet",
    "canonical_caption",
    "caption_vocabulary",
    "detokenize_caption",
    "generate_captions",
    "get_grammar",
    "parse_caption",
    "render_caption",
    "tokenize_caption",
]


class Triplet(NamedTuple):
    """One object on the canvas: where it is, its colour, and its class label (0-9).

    For Fashion-MNIST `digit` is the class index (`MNIST_VARIANTS["fashion_mnist"].class_names`).
    """

    location: str
    colour: str
    digit: int


@dataclass(frozen=True)
class ClauseForm:
    """One way to describe one digit.

    Args:
        name (`str`): a short identifier, used in docs and tests.
        template (`str`): space-separated words with the slots `{colour}`, `{item}` and,
            for a digit in a quadrant, `{location}`.
        numeric (`bool`, defaults to `False`): the form says "number", which only reads
            right before a digit, so it is used for MNIST only.
    """

    name: str
    template: str
    numeric: bool = False

    @property
    def located(self) -> bool:
        return "{location}" in self.template

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.template.split())


# A digit in a quadrant. Every form names the location, the colour and the item once.
LOCATED_FORMS: tuple[ClauseForm, ...] = (
    ClauseForm("location_is", "the {location} is {colour} {item}"),
    ClauseForm("is_on", "the {colour} {item} is on the {location}"),
    ClauseForm("on", "{colour} {item} on the {location}"),
    ClauseForm("on_location_is", "on the {location} is the {colour} {item}"),
    ClauseForm("is_to", "the {colour} {item} is to the {location}"),
    ClauseForm("this_is_on", "this is {colour} {item} on the {location}"),
    ClauseForm("item_on_is", "the {item} on the {location} is {colour}"),
    ClauseForm("number_is_on", "the {colour} number {item} is on the {location}", numeric=True),
    ClauseForm("number_on_is", "the number {item} on the {location} is {colour}", numeric=True),
)

# The single digit at the centre: no location at all.
CENTRE_FORMS: tuple[ClauseForm, ...] = (
    ClauseForm("bare", "{colour} {item}"),
    ClauseForm("the", "the {colour} {item}"),
    ClauseForm("this_is", "this is {colour} {item}"),
    ClauseForm("item_is", "the {item} is {colour}"),
    ClauseForm("this_is_number", "this is the {colour} number {item}", numeric=True),
    ClauseForm("number_is", "the number {item} is {colour}", numeric=True),
)

# The forms of a canonical caption (`CaptionGrammar.canonical`): located, centre; names the location first.
CANONICAL_FORMS = ("location_is", "the")

LOCATION_PHRASES: dict[str, tuple[str, ...]] = {
    "upper_left": ("upper left", "top left"),
    "upper_right": ("upper right", "top right"),
    "lower_left": ("lower left", "bottom left"),
    "lower_right": ("lower right", "bottom right"),
}

DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Between two clauses; each joiner is a sequence of tokens.
JOINERS: tuple[tuple[str, ...], ...] = ((",",), ("and",), (",", "and"))
END = "."
SLOTS = ("{location}", "{colour}", "{item}")

# Commas and periods are tokens of their own; everything else splits on white space.
_TOKEN_RE = re.compile(r"[,.]|[^\s,.]+")


def tokenize_caption(text: str) -> list[str]:
    """Split a caption into the words of the stage-2 vocabulary.

    NFKC-normalises (full-width letters and digits become ASCII), lower-cases, splits on white
    space, and makes every "," and "." a token of its own.
    Multi-word names stay several tokens ("ankle boot" -> "ankle", "boot").

        >>> tokenize_caption("The upper left is blue 9, and red two.")
        ['the', 'upper', 'left', 'is', 'blue', '9', ',', 'and', 'red', 'two', '.']
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected a caption as str (got {type(text).__name__}: {text!r}).")
    # NFKC folds full-width and other compatibility forms ("ｒｅｄ ３" -> "red 3").
    return _TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())


def detokenize_caption(tokens: Iterable[str]) -> str:
    """Inverse of `tokenize_caption` for the captions the grammar emits."""
    text = " ".join(tokens)
    return text.replace(" ,", ",").replace(" .", ".")


class CaptionGrammar:
    """The caption grammar of one MNIST variant: emits captions and parses them.

    Use `get_grammar(variant)` (cached) rather than building one per call.

    Args:
        variant (`str`, defaults to `"mnist"`): `"mnist"` or `"fashion_mnist"`; decides the
            item words (digits and number words, or class names) and the clause forms.
    """

    def __init__(self, variant: str = "mnist"):
        if variant not in MNIST_VARIANTS:
            raise ValueError(f"Unknown MNIST variant {variant!r}; expected one of {sorted(MNIST_VARIANTS)}.")
        self.variant = variant
        numeric = variant == "mnist"
        self.located_forms = tuple(f for f in LOCATED_FORMS if numeric or not f.numeric)
        self.centre_forms = tuple(f for f in CENTRE_FORMS if numeric or not f.numeric)
        if numeric:
            self.item_phrases = tuple((str(d), DIGIT_WORDS[d]) for d in range(10))
        else:
            self.item_phrases = tuple((name,) for name in MNIST_VARIANTS[variant].class_names)

        # The parser's lexicon: token tuple -> (kind, value).
        lexicon: dict[tuple[str, ...], tuple[str, object]] = {}
        for form in self.located_forms + self.centre_forms:
            for word in form.words:
                if word not in SLOTS:
                    lexicon[(word,)] = ("function", None)
        for location, phrases in LOCATION_PHRASES.items():
            for phrase in phrases:
                lexicon[tuple(phrase.split())] = ("location", location)
        for colour in COLOURS:
            lexicon[(colour,)] = ("colour", colour)
        for digit, phrases in enumerate(self.item_phrases):
            for phrase in phrases:
                lexicon[tuple(phrase.split())] = ("item", digit)
        for joiner in JOINERS:
            for token in joiner:
                lexicon[(token,)] = ("separator", None)
        lexicon[(END,)] = ("separator", None)
        self._lexicon = lexicon
        self._max_phrase = max(len(key) for key in lexicon)

    # ---------------------------------------------------------------- vocabulary

    @functools.cached_property
    def vocabulary(self) -> tuple[str, ...]:
        """Every token a caption can contain, in a fixed order (for a word-level tokenizer).

        Function words, location words, colours, items (numerals then number words, or the
        class-name words), then "," and ".".
        """
        ordered: list[str] = []

        def add(words: Iterable[str]) -> None:
            for word in words:
                if word not in ordered:
                    ordered.append(word)

        for form in self.located_forms + self.centre_forms:
            add(w for w in form.words if w not in SLOTS)
        add(t for joiner in JOINERS for t in joiner if t.isalpha())
        for location in QUADRANTS:
            for phrase in LOCATION_PHRASES[location]:
                add(phrase.split())
        add(COLOURS)
        for position in range(max(len(p) for p in self.item_phrases)):
            add(word for phrases in self.item_phrases if position < len(phrases) for word in phrases[position].split())
        add((",", END))
        return tuple(ordered)

    @functools.cached_property
    def max_caption_tokens(self) -> int:
        """The longest caption (in tokens) for four digits, the most an image holds."""
        location = max(len(p.split()) for phrases in LOCATION_PHRASES.values() for p in phrases)
        item = max(len(p.split()) for phrases in self.item_phrases for p in phrases)
        clause = max(len(form.words) + (location - 1) * form.located + (item - 1) for form in self.located_forms)
        return 4 * clause + 3 * max(len(j) for j in JOINERS) + 1

    @functools.cached_property
    def max_canonical_tokens(self) -> int:
        """The longest canonical caption (`canonical`) in tokens: four digits with the longest item name."""
        longest = max(range(len(self.item_phrases)), key=lambda item: len(self.item_phrases[item][0].split()))
        text = self.render([(location, COLOURS[0], longest) for location in QUADRANTS], np.random.default_rng(0))
        return len(tokenize_caption(self.canonical(text)))

    # ---------------------------------------------------------------- emitting

    def _clause_tokens(self, obj: Triplet, rng: np.random.Generator) -> list[str]:
        location, colour, digit = obj
        if location == "centre":
            forms = self.centre_forms
        elif location in LOCATION_PHRASES:
            forms = self.located_forms
        else:
            raise ValueError(f"Unknown location {location!r}; expected one of {LOCATIONS}.")
        if colour not in COLOURS:
            raise ValueError(f"Unknown colour {colour!r}; expected one of {COLOURS}.")
        if not 0 <= int(digit) < len(self.item_phrases):
            raise ValueError(f"`digit` must be a class index in [0, {len(self.item_phrases)}) (got {digit!r}).")
        form = forms[rng.integers(len(forms))]
        item_options = self.item_phrases[int(digit)]
        fill = {
            "{colour}": (colour,),
            "{item}": tuple(item_options[rng.integers(len(item_options))].split()),
        }
        if form.located:
            phrases = LOCATION_PHRASES[location]
            fill["{location}"] = tuple(phrases[rng.integers(len(phrases))].split())
        tokens: list[str] = []
        for word in form.words:
            tokens.extend(fill.get(word, (word,)))
        return tokens

    def render(self, objects: Sequence[tuple[str, str, int]], rng: np.random.Generator) -> str:
        """One caption for `objects` (`(location, colour, digit)` triples): a random form per
        clause, clauses in a random order, random joiners."""
        if not objects:
            raise ValueError("A caption needs at least one object (got none).")
        tokens: list[str] = []
        for position, index in enumerate(rng.permutation(len(objects))):
            if position:
                tokens.extend(JOINERS[rng.integers(len(JOINERS))])
            tokens.extend(self._clause_tokens(Triplet(*objects[index]), rng))
        tokens.append(END)
        return detokenize_caption(tokens)

    def generate(
        self, objects: Sequence[tuple[str, str, int]], rng: np.random.Generator, num_captions: int = 5
    ) -> list[str]:
        """`num_captions` captions of `objects`, distinct where the grammar allows.

        A single centre digit has few variants (4 for Fashion-MNIST), so after a bounded
        number of tries the remaining captions repeat earlier ones.
        """
        if num_captions < 1:
            raise ValueError(f"`num_captions` must be at least 1 (got {num_captions}).")
        captions: list[str] = []
        for _ in range(8 * num_captions):
            caption = self.render(objects, rng)
            if caption not in captions:
                captions.append(caption)
                if len(captions) == num_captions:
                    return captions
        distinct = len(captions)
        while len(captions) < num_captions:
            captions.append(captions[len(captions) % distinct])
        return captions

    def canonical(self, text: str) -> str:
        """The one caption of the objects `text` describes that `canonical_caption` defines: clauses in
        `LOCATIONS`' quadrant order (the centre last), each in the first form with the first phrase
        (`"the upper left is red 3"`, `"the red 3"` at the centre), joined by ",".

        Raises:
            `ValueError`: `text` has words outside the grammar or a clause without both a colour and an
                item (`parse(strict=True)`): a clause that a canonical caption would drop silently.
        """
        objects = self.parse(text, strict=True)
        if not objects:
            raise ValueError(
                f"Caption {text!r} describes no digit; a caption names a colour and an item, e.g. 'the red 3.'."
            )
        order = {location: index for index, location in enumerate(QUADRANTS + ("centre",))}
        located = next(f for f in self.located_forms if f.name == CANONICAL_FORMS[0])
        centre = next(f for f in self.centre_forms if f.name == CANONICAL_FORMS[1])
        tokens: list[str] = []
        for position, (location, colour, item) in enumerate(
            sorted(objects, key=lambda o: (order[o.location], o.colour, o.digit))
        ):
            if position:
                tokens.extend(JOINERS[0])
            fill = {
                "{location}": tuple(LOCATION_PHRASES[location][0].split()) if location != "centre" else (),
                "{colour}": (colour,),
                "{item}": tuple(self.item_phrases[item][0].split()),
            }
            for word in (located if location != "centre" else centre).words:
                tokens.extend(fill.get(word, (word,)))
        tokens.append(END)
        return detokenize_caption(tokens)

    # ---------------------------------------------------------------- parsing

    def parse(self, text: str, strict: bool = False) -> frozenset[Triplet]:
        """The `(location, colour, digit)` triplets a caption describes.

        Reads the tokens left to right, filling one clause's location, colour and item; a
        separator ("," "and" ".") or a second value for a slot already filled starts the
        next clause. A clause with a colour and an item gives one triplet (no location:
        the centre).

        Args:
            text (`str`): the caption, e.g. generated by a model.
            strict (`bool`, defaults to `False`): raise a `ValueError` naming the unknown
                words and the incomplete clauses instead of skipping them.
        """
        tokens = tokenize_caption(text)
        found: set[Triplet] = set()
        unknown: list[str] = []
        incomplete: list[str] = []
        clause: dict[str, object] = {}
        clause_words: list[str] = []

        def close() -> None:
            if "colour" in clause and "item" in clause:
                found.add(Triplet(clause.get("location", "centre"), clause["colour"], clause["item"]))
            elif clause_words:
                incomplete.append(" ".join(clause_words))
            clause.clear()
            clause_words.clear()

        i = 0
        while i < len(tokens):
            for length in range(min(self._max_phrase, len(tokens) - i), 0, -1):
                entry = self._lexicon.get(tuple(tokens[i : i + length]))
                if entry is not None:
                    break
            else:
                unknown.append(tokens[i])
                i += 1
                continue
            kind, value = entry
            if kind == "separator":
                close()
            elif kind == "function":
                clause_words.append(tokens[i])
            else:
                if kind in clause:  # a second location/colour/item: the separator was left out
                    close()
                clause[kind] = value
                clause_words.extend(tokens[i : i + length])
            i += length
        close()

        if strict and (unknown or incomplete):
            problems = []
            if unknown:
                problems.append(f"unknown or misplaced words {unknown}")
            if incomplete:
                problems.append(f"clauses without both a colour and an item {incomplete}")
            raise ValueError(f"Cannot parse caption {text!r}: " + "; ".join(problems) + ".")
        return frozenset(found)

    # ---------------------------------------------------------------- documentation

    def describe(self) -> str:
        """The grammar as Markdown, for the dataset card."""
        item = (
            '`"0"` .. `"9"` or `"zero"` .. `"nine"`'
            if self.variant == "mnist"
            else ", ".join(f'`"{p[0]}"`' for p in self.item_phrases)
        )
        lines = [
            "A caption has one clause per digit, in a shuffled order, joined by `,`, `and` or `, and`, "
            "and ends with `.`. A clause without a location describes the single digit at the centre.",
            "",
            "| slot | words |",
            "|---|---|",
            "| location | "
            + "; ".join(f"{loc}: " + " / ".join(f'`"{p}"`' for p in LOCATION_PHRASES[loc]) for loc in QUADRANTS)
            + " |",
            "| colour | " + ", ".join(f'`"{c}"`' for c in COLOURS) + " |",
            f"| item | {item} |",
            "",
            "| clause form (digit in a quadrant) | clause form (digit at the centre) |",
            "|---|---|",
        ]
        for row in range(max(len(self.located_forms), len(self.centre_forms))):
            cells = [
                f"`{forms[row].template}`" if row < len(forms) else ""
                for forms in (self.located_forms, self.centre_forms)
            ]
            lines.append(f"| {cells[0]} | {cells[1]} |")
        lines += ["", f"Vocabulary ({len(self.vocabulary)} tokens): " + " ".join(f"`{w}`" for w in self.vocabulary)]
        return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def get_grammar(variant: str = "mnist") -> CaptionGrammar:
    """The (cached) `CaptionGrammar` of `"mnist"` or `"fashion_mnist"`."""
    return CaptionGrammar(variant)


def caption_vocabulary(variant: str = "mnist") -> tuple[str, ...]:
    """Every token a TextMNIST caption of `variant` can contain (see `CaptionGrammar.vocabulary`)."""
    return get_grammar(variant).vocabulary


def render_caption(objects: Sequence[tuple[str, str, int]], rng: np.random.Generator, variant: str = "mnist") -> str:
    """One random caption of `objects`, `(location, colour, digit)` triples."""
    return get_grammar(variant).render(objects, rng)


def generate_captions(
    objects: Sequence[tuple[str, str, int]], rng: np.random.Generator, num_captions: int = 5, variant: str = "mnist"
) -> list[str]:
    """`num_captions` random captions of `objects`, distinct where the grammar allows."""
    return get_grammar(variant).generate(objects, rng, num_captions)


def canonical_caption(text: str, variant: str = "mnist") -> str:
    """The canonical caption of what `text` describes (`CaptionGrammar.canonical`): one fixed form per
    clause, clauses in quadrant order. Every caption of the same objects gives the same one::

        >>> canonical_caption("the lower right is blue nine, and the white 2 is on the top left.")
        'the upper left is white 2, the lower right is blue 9.'
    """
    return get_grammar(variant).canonical(text)


def parse_caption(text: str, variant: str = "mnist", strict: bool = False) -> frozenset[Triplet]:
    """The `(location, colour, digit)` triplets a caption describes (see `CaptionGrammar.parse`).

    Args:
        text (`str`): the caption.
        variant (`str`, defaults to `"mnist"`): whose item words to read (digits or class names).
        strict (`bool`, defaults to `False`): raise a `ValueError` naming unknown words and
            incomplete clauses instead of returning what could be parsed.

    Returns:
        `frozenset[Triplet]`: e.g. `{Triplet("upper_left", "white", 0)}`.
    """
    return get_grammar(variant).parse(text, strict=strict)
