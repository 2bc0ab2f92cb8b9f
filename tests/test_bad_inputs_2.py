"""The second bad-input round: stage 2's pipelines (wrong types, extreme values, damaged and
partial folders, a swapped quantizer), the evaluation classifier, `generate` / `caption`,
`tokenize-dataset` and `reproduce` (duplicates, ranges, devices, locks, damaged state), each a
row of the same kind as `test_bad_inputs.py`: the exception (or exit status 2 with one error
line), a piece of text the message must name, and nothing half-written in an output folder.

    python tests/test_bad_inputs_2.py     # counts: clear / raw (another exception) / silent (none)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bad_inputs import SCRIPT_EXIT, Case, Context, check_row, classify, cli  # noqa: E402
from tiny_configs import TINY_TEVQ  # noqa: E402


PROMPT = "the red 3."


def pipeline_folder(ctx: Context, name: str = "pipe") -> Path:
    """A tiny saved pipeline (TEVQModel 16x16 at f = 4, a 1-layer GPT-2), made once per row."""
    folder = ctx.tmp / name
    if not folder.exists():
        from transformers import GPT2LMHeadModel

        from te_vqgan import TEVQModel, TextImageTokenizer, TextToImagePipeline
        from te_vqgan.generation import build_generator_config

        torch.manual_seed(0)
        vq = TEVQModel(**TINY_TEVQ)
        tokenizer = TextImageTokenizer.build(16, text_length=20)
        generator = GPT2LMHeadModel(build_generator_config(tokenizer, (4, 4), n_embd=16, n_layer=1, n_head=2))
        TextToImagePipeline(vqmodel=vq, generator=generator, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def t2i(ctx, **kwargs):
    from te_vqgan import TextToImagePipeline

    return TextToImagePipeline.from_pretrained(pipeline_folder(ctx))(**{"prompt": PROMPT, **kwargs})


def i2t(ctx, **kwargs):
    from te_vqgan import ImageToTextPipeline

    return ImageToTextPipeline.from_pretrained(pipeline_folder(ctx))(**{"image": torch.zeros(1, 3, 16, 16), **kwargs})


def damaged(ctx, damage) -> Path:
    """A copy of the tiny pipeline folder with `damage(folder)` applied."""
    folder = ctx.tmp / "damaged"
    shutil.copytree(pipeline_folder(ctx), folder)
    damage(folder)
    return folder


def load(ctx, damage):
    from te_vqgan import TextToImagePipeline

    return TextToImagePipeline.from_pretrained(damaged(ctx, damage))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _to_bin(folder: Path) -> None:
    (folder / "generator" / "model.safetensors").rename(folder / "generator" / "pytorch_model.bin")


def _swap_vqmodel(folder: Path) -> None:
    from te_vqgan import TEVQModel

    shutil.rmtree(folder / "vqmodel")
    torch.manual_seed(1)  # another quantizer of the same size
    TEVQModel(**TINY_TEVQ).save_pretrained(folder / "vqmodel")


def _nan_vqmodel(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    file = folder / "vqmodel" / "diffusion_pytorch_model.safetensors"
    weights = load_file(file)
    weights["quantize.embedding.weight"][0, 0] = float("nan")
    save_file(weights, file)


def classifier_folder(ctx: Context, damage=None) -> Path:
    from te_vqgan.classifier import DigitColourClassifier

    folder = ctx.tmp / "classifier"
    if not folder.exists():
        DigitColourClassifier(channels=(4, 4, 4)).save_pretrained(folder)
    if damage is not None:
        damage(folder)
    return folder


def load_classifier(ctx, damage):
    from te_vqgan.classifier import DigitColourClassifier

    return DigitColourClassifier.from_pretrained(classifier_folder(ctx, damage))


def _other_model_config(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"hidden_size": 768, "num_layers": 12}))


def _drop_a_weight(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, folder / "model.safetensors")


def bomb(ctx) -> Path:
    """A small PNG that decodes to 900 million pixels."""
    from PIL import Image

    path = ctx.tmp / "bomb.png"
    Image.new("1", (30_000, 30_000)).save(path, optimize=True)
    return path


def images_only(ctx) -> Path:
    """A `save_to_disk` folder of plain images: no captions or objects for stage 2."""
    import datasets
    from PIL import Image

    folder = ctx.tmp / "images"
    features = datasets.Features({"image": datasets.Image()})
    split = datasets.Dataset.from_dict({"image": [Image.new("RGB", (16, 16))] * 2}, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(folder))
    return folder


def locked(ctx) -> Path:
    """An output folder whose lock is held by a live process (pid 1 on this host)."""
    folder = ctx.tmp / "run"
    folder.mkdir(exist_ok=True)
    (folder / ".lock").write_text(
        json.dumps({"pid": 1, "host": socket.gethostname(), "command": "te-vqgan reproduce"})
    )
    return folder


def reproduce(ctx, *extra):
    return cli("reproduce", "--preset", "smoke", "--mnist-dir", ctx.mnist_dir, *extra)


def _state(ctx, text: str) -> Path:
    folder = ctx.tmp / "run"
    folder.mkdir(exist_ok=True)
    (folder / "state.json").write_text(text)
    return folder


CASES = [
    # ---------------------------------------------------------------- pipelines: wrong types, extreme values
    Case("t2i/prompt None", lambda c: t2i(c, prompt=None), ValueError, "`prompt` must be a caption"),
    Case("t2i/prompt empty list", lambda c: t2i(c, prompt=[]), ValueError, "`prompt` must be a caption"),
    Case("t2i/prompt with a number", lambda c: t2i(c, prompt=[PROMPT, 3]), ValueError, "`prompt` must be a caption"),
    Case("t2i/empty prompt", lambda c: t2i(c, prompt=""), ValueError, "has no words"),
    Case("t2i/num_images_per_prompt 2.5", lambda c: t2i(c, num_images_per_prompt=2.5), ValueError, "2.5"),
    Case(
        "t2i/num_images_per_prompt 0", lambda c: t2i(c, num_images_per_prompt=0), ValueError, "`num_images_per_prompt`"
    ),
    Case("t2i/generator 0", lambda c: t2i(c, generator=0), ValueError, "`generator` must be a torch.Generator"),
    Case(
        "t2i/generator list too short",
        lambda c: t2i(c, num_images_per_prompt=3, generator=[torch.Generator()]),
        ValueError,
        "1 generators for 3 samples",
    ),
    Case("t2i/generator list of ints", lambda c: t2i(c, generator=[1]), ValueError, "['int']"),
    Case("t2i/output_type latents", lambda c: t2i(c, output_type="latents"), ValueError, "'latents'"),
    Case("t2i/temperature 1e39", lambda c: t2i(c, temperature=1e39), ValueError, "1e+39"),
    Case("t2i/temperature nan", lambda c: t2i(c, temperature=float("nan")), ValueError, "`temperature`"),
    Case("t2i/temperature a string", lambda c: t2i(c, temperature="hot"), ValueError, "'hot'"),
    Case("t2i/temperature True", lambda c: t2i(c, temperature=True), ValueError, "True"),
    Case("t2i/top_k_fraction 0", lambda c: t2i(c, top_k_fraction=0), ValueError, "`top_k_fraction`"),
    Case("t2i/top_k_fraction 1.5", lambda c: t2i(c, top_k_fraction=1.5), ValueError, "1.5"),
    Case("t2i/batch_size 0", lambda c: t2i(c, batch_size=0), ValueError, "`batch_size`"),
    Case("t2i/num_candidates 0", lambda c: t2i(c, num_candidates=0), ValueError, "`num_candidates` must be"),
    Case("t2i/num_candidates True", lambda c: t2i(c, num_candidates=True), ValueError, "(got True)"),
    Case(
        "t2i/600 images x 2 candidates in one batch",
        lambda c: t2i(c, num_images_per_prompt=600, num_candidates=2),
        ValueError,
        "x 2 candidates",
    ),
    Case("t2i/batch_size 1.5", lambda c: t2i(c, batch_size=1.5), ValueError, "1.5"),
    Case(
        "t2i/60000 images in one batch",
        lambda c: t2i(c, num_images_per_prompt=60_000),
        ValueError,
        "pass `batch_size`",
    ),
    Case(
        "t2i/callback not callable",
        lambda c: t2i(c, callback_on_step_end="print"),
        ValueError,
        "`callback_on_step_end`",
    ),
    Case(
        "t2i/callback tensor input unknown",
        lambda c: t2i(c, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["latents"]),
        ValueError,
        "['latents']",
    ),
    Case("i2t/image None", lambda c: i2t(c, image=None), ValueError, "NoneType"),
    Case("i2t/image a path string", lambda c: i2t(c, image="cat.png"), ValueError, "str"),
    Case(
        "i2t/float image in [0, 255]",
        lambda c: i2t(c, image=torch.full((1, 3, 16, 16), 200.0)),
        ValueError,
        "in [-1, 1]",
    ),
    Case("i2t/NaN image", lambda c: i2t(c, image=torch.full((1, 3, 16, 16), float("nan"))), ValueError, "NaN"),
    Case(
        "i2t/generator list too long",
        lambda c: i2t(c, generator=[torch.Generator(), torch.Generator()]),
        ValueError,
        "2 generators for 1 samples",
    ),
    Case("i2t/generator a seed", lambda c: i2t(c, generator=7), ValueError, "`generator` must be a torch.Generator"),
    Case("i2t/temperature -1", lambda c: i2t(c, temperature=-1), ValueError, "-1"),
    Case("i2t/top_k_fraction 2", lambda c: i2t(c, top_k_fraction=2), ValueError, "2"),
    Case("i2t/batch_size -3", lambda c: i2t(c, batch_size=-3), ValueError, "-3"),
    Case("i2t/num_candidates 2.5", lambda c: i2t(c, num_candidates=2.5), ValueError, "(got 2.5)"),
    Case(
        "i2t/callback tensor input unknown",
        lambda c: i2t(c, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["logits"]),
        ValueError,
        "['logits']",
    ),
    # ---------------------------------------------------------------- pipelines: damaged, partial and mixed folders
    Case(
        "pipeline/no tokenizer/",
        lambda c: load(c, lambda f: shutil.rmtree(f / "tokenizer")),
        FileNotFoundError,
        "tokenizer/tokenizer.json",
    ),
    Case(
        "pipeline/no generator/config.json",
        lambda c: load(c, lambda f: (f / "generator" / "config.json").unlink()),
        FileNotFoundError,
        "generator/config.json",
    ),
    Case(
        "pipeline/truncated generator weights",
        lambda c: load(c, lambda f: _truncate(f / "generator" / "model.safetensors")),
        ValueError,
        "model.safetensors",
    ),
    Case(
        "pipeline/truncated vqmodel weights",
        lambda c: load(c, lambda f: _truncate(f / "vqmodel" / "diffusion_pytorch_model.safetensors")),
        ValueError,
        "diffusion_pytorch_model.safetensors",
    ),
    Case(
        "pipeline/.bin-only generator",
        lambda c: load(c, _to_bin),
        FileNotFoundError,
        "pickled weights are never loaded",
    ),
    Case(
        "pipeline/model_index.json a list",
        lambda c: load(c, lambda f: (f / "model_index.json").write_text("[1, 2]")),
        ValueError,
        "JSON object",
    ),
    Case(
        "pipeline/model_index.json not JSON",
        lambda c: load(c, lambda f: (f / "model_index.json").write_text("{oops")),
        ValueError,
        "not valid JSON",
    ),
    Case(
        "pipeline/model_index.json without the tokenizer",
        lambda c: load(
            c,
            lambda f: (f / "model_index.json").write_text(
                json.dumps(
                    {k: v for k, v in json.loads((f / "model_index.json").read_text()).items() if k != "tokenizer"}
                )
            ),
        ),
        ValueError,
        "['tokenizer']",
    ),
    Case(
        "pipeline/no model_index.json",
        lambda c: load(c, lambda f: (f / "model_index.json").unlink()),
        FileNotFoundError,
        "no model_index.json",
    ),
    Case(
        "pipeline/vqmodel swapped for another quantizer",
        lambda c: load(c, _swap_vqmodel),
        ValueError,
        "was `vqmodel/` replaced",
    ),
    Case("pipeline/NaN weights in vqmodel", lambda c: load(c, _nan_vqmodel), ValueError, "NaN or Inf weights"),
    Case(
        "pipeline/a folder that is not there",
        lambda c: __import__("te_vqgan").TextToImagePipeline.from_pretrained(str(c.tmp / "nope")),
        FileNotFoundError,
        "nope",
    ),
    Case(
        "cli/generate from a damaged pipeline",
        lambda c: cli(
            "generate",
            "--pipeline",
            damaged(c, lambda f: shutil.rmtree(f / "tokenizer")),
            "--prompt",
            PROMPT,
            "--output-dir",
            c.tmp / "out",
        ),
        SCRIPT_EXIT,
        "tokenizer/tokenizer.json",
        output="out",
    ),
    # ---------------------------------------------------------------- the evaluation classifier
    Case(
        "classifier/a folder of another model",
        lambda c: load_classifier(c, _other_model_config),
        ValueError,
        "hidden_size",
    ),
    Case(
        "classifier/no weights",
        lambda c: load_classifier(c, lambda f: (f / "model.safetensors").unlink()),
        FileNotFoundError,
        "model.safetensors",
    ),
    Case(
        "classifier/a weight missing",
        lambda c: load_classifier(c, _drop_a_weight),
        ValueError,
        "do not fit a DigitColourClassifier",
    ),
    Case(
        "classifier/config not JSON",
        lambda c: load_classifier(c, lambda f: (f / "config.json").write_text("{")),
        ValueError,
        "not valid JSON",
    ),
    Case(
        "cli/evaluate with another model's folder as classifier",
        lambda c: cli(
            "evaluate",
            "--pipeline",
            pipeline_folder(c),
            "--classifier",
            classifier_folder(c, _other_model_config),
            "--output-dir",
            c.tmp / "eval",
        ),
        SCRIPT_EXIT,
        "hidden_size",
        output="eval",
    ),
    # ---------------------------------------------------------------- generate and caption
    Case(
        "cli/generate --seed 10**23",
        lambda c: cli(
            "generate",
            "--pipeline",
            pipeline_folder(c),
            "--prompt",
            PROMPT,
            "--seed",
            str(10**23),
            "--output-dir",
            c.tmp / "out",
        ),
        SCRIPT_EXIT,
        str(10**23),
        output="out",
    ),
    Case(
        "cli/generate --temperature 1e39",
        lambda c: cli(
            "generate",
            "--pipeline",
            pipeline_folder(c),
            "--prompt",
            PROMPT,
            "--temperature",
            "1e39",
            "--output-dir",
            c.tmp / "out",
        ),
        SCRIPT_EXIT,
        "1e+39",
        output="out",
    ),
    Case(
        "cli/generate --num-images-per-prompt 60000",
        lambda c: cli(
            "generate",
            "--pipeline",
            pipeline_folder(c),
            "--prompt",
            PROMPT,
            "--num-images-per-prompt",
            "60000",
            "--output-dir",
            c.tmp / "out",
        ),
        SCRIPT_EXIT,
        "pass `batch_size`",
        output="out",
    ),
    Case(
        "cli/generate into an occupied folder",
        lambda c: cli("generate", "--pipeline", pipeline_folder(c), "--prompt", PROMPT, "--output-dir", c.tmp / "out"),
        SCRIPT_EXIT,
        "not empty",
        output="out",
        setup=lambda c: ((c.tmp / "out").mkdir(), (c.tmp / "out" / "00-00.png").write_bytes(b"old")),
    ),
    Case(
        "cli/generate into the pipeline folder",
        lambda c: cli(
            "generate",
            "--pipeline",
            pipeline_folder(c),
            "--prompt",
            PROMPT,
            "--output-dir",
            pipeline_folder(c),
            "--overwrite",
        ),
        SCRIPT_EXIT,
        "would write over --pipeline",
    ),
    Case(
        "cli/caption a decompression bomb",
        lambda c: cli("caption", "--pipeline", pipeline_folder(c), bomb(c)),
        SCRIPT_EXIT,
        "bomb.png",
    ),
    # ---------------------------------------------------------------- tokenize-dataset
    Case(
        "cli/tokenize-dataset over its own --vqmodel",
        lambda c: cli(
            "tokenize-dataset", "--vqmodel", c.saved_model(), "--output-dir", c.saved_model(), "--overwrite"
        ),
        SCRIPT_EXIT,
        "would write over --vqmodel",
    ),
    Case(
        "cli/tokenize-dataset inside its --vqmodel",
        lambda c: cli("tokenize-dataset", "--vqmodel", c.saved_model(), "--output-dir", c.saved_model() / "tokens"),
        SCRIPT_EXIT,
        "would write over --vqmodel",
    ),
    Case(
        "cli/tokenize-dataset on images without captions",
        lambda c: cli(
            "tokenize-dataset",
            "--vqmodel",
            c.saved_model(),
            "--dataset",
            images_only(c),
            "--output-dir",
            c.tmp / "tokens",
        ),
        SCRIPT_EXIT,
        "['captions', 'objects']",
        output="tokens",
    ),
    # ---------------------------------------------------------------- reproduce
    Case(
        "cli/reproduce --seeds 0,0",
        lambda c: reproduce(c, "--seeds", "0,0", "--output-dir", c.tmp / "run"),
        SCRIPT_EXIT,
        "[0] more than once",
        output="run",
    ),
    Case(
        "cli/reproduce --quantizers te,te",
        lambda c: reproduce(c, "--quantizers", "te,te", "--output-dir", c.tmp / "run"),
        SCRIPT_EXIT,
        "['te'] more than once",
        output="run",
    ),
    Case(
        "cli/reproduce --train-sizes 100,100",
        lambda c: reproduce(c, "--train-sizes", "100,100", "--output-dir", c.tmp / "run"),
        SCRIPT_EXIT,
        "[100] more than once",
        output="run",
    ),
    Case(
        "cli/reproduce --seeds ''",
        lambda c: reproduce(c, "--seeds", "", "--output-dir", c.tmp / "run"),
        SCRIPT_EXIT,
        "--seeds must be integers",
        output="run",
    ),
    Case(
        "cli/reproduce --seeds -1",
        lambda c: reproduce(c, "--seeds=-1", "--output-dir", c.tmp / "run"),
        SCRIPT_EXIT,
        "[-1]",
        output="run",
    ),
    Case(
        "cli/reproduce --train-sizes 5",
        lambda c: reproduce(c, "--train-sizes", "5", "--output-dir", c.tmp / "run"),
        SCRIPT_EXIT,
        "at least one stage-2 batch",
        output="run",
    ),
    Case(
        "cli/reproduce --device cuda without a GPU",
        lambda c: reproduce(c, "--device", "cuda:7", "--output-dir", c.tmp / "run"),
        SCRIPT_EXIT,
        "'cuda:7'",
        output="run",
    ),
    Case("cli/reproduce --output-dir .", lambda c: reproduce(c, "--output-dir", "."), SCRIPT_EXIT, "current folder"),
    Case(
        "cli/reproduce on a folder another run holds",
        lambda c: reproduce(c, "--output-dir", locked(c)),
        SCRIPT_EXIT,
        "is in use by",
    ),
    Case(
        "cli/reproduce with a damaged state.json",
        lambda c: reproduce(c, "--output-dir", _state(c, "{not json")),
        SCRIPT_EXIT,
        "state.json",
    ),
    Case(
        "cli/reproduce with a state.json list",
        lambda c: reproduce(c, "--output-dir", _state(c, "[]")),
        SCRIPT_EXIT,
        "JSON object",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_a_clear_error(case, tmp_path, mnist_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_row(case, tmp_path, mnist_dir, capsys, nothing_left=True)


def test_the_second_matrix_is_large_enough():
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)


if __name__ == "__main__":
    import signal
    import tempfile

    from test_bad_inputs import _alarm, _TookTooLong

    # A row still running after this many seconds went on to real work with the bad input: silent.
    signal.signal(signal.SIGALRM, _alarm)
    counts = {"clear": 0, "raw": 0, "silent": 0}
    mnist = Path(
        os.environ.get("TE_VQGAN_MNIST_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    )
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                if case.setup is not None:
                    case.setup(Context(Path(tmp), mnist))
                signal.alarm(60)
                verdict, message = classify(case, Context(Path(tmp), mnist))
            except _TookTooLong:
                verdict, message = "silent", "still running after 60 s"
            except Exception as error:  # noqa: BLE001 - a row whose setup fails on an old checkout
                verdict, message = "raw", f"setup: {type(error).__name__}: {error}"
            finally:
                signal.alarm(0)
                os.chdir(cwd)
        counts[verdict] += 1
        print(f"{verdict:<7} {case.id}  {message.splitlines()[0][:140] if message else ''}")
    print(counts, "of", len(CASES))
