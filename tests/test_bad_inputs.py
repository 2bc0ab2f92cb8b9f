"""The bad-input matrix: one row per mistake a user can make, across the model, loading, the
metrics, the caption parser, the dataset builder, the MNIST reader, stage 2, the CLI, both
training scripts and resume.

Each row says which exception (or, for command lines, exit status 2 with one error line) is
expected and a piece of text the message must contain: the offending value. Rows with an
output folder also check that nothing half-written is left in it.

    python tests/test_bad_inputs.py     # counts: clear / raw (another exception) / silent (none)

(Run as a script, command-line rows count as clear on exit status 2 alone: stderr is not
captured there.)
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_configs import TINY_MODEL_CONFIG, TINY_STOCK_VQ, TINY_TEVQ  # noqa: E402
from train_helpers import reset_accelerate_state  # noqa: E402


REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT_EXIT = "exit 2"  # the row runs a command line: exit status 2 and the text in stderr


@dataclass
class Case:
    id: str
    call: Callable  # call(ctx) -> raises, or returns an exit status for command lines
    error: type | str  # an exception type, or SCRIPT_EXIT
    names: str  # text the message must contain
    output: str | None = None  # a folder (relative to ctx.tmp) that must hold nothing half-written
    setup: Callable | None = None  # setup(ctx), run before the folder is looked at (e.g. an earlier run)


class Context:
    """What the rows need: a temporary folder, the MNIST files, a tiny quantizer on disk."""

    def __init__(self, tmp: Path, mnist_dir: Path):
        self.tmp, self.mnist_dir = tmp, mnist_dir

    def model(self, **overrides):
        from te_vqgan import TEVQModel

        return TEVQModel(**{**TINY_TEVQ, **overrides})

    def saved_model(self, name="vq", **overrides) -> Path:
        folder = self.tmp / name
        if not folder.exists():
            self.model(**overrides).save_pretrained(folder)
        return folder

    def json_config(self, payload, name="config.json") -> Path:
        path = self.tmp / name
        path.write_text(json.dumps(payload))
        return path

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    def tokenizer(self):
        from te_vqgan import TextImageTokenizer

        return TextImageTokenizer.build(16, text_length=48)


def cli(*argv) -> int:
    from te_vqgan.cli import main

    return main([str(a) for a in argv])


def stage1(ctx, *extra):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from train_helpers import load_training_script

    script = load_training_script("train_vqgan")
    config = ctx.json_config(TINY_MODEL_CONFIG, "tiny.json")
    argv = [
        "--model_config",
        str(config),
        "--output_dir",
        str(ctx.tmp / "run"),
        "--mnist_dir",
        str(ctx.mnist_dir),
        "--perceptual_weight",
        "0",
        "--report_to",
        "none",
        "--cpu",
        *extra,
    ]
    return script.main(script.parse_args(argv))


def stage2(ctx, *extra):
    from train_helpers import load_training_script

    script = load_training_script("train_generator")
    (ctx.tmp / "tokens").mkdir(exist_ok=True)
    argv = [
        "--tokenized_dataset",
        str(ctx.tmp / "tokens"),
        "--vqmodel",
        str(ctx.saved_model()),
        "--output_dir",
        str(ctx.tmp / "run"),
        "--report_to",
        "none",
        "--cpu",
        *extra,
    ]
    return script.main(script.parse_args(argv))


def toy_run(ctx, damage: str) -> None:
    """Setup of the resume rows: a toy stage trained 2 steps (checkpoint-2 and a final
    folder), then damaged."""
    from test_training_engine import ToyStage, engine_args

    from te_vqgan.training.engine import TrainingEngine

    out = ctx.tmp / "run"
    TrainingEngine(engine_args(out, "--max_train_steps", "2")).fit(ToyStage())
    reset_accelerate_state()
    if damage == "truncate":
        weights = out / "checkpoint-2" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:20])
    elif damage == "empty":
        (out / "checkpoint-9").mkdir()


def resume_toy(ctx, checkpoint: str = "latest", wider: bool = False):
    from test_training_engine import ToyStage, engine_args

    from te_vqgan.training.engine import TrainingEngine

    class Wider(ToyStage):
        def build(self, accelerator):
            parts = super().build(accelerator)
            parts.models[0] = torch.nn.Linear(4, 3)
            parts.optimizers[0] = torch.optim.SGD(parts.models[0].parameters(), lr=0.1)
            return parts

    out = ctx.tmp / "run"
    checkpoint = checkpoint if checkpoint == "latest" else str(out / checkpoint)
    args = engine_args(out, "--max_train_steps", "4", "--resume_from_checkpoint", checkpoint)
    return TrainingEngine(args).fit(Wider() if wider else ToyStage())


def _gz(data: bytes) -> bytes:
    return gzip.compress(data)


IMAGES = lambda **kw: torch.zeros(2, 3, 16, 16, **kw)  # noqa: E731


CASES = [
    # ---------------------------------------------------------------- the model
    Case("model/downsample_type", lambda c: c.model(downsample_type="bogus"), ValueError, "'bogus'"),
    Case("model/padding_mode", lambda c: c.model(padding_mode="reflect"), ValueError, "'reflect'"),
    Case("model/orthogonal_reg_weight<0", lambda c: c.model(orthogonal_reg_weight=-1.0), ValueError, "-1.0"),
    Case("model/orthogonal_reg_max_codes=1", lambda c: c.model(orthogonal_reg_max_codes=1), ValueError, "got 1"),
    Case("model/commitment_beta<0", lambda c: c.model(commitment_beta=-0.5), ValueError, "-0.5"),
    Case("model/num_vq_embeddings=0", lambda c: c.model(num_vq_embeddings=0), ValueError, "`num_vq_embeddings`"),
    Case("model/vq_embed_dim=0", lambda c: c.model(vq_embed_dim=0), ValueError, "`vq_embed_dim`"),
    Case("model/latent_channels=0", lambda c: c.model(latent_channels=0), ValueError, "`latent_channels`"),
    Case("model/norm_num_groups=3", lambda c: c.model(norm_num_groups=3), ValueError, "`norm_num_groups` 3"),
    Case("model/level lists differ", lambda c: c.model(block_out_channels=(8, 16)), ValueError, "got 3, 3 and 2"),
    Case("model/images not a tensor", lambda c: c.model().encode_to_indices([[0.0]]), ValueError, "list"),
    Case("model/images 3-D", lambda c: c.model().encode_to_indices(torch.zeros(3, 16, 16)), ValueError, "(3, 16, 16)"),
    Case(
        "model/images 1 channel", lambda c: c.model().encode_to_indices(torch.zeros(1, 1, 16, 16)), ValueError, "got 1"
    ),
    Case(
        "model/size not divisible by f",
        lambda c: c.model().encode_to_indices(torch.zeros(1, 3, 18, 18)),
        ValueError,
        "18x18",
    ),
    Case(
        "model/uint8 images",
        lambda c: c.model().encode_to_indices(IMAGES(dtype=torch.uint8)),
        ValueError,
        "torch.uint8",
    ),
    Case("model/NaN images", lambda c: c.model()(IMAGES() * float("nan")), ValueError, "NaN or Inf"),
    Case("model/float64 images", lambda c: c.model()(IMAGES(dtype=torch.float64)), ValueError, "torch.float64"),
    Case(
        "model/bf16 images",
        lambda c: c.model().encode_to_indices(IMAGES(dtype=torch.bfloat16)),
        ValueError,
        "torch.bfloat16",
    ),
    Case(
        "model/empty batch",
        lambda c: c.model().encode_to_indices(torch.zeros(0, 3, 16, 16)),
        ValueError,
        "(0, 3, 16, 16)",
    ),
    Case(
        "model/indices out of range",
        lambda c: c.model().decode_indices(torch.full((1, 4, 4), 16)),
        ValueError,
        "max 16",
    ),
    Case(
        "model/negative indices", lambda c: c.model().decode_indices(torch.full((1, 4, 4), -1)), ValueError, "min -1"
    ),
    Case("model/float indices", lambda c: c.model().decode_indices(torch.zeros(1, 4, 4)), ValueError, "torch.float32"),
    Case(
        "model/indices 2-D",
        lambda c: c.model().decode_indices(torch.zeros(4, 4, dtype=torch.long)),
        ValueError,
        "(4, 4)",
    ),
    # ---------------------------------------------------------------- loading
    Case(
        "load/config typo",
        lambda c: __import__("te_vqgan.loading").loading.load_vq_model(
            str(c.json_config({**TINY_TEVQ, "orthogonal_reg_wieght": 1.0}))
        ),
        ValueError,
        "'orthogonal_reg_wieght'",
    ),
    Case(
        "load/config typo names the nearest key",
        lambda c: __import__("te_vqgan.loading").loading.load_vq_model(
            str(c.json_config({**TINY_TEVQ, "orthogonal_reg_wieght": 1.0}))
        ),
        ValueError,
        "did you mean 'orthogonal_reg_weight'",
    ),
    Case(
        "load/unknown class",
        lambda c: __import__("te_vqgan.loading").loading.load_vq_model(
            str(c.json_config({**TINY_TEVQ, "_class_name": "UNet2DModel"}))
        ),
        ValueError,
        "'UNet2DModel'",
    ),
    Case("load/stock VQModel folder as TEVQModel", lambda c: _stock_as_te(c), ValueError, "'VQModel'"),
    Case(
        "load/TEVQModel.from_config typo",
        lambda c: __import__("te_vqgan").TEVQModel.from_config({**TINY_TEVQ, "paddingmode": "zeros"}),
        ValueError,
        "'paddingmode'",
    ),
    Case(
        "load/folder without config.json",
        lambda c: __import__("te_vqgan.loading").loading.load_vq_model(str(c.tmp)),
        FileNotFoundError,
        "without config.json",
    ),
    Case(
        "load/nothing there",
        lambda c: __import__("te_vqgan.loading").loading.load_vq_model(str(c.tmp / "nope.json")),
        FileNotFoundError,
        "nope.json",
    ),
    Case(
        "load/invalid JSON",
        lambda c: __import__("te_vqgan.loading").loading.load_model_config(c.file("bad.json", b"{oops")),
        ValueError,
        "bad.json",
    ),
    Case(
        "load/JSON not an object",
        lambda c: __import__("te_vqgan.loading").loading.load_model_config(c.file("list.json", b"[1, 2]")),
        ValueError,
        "list",
    ),
    Case(
        "load/device bogus",
        lambda c: __import__("te_vqgan.loading").loading.resolve_device("bogus"),
        ValueError,
        "'bogus'",
    ),
    Case(
        "load/device unavailable",
        lambda c: __import__("te_vqgan.loading").loading.resolve_device("cuda:7"),
        ValueError,
        "'cuda:7'",
    ),
    # ---------------------------------------------------------------- metrics and losses
    Case(
        "metrics/usage out of range",
        lambda c: __import__("te_vqgan").codebook_usage(torch.tensor([0, 5]), 4),
        ValueError,
        "max 5",
    ),
    Case(
        "metrics/usage empty",
        lambda c: __import__("te_vqgan").codebook_usage(torch.tensor([], dtype=torch.long), 4),
        ValueError,
        "empty",
    ),
    Case(
        "metrics/usage float",
        lambda c: __import__("te_vqgan").codebook_usage(torch.tensor([0.5]), 4),
        ValueError,
        "torch.float32",
    ),
    Case(
        "metrics/usage num_codes=0",
        lambda c: __import__("te_vqgan").codebook_usage(torch.tensor([0]), 0),
        ValueError,
        "got 0",
    ),
    Case(
        "metrics/digits out of [0, 1]",
        lambda c: __import__("te_vqgan").shift_equivariance(c.model(), torch.full((1, 28, 28), 3.0).numpy()),
        ValueError,
        "[0, 1]",
    ),
    Case(
        "metrics/not a model",
        lambda c: __import__("te_vqgan").shift_equivariance(
            object(), torch.zeros(1, 28, 28, dtype=torch.uint8).numpy()
        ),
        TypeError,
        "object",
    ),
    Case(
        "losses/NaN codebook",
        lambda c: __import__("te_vqgan").orthogonal_loss(torch.full((4, 4), float("nan"))),
        ValueError,
        "16 NaN",
    ),
    Case(
        "losses/empty codebook",
        lambda c: __import__("te_vqgan").orthogonal_loss(torch.zeros(0, 4)),
        ValueError,
        "(0, 4)",
    ),
    Case("losses/1-D codebook", lambda c: __import__("te_vqgan").orthogonal_loss(torch.zeros(4)), ValueError, "(4,)"),
    Case(
        "losses/unknown reconstruction",
        lambda c: __import__("te_vqgan.losses").losses.reconstruction_loss(IMAGES(), IMAGES(), "l3"),
        ValueError,
        "'l3'",
    ),
    # ---------------------------------------------------------------- captions and parser
    Case("captions/parse None", lambda c: __import__("te_vqgan.data").data.parse_caption(None), TypeError, "NoneType"),
    Case(
        "captions/parse bytes", lambda c: __import__("te_vqgan.data").data.parse_caption(b"red 3"), TypeError, "bytes"
    ),
    Case(
        "captions/strict unknown word",
        lambda c: __import__("te_vqgan.data").data.parse_caption("the purple 3 is on the upper left.", strict=True),
        ValueError,
        "'purple'",
    ),
    Case(
        "captions/unknown variant",
        lambda c: __import__("te_vqgan.data").data.parse_caption("red 3", variant="emnist"),
        ValueError,
        "'emnist'",
    ),
    Case("captions/bad colour", lambda c: _render(("upper_left", "purple", 3)), ValueError, "'purple'"),
    Case("captions/bad location", lambda c: _render(("middle", "red", 3)), ValueError, "'middle'"),
    Case("captions/digit 10", lambda c: _render(("upper_left", "red", 10)), ValueError, "10"),
    Case("captions/no objects", lambda c: _render(), ValueError, "got none"),
    # ---------------------------------------------------------------- the builder
    Case("builder/negative size", lambda c: _builder(c, num_train=-5), ValueError, "-5"),
    Case(
        "builder/every size 0",
        lambda c: _builder(c, num_train=0, num_validation=0, num_test=0, num_test_seen=0, num_shift_groups=0),
        ValueError,
        "Every split size is 0",
    ),
    Case("builder/captions_per_image 0", lambda c: _builder(c, captions_per_image=0), ValueError, "got 0"),
    Case("builder/shift colour", lambda c: _builder(c, shift_colour="pink"), ValueError, "'pink'"),
    Case("builder/variant", lambda c: _builder(c, variant="kmnist"), ValueError, "'kmnist'"),
    # ---------------------------------------------------------------- the MNIST reader
    Case(
        "mnist/truncated gzip",
        lambda c: _read_idx(c.file("t.gz", _gz(b"\x00\x00\x08\x01" + b"\x00" * 100)[:30])),
        ValueError,
        "t.gz",
    ),
    Case("mnist/not gzip", lambda c: _read_idx(c.file("plain.gz", b"not a gzip file at all")), ValueError, "plain.gz"),
    Case(
        "mnist/wrong magic",
        lambda c: _read_idx(c.file("m.gz", _gz(b"\x01\x02\x03\x04" + b"\x00" * 8))),
        ValueError,
        "01020304",
    ),
    Case("mnist/too short", lambda c: _read_idx(c.file("s.gz", _gz(b"\x00"))), ValueError, "1 bytes"),
    Case(
        "mnist/size mismatch",
        lambda c: _read_idx(c.file("z.gz", _gz(b"\x00\x00\x08\x01\x00\x00\x00\x05" + b"\x00" * 2))),
        ValueError,
        "(5,)",
    ),
    Case(
        "mnist/missing folder file",
        lambda c: __import__("te_vqgan.data").data.resolve_mnist_files(data_dir=c.tmp),
        FileNotFoundError,
        "train-images-idx3-ubyte.gz",
    ),
    Case("mnist/corrupt file", lambda c: _corrupt_mnist(c), ValueError, "SHA-256"),
    # ---------------------------------------------------------------- stage 2 pieces
    Case("tokenizer/codebook 0", lambda c: __import__("te_vqgan").TextImageTokenizer.build(0), ValueError, "got 0"),
    Case(
        "tokenizer/unknown words",
        lambda c: c.tokenizer().encode_caption("the purple 3 is zorp."),
        ValueError,
        "['purple', 'zorp']",
    ),
    Case(
        "tokenizer/too long",
        lambda c: (
            __import__("te_vqgan")
            .TextImageTokenizer.build(16, text_length=6)
            .encode_caption("the red 3 is on the upper left.")
        ),
        ValueError,
        "6",
    ),
    Case(
        "tokenizer/code out of range",
        lambda c: c.tokenizer().encode_image_indices(torch.full((1, 4, 4), 16)),
        ValueError,
        "16",
    ),
    Case(
        "tokenizer/not image ids",
        lambda c: c.tokenizer().decode_image_indices(torch.zeros(1, 4, dtype=torch.long)),
        ValueError,
        "0",
    ),
    Case(
        "layout/direction",
        lambda c: (
            __import__("te_vqgan.generation")
            .generation.SequenceLayout.from_tokenizer(c.tokenizer(), (4, 4))
            .allowed_tokens("x2y")
        ),
        ValueError,
        "'x2y'",
    ),
    Case(
        "sampling/top-k fraction",
        lambda c: __import__("te_vqgan.generation").generation.top_k_from_fraction(100, 0.0),
        ValueError,
        "0.0",
    ),
    Case(
        "tokenized/not a cache",
        lambda c: __import__("te_vqgan.data.tokenized").data.tokenized.load_tokenized_dataset(c.tmp),
        ValueError,
        "quantizer.json",
    ),
    # ---------------------------------------------------------------- the CLI (exit 2, one line)
    Case(
        "cli/equivariance --num-digits 0",
        lambda c: cli(
            "equivariance",
            "--model",
            REPO_ROOT / "hub_configs" / "te-vqgan-mnist-small.json",
            "--mnist-dir",
            c.mnist_dir,
            "--num-digits",
            "0",
            "--output",
            c.tmp / "o" / "e.png",
        ),
        SCRIPT_EXIT,
        "--num-digits must be >= 1 (got 0)",
        output="o",
    ),
    Case(
        "cli/equivariance --device bogus",
        lambda c: cli(
            "equivariance",
            "--model",
            REPO_ROOT / "hub_configs" / "te-vqgan-mnist-small.json",
            "--device",
            "bogus",
            "--output",
            c.tmp / "o" / "e.png",
        ),
        SCRIPT_EXIT,
        "'bogus'",
        output="o",
    ),
    Case(
        "cli/equivariance --device cuda:7",
        lambda c: cli(
            "equivariance",
            "--model",
            REPO_ROOT / "hub_configs" / "te-vqgan-mnist-small.json",
            "--device",
            "cuda:7",
            "--output",
            c.tmp / "o" / "e.png",
        ),
        SCRIPT_EXIT,
        "'cuda:7'",
        output="o",
    ),
    Case(
        "cli/equivariance config typo",
        lambda c: cli(
            "equivariance",
            "--model",
            c.json_config({**TINY_TEVQ, "num_vq_embedding": 8}),
            "--output",
            c.tmp / "o" / "e.png",
        ),
        SCRIPT_EXIT,
        "'num_vq_embedding'",
        output="o",
    ),
    Case(
        "cli/build-dataset --num-proc 0",
        lambda c: cli("build-dataset", "--output", c.tmp / "o", "--num-proc", "0"),
        SCRIPT_EXIT,
        "--num-proc must be at least 1 (got 0)",
        output="o",
    ),
    Case(
        "cli/tokenize-dataset config file",
        lambda c: cli("tokenize-dataset", "--vqmodel", c.json_config(TINY_TEVQ), "--output", c.tmp / "o"),
        SCRIPT_EXIT,
        "config.json",
        output="o",
    ),
    Case(
        "cli/tokenize-dataset batch 0",
        lambda c: cli("tokenize-dataset", "--vqmodel", c.saved_model(), "--batch-size", "0", "--output", c.tmp / "o"),
        SCRIPT_EXIT,
        "--batch-size must be >= 1 (got 0)",
        output="o",
    ),
    Case(
        "cli/train-classifier --epochs 0",
        lambda c: cli("train-classifier", "--output", c.tmp / "o", "--epochs", "0"),
        SCRIPT_EXIT,
        "--epochs must be >= 1 (got 0)",
        output="o",
    ),
    Case(
        "cli/train-classifier --channels 16,x,64",
        lambda c: cli("train-classifier", "--output", c.tmp / "o", "--channels", "16,x,64"),
        SCRIPT_EXIT,
        "--channels must be three positive integers separated by commas, e.g. 16,32,64 (got '16,x,64')",
        output="o",
    ),
    Case(
        "cli/train-classifier --test-time-shift 9",
        lambda c: cli("train-classifier", "--output", c.tmp / "o", "--test-time-shift", "9"),
        SCRIPT_EXIT,
        "--test-time-shift must be in [0, 4] pixels (got 9)",
        output="o",
    ),
    Case(
        "cli/train-classifier --max-rotation 90",
        lambda c: cli("train-classifier", "--output", c.tmp / "o", "--max-rotation", "90"),
        SCRIPT_EXIT,
        "--max-rotation must be in [0, 45] degrees (got 90.0)",
        output="o",
    ),
    Case(
        "cli/evaluate no pipeline",
        lambda c: cli(
            "evaluate",
            "--pipeline",
            c.tmp / "absent",
            "--classifier",
            c.tmp / "absent",
            "--output",
            c.tmp / "o",
            "--device",
            "cpu",
        ),
        SCRIPT_EXIT,
        "absent",
        output="o",
    ),
    Case(
        "cli/evaluate --top-k-fraction 0",
        lambda c: cli(
            "evaluate",
            "--pipeline",
            c.tmp / "absent",
            "--classifier",
            c.tmp / "absent",
            "--output",
            c.tmp / "o",
            "--top-k-fraction",
            "0",
        ),
        SCRIPT_EXIT,
        "`top_k_fraction` must be in (0, 1] (got 0.0)",
        output="o",
    ),
    Case(
        "cli/reproduce --jobs 0",
        lambda c: cli("reproduce", "--jobs", "0", "--output", c.tmp / "o"),
        SCRIPT_EXIT,
        "--jobs must be >= 1 (got 0)",
        output="o",
    ),
    Case(
        "cli/reproduce --quantizers xx",
        lambda c: cli("reproduce", "--quantizers", "te,xx", "--output", c.tmp / "o"),
        SCRIPT_EXIT,
        "unknown ['xx']",
        output="o",
    ),
    Case(
        "cli/reproduce --classifier not one",
        lambda c: cli("reproduce", "--classifier", c.tmp, "--output", c.tmp / "o"),
        SCRIPT_EXIT,
        "not a `te-vqgan train-classifier` folder",
        output="o",
    ),
    # ---------------------------------------------------------------- the training scripts
    Case(
        "train_vqgan/--learning_rate inf",
        lambda c: stage1(c, "--learning_rate", "inf"),
        SCRIPT_EXIT,
        "'inf'",
        output="run",
    ),
    Case(
        "train_vqgan/--disc_weight nan",
        lambda c: stage1(c, "--disc_weight", "nan"),
        SCRIPT_EXIT,
        "'nan'",
        output="run",
    ),
    Case(
        "train_vqgan/--adam_beta1 1",
        lambda c: stage1(c, "--adam_beta1", "1.0"),
        SCRIPT_EXIT,
        "(got 1.0)",
        output="run",
    ),
    Case("train_vqgan/--output_dir a file", lambda c: _output_file(c, stage1), SCRIPT_EXIT, "is a file"),
    Case(
        "train_vqgan/--pretrained_model missing",
        lambda c: _stage1_pretrained(c),
        SCRIPT_EXIT,
        "'missing/folder/x'",
        output="run",
    ),
    Case(
        "train_vqgan/--model_config typo",
        lambda c: _stage1_config(c, {**TINY_TEVQ, "orthogonal_reg_wieght": 2.0}),
        SCRIPT_EXIT,
        "did you mean 'orthogonal_reg_weight'",
        output="run",
    ),
    Case(
        "train_vqgan/--model_config of a VQModel",
        lambda c: _stage1_config(c, {**TINY_STOCK_VQ, "_class_name": "VQModel"}),
        SCRIPT_EXIT,
        "'VQModel'",
        output="run",
    ),
    Case(
        "train_vqgan/--reconstruction_loss l3",
        lambda c: stage1(c, "--reconstruction_loss", "l3"),
        SCRIPT_EXIT,
        "'l3'",
        output="run",
    ),
    Case(
        "train_generator/--directions", lambda c: stage2(c, "--directions", "t2x"), SCRIPT_EXIT, "'t2x'", output="run"
    ),
    Case(
        "train_generator/--temperature nan",
        lambda c: stage2(c, "--temperature", "nan"),
        SCRIPT_EXIT,
        "'nan'",
        output="run",
    ),
    Case(
        "train_generator/--n_embd",
        lambda c: stage2(c, "--n_embd", "30", "--n_head", "4"),
        SCRIPT_EXIT,
        "(got 30 and 4)",
        output="run",
    ),
    Case("train_generator/not a cache", lambda c: stage2(c), ValueError, "quantizer.json", output="run"),
    # ---------------------------------------------------------------- resume
    Case(
        "resume/empty checkpoint named",
        lambda c: resume_toy(c, "checkpoint-9"),
        ValueError,
        "training_state.json",
        output="run",
        setup=lambda c: toy_run(c, "empty"),
    ),
    Case(
        "resume/truncated weights",
        lambda c: resume_toy(c),
        ValueError,
        "model.safetensors",
        output="run",
        setup=lambda c: toy_run(c, "truncate"),
    ),
    Case(
        "resume/another model",
        lambda c: resume_toy(c, wider=True),
        ValueError,
        "Linear.bias has shape (1,) there but (3,)",
        output="run",
        setup=lambda c: toy_run(c, "none"),
    ),
]


def _stock_as_te(ctx):
    from diffusers import VQModel

    from te_vqgan import TEVQModel

    VQModel(**TINY_STOCK_VQ).save_pretrained(ctx.tmp / "stock")
    return TEVQModel.from_pretrained(ctx.tmp / "stock")


def _render(*objects):
    import numpy as np

    from te_vqgan.data import render_caption

    return render_caption(list(objects), np.random.default_rng(0))


def _builder(ctx, **config):
    from te_vqgan.data import TextMNIST

    return TextMNIST(config_name="mnist", cache_dir=str(ctx.tmp / "cache"), data_dir=str(ctx.mnist_dir), **config)


def _read_idx(path):
    from te_vqgan.data import read_idx

    return read_idx(path)


def _corrupt_mnist(ctx):
    import shutil

    from te_vqgan.data import resolve_mnist_files

    folder = ctx.tmp / "mnist"
    shutil.copytree(ctx.mnist_dir, folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    return resolve_mnist_files(data_dir=folder)


def _output_file(ctx, run):
    (ctx.tmp / "run").write_text("a file, not a folder")
    return run(ctx)


def _stage1_pretrained(ctx):
    from train_helpers import load_training_script

    script = load_training_script("train_vqgan")
    return script.parse_args(["--pretrained_model", "missing/folder/x", "--output_dir", str(ctx.tmp / "run")])


def _stage1_config(ctx, config):
    from train_helpers import load_training_script

    script = load_training_script("train_vqgan")
    return script.parse_args(
        ["--model_config", str(ctx.json_config(config, "model.json")), "--output_dir", str(ctx.tmp / "run")]
    )


def classify(case: Case, ctx: Context, capsys=None) -> tuple[str, str]:
    """`("clear" | "raw" | "silent", message)` of one row."""
    try:
        result = case.call(ctx)
    except SystemExit as stop:
        err = capsys.readouterr().err if capsys is not None else ""
        ok = case.error == SCRIPT_EXIT and stop.code == 2 and (capsys is None or case.names in err)
        return ("clear" if ok else "raw"), err
    except Exception as error:  # noqa: BLE001 - classifying every outcome is the point here
        if type(error).__name__ == "_TookTooLong":
            raise
        message = f"{type(error).__name__}: {error}"
        ok = isinstance(case.error, type) and isinstance(error, case.error) and case.names in str(error)
        return ("clear" if ok else "raw"), message
    finally:
        reset_accelerate_state()
    if case.error == SCRIPT_EXIT and result == 2:
        if capsys is None:  # run as a script: the exit status alone
            return "clear", ""
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error" in line]
        return ("clear" if len(lines) == 1 and case.names in lines[0] else "raw"), err
    return "silent", f"returned {result!r}"


def check_row(case: Case, tmp_path: Path, mnist_dir, capsys, nothing_left: bool = False) -> None:
    """Run one row in `tmp_path` and assert it is clear and left nothing half-written in its output
    folder (with `nothing_left`, nothing new at all)."""
    ctx = Context(tmp_path, Path(mnist_dir).resolve())
    if case.setup is not None:
        case.setup(ctx)
    before = set((tmp_path / case.output).rglob("*")) if case.output and (tmp_path / case.output).is_dir() else set()
    verdict, message = classify(case, ctx, capsys)
    assert verdict == "clear", f"{case.id}: {verdict}: {message}"
    if case.output:
        folder = tmp_path / case.output
        if folder.is_dir():
            left = set(folder.rglob("*")) - before
            if not nothing_left:
                left = {
                    p
                    for p in left
                    if p.suffix in (".tmp", ".partial") or p.name in ("README.md", "metrics.json", "model_index.json")
                }
            assert not left, f"{case.id} left {sorted(p.name for p in left)} in {folder}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_a_clear_error(case, tmp_path, mnist_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO_ROOT / "tests"))
    check_row(case, tmp_path, mnist_dir, capsys)


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)


class _TookTooLong(Exception):
    pass


def _alarm(signum, frame):
    raise _TookTooLong


if __name__ == "__main__":
    import signal
    import tempfile

    # A row that is still running after this many seconds went on to real work with the bad
    # input (an older checkout building a 300K dataset, say): counted as silent.
    signal.signal(signal.SIGALRM, _alarm)

    counts = {"clear": 0, "raw": 0, "silent": 0}
    mnist = Path(os.environ.get("TE_VQGAN_MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                ctx = Context(Path(tmp), mnist)
                signal.alarm(30)
                try:
                    if case.setup is not None:
                        case.setup(ctx)
                    verdict, message = classify(case, ctx)
                except _TookTooLong:
                    verdict, message = "silent", "still working after 30 s"
                except ImportError as error:  # the setup needs an API the code under test lacks
                    verdict, message = "raw", f"ImportError: {error}"
                finally:
                    signal.alarm(0)
            finally:
                os.chdir(cwd)
        # A row whose API does not exist in the code under test (an older checkout) is not counted.
        missing_api = ("module 'te_vqgan", "train_generator")  # te_vqgan names or the stage-2 script, absent there
        if verdict == "raw" and (
            message.startswith(("ModuleNotFoundError", "ImportError")) or any(m in message for m in missing_api)
        ):
            verdict = "n/a"
        counts[verdict] = counts.get(verdict, 0) + 1
        if verdict != "clear":
            print(f"{verdict:>6}  {case.id}: {message.strip().splitlines()[-1] if message.strip() else ''}")
    print(f"{len(CASES)} cases: {counts}")


@pytest.mark.slow
def test_training_script_errors_are_one_line_and_exit_2(tmp_path):
    """A run-time error of a training script (here: no MNIST files) is one line, not a traceback."""
    import subprocess

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_TEVQ, "sample_size": 64}))
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "training" / "train_vqgan.py"),
            "--model_config",
            str(config),
            "--mnist_dir",
            str(tmp_path / "no-mnist"),
            "--perceptual_weight",
            "0",
            "--output_dir",
            str(tmp_path / "run"),
            "--report_to",
            "none",
            "--cpu",
            "--num_train",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    errors = [line for line in completed.stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in completed.stderr and len(errors) == 1
    assert errors[0].startswith("train_vqgan.py: error: MNIST file") and "no-mnist" in errors[0]


def test_outputs_have_normal_file_modes(tmp_path):
    """PNGs and JSON written through `atomic_path` get the modes of normally created files."""
    import numpy as np

    from te_vqgan.files import write_json_atomic
    from te_vqgan.visualization import save_captioned_images

    umask = os.umask(0o022)
    try:
        png = save_captioned_images(np.zeros((1, 8, 8, 3), np.uint8), ["x"], tmp_path / "a.png")
        record = write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(umask)
    assert oct(png.stat().st_mode & 0o777) == oct(0o644) and oct(record.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "m.json"]  # no temporary files left


def test_metrics_of_a_diverged_model_are_refused():
    from te_vqgan import TEVQModel, shift_equivariance

    model = TEVQModel(**TINY_TEVQ)
    with torch.no_grad():
        model.encoder.conv_in.weight.fill_(float("nan"))
    digits = torch.zeros(1, 28, 28, dtype=torch.uint8).numpy()
    with pytest.raises(ValueError, match=r"NaN or Inf \(\['encoder.conv_in.weight'\]\): it diverged"):
        shift_equivariance(model, digits)
