"""Stage 2: the merged tokenizer, the sequence layout, the generator loss and masked sampling."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import VQModel
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_configs import TINY_STOCK_VQ, TINY_TEVQ
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

from te_vqgan import TEVQModel
from te_vqgan.data.captions import canonical_caption, caption_vocabulary, get_grammar, render_caption, tokenize_caption
from te_vqgan.data.layout import COLOURS, QUADRANTS
from te_vqgan.generation import (
    GENERATOR_CONFIG_KEYS,
    SPECIAL_TOKENS,
    ModalityMaskLogitsProcessor,
    SequenceLayout,
    TextImageTokenizer,
    build_generator_config,
    check_compatible,
    generate_caption_ids,
    generate_image_indices,
    generator_loss,
    generator_loss_from_logits,
    layout_from_config,
    target_log_likelihood,
    top_k_from_fraction,
)


K = 16  # the tiny VQ models' codebook
GRID = (4, 4)  # TINY_TEVQ: sample_size 16, f = 4
TEXT_LENGTH = get_grammar("mnist").max_caption_tokens + 2
TINY_GPT2 = dict(n_embd=32, n_layer=2, n_head=2)


def random_objects(rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """The objects of an image the builder can make: one at the centre, or 1-4 in distinct quadrants."""
    count = int(rng.integers(0, 5))
    colour = lambda: COLOURS[rng.integers(len(COLOURS))]  # noqa: E731
    if count == 0:
        return [("centre", colour(), int(rng.integers(10)))]
    quadrants = rng.permutation(QUADRANTS)[:count]
    return [(str(q), colour(), int(rng.integers(10))) for q in quadrants]


def random_captions(count: int, seed: int = 0, variant: str = "mnist") -> list[str]:
    rng = np.random.default_rng(seed)
    return [render_caption(random_objects(rng), rng, variant) for _ in range(count)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The models here are tiny: a second intra-op thread gains nothing, and when another
    # process busies the other core of a 2-core runner the threads wait on each other and
    # these tests run ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return TextImageTokenizer.build(codebook_size=K, text_length=TEXT_LENGTH)


@pytest.fixture(scope="module")
def layout(tokenizer):
    return SequenceLayout.from_tokenizer(tokenizer, GRID)


def tiny_model(tokenizer, seed: int = 0, grid=GRID) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(build_generator_config(tokenizer, grid, **TINY_GPT2)).eval()


def batch(tokenizer, layout, size: int, seed: int = 0):
    captions = random_captions(size, seed)
    text_ids = tokenizer.encode_captions(captions)
    codes = torch.randint(0, K, (size, *GRID), generator=torch.Generator().manual_seed(seed))
    return text_ids, tokenizer.encode_image_indices(codes)


# ---------------------------------------------------------------------------- tokenizer


def test_vocabulary_order(tokenizer):
    words = caption_vocabulary("mnist")
    vocab = tokenizer.get_vocab()
    assert len(tokenizer) == len(SPECIAL_TOKENS) + len(words) + K
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.image_token_offset == len(SPECIAL_TOKENS) + len(words) == vocab["<img_0>"]
    assert [vocab[f"<img_{k}>"] for k in range(K)] == list(tokenizer.image_token_ids)
    assert tokenizer.text_token_ids.tolist() == [vocab[w] for w in words]
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<pad>",
        "<bot>",
        "<eot>",
        "<unk>",
    )
    assert (tokenizer.t2i_token, tokenizer.i2t_token, tokenizer.boi_token, tokenizer.eoi_token) == (
        "<t2i>",
        "<i2t>",
        "<boi>",
        "<eoi>",
    )
    assert tokenizer.boi_token_id == vocab["<boi>"]
    # An image token survives decode -> encode; the template adds <bot>/<eot> only when asked to.
    assert tokenizer("<img_3> <img_15>", add_special_tokens=False)["input_ids"] == [
        vocab["<img_3>"],
        vocab["<img_15>"],
    ]
    assert tokenizer("<img_3>")["input_ids"] == [vocab["<bot>"], vocab["<img_3>"], vocab["<eot>"]]
    assert tokenizer.decode([vocab["<img_3>"]]) == "<img_3>"


def test_save_and_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = TextImageTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is TextImageTokenizer
    # A subclass with its own __init__ would come back as a BPE model (see the class docstring).
    assert type(loaded.backend_tokenizer.model).__name__ == "WordLevel"
    assert loaded.get_vocab() == tokenizer.get_vocab()
    for name in ("text_length", "codebook_size", "variant", "image_token_offset"):
        assert getattr(loaded, name) == getattr(tokenizer, name)
    for token in ("pad", "bos", "eos", "t2i", "i2t", "boi", "eoi"):
        name = f"{token}_token_id"
        assert getattr(loaded, name) == getattr(tokenizer, name)
    captions = random_captions(20, seed=1)
    assert torch.equal(loaded.encode_captions(captions), tokenizer.encode_captions(captions))
    text = captions[0] + " <img_3><img_4>"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(codebook_size=0), "`codebook_size` must be an integer >= 1 (got 0)"),
        (dict(codebook_size=16, text_length=2), "`text_length` must be an integer >= 3 (got 2)"),
        (dict(codebook_size=16, variant="cifar"), "Unknown `variant` 'cifar'"),
    ],
)
def test_build_validates(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TextImageTokenizer.build(**kwargs)


@pytest.mark.parametrize("variant", ["mnist", "fashion_mnist"])
def test_caption_round_trip(variant):
    text_length = get_grammar(variant).max_caption_tokens + 2
    tokenizer = TextImageTokenizer.build(codebook_size=K, text_length=text_length, variant=variant)
    captions = random_captions(300, seed=2, variant=variant)
    rng = np.random.default_rng(3)
    captions += get_grammar(variant).generate(random_objects(rng), rng, num_captions=20)
    ids = tokenizer.encode_captions(captions)
    assert ids.shape == (len(captions), text_length)
    assert (ids[:, 0] == tokenizer.bos_token_id).all()
    for caption, row in zip(captions, ids):
        assert tokenizer.decode_caption(row) == caption
        # The stock call gives the same text block, and the stock decode the same caption.
        assert tokenizer(caption, padding="max_length")["input_ids"] == row.tolist()
        assert tokenizer.decode(row, skip_special_tokens=True) == caption
    assert tokenizer.decode_captions(ids) == captions


def test_a_canonical_tokenizer_encodes_what_a_caption_says_and_keeps_the_setting(tmp_path):
    tokenizer = TextImageTokenizer.build(codebook_size=K, text_length=45, caption_form="canonical")
    same = [
        "the lower right is blue nine, and the white 2 is on the top left.",
        "white two on the upper left, the 9 on the bottom right is blue.",
    ]
    ids = tokenizer.encode_captions(same)
    assert torch.equal(ids[0], ids[1])
    assert tokenizer.decode_caption(ids[0]) == "the upper left is white 2, the lower right is blue 9."
    # the stock call encodes what it is given: the canonical wording, given it
    assert tokenizer(canonical_caption(same[1]), padding="max_length")["input_ids"] == ids[0].tolist()
    tokenizer.save_pretrained(tmp_path)
    loaded = TextImageTokenizer.from_pretrained(tmp_path)
    assert loaded.caption_form == "canonical"
    assert torch.equal(loaded.encode_captions(same), ids)
    with pytest.raises(ValueError, match=r"has words outside the vocabulary: \['purple'\]"):
        loaded.encode_caption("the purple 3.")
    with pytest.raises(ValueError, match=r"clauses without both a colour and an item"):
        loaded.encode_caption("the red.")
    # the default, and a tokenizer saved before the setting existed: as written
    assert TextImageTokenizer.build(codebook_size=K).caption_form == "as_written"
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["caption_form"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert TextImageTokenizer.from_pretrained(tmp_path).caption_form == "as_written"
    with pytest.raises(ValueError, match=r"Unknown `caption_form` 'sorted'"):
        TextImageTokenizer.build(codebook_size=K, caption_form="sorted")


def test_caption_errors(tokenizer):
    with pytest.raises(ValueError, match=r"Caption 'the purple 3\.' has words outside the vocabulary: \['purple'\]"):
        tokenizer.encode_caption("the purple 3.")
    with pytest.raises(ValueError, match=r"\['purple', 'in', 'middle', '<img_3>'\]"):
        tokenizer.encode_caption("the purple 3 in the middle <img_3>.")
    short = TextImageTokenizer.build(codebook_size=K, text_length=5)
    exact = short.encode_caption("red 7.")  # 3 words + <bot> + <eot>: fits with no padding
    assert len(exact) == 5 and exact[0] == short.bos_token_id and exact[-1] == short.eos_token_id
    with pytest.raises(ValueError, match=r"needs 6 tokens .* more than `text_length` = 5"):
        short.encode_caption("the red 7.")
    ids = tokenizer.encode_caption("red 7.")
    with pytest.raises(ValueError, match=rf"Ids \[{tokenizer.image_token_offset}\]"):
        tokenizer.decode_caption(ids[:2] + [tokenizer.image_token_offset] + ids[2:])
    with pytest.raises(ValueError, match="not caption words"):
        tokenizer.decode_caption([tokenizer.boi_token_id])


def test_decode_caption_reads_to_first_eot(tokenizer):
    words = tokenizer.encode_caption("red 7.")[1:4]
    eot, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert tokenizer.decode_caption(words) == "red 7."  # no <bot>, no <eot>
    assert tokenizer.decode_caption(words + [eot, tokenizer.boi_token_id]) == "red 7."  # ignored after <eot>
    assert tokenizer.decode_caption(words[:1] + [pad] + words[1:] + [eot]) == "red 7."
    assert tokenizer.decode_caption([eot]) == ""


def test_image_indices_round_trip(tokenizer):
    codes = torch.randint(0, K, (3, *GRID), generator=torch.Generator().manual_seed(0))
    ids = tokenizer.encode_image_indices(codes)
    assert ids.shape == (3, GRID[0] * GRID[1])
    assert torch.equal(ids, codes.flatten(1) + tokenizer.image_token_offset)  # row-major
    assert torch.equal(tokenizer.decode_image_indices(ids, grid=GRID), codes)
    assert torch.equal(tokenizer.decode_image_indices(ids), codes.flatten(1))
    assert torch.equal(tokenizer.encode_image_indices(codes.flatten(1)), ids)  # already flat
    assert tokenizer.convert_ids_to_tokens(ids[0, :2].tolist()) == [f"<img_{c}>" for c in codes[0, 0, :2].tolist()]


def test_image_indices_errors(tokenizer):
    with pytest.raises(ValueError, match=rf"Code index {K} is outside \[0, {K}\).*K = {K}"):
        tokenizer.encode_image_indices(torch.tensor([[0, K]]))
    with pytest.raises(ValueError, match=r"Code index -1"):
        tokenizer.encode_image_indices(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="integer"):
        tokenizer.encode_image_indices(torch.zeros(1, 4))
    offset = tokenizer.image_token_offset
    with pytest.raises(ValueError, match=rf"Id {tokenizer.eos_token_id} \('<eot>'\) is not an image token"):
        tokenizer.decode_image_indices(torch.tensor([[offset, tokenizer.eos_token_id, 1]]))
    with pytest.raises(ValueError, match=r"`grid` \(2, 2\) holds 4 codes but the ids have 3"):
        tokenizer.decode_image_indices(torch.tensor([[offset] * 3]), grid=(2, 2))


# ---------------------------------------------------------------------------- layout


def test_layout_lengths(tokenizer):
    authors = SequenceLayout.from_tokenizer(TextImageTokenizer.build(codebook_size=128, text_length=50), (16, 16))
    assert authors.sequence_length == 309
    assert authors.prompt_length("t2i") == 52 and authors.prompt_length("i2t") == 260

    layout = SequenceLayout.from_tokenizer(tokenizer, GRID)
    text_ids, image_ids = batch(tokenizer, layout, 5)
    t2i = layout.t2i_sequence(text_ids, image_ids)
    i2t = layout.i2t_sequence(image_ids, text_ids)
    length = TEXT_LENGTH + 16 + 3
    assert t2i.shape == i2t.shape == (5, length) == (5, layout.sequence_length)
    assert torch.equal(t2i[:, layout.image_positions("t2i")], image_ids)
    assert torch.equal(i2t[:, layout.image_positions("i2t")], image_ids)
    assert torch.equal(t2i[:, layout.text_block_positions("t2i")], text_ids)
    assert torch.equal(i2t[:, layout.text_block_positions("i2t")], text_ids)
    assert torch.equal(t2i[:, layout.text_positions("t2i")], text_ids[:, 1:])
    assert t2i[0, 0] == tokenizer.t2i_token_id and i2t[0, 0] == tokenizer.i2t_token_id
    assert t2i[0, -1] == i2t[0, layout.image_positions("i2t").stop] == tokenizer.eoi_token_id
    # The prompts are prefixes of the training sequences.
    assert torch.equal(layout.t2i_prompt(text_ids), t2i[:, : layout.prompt_length("t2i")])
    assert torch.equal(layout.i2t_prompt(image_ids), i2t[:, : layout.prompt_length("i2t")])
    assert layout.t2i_prompt(text_ids)[0, -1] == tokenizer.boi_token_id
    assert layout.i2t_prompt(image_ids)[0, -1] == tokenizer.bos_token_id


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_allowed_tokens(tokenizer, layout, direction):
    allowed = layout.allowed_tokens(direction)
    assert allowed.shape == (layout.sequence_length, len(tokenizer)) and allowed.dtype == torch.bool
    structural = layout.structural_positions(direction)
    assert len(structural) == 4
    for position, token in structural.items():
        assert allowed[position].nonzero().flatten().tolist() == [token]
    image_ids = list(tokenizer.image_token_ids)
    for position in range(layout.sequence_length)[layout.image_positions(direction)]:
        assert allowed[position].nonzero().flatten().tolist() == image_ids
    text = tokenizer.text_token_ids.tolist() + [tokenizer.eos_token_id]
    for position in range(layout.sequence_length)[layout.text_positions(direction)]:
        assert allowed[position].nonzero().flatten().tolist() == sorted(text)
    assert not allowed[:, tokenizer.pad_token_id].any()  # never a target
    assert allowed.any(dim=1).all()  # every position was covered


def test_layout_errors(tokenizer, layout):
    text_ids, image_ids = batch(tokenizer, layout, 2)
    with pytest.raises(ValueError, match=rf"`text_ids` of shape \(batch, {TEXT_LENGTH}\).*got shape \(2, 5\)"):
        layout.t2i_sequence(text_ids[:, :5], image_ids)
    with pytest.raises(ValueError, match=r"same batch size \(got 2 and 1\)"):
        layout.t2i_sequence(text_ids, image_ids[:1])
    with pytest.raises(ValueError, match="`direction` must be one of"):
        layout.allowed_tokens("t2t")
    bad = text_ids.clone()
    bad[0, 3] = image_ids[0, 0]  # an image token inside the caption
    with pytest.raises(ValueError, match=r"Sequence 0 of the t2i batch holds id .* at position 4"):
        layout.t2i_sequence(bad, image_ids)
    bad_image = image_ids.clone()
    bad_image[1, 2] = tokenizer.pad_token_id
    with pytest.raises(ValueError, match=r"Sequence 1 of the i2t batch .* expects an image token"):
        layout.i2t_prompt(bad_image)
    with pytest.raises(ValueError, match="`image_grid` must be a tuple of two positive integers"):
        SequenceLayout.from_tokenizer(tokenizer, (4, 0))


# ---------------------------------------------------------------------------- config


def test_config(tokenizer, tmp_path):
    config = build_generator_config(tokenizer, GRID, **TINY_GPT2, resid_pdrop=0.0)
    assert config.vocab_size == len(tokenizer)
    assert config.n_positions == TEXT_LENGTH + 16 + 3
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert config.image_token_offset == tokenizer.image_token_offset
    assert config.codebook_size == K and config.text_length == TEXT_LENGTH and config.image_grid == [4, 4]
    assert config.resid_pdrop == 0.0
    default = build_generator_config(tokenizer, GRID)
    assert (default.n_embd, default.n_layer, default.n_head) == (256, 8, 8)  # the authors' size
    # GPT-2's tanh GELU in torch's fused kernel: the same network as the stock "gelu_new" one, to float rounding.
    assert default.activation_function == "gelu_pytorch_tanh"
    torch.manual_seed(0)
    fused = GPT2LMHeadModel(config).eval()
    stock = GPT2LMHeadModel(
        build_generator_config(tokenizer, GRID, **TINY_GPT2, activation_function="gelu_new")
    ).eval()
    stock.load_state_dict(fused.state_dict())
    ids = torch.randint(0, config.vocab_size, (2, config.n_positions))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids).logits, stock(ids).logits, rtol=0, atol=1e-5)

    config.save_pretrained(tmp_path)
    loaded = GPT2Config.from_pretrained(tmp_path)
    assert {key: getattr(loaded, key) for key in GENERATOR_CONFIG_KEYS} == {
        key: getattr(config, key) for key in GENERATOR_CONFIG_KEYS
    }
    assert layout_from_config(loaded, tokenizer) == SequenceLayout.from_tokenizer(tokenizer, GRID)

    with pytest.raises(ValueError, match=r"`n_embd`: 30 and `n_head`: 4"):
        build_generator_config(tokenizer, GRID, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match=r"\['vocab_size'\] are set from the tokenizer"):
        build_generator_config(tokenizer, GRID, vocab_size=10)


def test_check_compatible(tokenizer):
    config = build_generator_config(tokenizer, GRID, **TINY_GPT2)
    check_compatible(tokenizer, config)
    check_compatible(tokenizer, config, TEVQModel(**TINY_TEVQ))
    check_compatible(tokenizer, config, VQModel(**TINY_STOCK_VQ))

    other = TextImageTokenizer.build(codebook_size=32, text_length=TEXT_LENGTH)
    with pytest.raises(ValueError) as error:
        check_compatible(other, config)
    message = str(error.value)
    assert f"vocabulary size: config has {len(tokenizer)} but len(tokenizer) has {len(other)}" in message
    assert "codebook_size: config has 16 but the tokenizer has 32" in message

    shorter = TextImageTokenizer.build(codebook_size=K, text_length=TEXT_LENGTH - 1)
    message = rf"text_length: config has {TEXT_LENGTH} but the tokenizer has {TEXT_LENGTH - 1}"
    with pytest.raises(ValueError, match=message):
        check_compatible(shorter, config)

    big_grid = build_generator_config(tokenizer, (8, 8), **TINY_GPT2)
    with pytest.raises(ValueError, match=r"image_grid: config has \[8, 8\] but the VQ model .* has \[4, 4\]"):
        check_compatible(tokenizer, big_grid, TEVQModel(**TINY_TEVQ))
    with pytest.raises(ValueError, match=r"num_vq_embeddings has 8"):
        check_compatible(tokenizer, config, VQModel(**{**TINY_STOCK_VQ, "num_vq_embeddings": 8}))
    with pytest.raises(ValueError, match="not made by `build_generator_config`"):
        check_compatible(tokenizer, GPT2Config())


# ---------------------------------------------------------------------------- loss


def manual_losses(logits, input_ids, tokenizer, layout, direction):
    """The masked cross-entropy position by position, with plain Python loops."""
    text_terms, image_terms = [], []
    allowed = layout.allowed_tokens(direction)
    for b in range(input_ids.shape[0]):
        for p in range(1, layout.sequence_length):
            target = input_ids[b, p].item()
            in_image = p in range(layout.sequence_length)[layout.image_positions(direction)]
            in_text = p in range(layout.sequence_length)[layout.text_positions(direction)]
            if not (in_image or in_text) or target == tokenizer.pad_token_id:
                continue
            row = logits[b, p - 1].double()
            kept = row[allowed[p]]
            term = torch.logsumexp(kept, 0) - row[target]
            (image_terms if in_image else text_terms).append(term)
    return torch.stack(text_terms).mean(), torch.stack(image_terms).mean()


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_loss_matches_manual_computation(tokenizer, layout, direction):
    text_ids, image_ids = batch(tokenizer, layout, 3, seed=4)
    if direction == "t2i":
        input_ids = layout.t2i_sequence(text_ids, image_ids)
    else:
        input_ids = layout.i2t_sequence(image_ids, text_ids)
    logits = torch.randn(3, layout.sequence_length, len(tokenizer), generator=torch.Generator().manual_seed(5)) * 3
    out = generator_loss_from_logits(logits, input_ids, layout, direction)
    text, image = manual_losses(logits, input_ids, tokenizer, layout, direction)
    torch.testing.assert_close(out.text_loss.double(), text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.image_loss.double(), image, rtol=1e-5, atol=1e-5)
    target, other = (image, text) if direction == "t2i" else (text, image)
    torch.testing.assert_close(out.loss.double(), (other + 7 * target) / 8, rtol=1e-5, atol=1e-5)
    # w = 0: the other modality only; w = 1: the plain mean of the two.
    zero = generator_loss_from_logits(logits, input_ids, layout, direction, target_weight=0.0)
    torch.testing.assert_close(zero.loss.double(), other, rtol=1e-5, atol=1e-5)
    one = generator_loss_from_logits(logits, input_ids, layout, direction, target_weight=1)
    torch.testing.assert_close(one.loss.double(), (text + image) / 2, rtol=1e-5, atol=1e-5)


def test_loss_ignores_padding_and_forced_tokens(tokenizer, layout):
    text_ids, image_ids = batch(tokenizer, layout, 2, seed=6)
    input_ids = layout.t2i_sequence(text_ids, image_ids)
    logits = torch.randn(2, layout.sequence_length, len(tokenizer), generator=torch.Generator().manual_seed(7))
    out = generator_loss_from_logits(logits, input_ids, layout, "t2i")

    # Logits that predict a <pad>, a structural token or the token after <eoi> do not matter.
    predicts_ignored = torch.zeros(2, layout.sequence_length, dtype=torch.bool)
    predicts_ignored[:, :-1] = input_ids[:, 1:] == tokenizer.pad_token_id
    for position in layout.structural_positions("t2i"):
        if position > 0:
            predicts_ignored[:, position - 1] = True
    predicts_ignored[:, -1] = True
    assert predicts_ignored[:, : layout.text_positions("t2i").stop].sum() > 4  # the captions are padded
    changed = logits.masked_fill(predicts_ignored.unsqueeze(-1), 1e4)
    again = generator_loss_from_logits(changed, input_ids, layout, "t2i")
    torch.testing.assert_close(again.loss, out.loss)
    torch.testing.assert_close(again.text_loss, out.text_loss)

    # Logits on ids the mask rules out do not matter either, in bf16 as well.
    not_allowed = ~layout.allowed_tokens("t2i").roll(-1, dims=0)
    spiky = logits.masked_fill(not_allowed.unsqueeze(0), 1e4)
    torch.testing.assert_close(generator_loss_from_logits(spiky, input_ids, layout, "t2i").loss, out.loss)
    bf16 = generator_loss_from_logits(spiky.bfloat16(), input_ids, layout, "t2i")
    assert torch.isfinite(bf16.loss) and abs(bf16.loss.item() - out.loss.item()) < 0.05


def test_loss_validates(tokenizer, layout):
    text_ids, image_ids = batch(tokenizer, layout, 2)
    input_ids = layout.t2i_sequence(text_ids, image_ids)
    logits = torch.zeros(2, layout.sequence_length, len(tokenizer))
    with pytest.raises(ValueError, match=r"Sequence 0 of the i2t batch holds id"):
        generator_loss_from_logits(logits, input_ids, layout, "i2t")
    with pytest.raises(ValueError, match=r"`target_weight` must be a finite number >= 0 \(got -1\)"):
        generator_loss_from_logits(logits, input_ids, layout, "t2i", target_weight=-1)
    with pytest.raises(ValueError, match="Expected logits of shape"):
        generator_loss_from_logits(logits[..., :-1], input_ids, layout, "t2i")
    with pytest.raises(ValueError, match="full t2i sequences"):
        generator_loss_from_logits(logits[:, :-1], input_ids[:, :-1], layout, "t2i")


def test_training_lowers_both_losses(tokenizer, layout):
    model = tiny_model(tokenizer).train()
    text_ids, image_ids = batch(tokenizer, layout, 4, seed=8)
    t2i = layout.t2i_sequence(text_ids, image_ids)
    i2t = layout.i2t_sequence(image_ids, text_ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def losses():
        with torch.no_grad():
            a, b = generator_loss(model, t2i, layout, "t2i"), generator_loss(model, i2t, layout, "i2t")
        return a.text_loss + b.text_loss, a.image_loss + b.image_loss

    model.eval()
    text_before, image_before = losses()
    model.train()
    for _ in range(25):
        optimizer.zero_grad()
        loss = generator_loss(model, t2i, layout, "t2i").loss + generator_loss(model, i2t, layout, "i2t").loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    model.eval()
    text_after, image_after = losses()
    assert text_after < 0.8 * text_before
    assert image_after < 0.95 * image_before


# ---------------------------------------------------------------------------- sampling


def test_top_k_from_fraction():
    assert top_k_from_fraction(350) == 35
    assert top_k_from_fraction(5) == 1
    assert top_k_from_fraction(63, 1.0) == 63
    for fraction in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"`fraction` must be in \(0, 1\] \(got {fraction}\)"):
            top_k_from_fraction(100, fraction)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    direction=st.sampled_from(["t2i", "i2t"]),
    top_k=st.integers(1, 80),
    temperature=st.floats(0.05, 5.0),
)
@pytest.mark.slow
def test_processor_and_top_k_only_sample_allowed_ids(data, direction, top_k, temperature):
    tokenizer = TextImageTokenizer.build(codebook_size=K, text_length=TEXT_LENGTH)
    layout = SequenceLayout.from_tokenizer(tokenizer, (2, 2))
    allowed = layout.allowed_tokens(direction)
    processor = ModalityMaskLogitsProcessor(allowed)
    position = data.draw(st.integers(1, layout.sequence_length - 1))
    batch_size = data.draw(st.integers(1, 3))
    values = st.floats(-1e4, 1e4, allow_nan=False, width=32)
    scores = torch.tensor(
        data.draw(
            st.lists(
                st.lists(values, min_size=len(tokenizer), max_size=len(tokenizer)),
                min_size=batch_size,
                max_size=batch_size,
            )
        )
    )
    input_ids = torch.zeros(batch_size, position, dtype=torch.long)
    chain = LogitsProcessorList([processor, TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k)])
    processed = chain(input_ids, scores)
    probs = processed.softmax(-1)
    assert torch.isfinite(probs).all()
    assert (probs[:, ~allowed[position]] == 0).all()
    samples = torch.multinomial(probs, 20, replacement=True, generator=torch.Generator().manual_seed(position))
    assert allowed[position][samples].all()


def test_processor_errors_and_dtypes(layout):
    processor = ModalityMaskLogitsProcessor.from_layout(layout, "t2i")
    scores = torch.zeros(2, layout.vocab_size, dtype=torch.bfloat16)
    out = processor(torch.zeros(2, layout.image_positions("t2i").start, dtype=torch.long), scores)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).sum(dim=1).tolist() == [K, K]
    length = layout.sequence_length
    with pytest.raises(ValueError, match=rf"position {length}, past the layout's {length} positions"):
        processor(torch.zeros(1, layout.sequence_length, dtype=torch.long), scores[:1])
    with pytest.raises(ValueError, match="allow no id at all"):
        ModalityMaskLogitsProcessor(torch.zeros(3, 4, dtype=torch.bool))


def test_processor_inside_plain_generate(tokenizer, layout):
    model = tiny_model(tokenizer, seed=1)
    prompt = layout.t2i_prompt(tokenizer.encode_captions(random_captions(3, seed=9)))
    output = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=True,
        top_k=10,
        logits_processor=LogitsProcessorList([ModalityMaskLogitsProcessor.from_layout(layout, "t2i")]),
        max_new_tokens=layout.num_image_tokens + 1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eoi_token_id,
    )
    assert output.shape == (3, layout.sequence_length)
    layout.check_sequence(output, "t2i")
    assert (output[:, -1] == tokenizer.eoi_token_id).all()


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_generation_always_follows_the_layout(tokenizer, layout, scale):
    text_ids, image_ids = batch(tokenizer, layout, 3, seed=10)
    text_tokens = set(tokenizer.text_token_ids.tolist()) | {tokenizer.eos_token_id, tokenizer.pad_token_id}
    for seed in range(3):
        model = tiny_model(tokenizer, seed=seed)
        with torch.no_grad():
            # Huge output weights make the raw logits all but one-hot: the mask must still win.
            model.lm_head.weight.mul_(scale)
        generator = torch.Generator().manual_seed(seed)
        codes = generate_image_indices(model, tokenizer, text_ids, generator=generator, temperature=0.7)
        assert codes.shape == (3, *GRID) and codes.dtype == torch.long
        assert ((codes >= 0) & (codes < K)).all()
        caption_ids = generate_caption_ids(model, tokenizer, image_ids, generator=generator, top_k_fraction=0.5)
        assert caption_ids.shape[0] == 3 and caption_ids.shape[1] <= TEXT_LENGTH - 1
        assert set(caption_ids.flatten().tolist()) <= text_tokens
        for row in caption_ids.tolist():
            if tokenizer.eos_token_id in row:
                tail = row[row.index(tokenizer.eos_token_id) + 1 :]
                assert set(tail) <= {tokenizer.pad_token_id}
        vocabulary = set(caption_vocabulary("mnist"))
        for caption in tokenizer.decode_captions(caption_ids):
            assert set(tokenize_caption(caption)) <= vocabulary


def test_generation_is_reproducible_per_generator(tokenizer, layout):
    model = tiny_model(tokenizer, seed=3)
    text_ids, image_ids = batch(tokenizer, layout, 2, seed=11)
    torch.manual_seed(1234)
    state = torch.get_rng_state()

    first = generate_image_indices(model, tokenizer, text_ids, generator=torch.Generator().manual_seed(5))
    second = generate_image_indices(model, tokenizer, text_ids, generator=torch.Generator().manual_seed(5))
    other = generate_image_indices(model, tokenizer, text_ids, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, second) and not torch.equal(first, other)
    static = generate_image_indices(
        model, tokenizer, text_ids, generator=torch.Generator().manual_seed(5), cache_implementation="static"
    )
    uncached = generate_image_indices(
        model, tokenizer, text_ids, generator=torch.Generator().manual_seed(5), use_cache=False
    )
    assert torch.equal(static, first) and torch.equal(uncached, first)

    def sample_captions(generator):
        return tokenizer.decode_captions(generate_caption_ids(model, tokenizer, image_ids, generator=generator))

    captions = sample_captions(torch.Generator().manual_seed(5))
    assert captions == sample_captions(torch.Generator().manual_seed(5))
    assert all(isinstance(c, str) for c in captions) and len(captions) == 2

    # The caller's global RNG was never advanced.
    assert torch.equal(torch.get_rng_state(), state)


def test_generation_validates(tokenizer, layout):
    model = tiny_model(tokenizer)
    text_ids, image_ids = batch(tokenizer, layout, 1)
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0 \(got 0\)"):
        generate_image_indices(model, tokenizer, text_ids, temperature=0)
    with pytest.raises(ValueError, match=r"`top_k_fraction` must be in \(0, 1\]"):
        generate_caption_ids(model, tokenizer, image_ids, top_k_fraction=2.0)
    with pytest.raises(ValueError, match=r"`num_candidates` must be an integer >= 1 \(got 0\)"):
        generate_image_indices(model, tokenizer, text_ids, num_candidates=0)
    with pytest.raises(ValueError, match=r"`num_candidates` must be an integer >= 1 \(got 2.0\)"):
        generate_caption_ids(model, tokenizer, image_ids, num_candidates=2.0)
    with pytest.raises(ValueError, match="2 generators for 1 sequences"):
        generate_image_indices(model, tokenizer, text_ids, generator=[torch.Generator()] * 2, num_candidates=3)
    other = TextImageTokenizer.build(codebook_size=32, text_length=TEXT_LENGTH)
    with pytest.raises(ValueError, match="codebook_size: config has 16 but the tokenizer has 32"):
        generate_image_indices(model, other, text_ids)
    with pytest.raises(ValueError, match=r"`text_ids` of shape \(batch, "):
        generate_image_indices(model, tokenizer, text_ids[:, :-1])
    with torch.no_grad():
        assert math.isfinite(
            generator_loss(model, layout.t2i_sequence(text_ids, image_ids), layout, "t2i").loss.item()
        )


# ---------------------------------------------------------------------------- reranking


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_target_log_likelihood_sums_what_the_loss_averages(tokenizer, layout, direction):
    model = tiny_model(tokenizer, seed=2)
    text_ids, image_ids = batch(tokenizer, layout, 3, seed=8)
    sequences = (
        layout.t2i_sequence(text_ids, image_ids) if direction == "t2i" else layout.i2t_sequence(image_ids, text_ids)
    )
    with torch.no_grad():
        scores = target_log_likelihood(model, sequences, layout, direction)
        for row, score in zip(sequences, scores):
            out = generator_loss(model, row[None], layout, direction)
            if direction == "t2i":  # the image codes
                expected = -out.image_loss * layout.num_image_tokens
            else:  # the words and <eot>, not the <pad>s
                expected = -out.text_loss * (row[layout.text_positions("i2t")] != tokenizer.pad_token_id).sum()
            torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="full i2t sequences"):
        target_log_likelihood(model, sequences[:, :-1], layout, "i2t")


def candidate_generators(seeds, count):
    """What the samplers derive from one generator per input: a generator per candidate."""
    parents = [torch.Generator().manual_seed(seed) for seed in seeds]
    return [
        torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=g)))
        for g in parents
        for _ in range(count)
    ]


def test_reranking_keeps_the_candidate_the_other_direction_scores_highest(tokenizer, layout):
    model = tiny_model(tokenizer, seed=5)
    text_ids, image_ids = batch(tokenizer, layout, 2, seed=12)
    count = 4

    # Text to image: of each caption's candidates, the likeliest under image-to-text.
    candidates = generate_image_indices(
        model, tokenizer, text_ids.repeat_interleave(count, 0), generator=candidate_generators([3, 4], count)
    )
    with torch.no_grad():
        scores = target_log_likelihood(
            model,
            layout.i2t_sequence(tokenizer.encode_image_indices(candidates), text_ids.repeat_interleave(count, 0)),
            layout,
            "i2t",
        ).view(2, count)
    assert len(set(scores.flatten().tolist())) == 2 * count  # the candidates differ
    best = candidates.view(2, count, *GRID)[torch.arange(2), scores.argmax(1)]
    generators = [torch.Generator().manual_seed(seed) for seed in (3, 4)]
    reranked = generate_image_indices(model, tokenizer, text_ids, generator=generators, num_candidates=count)
    assert torch.equal(reranked, best)
    # Each caption's choice depends on its own generator only, not on the batch.
    alone = generate_image_indices(
        model, tokenizer, text_ids[1:], generator=[torch.Generator().manual_seed(4)], num_candidates=count
    )
    assert torch.equal(alone, best[1:])
    assert generate_image_indices(model, tokenizer, text_ids, num_candidates=1).shape == (2, *GRID)

    # Image to text: of each image's captions, the one under which text-to-image finds the image likeliest.
    captions = generate_caption_ids(
        model, tokenizer, image_ids.repeat_interleave(count, 0), generator=candidate_generators([7, 8], count)
    )
    blocks = torch.full((2 * count, layout.text_length), tokenizer.pad_token_id)
    blocks[:, 0] = layout.bot_id
    blocks[:, 1 : 1 + captions.shape[1]] = captions
    with torch.no_grad():
        scores = target_log_likelihood(
            model, layout.t2i_sequence(blocks, image_ids.repeat_interleave(count, 0)), layout, "t2i"
        )
    scores[~(captions == layout.eot_id).any(1)] = float("-inf")  # a caption never closed is not chosen
    expected = captions.view(2, count, -1)[torch.arange(2), scores.view(2, count).argmax(1)]
    generators = [torch.Generator().manual_seed(seed) for seed in (7, 8)]
    chosen = generate_caption_ids(model, tokenizer, image_ids, generator=generators, num_candidates=count)
    assert torch.equal(chosen, expected)


# ---------------------------------------------------------------------------- position schemes
def test_modality_positions_are_shared_by_both_directions(layout):
    t2i, i2t = layout.position_ids("t2i", "modality"), layout.position_ids("i2t", "modality")
    T, N = layout.text_length, layout.num_image_tokens
    assert len(t2i) == len(i2t) == layout.sequence_length
    assert torch.equal(t2i[layout.image_positions("t2i")], i2t[layout.image_positions("i2t")])
    assert torch.equal(t2i[layout.text_block_positions("t2i")], i2t[layout.text_block_positions("i2t")])
    assert torch.equal(t2i[layout.image_positions("t2i")], torch.arange(T + 3, T + 3 + N))
    assert (t2i[0], i2t[0]) == (0, 1)  # the task tokens keep rows of their own
    assert sorted(set(t2i.tolist()) | set(i2t.tolist())) == list(range(layout.num_position_rows("modality")))
    assert torch.equal(layout.position_ids("i2t"), torch.arange(layout.sequence_length))  # index: GPT-2's own
    with pytest.raises(
        ValueError, match="`position_scheme` must be one of \\('index', 'modality'\\) \\(got 'rope'\\)"
    ):
        layout.position_ids("t2i", "rope")


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_generation_uses_the_positions_the_model_trained_with(tokenizer, layout, direction):
    """Greedy samples of a modality-position generator are the argmax of its teacher-forced
    logits at the layout's positions: `generate` continued the prompt's position ids exactly as
    training laid them out."""
    torch.manual_seed(0)
    config = build_generator_config(tokenizer, GRID, position_scheme="modality", **TINY_GPT2)
    assert config.n_positions == layout.sequence_length + 1 and config.position_scheme == "modality"
    model = GPT2LMHeadModel(config).eval()
    text_ids, image_ids = batch(tokenizer, layout, 3)
    greedy = dict(top_k_fraction=1e-3, generator=torch.Generator().manual_seed(0))
    if direction == "t2i":
        codes = generate_image_indices(model, tokenizer, text_ids, **greedy)
        with pytest.raises(
            ValueError, match="`use_cache=False` is not supported for a generator with `position_scheme='modality'`"
        ):
            generate_image_indices(model, tokenizer, text_ids, use_cache=False, **greedy)
        sequence = layout.t2i_sequence(text_ids, tokenizer.encode_image_indices(codes))
        targets = layout.image_positions("t2i")
    else:
        words = generate_caption_ids(model, tokenizer, image_ids, **greedy)
        text = torch.full((3, layout.text_length), layout.pad_id)
        text[:, 0] = layout.bot_id
        text[:, 1 : 1 + words.shape[1]] = words
        sequence = layout.i2t_sequence(image_ids, text)
        targets = slice(layout.text_positions("i2t").start, layout.text_positions("i2t").start + words.shape[1])
    with torch.no_grad():
        positions = layout.position_ids(direction, "modality").expand(3, -1)
        logits = model(input_ids=sequence, position_ids=positions).logits
    allowed = layout.allowed_tokens(direction)[1:]  # logits at p predict the token at p + 1
    masked = logits[:, :-1].masked_fill(~allowed, float("-inf"))
    predicted = masked[:, targets.start - 1 : targets.stop - 1].argmax(-1)
    chosen = sequence[:, targets]
    real = chosen != layout.pad_id
    assert torch.equal(predicted[real], chosen[real])
    # and the index scheme's positions would have predicted something else: the positions matter
    with torch.no_grad():
        plain = model(input_ids=sequence).logits[:, :-1].masked_fill(~allowed, float("-inf"))
    assert not torch.equal(plain[:, targets.start - 1 : targets.stop - 1].argmax(-1)[real], chosen[real])


def test_the_loss_reads_positions_from_the_config(tokenizer, layout):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(build_generator_config(tokenizer, GRID, position_scheme="modality", **TINY_GPT2)).eval()
    text_ids, image_ids = batch(tokenizer, layout, 2)
    sequence = layout.t2i_sequence(text_ids, image_ids)
    with torch.no_grad():
        loss = generator_loss(model, sequence, layout, "t2i").loss
        logits = model(input_ids=sequence, position_ids=layout.position_ids("t2i", "modality").expand(2, -1)).logits
        expected = generator_loss_from_logits(logits, sequence, layout, "t2i").loss
    assert torch.allclose(loss, expected)

    class Wrapped(torch.nn.Module):  # what DDP makes of the model: no `config`, the model as `module`
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, **kwargs):
            return self.module(**kwargs)

    with torch.no_grad():
        assert torch.allclose(generator_loss(Wrapped(model), sequence, layout, "t2i").loss, expected)
    old = tiny_model(tokenizer).config.to_dict()
    old.pop("position_scheme")  # a config saved before the scheme existed reads as "index"
    from te_vqgan.generation import position_scheme

    assert position_scheme(GPT2Config.from_dict(old)) == "index"
    with pytest.raises(ValueError, match="`position_scheme` must be one of"):
        build_generator_config(tokenizer, GRID, position_scheme="rope")
