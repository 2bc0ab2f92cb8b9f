"""`te-vqgan build-dataset`: Parquet shards, the dataset card, the contact sheet, atomic output."""

import datasets
import PIL.Image
import pytest
from hub_server import local_hub  # noqa: F401  (pytest fixture)
from huggingface_hub import DatasetCard

from te_vqgan.cli import main
from te_vqgan.data import export as export_module


TINY_ARGS = [
    "--num-train",
    "24",
    "--num-validation",
    "8",
    "--num-test",
    "8",
    "--num-test-seen",
    "4",
    "--num-shift-groups",
    "2",
    "--seed",
    "3",
    "--num-proc",
    "1",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("export")
    output = root / "textmnist"
    code = main(
        [
            "build-dataset",
            "--config",
            "mnist",
            "--output",
            str(output),
            "--data-dir",
            str(mnist_dir),
            "--cache-dir",
            str(root / "cache"),
            "--max-shard-size",
            "20KB",
            *TINY_ARGS,
        ]
    )
    assert code == 0
    return root, output


def run_cli(root, mnist_dir, output, *extra):
    return main(
        [
            "build-dataset",
            "--config",
            "mnist",
            "--output",
            str(output),
            "--data-dir",
            str(mnist_dir),
            "--cache-dir",
            str(root / "cache"),
            *TINY_ARGS,
            *extra,
        ]
    )


@pytest.mark.slow
def test_output_layout_and_round_trip(exported):
    root, output = exported
    names = sorted(p.name for p in (output / "data").iterdir())
    # 24 train images (~35 KB of Arrow) in 20 KB shards: two shards, Hub-style names
    assert "train-00000-of-00002.parquet" in names and "train-00001-of-00002.parquet" in names
    assert "shift-00000-of-00001.parquet" in names
    assert sorted(p.name for p in output.iterdir()) == ["README.md", "contact_sheet.png", "data"]
    # A plain load_dataset on the folder reads the card's `configs` like the Hub does.
    loaded = datasets.load_dataset(str(output), cache_dir=str(root / "load_cache"))
    assert {name: len(ds) for name, ds in loaded.items()} == {
        "train": 24,
        "validation": 8,
        "test": 8,
        "test_seen": 4,
        "shift": 10,
    }
    built = datasets.load_dataset(
        "parquet", data_files=str(output / "data" / "test-*.parquet"), cache_dir=str(root / "load_cache")
    )["train"]
    assert loaded["test"].features["objects"].feature["location"].names[1] == "upper_left"
    assert loaded["test"]["captions"] == built["captions"]
    assert loaded["train"][0]["image"].size == (64, 64)


def test_dataset_card(exported):
    _, output = exported
    card = DatasetCard.load(output / "README.md")
    assert card.data.license == "cc-by-sa-3.0"
    assert card.data.configs[0]["config_name"] == "mnist"
    assert {f["split"] for f in card.data.configs[0]["data_files"]} == {
        "train",
        "validation",
        "test",
        "test_seen",
        "shift",
    }
    assert card.data.dataset_info["features"][0] == {"name": "image", "dtype": "image"}
    text = card.text
    assert "| upper_left | white | 0 |" in text  # the held-out table
    assert "`the {location} is {colour} {item}`" in text  # the grammar
    assert "Creative Commons Attribution-Share" in text and "Zalando" in text  # both licences
    assert "te-vqgan build-dataset --dataset-config mnist --output-dir textmnist --num-train 24" in text
    assert str(output.parent) not in text  # no local paths


def test_contact_sheet(exported):
    _, output = exported
    with PIL.Image.open(output / "contact_sheet.png") as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 500 and height > 5 * 200  # five rows of five


def test_refuses_an_occupied_output(tmp_path, mnist_dir, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    assert run_cli(tmp_path, mnist_dir, output) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in output.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_overwrite_replaces(tmp_path, mnist_dir):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    assert run_cli(tmp_path, mnist_dir, output, "--overwrite") == 0
    assert sorted(p.name for p in output.iterdir()) == ["README.md", "contact_sheet.png", "data"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failure_leaves_nothing_half_written(tmp_path, mnist_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "save_contact_sheet", broken)
    output = tmp_path / "out"
    assert run_cli(tmp_path, mnist_dir, output) == 2
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []


@pytest.mark.slow
def test_push_to_hub_round_trip_through_a_local_hub(tmp_path, mnist_dir, local_hub, capsys):
    output = tmp_path / "out"
    assert run_cli(tmp_path, mnist_dir, output, "--push-to-hub", "org/textmnist") == 0
    assert "org/textmnist" in capsys.readouterr().out
    pushed = local_hub.files("org/textmnist", repo_type="dataset")
    local = {p.relative_to(output).as_posix(): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert {k: v for k, v in pushed.items() if k != ".gitattributes"} == local
    # What users do next: a plain load_dataset of the repo id, no loading script.
    card = DatasetCard.load("org/textmnist", repo_type="dataset")
    card.validate(repo_type="dataset")
    reloaded = datasets.load_dataset("org/textmnist", cache_dir=str(tmp_path / "hf-datasets"))
    built = datasets.load_dataset(str(output), cache_dir=str(tmp_path / "local-datasets"))
    assert set(reloaded) == set(built)
    assert reloaded["train"][0]["captions"] == built["train"][0]["captions"]


def test_bad_options_are_reported(tmp_path, mnist_dir, capsys):
    assert run_cli(tmp_path, mnist_dir, tmp_path / "out", "--captions-per-image", "0") == 2
    assert "`captions_per_image`" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
