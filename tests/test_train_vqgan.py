"""The stage-1 training script on CPU with a tiny model: seconds per run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_server import local_hub  # noqa: F401  (pytest fixture)
from safetensors.torch import load_file
from train_helpers import REPO_ROOT, load_training_script, state_digest, tiny_train_args, write_tiny_config

from te_vqgan import TEVQModel


train_vqgan = load_training_script()


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets-cache")


@pytest.fixture
def tiny_config(tmp_path):
    return write_tiny_config(tmp_path)


def run(argv):
    return train_vqgan.main(train_vqgan.parse_args(argv))


def safetensors_state(folder: Path, name: str = "diffusion_pytorch_model.safetensors"):
    return load_file(folder / name)


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_a_loadable_folder(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "run"
    args = tiny_train_args(
        tiny_config,
        out,
        mnist_dir,
        dataset_cache,
        "--max_train_steps",
        "12",
        "--disc_start",
        "100",
        "--learning_rate",
        "2e-3",
        "--no-scale_lr",
        "--validation_steps",
        "100",
    )
    initial = TEVQModel.from_config(json.loads(tiny_config.read_text()))
    result = run(args)
    assert result.global_step == 12

    # The saved folder loads and equals the trained model.
    loaded = TEVQModel.from_pretrained(out).eval()
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert not (out / "pytorch_model.bin").exists()
    assert {
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "README.md",
        "metrics.json",
        "reconstructions.png",
    } <= {p.name for p in out.iterdir()}

    # Reconstruction error on validation images fell below that of the untrained model.
    metrics = json.loads((out / "metrics.json").read_text())
    train_dataset, validation, shift = train_vqgan.load_image_datasets(train_vqgan.parse_args(args))
    images = train_vqgan.ToTensor("image", 64)(validation[:16])["pixel_values"]
    before, _, _ = train_vqgan.validate(initial, images, shift, None, 8)
    assert metrics["recon_l1"] < before["val/recon_l1"]
    for key in ("recon_l2", "codes_used", "perplexity", "orthogonal_loss", "shift_equivariance", "global_step"):
        assert key in metrics
    assert 0 <= metrics["shift_equivariance"] <= 1 and 1 <= metrics["codes_used"] <= 16
    assert shift.shape == (4, 5, 64, 64, 3)


def test_random_crops_are_windows_of_the_whole_image(tiny_config, tmp_path, mnist_dir, dataset_cache):
    _, validation, _ = train_vqgan.load_image_datasets(
        train_vqgan.parse_args(tiny_train_args(tiny_config, tmp_path, mnist_dir, dataset_cache))
    )
    batch = validation[:4]
    whole = train_vqgan.ToTensor("image", 64)(batch)["pixel_values"]
    torch.manual_seed(0)
    crops = train_vqgan.ToTensor("image", 64, crop_size=32)(batch)["pixel_values"]
    assert crops.shape == (4, 3, 32, 32)
    torch.manual_seed(0)
    corners = torch.randint(0, 33, (4, 2)).tolist()  # the draws ToTensor made
    for crop, image, (top, left) in zip(crops, whole, corners):
        assert torch.equal(crop, image[:, top : top + 32, left : left + 32])


@pytest.mark.slow
def test_training_on_crops_keeps_the_whole_image_size(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "run"
    result = run(tiny_train_args(tiny_config, out, mnist_dir, dataset_cache, "--train_crop_size", "32"))
    assert result.global_step == 6
    # The saved model and its metrics are of whole 64 x 64 images.
    assert json.loads((out / "config.json").read_text())["sample_size"] == 64
    assert json.loads((out / "metrics.json").read_text())["codes_used"] >= 1
    # A crop the model's f does not divide, or larger than the image, is refused before training.
    for crop in ("30", "72"):
        with pytest.raises(ValueError, match=f"--train_crop_size {crop} must be a multiple"):
            run(tiny_train_args(tiny_config, tmp_path / crop, mnist_dir, dataset_cache, "--train_crop_size", crop))
        assert not (tmp_path / crop / "metrics.json").exists()


@pytest.mark.slow
def test_checkpoints_are_limited_and_complete(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "run"
    run(tiny_train_args(tiny_config, out, mnist_dir, dataset_cache, "--checkpoints_total_limit", "2"))
    names = sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-4", "checkpoint-6"]
    state = json.loads((out / "checkpoint-6" / "training_state.json").read_text())
    assert state["global_step"] == 6
    assert (out / "checkpoint-6" / "model.safetensors").is_file() and (
        out / "checkpoint-6" / "model_1.safetensors"
    ).is_file()


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_bitwise(tiny_config, tmp_path, mnist_dir, dataset_cache):
    # Build the dataset cache once in this process so the subprocess starts training quickly.
    reference = tmp_path / "reference"
    run(tiny_train_args(tiny_config, reference, mnist_dir, dataset_cache))

    # A second run, killed (SIGKILL) once its checkpoint-2 exists.
    resumed = tmp_path / "resumed"
    script = REPO_ROOT / "training" / "train_vqgan.py"
    process = subprocess.Popen(
        [sys.executable, str(script), *tiny_train_args(tiny_config, resumed, mnist_dir, dataset_cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not (resumed / "checkpoint-2").is_dir():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint-2 within 240 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "diffusion_pytorch_model.safetensors").exists()  # it really was cut short

    result = run(tiny_train_args(tiny_config, resumed, mnist_dir, dataset_cache, "--resume_from_checkpoint", "latest"))
    assert result.global_step == 6
    # The quantizer, the discriminator and both optimisers end exactly where the uninterrupted run ended.
    assert state_digest(safetensors_state(resumed)) == state_digest(safetensors_state(reference))
    for name in ("model.safetensors", "model_1.safetensors"):
        assert state_digest(safetensors_state(resumed / "checkpoint-6", name)) == state_digest(
            safetensors_state(reference / "checkpoint-6", name)
        ), name
    for name in ("optimizer.bin", "optimizer_1.bin"):
        a = torch.load(resumed / "checkpoint-6" / name, weights_only=True)
        b = torch.load(reference / "checkpoint-6" / name, weights_only=True)
        assert a["state"].keys() == b["state"].keys()
        for key in a["state"]:
            for field in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(a["state"][key][field], b["state"][key][field]), (name, key, field)


@pytest.mark.slow
def test_resume_from_a_named_checkpoint_and_bad_names(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "run"
    run(tiny_train_args(tiny_config, out, mnist_dir, dataset_cache, "--max_train_steps", "4"))
    result = run(
        tiny_train_args(
            tiny_config, out, mnist_dir, dataset_cache, "--resume_from_checkpoint", str(out / "checkpoint-2")
        )
    )
    assert result.global_step == 6
    with pytest.raises(ValueError, match="not a checkpoint folder.*checkpoint-<step>"):
        run(tiny_train_args(tiny_config, out, mnist_dir, dataset_cache, "--resume_from_checkpoint", str(tmp_path)))


@pytest.mark.slow
def test_bf16_mixed_precision_runs(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "bf16"
    result = run(
        tiny_train_args(
            tiny_config, out, mnist_dir, dataset_cache, "--mixed_precision", "bf16", "--max_train_steps", "4"
        )
    )
    assert result.global_step == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mixed_precision"] == "bf16"
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


@pytest.mark.slow
def test_two_processes_with_accelerate_launch_finish_and_agree(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO_ROOT / "hub_configs" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port",
        "29533",
        str(REPO_ROOT / "tests" / "ddp_worker.py"),
        # GAN on from step 1: the discriminator's DDP path (frozen for the generator, two
        # forwards in its own step) and the adaptive weight run under two processes.
        *tiny_train_args(tiny_config, out, mnist_dir, dataset_cache, "--max_train_steps", "3", "--disc_start", "1"),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    digests = [(out / f"weights-rank{rank}.sha256").read_text().split() for rank in (0, 1)]
    assert digests[0] == digests[1]  # both ranks hold the same weights after the same number of steps
    assert digests[0][1] == "3"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    saved = TEVQModel.from_pretrained(out)
    assert state_digest(saved.state_dict()) == digests[0][0]


def test_perceptual_loss_unavailable_stops_at_start_up(tiny_config, tmp_path, mnist_dir, dataset_cache, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no VGG16 weights there
    argv = tiny_train_args(tiny_config, tmp_path / "run", mnist_dir, dataset_cache)
    argv[argv.index("--perceptual_weight") + 1] = "1.0"
    with pytest.raises(train_vqgan.PerceptualLossUnavailable, match=r"--perceptual_weight 0"):
        run(argv)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_train_steps", "0"], "--max_train_steps must be >= 1"),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be >= 1"),
        (["--num_validation", "0"], "--num_validation must be >= 1"),
        (["--resolution", "0"], "--resolution must be >= 1"),
        (["--train_crop_size", "0"], "--train_crop_size must be >= 1"),
    ],
)
def test_bad_arguments_are_rejected(tiny_config, tmp_path, mnist_dir, dataset_cache, extra, message, capsys):
    with pytest.raises(SystemExit):
        train_vqgan.parse_args(tiny_train_args(tiny_config, tmp_path, mnist_dir, dataset_cache, *extra))
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_model_card_renders_and_carries_the_run(tiny_config, tmp_path, mnist_dir, dataset_cache):
    from huggingface_hub import ModelCard

    out = tmp_path / "run"
    run(
        tiny_train_args(
            tiny_config, out, mnist_dir, dataset_cache, "--max_train_steps", "2", "--scaled_down", "64 images, 2 steps"
        )
    )
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "diffusers"
    assert card.data.datasets is None  # TextMNIST built here is no Hub repo: left out, not a made-up id
    assert card.data.base_model is None
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    metrics = json.loads((out / "metrics.json").read_text())
    assert results and results["shift_equivariance"] == pytest.approx(metrics["shift_equivariance"])
    assert "shift_equivariance" in card.text and "scaled-down run" in card.text
    assert "training/train_vqgan.py" in card.text and "--max_train_steps 2" in card.text
    assert '"orthogonal_reg_weight": 10.0' in card.text


@pytest.mark.slow
def test_push_to_hub_round_trip_with_a_valid_card(tiny_config, tmp_path, mnist_dir, dataset_cache, local_hub):
    from huggingface_hub import ModelCard

    out = tmp_path / "run"
    result = run(
        tiny_train_args(
            tiny_config,
            out,
            mnist_dir,
            dataset_cache,
            "--max_train_steps",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "user/tiny-te-vqgan",
        )
    )
    pushed = set(local_hub.files("user/tiny-te-vqgan"))
    assert {
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "README.md",
        "metrics.json",
        "reconstructions.png",
    } <= pushed
    assert (out / "checkpoint-2").is_dir() and (out / "validation").is_dir()
    assert not [p for p in pushed if p.startswith(("checkpoint-", "logs/", "validation/")) or ".tmp" in p]

    loaded = TEVQModel.from_pretrained("user/tiny-te-vqgan")
    assert state_digest(loaded.state_dict()) == state_digest(result.model.state_dict())
    card = ModelCard.load("user/tiny-te-vqgan")
    card.validate()  # the Hub's YAML check, answered by the local hub
    assert card.data.library_name == "diffusers" and "user/tiny-te-vqgan" in card.text


@pytest.mark.parametrize("name", ["cpu", "cpu_2proc", "gpu1_bf16", "gpu8_node", "multinode"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO_ROOT / "hub_configs" / "accelerate" / f"{name}.yaml"))
    expected_processes = {"cpu": 1, "cpu_2proc": 2, "gpu1_bf16": 1, "gpu8_node": 8, "multinode": 16}[name]
    assert config.num_processes == expected_processes
    assert config.mixed_precision == ("no" if name.startswith("cpu") else "bf16")


@pytest.mark.slow
def test_gradient_accumulation_counts_optimizer_steps_and_resumes_exactly(
    tiny_config, tmp_path, mnist_dir, dataset_cache
):
    accumulate = ("--gradient_accumulation_steps", "2", "--train_batch_size", "4", "--max_train_steps", "4")
    reference = run(tiny_train_args(tiny_config, tmp_path / "reference", mnist_dir, dataset_cache, *accumulate))
    assert reference.global_step == 4  # 4 optimizer steps = 8 batches of 4
    assert (
        json.loads((tmp_path / "reference" / "checkpoint-2" / "training_state.json").read_text())["global_step"] == 2
    )

    resumed_dir = tmp_path / "resumed"
    run(tiny_train_args(tiny_config, resumed_dir, mnist_dir, dataset_cache, *accumulate[:-1], "2"))
    resumed = run(
        tiny_train_args(
            tiny_config, resumed_dir, mnist_dir, dataset_cache, *accumulate, "--resume_from_checkpoint", "latest"
        )
    )
    assert resumed.global_step == 4
    assert state_digest(resumed.model.state_dict()) == state_digest(reference.model.state_dict())


@pytest.mark.slow
def test_resume_in_a_later_epoch_sees_that_epochs_order(tiny_config, tmp_path, mnist_dir, dataset_cache):
    # 64 images / batch 8 = 8 steps per epoch: checkpoint-10 lies in the second epoch.
    longer = ("--max_train_steps", "12", "--checkpointing_steps", "10")
    reference = run(tiny_train_args(tiny_config, tmp_path / "reference", mnist_dir, dataset_cache, *longer))
    resumed_dir = tmp_path / "resumed"
    run(
        tiny_train_args(
            tiny_config,
            resumed_dir,
            mnist_dir,
            dataset_cache,
            "--max_train_steps",
            "10",
            "--checkpointing_steps",
            "10",
        )
    )
    resumed = run(
        tiny_train_args(
            tiny_config, resumed_dir, mnist_dir, dataset_cache, *longer, "--resume_from_checkpoint", "latest"
        )
    )
    assert resumed.global_step == reference.global_step == 12
    assert state_digest(resumed.model.state_dict()) == state_digest(reference.model.state_dict())


@pytest.mark.slow
def test_resuming_a_finished_run_trains_no_further(tiny_config, tmp_path, mnist_dir, dataset_cache):
    out = tmp_path / "run"
    first = run(tiny_train_args(tiny_config, out, mnist_dir, dataset_cache))
    again = run(tiny_train_args(tiny_config, out, mnist_dir, dataset_cache, "--resume_from_checkpoint", "latest"))
    assert again.global_step == first.global_step == 6
    assert state_digest(again.model.state_dict()) == state_digest(first.model.state_dict())
    assert state_digest(safetensors_state(out)) == state_digest(first.model.state_dict())


def test_a_dataset_without_the_validation_split_is_an_error(tiny_config, tmp_path, mnist_dir, dataset_cache):
    args = train_vqgan.parse_args(
        tiny_train_args(tiny_config, tmp_path, mnist_dir, dataset_cache, "--validation_split", "dev")
    )
    with pytest.raises(ValueError, match=r"no 'dev' split.*'shift', 'train', 'validation'"):
        train_vqgan.load_image_datasets(args)
