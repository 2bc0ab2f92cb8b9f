import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import VQModel
from PIL import Image
from tiny_configs import TINY_STOCK_VQ, TINY_TEVQ

from te_vqgan import TEVQModel
from te_vqgan.cli import main


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(model, mnist_dir, tmp_path, *extra):
    png, report = tmp_path / "eq.png", tmp_path / "eq.json"
    code = main(
        [
            "equivariance",
            "--model",
            str(model),
            "--mnist-dir",
            str(mnist_dir),
            "--num-digits",
            "4",
            "--output",
            str(png),
            "--json",
            str(report),
            "--device",
            "cpu",
            *extra,
        ]
    )
    return code, png, report


def check_outputs(png, report):
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 200
    figures = json.loads(report.read_text())
    assert 0.0 <= figures["shift_equivariance"] <= 1.0
    assert len(figures["per_pair"]) == 10
    assert 1 <= figures["codes_used"] <= figures["num_codes"]
    return figures


@pytest.mark.slow
def test_equivariance_on_a_config_file(mnist_dir, tmp_path, capsys):
    code, png, report = run_cli(REPO_ROOT / "hub_configs" / "te-vqgan-mnist-small.json", mnist_dir, tmp_path)
    assert code == 0
    figures = check_outputs(png, report)
    out = capsys.readouterr().out
    assert f"shift equivariance: {figures['shift_equivariance']:.4f}" in out
    assert "codebook usage" in out and "randomly initialised" in out


@pytest.mark.slow
def test_equivariance_on_a_saved_model_matches_the_in_memory_metric(mnist_dir, tmp_path, mnist_test_digits):
    from te_vqgan import shift_equivariance
    from te_vqgan.commands.equivariance import select_digits

    torch.manual_seed(0)
    model = TEVQModel(**TINY_TEVQ).eval()
    model.save_pretrained(tmp_path / "model")
    code, png, report = run_cli(tmp_path / "model", mnist_dir, tmp_path)
    assert code == 0
    figures = check_outputs(png, report)
    images, labels = mnist_test_digits
    assert figures["shift_equivariance"] == pytest.approx(
        shift_equivariance(model, select_digits(images, labels, 4)).score
    )


@pytest.mark.slow
def test_equivariance_on_a_stock_vq_model(mnist_dir, tmp_path):
    torch.manual_seed(0)
    VQModel(**TINY_STOCK_VQ).save_pretrained(tmp_path / "stock")
    code, png, report = run_cli(tmp_path / "stock", mnist_dir, tmp_path)
    assert code == 0
    assert "VQModel loaded" in check_outputs(png, report)["description"]


def test_missing_model_is_a_clear_error(mnist_dir, tmp_path, capsys):
    code, png, _ = run_cli(tmp_path / "nowhere.json", mnist_dir, tmp_path)
    assert code == 2 and not png.exists()
    assert "nowhere.json" in capsys.readouterr().err


def test_corrupt_mnist_file_is_a_clear_error(mnist_dir, tmp_path, capsys):
    corrupt = tmp_path / "mnist"
    corrupt.mkdir()
    for source in Path(mnist_dir).glob("*.gz"):
        data = bytearray(source.read_bytes())
        if source.name.startswith("t10k-images"):
            data[100] ^= 0xFF
        (corrupt / source.name).write_bytes(bytes(data))
    code, png, _ = run_cli(REPO_ROOT / "hub_configs" / "te-vqgan-mnist-small.json", corrupt, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and not png.exists()
    assert "t10k-images-idx3-ubyte.gz" in err
    assert "expected SHA-256 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6" in err


@pytest.mark.slow
def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "te_vqgan.cli", "equivariance", "--help"], capture_output=True, text=True, check=True
    )
    assert "--mnist-dir" in result.stdout


@pytest.mark.slow
def test_equivariance_reports_three_ways_and_one_colour(mnist_dir, tmp_path, capsys):
    torch.manual_seed(0)
    TEVQModel(**TINY_TEVQ).eval().save_pretrained(tmp_path / "model")
    code, png, report = run_cli(tmp_path / "model", mnist_dir, tmp_path)
    assert code == 0
    figures = check_outputs(png, report)
    assert set(figures["per_colour"]) == {"white", "red", "green", "blue"}
    assert figures["shift_equivariance"] == figures["per_colour"]["white"]["score"]
    assert figures["shift_equivariance_foreground"] == figures["per_colour"]["white"]["foreground_score"]
    assert 0.0 <= figures["shift_equivariance_foreground_all_colours"] <= 1.0
    out = capsys.readouterr().out
    assert "digit tokens" in out and "blue" in out and "mean" in out
    code, png, report = run_cli(tmp_path / "model", mnist_dir, tmp_path, "--colour", "red")
    figures = json.loads(report.read_text())
    assert (
        list(figures["per_colour"]) == ["red"]
        and figures["shift_equivariance"] == figures["per_colour"]["red"]["score"]
    )
