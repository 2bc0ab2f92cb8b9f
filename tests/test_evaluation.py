"""The paper's text-image metrics on hand-made cases, and the evaluation classifier."""

import json

import numpy as np
import pytest
import torch

from te_vqgan.classifier import (
    DigitColourClassifier,
    evaluate_classifier,
    train_classifier,
    windows_to_tensor,
)
from te_vqgan.data import Triplet
from te_vqgan.data.layout import COLOURS, digit_window, render_canvas
from te_vqgan.evaluation import BUCKETS, bucket_of, cut_windows, image_to_text_scores, text_to_image_scores


class OracleClassifier:
    """Reads colour and digit off a window drawn by `render_canvas` from a lookup of the
    digits used: a perfect judge, so a test can control exactly what is right."""

    def __init__(self, digits):
        self.digits = digits

    def predict(self, windows):
        colours, labels = [], []
        for window in windows:
            intensity = window.max(axis=-1)
            lit = window.reshape(-1, 3)[intensity.reshape(-1) > 0]
            tint = tuple(int(v) for v in (lit.max(axis=0) > 0)) if len(lit) else (0, 0, 0)
            colours.append({(1, 1, 1): 0, (1, 0, 0): 1, (0, 1, 0): 2, (0, 0, 1): 3}.get(tint, 0))
            labels.append(next((d for d, digit in enumerate(self.digits) if np.array_equal(digit, intensity)), -1))
        return torch.tensor(colours), torch.tensor(labels)


@pytest.fixture(scope="module")
def ten_digits(mnist_test_digits):
    images, labels = mnist_test_digits
    return [images[np.flatnonzero(labels == d)[0]] for d in range(10)]


def draw(truth, ten_digits):
    return render_canvas([(t.location, t.colour, ten_digits[t.digit]) for t in truth])


def test_buckets_and_the_centre_rule():
    assert bucket_of([Triplet("centre", "red", 3)]) == "Centre"
    assert bucket_of([Triplet("upper_left", "red", 3)]) == "Quad1"
    assert bucket_of([Triplet("upper_left", "red", 3), Triplet("lower_right", "blue", 1)]) == "Quad2"
    assert (
        bucket_of([Triplet(q, "white", 0) for q in ("upper_left", "upper_right", "lower_left", "lower_right")])
        == "Quad4"
    )
    with pytest.raises(ValueError, match="1 to 4"):
        bucket_of([])
    assert BUCKETS == ("Quad1", "Quad2", "Quad3", "Quad4", "Centre")


def test_windows_are_the_authors_crops():
    assert digit_window("centre") == (slice(18, 46), slice(18, 46))
    assert digit_window("upper_right") == (slice(2, 30), slice(34, 62))
    assert digit_window("lower_left") == (slice(34, 62), slice(2, 30))


TRUTHS = [
    {Triplet("centre", "red", 3)},
    {Triplet("upper_left", "white", 0)},
    {Triplet("upper_left", "green", 5), Triplet("lower_right", "blue", 7)},
    {Triplet("upper_left", "red", 1), Triplet("upper_right", "white", 2), Triplet("lower_left", "blue", 9)},
]


def test_text_to_image_perfect_and_broken_generations(ten_digits):
    judge = OracleClassifier(ten_digits)
    perfect = np.stack([draw(t, ten_digits) for t in TRUTHS])
    scores = text_to_image_scores(perfect, TRUTHS, judge)
    assert scores.accuracy == 1.0 and scores.buckets == {"Quad1": 1.0, "Quad2": 1.0, "Quad3": 1.0, "Centre": 1.0}
    assert scores.total == {"Centre": 1, "Quad1": 1, "Quad2": 2, "Quad3": 3}

    broken = perfect.copy()
    broken[2][digit_window("lower_right")] = 0  # the blue 7 is missing
    wrong_colour = [
        Triplet("upper_left", "white", 1),
        Triplet("upper_right", "white", 2),
        Triplet("lower_left", "blue", 9),
    ]
    broken[3] = draw(wrong_colour, ten_digits)  # the red 1 drawn white
    broken[0] = draw([Triplet("centre", "red", 4)], ten_digits)  # red, but the wrong digit
    scores = text_to_image_scores(broken, TRUTHS, judge)
    assert scores.accuracy == pytest.approx(4 / 7)
    assert scores.buckets == {"Quad1": 1.0, "Quad2": 0.5, "Quad3": pytest.approx(2 / 3), "Centre": 0.0}
    assert scores.per_image == [0, 1, 1, 2]


def test_image_to_text_perfect_and_broken_captions():
    perfect = [
        "the red 3 is in the middle.",
        "white 0 on the upper left.",
        "green 5 on the upper left, and blue 7 on the bottom right.",
        "red 1 on the upper left, white 2 on the upper right, and blue 9 on the bottom left.",
    ]
    scores = image_to_text_scores(perfect, TRUTHS)
    assert scores.accuracy == 1.0, scores.as_dict()
    broken = [
        "the red 8 is in the middle.",
        "white 0 on the upper right.",
        "green 5 on the upper left.",
        "red 1 on the upper left, white 2 on the upper right, and green 9 on the bottom left.",
    ]
    scores = image_to_text_scores(broken, TRUTHS)
    assert scores.accuracy == pytest.approx(3 / 7)
    assert scores.as_dict()["Quad3"] == pytest.approx(2 / 3) and scores.as_dict()["Centre"] == 0.0
    with pytest.raises(ValueError, match="3 captions for 4 images"):
        image_to_text_scores(broken[:3], TRUTHS)


def test_ground_truth_through_both_evaluators_scores_one(ten_digits):
    """The report's sanity rows on hand-made data: drawn prompts and written captions."""
    from te_vqgan.data.captions import render_caption

    images = np.stack([draw(t, ten_digits) for t in TRUTHS])
    assert text_to_image_scores(images, TRUTHS, OracleClassifier(ten_digits)).accuracy == 1.0
    captions = [render_caption(sorted(t), np.random.default_rng(i)) for i, t in enumerate(TRUTHS)]
    assert image_to_text_scores(captions, TRUTHS).accuracy == 1.0


def test_cut_windows_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8 images"):
        cut_windows(np.zeros((1, 32, 32, 3), np.uint8), [TRUTHS[0]])
    with pytest.raises(ValueError, match="2 images for 1"):
        cut_windows(np.zeros((2, 64, 64, 3), np.uint8), [TRUTHS[0]])


@pytest.mark.slow
def test_classifier_trains_saves_and_loads(tmp_path, ten_digits):
    rng = np.random.default_rng(0)
    windows, colours, digits = [], [], []
    for _ in range(256):
        digit, colour = int(rng.integers(10)), int(rng.integers(4))
        windows.append(render_canvas([("centre", COLOURS[colour], ten_digits[digit])])[digit_window("centre")])
        colours.append(colour)
        digits.append(digit)
    windows = np.stack(windows)
    model = train_classifier(
        windows, colours, digits, epochs=10, batch_size=16, channels=(16, 32, 32), learning_rate=5e-3, progress=False
    )
    accuracy = evaluate_classifier(model, windows, colours, digits)
    assert accuracy["colour_accuracy"] > 0.9 and accuracy["digit_accuracy"] > 0.5  # ten memorised digits
    model.save_pretrained(tmp_path / "classifier")
    assert (tmp_path / "classifier" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "classifier" / "config.json").read_text())["channels"] == [16, 32, 32]
    loaded = DigitColourClassifier.from_pretrained(tmp_path / "classifier")
    for a, b in zip(loaded.predict(windows), model.predict(windows)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="uint8 windows"):
        model.predict(windows.astype(np.float32))
    with pytest.raises(ValueError, match="epochs >= 1"):
        train_classifier(windows, colours, digits, epochs=0)


def test_classifier_predicts_with_the_average_over_one_pixel_moves(tmp_path, ten_digits):
    torch.manual_seed(0)
    model = DigitColourClassifier(channels=(4, 8, 8), test_time_shift=1).eval()
    windows = np.stack([render_canvas([("centre", "green", d)])[digit_window("centre")] for d in ten_digits])
    pixels = windows_to_tensor(windows)
    padded = torch.nn.functional.pad(pixels, (1, 1, 1, 1))
    crops = [padded[..., 1 + dy : 29 + dy, 1 + dx : 29 + dx] for dy, dx in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]]
    with torch.no_grad():
        digit_score = sum(model(crop)[1].log_softmax(dim=1) for crop in crops)
        colour_score = sum(model(crop)[0].log_softmax(dim=1) for crop in crops)
    colours, digits = model.predict(windows, batch_size=3)
    assert torch.equal(digits, digit_score.argmax(dim=1)) and torch.equal(colours, colour_score.argmax(dim=1))
    model.save_pretrained(tmp_path / "shift")
    assert json.loads((tmp_path / "shift" / "config.json").read_text())["test_time_shift"] == 1
    unshifted = DigitColourClassifier.from_pretrained(tmp_path / "shift", test_time_shift=0)
    with torch.no_grad():
        assert torch.equal(unshifted.predict(windows)[1], model(pixels)[1].argmax(dim=1))
    with pytest.raises(ValueError, match="test_time_shift"):
        DigitColourClassifier(test_time_shift=14)


def test_classifier_augmentation_moves_windows_within_its_bounds(ten_digits):
    from te_vqgan.classifier import _augmented

    pixels = windows_to_tensor(
        np.stack([render_canvas([("centre", "red", d)])[digit_window("centre")] for d in ten_digits])
    )
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(_augmented(pixels, 0, 0.0, 0.0, generator), pixels)
    # Shifts alone: each window is its digit moved by whole pixels (at most 2 each way), nothing else.
    shifted = _augmented(pixels, 2, 0.0, 0.0, generator)
    padded = torch.nn.functional.pad(pixels, (2, 2, 2, 2))
    for out, source in zip(shifted, padded):
        assert any(
            torch.allclose(out, source[:, r : r + 28, c : c + 28], atol=1e-5) for r in range(5) for c in range(5)
        )
    # Rotation and scaling keep the colour (the stroke stays red) and most of the ink.
    moved = _augmented(pixels, 2, 10.0, 0.1, generator)
    assert torch.all(moved[:, 1:].sum(dim=(1, 2, 3)) == 0)
    ratio = moved.sum(dim=(1, 2, 3)) / pixels.sum(dim=(1, 2, 3))
    assert torch.all((ratio > 0.7) & (ratio < 1.3))
    with pytest.raises(ValueError, match="max_rotation in"):
        train_classifier(
            pixels.permute(0, 2, 3, 1).mul(255).byte().numpy(), [0] * 10, list(range(10)), max_rotation=90
        )


@pytest.mark.slow
def test_evaluate_command_on_a_tiny_pipeline(stage2_assets, mnist_dir, tmp_path, capsys):
    from PIL import Image
    from test_pipelines import make_pipeline

    from te_vqgan.cli import main

    make_pipeline(stage2_assets[0], text_length=50).save_pretrained(tmp_path / "pipe")
    torch.manual_seed(0)
    DigitColourClassifier(channels=(4, 8, 8)).save_pretrained(tmp_path / "classifier")
    code = main(
        [
            "evaluate",
            "--pipeline",
            str(tmp_path / "pipe"),
            "--classifier",
            str(tmp_path / "classifier"),
            "--mnist-dir",
            str(mnist_dir),
            "--cache-dir",
            str(stage2_assets[2]),
            "--num-test",
            "24",
            "--num-examples",
            "6",
            "--batch-size",
            "6",
            "--num-candidates",
            "2",
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["sampling"] == {"top_k_fraction": 0.1, "temperature": 1.0, "num_candidates": 2}
    for split in ("test", "test_seen"):
        result = report["splits"][split]
        assert result["examples"] == 6
        # Ground-truth captions parse back to their clauses exactly: the image-to-text sanity row.
        assert result["sanity"]["i2t_ground_truth"] == 1.0
        # Chance level: another example's caption (image) judged against this one's clauses.
        assert (
            0.0 <= result["sanity"]["i2t_image_ignored"] < 1.0 and 0.0 <= result["sanity"]["t2i_prompt_ignored"] < 1.0
        )
        for direction in ("t2i", "i2t"):
            assert 0.0 <= result[direction]["accuracy"] <= 1.0
            assert sum(result[direction]["clauses"].values()) >= 6
        for figure in ("samples", "captions"):
            with Image.open(tmp_path / "eval" / f"{split}-{figure}.png") as image:
                assert image.format == "PNG"
    assert "text-to-image" in capsys.readouterr().out
    code = main(
        [
            "evaluate",
            "--pipeline",
            str(tmp_path / "pipe"),
            "--classifier",
            str(tmp_path / "classifier"),
            "--mnist-dir",
            str(mnist_dir),
            "--cache-dir",
            str(stage2_assets[2]),
            "--num-test",
            "24",
            "--splits",
            "nope",
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "eval2"),
        ]
    )
    assert code == 2 and "'nope'" in capsys.readouterr().err
    code = main(
        ["evaluate", "--pipeline", str(tmp_path / "pipe"), "--classifier", str(tmp_path / "classifier")]
        + ["--num-candidates", "0", "--output", str(tmp_path / "eval3")]
    )
    assert code == 2 and "--num-candidates must be an integer >= 1 (got 0)" in capsys.readouterr().err
    assert not (tmp_path / "eval3").exists()  # refused before any work


def test_train_classifier_command_writes_a_loadable_folder_with_its_accuracy(mnist_dir, tmp_path, capsys):
    from te_vqgan.cli import main

    output = tmp_path / "classifier"
    code = main(
        [
            "train-classifier",
            "--output",
            str(output),
            "--mnist-dir",
            str(mnist_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--num-train",
            "40",
            "--num-test",
            "8",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--device",
            "cpu",
            "--channels",
            "8,16,16",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["accuracy"]) == {"test", "test_seen"} and metrics["train_windows"] >= 40
    for row in metrics["accuracy"].values():
        assert 0.0 <= row["digit_accuracy"] <= 1.0 and row["windows"] >= 8
    card = (output / "README.md").read_text()
    assert "| test |" in card and "not met" in card and "library_name: te-vqgan" in card
    assert "target (digit >= 0.995" in capsys.readouterr().out
    assert "te-vqgan train-classifier --output-dir classifier --dataset textmnist --num-train 40" in card
    assert (
        "--channels 8,16,16" in card
        and "rotations of up to 10.0 degrees" in card
        and "judges each window as it is" in card
    )
    assert json.loads((output / "config.json").read_text())["channels"] == [8, 16, 16]
    DigitColourClassifier.from_pretrained(output)
    assert not list(tmp_path.glob(".classifier.tmp"))  # staged, then moved into place
    assert main(["train-classifier", "--output", str(output), "--mnist-dir", str(mnist_dir), "--epochs", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
