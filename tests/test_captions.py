"""The caption grammar and its parser: every emitted caption parses back to its objects."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from te_vqgan.data.captions import (
    CENTRE_FORMS,
    LOCATED_FORMS,
    CaptionGrammar,
    Triplet,
    canonical_caption,
    caption_vocabulary,
    detokenize_caption,
    generate_captions,
    get_grammar,
    parse_caption,
    render_caption,
    tokenize_caption,
)
from te_vqgan.data.layout import COLOURS, QUADRANTS
from te_vqgan.data.mnist import MNIST_VARIANTS


VARIANTS = ("mnist", "fashion_mnist")

# The paper's caption vocabulary (docs/REPRODUCTION.md, "The data") plus the number words.
REFERENCE_VOCABULARY = (
    {"the", "number", "is", "on", "this", "to", "and", "left", "right", "upper", "lower", "top", "bottom"}
    | set(COLOURS)
    | {str(d) for d in range(10)}
    | {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    | {",", "."}
)


@st.composite
def image_objects(draw):
    """The objects of any image the builder can make: one at the centre, or 1-4 in distinct quadrants."""
    colours = st.sampled_from(COLOURS)
    digits = st.integers(0, 9)
    if draw(st.booleans()):
        return [Triplet("centre", draw(colours), draw(digits))]
    locations = draw(st.lists(st.sampled_from(QUADRANTS), min_size=1, max_size=4, unique=True))
    return [Triplet(location, draw(colours), draw(digits)) for location in locations]


@settings(max_examples=300, deadline=None)
@given(objects=image_objects(), seed=st.integers(0, 2**32 - 1), variant=st.sampled_from(VARIANTS))
def test_parse_inverts_every_emitted_caption(objects, seed, variant):
    grammar = get_grammar(variant)
    captions = grammar.generate(objects, np.random.default_rng(seed), num_captions=5)
    assert len(captions) == 5
    for caption in captions:
        # strict: an emitted caption has no unknown word and no incomplete clause
        assert grammar.parse(caption, strict=True) == frozenset(objects), caption
        tokens = tokenize_caption(caption)
        assert set(tokens) <= set(grammar.vocabulary), caption
        assert len(tokens) <= grammar.max_caption_tokens
        assert detokenize_caption(tokens) == caption
        assert tokens[-1] == "."


@settings(max_examples=200, deadline=None)
@given(objects=image_objects(), seed=st.integers(0, 2**32 - 1), variant=st.sampled_from(VARIANTS))
def test_every_caption_of_the_same_objects_has_one_canonical_caption(objects, seed, variant):
    grammar = get_grammar(variant)
    captions = grammar.generate(objects, np.random.default_rng(seed), num_captions=5)
    canonical = {canonical_caption(caption, variant) for caption in captions}
    assert len(canonical) == 1
    (text,) = canonical
    assert grammar.parse(text, strict=True) == frozenset(objects)  # it says what they say
    assert canonical_caption(text, variant) == text  # and is its own canonical caption
    assert len(tokenize_caption(text)) <= grammar.max_caption_tokens


def test_canonical_caption_orders_quadrants_and_names_each_the_same_way():
    assert (
        canonical_caption(
            "the number 3 on the bottom left is green, red five on the upper right and the top left is white 0."
        )
        == "the upper left is white 0, the upper right is red 5, the lower left is green 3."
    )
    assert canonical_caption("this is the red number seven.") == "the red 7."
    assert canonical_caption("the ankle boot is blue.", "fashion_mnist") == "the blue ankle boot."
    with pytest.raises(ValueError, match=r"clauses without both a colour and an item \['the red'\]"):
        canonical_caption("the red.")
    with pytest.raises(ValueError, match=r"unknown or misplaced words \['purple'\]"):
        canonical_caption("the purple 3.")


def test_every_clause_form_and_synonym_parses():
    # Exhaustive over forms x locations x synonyms x item words, one clause at a time.
    grammar = get_grammar("mnist")
    for form in LOCATED_FORMS:
        for location in QUADRANTS:
            for phrase in ("upper", "top") if location.startswith("upper") else ("lower", "bottom"):
                side = location.split("_")[1]
                for item in ("7", "seven"):
                    text = form.template.format(location=f"{phrase} {side}", colour="green", item=item) + "."
                    assert parse_caption(text, strict=True) == {Triplet(location, "green", 7)}, text
    for form in CENTRE_FORMS:
        text = form.template.format(colour="red", item="three")
        assert parse_caption(text, strict=True) == {Triplet("centre", "red", 3)}, text
    assert len(LOCATED_FORMS) + len(CENTRE_FORMS) >= 6
    assert {f.name for f in grammar.located_forms} == {f.name for f in LOCATED_FORMS}


def test_examples_from_the_issue_and_the_paper():
    assert parse_caption("the upper left is blue 9") == {("upper_left", "blue", 9)}
    assert parse_caption("the white 2 is on the upper left") == {("upper_left", "white", 2)}
    assert parse_caption("blue 9 on the top left") == {("upper_left", "blue", 9)}
    assert parse_caption("the lower right is blue nine, and the white two is on the upper left") == {
        ("lower_right", "blue", 9),
        ("upper_left", "white", 2),
    }


def test_vocabulary_is_the_reference_one():
    assert set(caption_vocabulary("mnist")) == REFERENCE_VOCABULARY
    assert len(caption_vocabulary("mnist")) == len(REFERENCE_VOCABULARY)  # no duplicates
    fashion = set(caption_vocabulary("fashion_mnist"))
    for name in MNIST_VARIANTS["fashion_mnist"].class_names:
        assert set(name.split()) <= fashion
    assert "number" not in fashion and "9" not in fashion
    # Stage 2 uses a text length of 50 tokens.
    assert get_grammar("mnist").max_caption_tokens <= 50
    assert get_grammar("fashion_mnist").max_caption_tokens <= 50


def test_fashion_captions_name_the_classes():
    objects = [Triplet("upper_left", "red", 9), Triplet("lower_right", "blue", 0)]
    caption = render_caption(objects, np.random.default_rng(3), variant="fashion_mnist")
    assert "ankle boot" in caption and "t-shirt" in caption
    assert parse_caption(caption, variant="fashion_mnist", strict=True) == frozenset(objects)
    assert parse_caption("the shirt is red", variant="fashion_mnist") == {("centre", "red", 6)}
    assert parse_caption("the t-shirt is red", variant="fashion_mnist") == {("centre", "red", 0)}


def test_tokenize():
    assert tokenize_caption("The upper left is Blue 9, and red two.") == [
        "the",
        "upper",
        "left",
        "is",
        "blue",
        "9",
        ",",
        "and",
        "red",
        "two",
        ".",
    ]
    assert tokenize_caption("  ankle   boot  ") == ["ankle", "boot"]


def test_noisy_text_returns_what_it_can():
    # unknown words are skipped
    assert parse_caption("the upper left is a lovely blue 9 !") == {("upper_left", "blue", 9)}
    # a clause without an item is dropped, the complete one is kept
    assert parse_caption("the upper left is blue, red 3 on the lower right") == {("lower_right", "red", 3)}
    # missing separators: a second colour starts a new clause
    assert parse_caption("blue 9 on the top left white 2 on the upper right") == {
        ("upper_left", "blue", 9),
        ("upper_right", "white", 2),
    }
    # the location alone ("upper" without a side) is not understood
    assert parse_caption("the upper is green 1") == {("centre", "green", 1)}
    assert parse_caption("") == frozenset()
    assert parse_caption("hello world") == frozenset()


def test_strict_names_the_offending_words():
    with pytest.raises(ValueError, match=r"lovely.*!"):
        parse_caption("the upper left is a lovely blue 9 !", strict=True)
    with pytest.raises(ValueError, match="the upper left is blue"):
        parse_caption("the upper left is blue, red 3 on the lower right", strict=True)
    with pytest.raises(ValueError, match="'upper'"):
        parse_caption("the upper is green 1.", strict=True)
    # digits and fashion names belong to their own variant
    with pytest.raises(ValueError, match="'9'"):
        parse_caption("red 9", variant="fashion_mnist", strict=True)


def test_generate_is_deterministic_and_distinct():
    objects = [Triplet("upper_left", "white", 0), Triplet("lower_right", "blue", 9)]
    a = generate_captions(objects, np.random.default_rng([0, 1, 2]), num_captions=5)
    b = generate_captions(objects, np.random.default_rng([0, 1, 2]), num_captions=5)
    assert a == b
    assert len(set(a)) == 5
    # A centre Fashion-MNIST item has only 4 distinct captions: the rest repeat.
    few = generate_captions([Triplet("centre", "red", 1)], np.random.default_rng(0), 6, variant="fashion_mnist")
    assert len(few) == 6 and len(set(few)) == 4


def test_bad_objects_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="'middle'"):
        render_caption([("middle", "red", 1)], rng)
    with pytest.raises(ValueError, match="'purple'"):
        render_caption([("centre", "purple", 1)], rng)
    with pytest.raises(ValueError, match="12"):
        render_caption([("centre", "red", 12)], rng)
    with pytest.raises(ValueError, match="at least one"):
        render_caption([], rng)
    with pytest.raises(ValueError, match="at least 1"):
        generate_captions([("centre", "red", 1)], rng, num_captions=0)
    with pytest.raises(ValueError, match="'kmnist'"):
        CaptionGrammar("kmnist")


def test_describe_lists_every_form():
    text = get_grammar("mnist").describe()
    for form in LOCATED_FORMS + CENTRE_FORMS:
        assert form.template in text
    fashion = get_grammar("fashion_mnist").describe()
    assert "ankle boot" in fashion and "number" not in fashion.split("Vocabulary")[1]
