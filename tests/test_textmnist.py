"""The TextMNIST builder, built at tiny sizes from the shared MNIST files."""

import shutil

import numpy as np
import pytest

from te_vqgan.data import TextMNIST, TextMNISTConfig
from te_vqgan.data.captions import Triplet, parse_caption
from te_vqgan.data.layout import COLOURS, LOCATIONS, QUADRANTS, render_canvas
from te_vqgan.data.mnist import MNIST_VARIANTS, ChecksumError, load_mnist, sha256_file
from te_vqgan.data.splits import HELD_OUT_COMBINATIONS, SOURCE_POOLS, SPLITS


TINY = dict(num_train=200, num_validation=40, num_test=40, num_test_seen=32, num_shift_groups=4, seed=7)


def build(cache_dir, num_proc=None, **overrides):
    kwargs = {**TINY, **overrides}
    builder = TextMNIST(cache_dir=str(cache_dir), **kwargs)
    builder.download_and_prepare(num_proc=num_proc)
    return builder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mnist_dir):
    builder = build(tmp_path_factory.mktemp("cache"), config_name="mnist", data_dir=str(mnist_dir))
    return builder, {split: builder.as_dataset(split=split) for split in SPLITS}


@pytest.fixture(scope="module")
def mnist_arrays(mnist_dir):
    return {"train": load_mnist("train", data_dir=mnist_dir), "test": load_mnist("test", data_dir=mnist_dir)}


def triplets(example, features):
    names = features["objects"].feature
    return [
        Triplet(names["location"].int2str(o["location"]), names["colour"].int2str(o["colour"]), o["digit"])
        for o in example["objects"]
    ]


@pytest.mark.slow
def test_split_sizes_and_features(tiny):
    builder, splits = tiny
    sizes = {split: len(ds) for split, ds in splits.items()}
    assert sizes == {"train": 200, "validation": 40, "test": 40, "test_seen": 32, "shift": 20}
    features = splits["train"].features
    assert features["objects"].feature["location"].names == list(LOCATIONS)
    assert features["objects"].feature["colour"].names == list(COLOURS)
    assert features["objects"].feature["digit"].names == [str(d) for d in range(10)]
    example = splits["train"][0]
    assert example["image"].size == (64, 64) and example["image"].mode == "RGB"
    assert len(example["captions"]) == 5


def test_images_are_the_digits_at_their_cells(tiny, mnist_arrays):
    # Every image is exactly the MNIST items of its objects, tinted and placed by the layout.
    _, splits = tiny
    for split, ds in splits.items():
        images, labels = mnist_arrays[SOURCE_POOLS[split].mnist_split]
        for example in ds:
            objects = triplets(example, ds.features)
            sources = [o["source_index"] for o in example["objects"]]
            assert [labels[s] for s in sources] == [o.digit for o in objects]
            expected = render_canvas((o.location, o.colour, images[s]) for o, s in zip(objects, sources))
            np.testing.assert_array_equal(np.asarray(example["image"]), expected)


def test_geometry_and_tint_by_hand(tiny, mnist_arrays):
    # Independent of render_canvas: a centre digit at rows/cols 18-45, a quadrant digit 2 px
    # inside its 32x32 cell, the stroke in the colour's channels only.
    _, splits = tiny
    origins = {
        "centre": (18, 18),
        "upper_left": (2, 2),
        "upper_right": (2, 34),
        "lower_left": (34, 2),
        "lower_right": (34, 34),
    }
    channels = {"white": (0, 1, 2), "red": (0,), "green": (1,), "blue": (2,)}
    images, _ = mnist_arrays["train"]
    checked = set()
    for example in splits["train"]:
        image = np.asarray(example["image"])
        mask = np.zeros(image.shape[:2], dtype=bool)
        for o, raw in zip(triplets(example, splits["train"].features), example["objects"]):
            row, col = origins[o.location]
            cell = image[row : row + 28, col : col + 28]
            digit = images[raw["source_index"]]
            for c in range(3):
                np.testing.assert_array_equal(cell[..., c], digit if c in channels[o.colour] else 0)
            mask[row : row + 28, col : col + 28] = True
            checked.add((o.location, o.colour))
        assert not image[~mask].any()  # black background
    assert {loc for loc, _ in checked} == set(LOCATIONS)
    assert {colour for _, colour in checked} == set(COLOURS)


def test_every_caption_parses_back_to_the_objects(tiny):
    _, splits = tiny
    for ds in splits.values():
        for example in ds:
            objects = frozenset(triplets(example, ds.features))
            for caption in example["captions"]:
                assert parse_caption(caption, strict=True) == objects, caption


def test_layout_of_each_split(tiny):
    _, splits = tiny
    for split in ("train", "validation", "test", "test_seen"):
        for index, example in enumerate(splits[split]):
            locations = [o.location for o in triplets(example, splits[split].features)]
            assert example["num_digits"] == len(locations) == 1 + index % 4
            assert len(set(locations)) == len(locations)
            assert "centre" not in locations or locations == ["centre"]
            assert example["shift_group"] == -1


def test_held_out_combinations_only_in_test(tiny):
    builder, splits = tiny
    held_out = set(builder.config.held_out)
    assert Triplet("upper_left", "white", 0) in held_out  # the paper's example
    for split in ("train", "validation", "test_seen"):
        for example in splits[split]:
            assert not held_out & set(triplets(example, splits[split].features)), split
    test_objects = [t for example in splits["test"] for t in triplets(example, splits["test"].features)]
    assert test_objects and set(test_objects) <= held_out
    # 40 test images: 10 of each digit count
    counts = np.bincount(splits["test"]["num_digits"], minlength=5)[1:]
    assert counts.tolist() == [10, 10, 10, 10]


def test_digit_pools_do_not_overlap(tiny):
    _, splits = tiny
    used = {}
    for split, ds in splits.items():
        pool = SOURCE_POOLS[split]
        sources = {o["source_index"] for example in ds for o in example["objects"]}
        assert all(pool.start <= s < pool.stop for s in sources), split
        used[split] = (pool.mnist_split, sources)
    for a in SPLITS:
        for b in SPLITS:
            if a < b and used[a][0] == used[b][0]:
                assert not used[a][1] & used[b][1], (a, b)


def test_shift_groups(tiny, mnist_arrays):
    _, splits = tiny
    shift = splits["shift"]
    images, labels = mnist_arrays["test"]
    groups = np.asarray(shift["shift_group"])
    assert groups.tolist() == [g for g in range(4) for _ in range(5)]
    sources = []
    for g in range(4):
        members = [shift[i] for i in range(5 * g, 5 * g + 5)]
        objects = [triplets(m, shift.features)[0] for m in members]
        assert [o.location for o in objects] == list(LOCATIONS)
        assert {o.colour for o in objects} == {"white"}
        assert {o.digit for o in objects} == {g % 10}
        source = {m["objects"][0]["source_index"] for m in members}
        assert len(source) == 1
        sources.append(source.pop())
        # the same pixels, shifted by 16 or 32
        centre = np.asarray(members[0]["image"])[18:46, 18:46]
        np.testing.assert_array_equal(centre[..., 0], images[sources[-1]])
        np.testing.assert_array_equal(np.asarray(members[4]["image"])[34:62, 34:62], centre)
    assert len(set(sources)) == 4


@pytest.mark.slow
def test_same_config_same_bytes_across_runs_and_num_proc(tiny, tmp_path, mnist_dir):
    builder, splits = tiny
    again = build(tmp_path / "two_procs", num_proc=2, config_name="mnist", data_dir=str(mnist_dir))
    assert again.config_id == builder.config_id
    for split, ds in splits.items():
        other = again.as_dataset(split=split)
        assert other._fingerprint == ds._fingerprint
        assert other.data.table.equals(ds.data.table), split
    # and a different seed gives different images
    reseeded = build(
        tmp_path / "reseeded",
        config_name="mnist",
        data_dir=str(mnist_dir),
        seed=8,
        num_train=8,
        num_validation=0,
        num_test=0,
        num_test_seen=0,
        num_shift_groups=0,
    )
    assert reseeded.as_dataset(split="train")["captions"] != splits["train"].select(range(8))["captions"]


def test_fashion_mnist(tmp_path, fashion_mnist_dir):
    builder = build(
        tmp_path,
        config_name="fashion_mnist",
        data_dir=str(fashion_mnist_dir),
        num_train=24,
        num_validation=0,
        num_test=8,
        num_test_seen=0,
        num_shift_groups=1,
    )
    assert set(builder.info.splits) == {"train", "test", "shift"}
    train = builder.as_dataset(split="train")
    names = MNIST_VARIANTS["fashion_mnist"].class_names
    assert train.features["objects"].feature["digit"].names == list(names)
    words = " ".join(c for example in train for c in example["captions"])
    assert any(name in words for name in names) and "number" not in words
    for example in train:
        for caption in example["captions"]:
            assert parse_caption(caption, variant="fashion_mnist", strict=True) == frozenset(
                triplets(example, train.features)
            )


def test_corrupt_file_in_data_dir(tmp_path, mnist_dir):
    data_dir = tmp_path / "mnist"
    shutil.copytree(mnist_dir, data_dir)
    name = "t10k-images-idx3-ubyte.gz"
    data = bytearray((data_dir / name).read_bytes())
    data[1000] ^= 0x01
    (data_dir / name).write_bytes(bytes(data))
    builder = TextMNIST(config_name="mnist", num_train=4, data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ChecksumError) as error:
        builder.download_and_prepare()
    message = str(error.value)
    assert str(data_dir / name) in message
    assert MNIST_VARIANTS["mnist"].sha256[name] in message
    assert sha256_file(data_dir / name) in message
    assert not list((tmp_path / "cache").glob("**/*.arrow"))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(num_train=-1), r"`num_train`.*-1"),
        (dict(num_test=2.5), r"`num_test`.*2.5"),
        (dict(captions_per_image=0), r"`captions_per_image`.*0"),
        (dict(num_test_seen=-3), r"`num_test_seen`.*-3"),
        (dict(seed=-1), r"`seed`.*-1"),
        (dict(shift_colour="purple"), "'purple'"),
        (dict(held_out=[("upper_left", "white", 10)]), r"\('upper_left', 'white', 10\)"),
        (dict(held_out=[("middle", "white", 0)]), "'middle'"),
        (dict(held_out=[("upper_left", "white", 0)] * 2), "twice"),
        (
            dict(held_out=[("upper_left", "white", 0)]),
            r"no combination at \['upper_right', 'lower_left', 'lower_right'\]",
        ),
        (dict(held_out=[("centre", c, d) for c in COLOURS for d in range(10)], num_test=0), r"\['centre'\]"),
        (dict(variant="fashion_mnist"), "'mnist'"),
    ],
)
def test_config_validation_names_the_bad_value(overrides, match):
    # Keyword overrides of a named config are validated too (datasets sets them with setattr).
    with pytest.raises(ValueError, match=match):
        TextMNIST(config_name="mnist", **overrides)


def test_config_defaults_and_custom_held_out():
    config = TextMNISTConfig(name="custom")
    assert config.split_sizes == {
        "train": 300_000,
        "validation": 3_000,
        "test": 3_000,
        "test_seen": 3_000,
        "shift": 500,
    }
    assert set(config.held_out) == set(HELD_OUT_COMBINATIONS)
    # Every quadrant has a held-out combination, so test images can hold four digits.
    assert {t.location for t in HELD_OUT_COMBINATIONS} == set(QUADRANTS)
    custom = TextMNISTConfig(name="custom", held_out=[(q, "red", 1) for q in QUADRANTS] + [["centre", "blue", 2]])
    assert Triplet("centre", "blue", 2) in custom.held_out and len(custom.held_out) == 5
    assert TextMNISTConfig(name="custom", held_out=(), num_test=0).held_out == ()
