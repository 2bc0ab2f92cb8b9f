"""What a user meets first, checked the way the docs show it.

- Every documented way of loading a `te-vqgan build-dataset` folder (the command's help, the
  README, docs/DATASET.md and the dataset card it writes) gives the five splits with their
  sizes; the snippets are taken from the documents and run as written.
- The model card templates link the reproduced work (paper and the authors' code) and this
  toolkit, and say which orthogonal figure is which.
- `benchmarks/bench_quantizer.py` prints each figure as it is measured and has `--quick`.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from huggingface_hub import ModelCard, ModelCardData

from te_vqgan.cli import main


REPO_ROOT = Path(__file__).resolve().parents[1]
SPLIT_SIZES = {"train": 20, "validation": 6, "test": 5, "test_seen": 7, "shift": 10}  # shift: 2 groups x 5
TOOLKIT_URL = "https://github.com/te-vqgan/te-vqgan"
PAPER_URL = "https://arxiv.org/abs/2112.00384"
AUTHORS_STAGE1_URL = "https://github.com/wcshin-git/TE-VQGAN"
AUTHORS_STAGE2_URL = "https://github.com/wcshin-git/Bidirectional_DALLE"


# ------------------------------------------------------------------ loading a built dataset
@pytest.fixture(scope="module")
def built(tmp_path_factory, mnist_dir):
    """`(root, output)`: a tiny build-dataset folder named `textmnist`, as in the docs' examples."""
    root = tmp_path_factory.mktemp("first_contact")
    output = root / "textmnist"
    code = main(
        [
            "build-dataset",
            "--output",
            str(output),
            "--data-dir",
            str(mnist_dir),
            "--num-train",
            "20",
            "--num-validation",
            "6",
            "--num-test",
            "5",
            "--num-test-seen",
            "7",
            "--num-shift-groups",
            "2",
            "--num-proc",
            "1",
            "--cache-dir",
            str(root / "build-cache"),
        ]
    )
    assert code == 0
    return root, output


@pytest.fixture
def in_folder(monkeypatch, tmp_path):
    """Run documented snippets verbatim: chdir to a folder, `datasets`' cache in tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))

    def enter(folder: Path) -> None:
        monkeypatch.chdir(folder)

    return enter


def sizes(dataset_dict) -> dict[str, int]:
    return {name: len(split) for name, split in dataset_dict.items()}


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def section(markdown: str, title: str) -> str:
    """The text of the `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def run_snippet(code: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, "<documented snippet>", "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_command_help_loading_lines(built, in_folder, capsys):
    root, _ = built
    with pytest.raises(SystemExit):
        main(["build-dataset", "--help"])
    help_text = capsys.readouterr().out
    calls = []  # the indented `datasets.load_dataset(...)` statements, continuation lines joined
    for line in help_text.splitlines():
        if line.startswith("    datasets.load_dataset("):
            calls.append(line.split("#")[0].strip())
        elif calls and line.startswith("      ") and calls[-1].count("(") > calls[-1].count(")"):
            calls[-1] += " " + line.strip()
    assert len(calls) == 2, help_text
    assert "data_dir=" not in " ".join(calls)
    in_folder(root)
    for call in calls:
        loaded = eval(call.replace("OUTPUT", "./textmnist"), {"datasets": datasets})
        assert sizes(loaded) == SPLIT_SIZES, call


def test_readme_loading_snippet(built, in_folder):
    root, _ = built
    readme = (REPO_ROOT / "README.md").read_text()
    [block] = [b for b in python_blocks(readme) if "load_dataset(" in b]
    in_folder(root)
    assert sizes(run_snippet(block)["textmnist"]) == SPLIT_SIZES


def test_dataset_doc_loading_snippets(built, in_folder):
    root, _ = built
    text = section((REPO_ROOT / "docs" / "DATASET.md").read_text(), "Loading a built folder")
    blocks = python_blocks(text)
    assert len(blocks) == 2
    in_folder(root)
    namespace = {}
    for block in blocks:  # the second block reuses the first one's import, as a reader would
        run_snippet(block, namespace)
        assert sizes(namespace["textmnist"]) == SPLIT_SIZES, block


def test_dataset_card_loading_snippets(built, in_folder):
    _, output = built
    card = section((output / "README.md").read_text(), "Loading")
    [block] = python_blocks(card)
    [parquet_call] = re.findall(r'`(load_dataset\("parquet", data_files=.*?\))`', card)
    in_folder(output)  # the card's paths are relative to the dataset folder
    # (not "."; datasets 5 cannot name a dataset loaded from ".")
    namespace = run_snippet(block.replace("path/to/this/folder", str(output)))
    assert sizes(namespace["dataset"]) == SPLIT_SIZES
    assert sizes(eval(parquet_call, namespace)) == SPLIT_SIZES


def test_load_source_dataset_reads_a_built_folder(built, tmp_path):
    from te_vqgan.data.tokenized import load_source_dataset

    _, output = built
    assert sizes(load_source_dataset(str(output), cache_dir=str(tmp_path / "cache"))) == SPLIT_SIZES


def test_parquet_data_dir_is_the_trap_the_docs_warn_about(built, tmp_path):
    # Why the docs name every split's files: the Parquet loader's default patterns count
    # test_seen-*.parquet as test and know no `shift` split.
    _, output = built
    loaded = datasets.load_dataset("parquet", data_dir=str(output / "data"), cache_dir=str(tmp_path / "cache"))
    assert sizes(loaded) == {"train": 20, "validation": 6, "test": 5 + 7}


# ------------------------------------------------------------------ model cards
def render(template: str, **kwargs) -> str:
    card_data = ModelCardData(library_name="diffusers", license="mit", tags=["te-vqgan"], model_name="demo")
    card = ModelCard.from_template(card_data, template_path=str(REPO_ROOT / "model_cards" / template), **kwargs)
    return str(card)


def stage1_card_kwargs() -> dict:
    """The keyword arguments `VQGANStage.save_final` (training/train_vqgan.py) passes."""
    return dict(
        model_name="demo",
        description="TE-VQGAN (strided_conv) image quantizer.",
        repo_url=AUTHORS_STAGE1_URL,
        repo_id="outputs/demo",
        resolution=64,
        token_grid=16,
        num_codes=128,
        orthogonal=True,
        orthogonal_weight=10.0,
        downsample_type="strided_conv",
        commitment_beta=0.25,
        global_step=200,
        scaled_down=None,
        metrics={"codes_used": 17, "orthogonal_loss": "0.0078", "shift_equivariance": "0.9322"},
        dataset="textmnist-mnist",
        total_batch_size=16,
        learning_rate="0.000128",
        mixed_precision="no",
        perceptual_weight=0.0,
        reconstruction_loss="L2",
        disc_weight=0.8,
        disc_start=30001,
        training_command="accelerate launch training/train_vqgan.py ...",
        config_json="{}",
    )


def stage2_card_kwargs() -> dict:
    """The keyword arguments `GeneratorStage.save_final` (training/train_generator.py) passes."""
    return dict(
        model_name="demo",
        repo_id="outputs/generator",
        quantizer_description="TEVQModel from `outputs/te-small`",
        num_codes=128,
        grid="16x16",
        n_layer=4,
        n_embd=128,
        n_head=4,
        num_parameters="0.90M",
        vocab_size=175,
        directions="i2t then t2i",
        num_image_tokens=256,
        top_k_percent="10 (k = 17)",
        global_step=120,
        scaled_down="5k images, 120 steps",
        metrics={"i2t_accuracy_test": "0.0020"},
        dataset="TextMNIST (mnist) tokenised at `outputs/textmnist-tokens`",
        num_train=5000,
        train_subset_size=None,
        fingerprint="0123456789ab",
        target_weight="7",
        target_weight_plus_one="8",
        total_batch_size=32,
        learning_rate="0.001",
        lr_scheduler="cosine_with_restarts, 6 cycle(s)",
        max_grad_norm=1.0,
        mixed_precision="no",
        training_command="accelerate launch training/train_generator.py ...",
    )


@pytest.mark.parametrize(
    "template, kwargs",
    [("te_vqgan_model_card.md", stage1_card_kwargs()), ("te_vqgan_pipeline_card.md", stage2_card_kwargs())],
)
def test_model_cards_link_the_reproduced_work_and_the_toolkit(template, kwargs):
    text = render(template, **kwargs)
    assert f"[te-vqgan]({TOOLKIT_URL})" in text
    for url in (PAPER_URL, AUTHORS_STAGE1_URL, AUTHORS_STAGE2_URL):
        assert f"({url})" in text, url
    assert "{{" not in text and "{#" not in text


def test_stage1_card_does_not_present_repo_url_as_the_toolkit():
    # train_vqgan.py passes the authors' URL as `repo_url`: it must be shown as their code.
    text = render("te_vqgan_model_card.md", **{**stage1_card_kwargs(), "repo_url": "https://example.org/authors"})
    assert "[TE-VQGAN](https://example.org/authors)" in text
    assert "[te-vqgan](https://example.org/authors)" not in text


def test_stage1_card_says_which_orthogonal_figure_is_which():
    text = render("te_vqgan_model_card.md", **stage1_card_kwargs())
    assert "`orthogonal_loss`" in text and "`final_orthogonal_loss`" in text
    explanation = text[text.index("- `orthogonal_loss`") :]
    assert "not** multiplied by lambda" in explanation and "already multiplied by\n  lambda" in explanation


# ------------------------------------------------------------------ benchmarks
def load_bench_quantizer():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # the script imports its sibling `common`
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_quantizer", REPO_ROOT / "benchmarks" / "bench_quantizer.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    return module


def test_bench_quantizer_quick_settings():
    bench = load_bench_quantizer()
    default = bench.parse_args([])
    assert (default.config, default.steps, default.warmup) == ("default", 8, 2)
    quick = bench.parse_args(["--quick"])
    assert (quick.config, quick.steps, quick.warmup) == ("small", 3, 1)
    assert bench.parse_args(["--quick", "--steps", "5", "--config", "default"]).steps == 5
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])


@pytest.mark.slow
def test_bench_quantizer_prints_each_figure_as_it_is_measured():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout is a pipe: block-buffered
    env["OMP_NUM_THREADS"] = "1"
    process = subprocess.Popen(
        [sys.executable, "benchmarks/bench_quantizer.py", "--quick", "--steps", "1", "--warmup", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first_figure = None
        for line in process.stdout:
            if re.match(r"\s+128\s+None\s+\d", line):  # the K=128 row: on, off, ratio
                first_figure = line
                # Printed before the large-K and encode measurements have run: it was flushed.
                still_running = process.poll() is None
                break
        assert first_figure is not None, "no K=128 row printed"
        assert still_running, "the first figure only appeared when the script ended"
        rest = process.stdout.read()
        assert process.wait(timeout=120) == 0
        assert "images/s" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_train_vqgan_reads_a_relative_folder_named_textmnist(built, in_folder, tmp_path):
    # `--dataset textmnist` from the folder that holds a built `textmnist/` reads it (as every
    # command does); it once started building a 300K-image TextMNIST instead.
    sys.path.insert(0, str(REPO_ROOT / "training"))
    try:
        import train_vqgan
    finally:
        sys.path.remove(str(REPO_ROOT / "training"))
    root, _ = built
    in_folder(root)
    args = train_vqgan.parse_args(
        [
            "--dataset",
            "textmnist",
            "--model_config",
            str(REPO_ROOT / "hub_configs" / "te-vqgan-mnist-cpu.json"),
            "--output_dir",
            str(tmp_path / "out"),
            "--cache_dir",
            str(tmp_path / "cache"),
        ]
    )
    train, validation, shift_groups = train_vqgan.load_image_datasets(args)
    assert (len(train), len(validation), len(shift_groups)) == (SPLIT_SIZES["train"], SPLIT_SIZES["validation"], 2)
    # the builder spec every command takes: the config after the colon
    args = train_vqgan.parse_args(
        [
            "--dataset",
            "textmnist:fashion_mnist",
            "--model_config",
            str(REPO_ROOT / "hub_configs" / "te-vqgan-mnist-cpu.json"),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert args.dataset_config == "fashion_mnist"
