import numpy as np
import pytest
import torch
from diffusers import VQModel
from tiny_configs import TINY_STOCK_VQ, TINY_TEVQ

from te_vqgan import TEVQModel, codebook_usage, shift_equivariance
from te_vqgan.data.layout import LOCATIONS, index_cell, render_canvas
from te_vqgan.metrics import VQModelTokenizer, as_tokenizer, render_shift_group


class PatchifyQuantizer:
    """A stride-f patchify: a token depends only on its own f x f patch, so it is provably
    equivariant to shifts by multiples of f. With `position_dependent`, each token also
    depends on where it is, which breaks equivariance."""

    def __init__(self, f=4, num_codes=64, position_dependent=False):
        self.f, self.num_codes, self.position_dependent = f, num_codes, position_dependent

    def parameters(self):
        return iter([])

    def eval(self):
        return self

    def encode_to_indices(self, images):
        patches = torch.nn.functional.avg_pool2d(images.mean(1, keepdim=True), self.f)[:, 0]  # [B, h, w]
        indices = ((patches + 1) / 2 * 15.999).long()  # 16 brightness levels
        if self.position_dependent:
            rows = torch.arange(indices.shape[1])[:, None]
            indices = indices + 16 * ((rows // 4) % 2)  # blocks of 4 token rows alternate
        return indices % self.num_codes


@pytest.fixture(scope="module")
def digits(mnist_test_digits):
    images, _ = mnist_test_digits
    return images[:6]


def test_placements_put_the_same_digit_in_each_cell(digits):
    group = render_shift_group(digits[0])
    assert group.shape == (5, 64, 64, 3)
    for image, location in zip(group, LOCATIONS):
        rows, cols = index_cell(location, 1)
        cell = image[rows, cols]
        np.testing.assert_array_equal(cell[2:30, 2:30, 0], digits[0])
        assert image.sum() == cell.sum()  # nothing outside the cell


@pytest.mark.parametrize("f", [4, 8, 16])
def test_patchify_tokenizer_scores_exactly_one(digits, f):
    result = shift_equivariance(PatchifyQuantizer(f=f), digits)
    assert result.score == 1.0
    assert len(result.per_pair) == 10 and all(v == 1.0 for v in result.per_pair.values())
    assert result.downsample_factor == f
    assert result.index_maps.shape == (len(digits), 5, 64 // f, 64 // f)


def test_position_dependent_tokenizer_scores_below_one(digits):
    result = shift_equivariance(PatchifyQuantizer(position_dependent=True), digits)
    assert 0.0 < result.score < 1.0
    # A horizontal shift keeps the rows: still equivariant. A 16-pixel (4-token) vertical
    # shift moves into the other kind of row block: broken.
    assert result.per_pair["upper_left~upper_right"] == 1.0
    assert result.per_pair["centre~upper_left"] < 1.0


def test_score_is_the_mean_of_identical_fractions_over_pairs(digits):
    result = shift_equivariance(PatchifyQuantizer(position_dependent=True), digits)
    cells = [result.index_maps[:, i][(slice(None), *index_cell(loc, 4))] for i, loc in enumerate(LOCATIONS)]
    fractions = [(cells[i] == cells[j]).float().mean().item() for i in range(5) for j in range(i + 1, 5)]
    assert result.score == pytest.approx(np.mean(fractions))
    assert result.score == pytest.approx(np.mean(list(result.per_pair.values())))
    assert result.score == pytest.approx(result.per_digit.mean())


def test_cells_are_the_authors_sub_grids():
    # docs/REPRODUCTION.md ("The equivariance metric"): centre [4:12, 4:12], upper left [0:8, 0:8], ... at f=4.
    assert index_cell("centre", 4) == (slice(4, 12), slice(4, 12))
    assert index_cell("upper_left", 4) == (slice(0, 8), slice(0, 8))
    assert index_cell("upper_right", 4) == (slice(0, 8), slice(8, 16))
    assert index_cell("lower_left", 4) == (slice(8, 16), slice(0, 8))
    assert index_cell("lower_right", 4) == (slice(8, 16), slice(8, 16))
    assert index_cell("centre", 8) == (slice(2, 6), slice(2, 6))


def test_factor_that_does_not_divide_16_is_rejected(digits):
    with pytest.raises(ValueError, match="divide 16.*f=32"):
        shift_equivariance(PatchifyQuantizer(f=32), digits)


def test_te_vq_model_and_stock_vq_model(digits):
    torch.manual_seed(0)
    te = TEVQModel(**TINY_TEVQ)
    result = shift_equivariance(te, digits)
    assert 0.0 <= result.score <= 1.0 and result.index_maps.shape == (6, 5, 16, 16)

    torch.manual_seed(0)
    stock = VQModel(**TINY_STOCK_VQ).eval()
    assert isinstance(as_tokenizer(stock), VQModelTokenizer)
    result = shift_equivariance(stock, digits)
    assert 0.0 <= result.score <= 1.0 and result.index_maps.shape == (6, 5, 16, 16)
    # The adapter's indices are the stock quantizer's, and decode back through the stock decoder.
    quantizer = VQModelTokenizer(stock)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    indices = quantizer.encode_to_indices(x)
    with torch.no_grad():
        _, _, (_, _, flat) = stock.quantize(stock.encode(x).latents)
        assert torch.equal(indices.reshape(-1), flat.reshape(-1))
        assert quantizer.decode_indices(indices).shape == x.shape


def test_shift_equivariance_rejects_bad_digits():
    with pytest.raises(ValueError, match=r"\(N, 28, 28\).*\(3, 32, 32\)"):
        shift_equivariance(PatchifyQuantizer(), np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        shift_equivariance(PatchifyQuantizer(), np.full((1, 28, 28), 2.0))
    with pytest.raises(TypeError, match="encode_to_indices"):
        shift_equivariance(object(), np.zeros((1, 28, 28), dtype=np.uint8))


def test_codebook_usage():
    usage = codebook_usage(torch.tensor([[0, 1], [1, 3]]), num_codes=5)
    assert usage.codes_used == 3
    assert usage.histogram.tolist() == [1, 2, 0, 1, 0]
    p = np.array([0.25, 0.5, 0.25])
    assert usage.perplexity == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert codebook_usage(torch.arange(8), 8).perplexity == pytest.approx(8.0)
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 8).perplexity == pytest.approx(1.0)


def test_codebook_usage_rejects_bad_indices():
    with pytest.raises(ValueError, match=r"\[0, 4\).*max 4"):
        codebook_usage(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="integer"):
        codebook_usage(torch.tensor([0.5]), 4)


def test_render_canvas_geometry_and_colours(digits):
    canvas = render_canvas([("upper_left", "red", digits[0]), ("lower_right", "blue", digits[1])])
    np.testing.assert_array_equal(canvas[2:30, 2:30, 0], digits[0])
    assert canvas[2:30, 2:30, 1:].sum() == 0
    np.testing.assert_array_equal(canvas[34:62, 34:62, 2], digits[1])
    with pytest.raises(ValueError, match="centre.*alone"):
        render_canvas([("centre", "red", digits[0]), ("upper_left", "red", digits[1])])


def test_groups_entry_point_matches_digits_entry_point(digits):
    from te_vqgan.metrics import shift_equivariance_of_groups

    quantizer = PatchifyQuantizer(position_dependent=True)
    groups = np.stack([render_shift_group(d) for d in digits])
    by_groups = shift_equivariance_of_groups(quantizer, groups)
    by_digits = shift_equivariance(quantizer, digits)
    assert by_groups.score == by_digits.score and by_groups.per_pair == by_digits.per_pair
    with pytest.raises(ValueError, match=r"\(N, 5, 64, 64, 3\)"):
        shift_equivariance_of_groups(quantizer, groups[:, :4])


def test_foreground_score_counts_only_the_digit_tokens(digits):
    from te_vqgan.metrics import shift_equivariance_of_groups

    class BackgroundBreaker(PatchifyQuantizer):
        # Equivariant on the digit, but background tokens carry their position.
        def encode_to_indices(self, images):
            indices = super().encode_to_indices(images)
            background = (
                torch.nn.functional.max_pool2d(images.amax(1, keepdim=True), self.f)[:, 0] <= -1
            )  # all-black patch
            rows = torch.arange(indices.shape[1])[:, None].expand_as(indices[0])
            return torch.where(background, 16 + rows, indices)

    groups = np.stack([render_shift_group(d) for d in digits])
    exact = shift_equivariance_of_groups(PatchifyQuantizer(), groups)
    assert exact.foreground_score == 1.0
    broken = shift_equivariance_of_groups(BackgroundBreaker(num_codes=64), groups)
    assert broken.foreground_score == 1.0 and broken.score < 1.0


# ---------------------------------------------------------------- equivariance three ways
class ColourBreaker(PatchifyQuantizer):
    """Equivariant for white digits; a red, green or blue stroke's tokens carry their row, so
    those colours break it on the digit's own tokens."""

    def encode_to_indices(self, images):
        indices = super().encode_to_indices(images)
        pixels = (images + 1) / 2
        one_channel = (pixels.amax(1) - pixels.amin(1)) > 1e-6  # a coloured (not white, not black) pixel
        coloured = torch.nn.functional.max_pool2d(one_channel[:, None].float(), self.f)[:, 0] > 0
        rows = torch.arange(indices.shape[1])[:, None].expand_as(indices[0])
        return torch.where(coloured, 16 + rows, indices)


def test_recolour_groups_draws_what_render_canvas_draws(digits):
    from te_vqgan.metrics import recolour_groups

    white = render_shift_group(digits[0])
    for colour in ("white", "red", "green", "blue"):
        np.testing.assert_array_equal(recolour_groups(white, colour), render_shift_group(digits[0], colour))
    with pytest.raises(ValueError, match="purple"):
        recolour_groups(white, "purple")


def test_three_equivariance_numbers_on_hand_made_index_maps(digits):
    from te_vqgan.metrics import equivariance_summary, shift_equivariance_by_colour

    groups = np.stack([render_shift_group(d) for d in digits])
    exact = equivariance_summary(shift_equivariance_by_colour(PatchifyQuantizer(), groups))
    assert all(value == 1.0 for value in exact.values())

    results = shift_equivariance_by_colour(ColourBreaker(num_codes=64), groups)
    summary = equivariance_summary(results)
    # White: the paper's placement, untouched by the breaker.
    assert summary["shift_equivariance"] == summary["shift_equivariance_white"] == 1.0
    assert summary["shift_equivariance_foreground"] == 1.0
    for colour in ("red", "green", "blue"):
        # The digit's tokens change with the row (shifts of 16 px = 4 token rows, except the
        # left/right pairs); the background stays equivariant, so the digit-token score is lower.
        assert summary[f"shift_equivariance_foreground_{colour}"] < summary[f"shift_equivariance_{colour}"] < 1.0
        expected = results[colour].foreground_score
        assert summary[f"shift_equivariance_foreground_{colour}"] == expected
    # Only the pairs whose cells start on the same token row agree on the digit: upper left ~
    # upper right and lower left ~ lower right, 2 of 10.
    assert summary["shift_equivariance_foreground_red"] == pytest.approx(0.2)
    assert summary["shift_equivariance_all_colours"] == pytest.approx(
        np.mean([summary[f"shift_equivariance_{c}"] for c in ("white", "red", "green", "blue")])
    )
    with pytest.raises(ValueError, match="purple"):
        shift_equivariance_by_colour(PatchifyQuantizer(), groups, colours=["purple"])


# ---------------------------------------------------------------- colour fidelity and shape
def _two_digit_image(digits, colours=("red", "white")):
    return render_canvas([("upper_left", colours[0], digits[0]), ("lower_right", colours[1], digits[1])])


def test_perfect_reconstruction_keeps_colour_and_shape(digits):
    from te_vqgan.metrics import reconstruction_fidelity

    images = np.stack([_two_digit_image(digits), render_canvas([("centre", "blue", digits[2])])])
    result = reconstruction_fidelity(images, images, [["upper_left", "lower_right"], ["centre"]])
    assert result.colour_fidelity == 1.0 and result.shape_iou == 1.0 and result.num_cells == 3
    assert result.per_colour == {"white": 1.0, "red": 1.0, "blue": 1.0} and result.erased == 0.0
    # Tensors in [-1, 1] give the same; without locations a centre digit counts in its four quadrant pieces.
    from te_vqgan.metrics import images_to_tensor

    tensors = images_to_tensor(images)
    whole = reconstruction_fidelity(tensors, tensors)
    assert whole.colour_fidelity == 1.0 and 2 + 1 < whole.num_cells <= 2 + 4  # the quadrants the stroke reaches


def test_grey_and_erased_reconstructions_score_the_exact_fraction(digits):
    from te_vqgan.metrics import reconstruction_fidelity

    images = np.stack([_two_digit_image(digits, ("red", "white")), _two_digit_image(digits[2:], ("green", "blue"))])
    locations = [["upper_left", "lower_right"]] * 2
    # Grey: every channel set to the pixel's mean. The white digit stays white; red/green/blue turn grey.
    grey = np.repeat(images.mean(axis=-1, keepdims=True).round().astype(np.uint8), 3, axis=-1)
    result = reconstruction_fidelity(images, grey, locations)
    assert result.colour_fidelity == pytest.approx(1 / 4)
    assert result.per_colour == {"white": 1.0, "red": 0.0, "green": 0.0, "blue": 0.0}
    # Black: every stroke erased, no colour, no shape.
    black = np.zeros_like(images)
    erased = reconstruction_fidelity(images, black, locations)
    assert erased.colour_fidelity == 0.0 and erased.erased == 1.0 and erased.shape_iou == 0.0
    # A digit shifted by a pixel loses part of its shape.
    moved = reconstruction_fidelity(images, np.roll(images, 1, axis=2), locations)
    assert 0.0 < moved.shape_iou < 1.0


def test_reconstruction_fidelity_rejects_bad_input(digits):
    from te_vqgan.metrics import reconstruction_fidelity

    image = _two_digit_image(digits)[None]
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_fidelity(image, image[:, :32])
    with pytest.raises(ValueError, match="2 entries for 1 images"):
        reconstruction_fidelity(image, image, [["upper_left"], ["centre"]])
    with pytest.raises(ValueError, match="No digit cell"):
        reconstruction_fidelity(np.zeros_like(image), np.zeros_like(image))
