"""The stage-2 training script on CPU with a tiny GPT-2 over a tiny tokenised TextMNIST."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import REPO_ROOT, load_training_script, state_digest


train_generator = load_training_script("train_generator")
GENERATOR_WEIGHTS = "generator/model.safetensors"


def tiny_args(assets, output_dir, *extra):
    vqmodel, tokens, _ = assets
    return [
        "--tokenized_dataset",
        str(tokens),
        "--vqmodel",
        str(vqmodel),
        "--output_dir",
        str(output_dir),
        "--n_embd",
        "32",
        "--n_layer",
        "2",
        "--n_head",
        "2",
        "--train_batch_size",
        "8",
        "--max_train_steps",
        "6",
        "--checkpointing_steps",
        "2",
        "--validation_steps",
        "3",
        "--num_validation_examples",
        "16",
        "--num_validation_samples",
        "2",
        "--num_evaluation_examples",
        "8",
        "--report_to",
        "none",
        "--cpu",
        *extra,
    ]


def run(argv):
    return train_generator.main(train_generator.parse_args(argv))


@pytest.mark.slow
def test_training_lowers_both_losses_and_writes_a_pipeline_folder(stage2_assets, tmp_path):
    from te_vqgan import ImageToTextPipeline, TextToImagePipeline

    fixed_lr = ("--lr_scheduler", "constant", "--learning_rate", "3e-3")
    run(tiny_args(stage2_assets, tmp_path / "short", "--max_train_steps", "1", *fixed_lr))
    result = run(tiny_args(stage2_assets, tmp_path / "long", "--max_train_steps", "24", *fixed_lr))
    assert result.global_step == 24
    before = json.loads((tmp_path / "short" / "metrics.json").read_text())
    after = json.loads((tmp_path / "long" / "metrics.json").read_text())
    for name in ("t2i_image_loss", "i2t_text_loss", "t2i_loss", "i2t_loss"):
        assert after[name] < before[name] - 0.05, (name, before[name], after[name])
    for name in ("i2t_accuracy_test", "i2t_accuracy_test_seen", "i2t_accuracy_samples"):
        assert 0.0 <= after[name] <= 1.0

    out = tmp_path / "long"
    names = {p.name for p in out.iterdir()}
    assert {
        "model_index.json",
        "vqmodel",
        "generator",
        "tokenizer",
        "README.md",
        "metrics.json",
        "samples.png",
    } <= names
    pipeline = TextToImagePipeline.from_pretrained(out)
    assert state_digest(pipeline.generator.state_dict()) == state_digest(result.model.state_dict())
    images = pipeline(
        "the red 3 is on the upper left.", num_images_per_prompt=2, generator=torch.Generator().manual_seed(0)
    ).images
    assert len(images) == 2 and images[0].size == (64, 64)
    captions = ImageToTextPipeline.from_pretrained(out)(images, generator=torch.Generator().manual_seed(0)).captions
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    card = (out / "README.md").read_text()
    assert (
        "training/train_generator.py" in card and "i2t_accuracy_test" in card and "pipeline_tag: text-to-image" in card
    )
    from huggingface_hub import ModelCard

    data = ModelCard.load(out / "README.md").data
    assert data.base_model is None and data.datasets is None  # local quantizer and tokens: no Hub ids to name
    assert {r.dataset_split: r.metric_type for r in data.eval_results}["test"] == "i2t_accuracy_test"


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_bitwise(stage2_assets, tmp_path):
    reference = tmp_path / "reference"
    run(tiny_args(stage2_assets, reference))

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "training" / "train_generator.py"), *tiny_args(stage2_assets, resumed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not (resumed / "checkpoint-2").is_dir():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint-2 within 240 s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "model_index.json").exists()  # it really was cut short

    result = run(tiny_args(stage2_assets, resumed, "--resume_from_checkpoint", "latest"))
    assert result.global_step == 6
    assert state_digest(load_file(resumed / GENERATOR_WEIGHTS)) == state_digest(
        load_file(reference / GENERATOR_WEIGHTS)
    )
    for name in ("optimizer.bin", "scheduler.bin"):
        a = torch.load(resumed / "checkpoint-6" / name, weights_only=True)
        b = torch.load(reference / "checkpoint-6" / name, weights_only=True)
        if name == "optimizer.bin":
            for key in a["state"]:
                for field in ("exp_avg", "exp_avg_sq", "step"):
                    assert torch.equal(a["state"][key][field], b["state"][key][field]), (key, field)
        else:
            assert a == b


@pytest.mark.slow
def test_two_processes_with_accelerate_launch_finish_and_agree(stage2_assets, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO_ROOT / "hub_configs" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port",
        "29535",
        str(REPO_ROOT / "tests" / "ddp_worker.py"),
        *tiny_args(stage2_assets, out, "--max_train_steps", "3"),
    ]
    env = {**os.environ, "TE_VQGAN_TEST_SCRIPT": "train_generator"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    digests = [(out / f"weights-rank{rank}.sha256").read_text().split() for rank in (0, 1)]
    assert digests[0] == digests[1] and digests[0][1] == "3"  # the same weights on both ranks after 3 steps
    assert json.loads((out / "metrics.json").read_text())["num_processes"] == 2
    from transformers import GPT2LMHeadModel

    assert state_digest(GPT2LMHeadModel.from_pretrained(out / "generator").state_dict()) == digests[0][0]


@pytest.mark.slow
def test_one_direction_and_a_train_subset(stage2_assets, tmp_path):
    out = tmp_path / "t2i"
    run(tiny_args(stage2_assets, out, "--directions", "t2i", "--train_subset_size", "16", "--max_train_steps", "3"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert "final_t2i_loss" in metrics and "final_i2t_loss" not in metrics
    # 16 examples / batch 8 = 2 steps per epoch = the warm-up, one optimizer step per batch.
    assert metrics["final_lr"] == pytest.approx(1e-3 * train_generator_cosine_restarts(3, 2, 3, 6), rel=1e-5)
    assert "a subset of 16" in (out / "README.md").read_text()


@pytest.mark.slow
def test_recipe_knobs_reach_the_saved_generator(stage2_assets, tmp_path):
    from transformers import GPT2LMHeadModel

    out = tmp_path / "recipe"
    result = run(
        tiny_args(
            stage2_assets,
            out,
            "--dropout",
            "0",
            "--weight_decay",
            "0.1",
            "--image_position_init",
            "sincos2d",
            "--position_scheme",
            "modality",
            "--max_train_steps",
            "2",
        )
    )
    config = GPT2LMHeadModel.from_pretrained(out / "generator").config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)
    assert config.position_scheme == "modality"
    from te_vqgan import ImageToTextPipeline, TextToImagePipeline

    images = TextToImagePipeline.from_pretrained(out)("red 7.", generator=torch.Generator().manual_seed(0)).images
    assert (
        len(ImageToTextPipeline.from_pretrained(out)(images, generator=torch.Generator().manual_seed(0)).captions) == 1
    )
    assert result.global_step == 2 and "--weight_decay 0.1" in (out / "README.md").read_text()

    class OnCpu:
        device = torch.device("cpu")

    parts = train_generator.GeneratorStage(
        train_generator.parse_args(tiny_args(stage2_assets, tmp_path / "b", "--weight_decay", "0.1"))
    ).build(OnCpu())
    (optimizer,) = parts.optimizers
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, kept = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decayed["params"])
    assert kept["weight_decay"] == 0.0 and all(p.ndim == 1 for p in kept["params"])
    parts = train_generator.GeneratorStage(train_generator.parse_args(tiny_args(stage2_assets, tmp_path / "c"))).build(
        OnCpu()
    )
    assert type(parts.optimizers[0]) is torch.optim.Adam


def test_image_positions_start_as_2d_sine_cosine():
    from transformers import GPT2LMHeadModel

    from te_vqgan.generation import (
        SequenceLayout,
        TextImageTokenizer,
        build_generator_config,
        init_image_positions_2d,
        sincos_2d,
    )

    codes = sincos_2d(3, 4, 8)
    assert codes.shape == (12, 8)
    # Row-major: tokens of one row share the row half, tokens of one column the column half.
    assert torch.equal(codes[0, :4], codes[3, :4]) and torch.equal(codes[0, 4:], codes[4, 4:])
    assert not torch.equal(codes[0, :4], codes[4, :4])
    with pytest.raises(ValueError, match="divisible by 4 \\(got 6\\)"):
        sincos_2d(2, 2, 6)

    tokenizer = TextImageTokenizer.build(codebook_size=16, text_length=8)
    layout = SequenceLayout.from_tokenizer(tokenizer, (4, 4))
    model = GPT2LMHeadModel(build_generator_config(tokenizer, (4, 4), n_embd=16, n_layer=1, n_head=2))
    before = model.transformer.wpe.weight.detach().clone()
    init_image_positions_2d(model, layout)
    after = model.transformer.wpe.weight.detach()
    image = layout.image_positions("t2i")
    expected = sincos_2d(4, 4, 16)
    assert torch.allclose(after[image], expected / expected.std() * model.config.initializer_range)
    outside = torch.ones(len(after), dtype=torch.bool)
    outside[image] = False
    assert torch.equal(after[outside], before[outside])


def train_generator_cosine_restarts(step: int, warmup: int, total: int, cycles: int) -> float:
    """diffusers' cosine_with_restarts multiplier after `step` scheduler steps."""
    import math

    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def test_a_cache_made_by_another_quantizer_is_refused(stage2_assets, tmp_path):
    from te_vqgan import TEVQModel

    vqmodel, _, _ = stage2_assets
    other = TEVQModel.from_pretrained(vqmodel)
    with torch.no_grad():
        other.quantize.embedding.weight.add_(1.0)
    other.save_pretrained(tmp_path / "other")
    argv = tiny_args(stage2_assets, tmp_path / "run")
    argv[argv.index("--vqmodel") + 1] = str(tmp_path / "other")
    with pytest.raises(ValueError, match="was made by the quantizer .* re-run `te-vqgan tokenize-dataset`"):
        run(argv)
    assert not (tmp_path / "run" / "model_index.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--directions", "t2i,x"], "--directions must name t2i and/or i2t"),
        (["--n_embd", "33"], "--n_embd must be divisible by --n_head (got 33 and 2)"),
        (["--max_grad_norm", "0"], "--max_grad_norm must be a finite number > 0"),
        (["--lr_warmup_steps", "-1"], "--lr_warmup_steps must be >= 0"),
        (["--top_k_fraction", "0"], "--top_k_fraction must be in (0, 1]"),
        (["--train_subset_size", "0"], "--train_subset_size must be >= 1"),
        (["--learning_rate", "inf"], "argument --learning_rate: expected a finite number (got 'inf')"),
        (["--temperature", "nan"], "argument --temperature: expected a finite number (got 'nan')"),
        (["--adam_beta1", "1.0"], "--adam_beta1 must be in [0, 1)"),
        (["--dropout", "1"], "--dropout must be in [0, 1) (got 1.0)"),
        (["--weight_decay", "-0.1"], "--weight_decay must be >= 0 (got -0.1)"),
        (["--image_position_init", "rope"], "argument --image_position_init: invalid choice: 'rope'"),
        (["--caption_form", "sorted"], "argument --caption_form: invalid choice: 'sorted'"),
    ],
)
def test_bad_arguments_are_one_line_errors(stage2_assets, tmp_path, extra, message, capsys):
    with pytest.raises(SystemExit):
        train_generator.parse_args(tiny_args(stage2_assets, tmp_path, *extra))
    assert message in capsys.readouterr().err


def test_a_text_block_too_short_for_the_captions_is_refused_before_training(stage2_assets, tmp_path):
    # the grammar's longest caption is 43 words, its longest canonical one 28
    with pytest.raises(
        ValueError, match="--text_length 44 cannot hold the longest as_written caption .* need --text_length 45"
    ):
        run(tiny_args(stage2_assets, tmp_path / "run", "--text_length", "44"))
    with pytest.raises(
        ValueError, match="--text_length 29 cannot hold the longest canonical caption .* need --text_length 30"
    ):
        run(tiny_args(stage2_assets, tmp_path / "run", "--text_length", "29", "--caption_form", "canonical"))
    assert not any((tmp_path / "run").iterdir())  # nothing written


def test_too_large_a_subset_and_a_missing_dataset(stage2_assets, tmp_path, capsys):
    with pytest.raises(ValueError, match="--train_subset_size 1000 is more than the 96 train examples"):
        run(tiny_args(stage2_assets, tmp_path / "run", "--train_subset_size", "1000"))
    argv = tiny_args(stage2_assets, tmp_path / "run")
    argv[argv.index("--tokenized_dataset") + 1] = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit):
        train_generator.parse_args(argv)
    assert "is not a folder" in capsys.readouterr().err
