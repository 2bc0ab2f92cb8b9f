"""The stock Hugging Face entry points on te-vqgan folders: `AutoTokenizer`, `GenerationConfig` +
`AutoModelForCausalLM.generate()`, `DiffusionPipeline.from_pretrained`, and the pipelines' diffusers
call conventions (a list of generators, progress bar, `callback_on_step_end`, `output_type="latent"`)."""

import pytest
import torch
from hub_server import local_hub  # noqa: F401  (pytest fixture)
from test_pipelines import PROMPT, make_pipeline

from te_vqgan import ImageToTextPipeline, TextImageTokenizer, TextToImagePipeline


CAPTIONS = [PROMPT, "the upper left is blue 9.", "white 7."]


@pytest.fixture(scope="module")
def folder(stage2_assets, tmp_path_factory):
    path = tmp_path_factory.mktemp("stock") / "pipe"
    pipe = make_pipeline(stage2_assets[0])
    pipe.register_to_config(top_k_fraction=0.05, temperature=0.8)  # saved sampling defaults
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def t2i(folder):
    return TextToImagePipeline.from_pretrained(folder)


def test_auto_tokenizer_gives_the_trained_text_blocks(folder):
    from transformers import AutoTokenizer

    stock = AutoTokenizer.from_pretrained(folder / "tokenizer")  # no remote code: a generic fast tokenizer
    assert not isinstance(stock, TextImageTokenizer)
    ours = TextImageTokenizer.from_pretrained(folder / "tokenizer")
    batch = stock(CAPTIONS, padding="max_length", return_tensors="pt")
    expected = ours.encode_captions(CAPTIONS)
    assert torch.equal(batch.input_ids, expected)
    assert torch.equal(batch.attention_mask, (expected != ours.pad_token_id).long())
    assert stock.batch_decode(batch.input_ids, skip_special_tokens=True) == CAPTIONS  # no space before "."
    assert ours.decode(expected[1], skip_special_tokens=True) == "the upper left is blue 9."
    # The stock tokenizer reads an unknown word as <unk> (as every stock tokenizer); ours names it.
    assert stock.unk_token_id in stock("the purple 3.").input_ids
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['purple'\]"):
        ours.encode_caption("the purple 3.")


def test_generation_configs_drive_the_stock_generate(folder, t2i):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from te_vqgan.generation import GENERATION_CONFIG_FILES, ModalityMaskLogitsProcessor, SequenceLayout

    model = AutoModelForCausalLM.from_pretrained(folder / "generator")
    tokenizer = TextImageTokenizer.from_pretrained(folder / "tokenizer")
    layout = SequenceLayout.from_tokenizer(tokenizer, tuple(model.config.image_grid))
    n = layout.num_image_tokens
    configs = {
        d: GenerationConfig.from_pretrained(folder / "generator", name) for d, name in GENERATION_CONFIG_FILES.items()
    }
    k = max(int(0.05 * model.config.vocab_size), 1)
    assert (configs["t2i"].do_sample, configs["t2i"].top_k, configs["t2i"].temperature) == (True, k, 0.8)
    assert (configs["t2i"].max_new_tokens, configs["t2i"].min_new_tokens, configs["t2i"].eos_token_id) == (
        n + 1,
        n,
        layout.eoi_id,
    )
    assert (configs["i2t"].max_new_tokens, configs["i2t"].eos_token_id) == (layout.text_length - 1, layout.eot_id)
    assert model.generation_config.do_sample and model.generation_config.top_k == k  # a plain generate() samples

    text = AutoTokenizer.from_pretrained(folder / "tokenizer")(CAPTIONS[:2], padding="max_length", return_tensors="pt")
    prompt = layout.t2i_prompt(text.input_ids)
    torch.manual_seed(0)
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        generation_config=configs["t2i"],
        logits_processor=[ModalityMaskLogitsProcessor.from_layout(layout, "t2i")],
    )  # as the README
    new = out[:, prompt.shape[1] :]
    assert new.shape == (2, n + 1) and (new[:, n] == layout.eoi_id).all()
    codes = tokenizer.decode_image_indices(new[:, :n], grid=layout.image_grid)  # exactly H*W in-range codes
    assert torch.equal(codes.flatten(1), out[:, prompt.shape[1] : -1] - layout.image_token_offset)
    assert codes.shape == (2, *layout.image_grid) and 0 <= codes.min() and codes.max() < tokenizer.codebook_size
    assert t2i.config.top_k_fraction == 0.05 and t2i.config.temperature == 0.8  # the pipeline reads them back


def test_diffusion_pipeline_from_pretrained_returns_ours(folder):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder)
    assert type(pipe) is TextToImagePipeline
    assert pipe("white 7.", output_type="latent", generator=torch.Generator().manual_seed(0)).images.shape == (
        1,
        16,
        16,
    )


@pytest.mark.slow
def test_a_list_of_generators_makes_each_sample_independent_of_the_batch(t2i):
    alone = t2i(CAPTIONS[1], generator=[torch.Generator().manual_seed(5)], output_type="latent").images
    gens = [torch.Generator().manual_seed(s) for s in (1, 5, 2)]
    batch = t2i([CAPTIONS[0], CAPTIONS[1], CAPTIONS[2]], generator=gens, output_type="latent").images
    assert torch.equal(batch[1], alone[0])
    gens = [torch.Generator().manual_seed(s) for s in (1, 5, 2)]
    chunked = t2i(CAPTIONS, generator=gens, output_type="latent", batch_size=2).images
    assert torch.equal(chunked, batch)
    # One generator: reproducible for the batch; the global RNG is left alone.
    state = torch.random.get_rng_state()
    a = t2i(CAPTIONS, generator=torch.Generator().manual_seed(0), output_type="latent").images
    b = t2i(CAPTIONS, generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert torch.equal(a, b) and torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="Got a list of 2 generators for 3 samples"):
        t2i(CAPTIONS, generator=[torch.Generator(), torch.Generator()])


@pytest.mark.slow
def test_latent_output_is_the_code_indices(t2i):
    latent = t2i(CAPTIONS[:2], generator=torch.Generator().manual_seed(3), output_type="latent")
    pil = t2i(CAPTIONS[:2], generator=torch.Generator().manual_seed(3))
    assert latent.images.dtype == torch.long and torch.equal(latent.images, pil.indices)
    pixels = t2i.vqmodel.decode_indices(latent.images).clamp(-1, 1)
    direct = t2i(CAPTIONS[:2], generator=torch.Generator().manual_seed(3), output_type="pt").images
    assert torch.allclose(pixels, direct, atol=1e-5)


def test_progress_bar_and_callback_on_step_end(t2i, capsys):
    from diffusers.callbacks import PipelineCallback

    n = t2i.layout.num_image_tokens
    seen = []

    def callback(pipe, step, position, kwargs):
        seen.append((step, position, tuple(kwargs)))
        scores = kwargs["scores"]
        if step == 0:  # force the first code to be 1
            forced = torch.full_like(scores, float("-inf"))
            forced[:, t2i.tokenizer.image_token_offset + 1] = 0
            return {"scores": forced}
        return {}

    t2i.set_progress_bar_config(disable=False, desc="sampling")
    out = t2i(
        CAPTIONS[:2],
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["input_ids", "scores"],
    )
    assert "sampling" in capsys.readouterr().err  # set_progress_bar_config reaches the bar
    assert [s for s, _, _ in seen] == list(range(n + 1)) and seen[0][2] == ("input_ids", "scores")
    assert (out.images.flatten(1)[:, 0] == 1).all()

    class Count(PipelineCallback):
        tensor_inputs = ["input_ids"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            return callback_kwargs

    count = Count()
    t2i.set_progress_bar_config(disable=True)
    t2i("white 7.", output_type="latent", callback_on_step_end=count)
    assert count.calls == n + 1
    with pytest.raises(ValueError, match=r"callback_on_step_end_tensor_inputs` \['logits'\] are not among"):
        t2i("white 7.", callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["logits"])


@pytest.mark.slow
def test_progress_bar_counts_the_sampling_steps(t2i, capsys):
    n = t2i.layout.num_image_tokens
    t2i.set_progress_bar_config(disable=False)
    t2i(CAPTIONS[:2], output_type="latent", batch_size=1)
    t2i.set_progress_bar_config(disable=True)
    err = capsys.readouterr().err
    assert f"{2 * (n + 1)}/{2 * (n + 1)}" in err


def test_image_to_text_takes_a_generator_per_image(folder, t2i):
    i2t = ImageToTextPipeline.from_pretrained(folder)
    images = t2i(CAPTIONS, generator=torch.Generator().manual_seed(0)).images
    alone = i2t(images[2:], generator=[torch.Generator().manual_seed(9)]).captions
    batch = i2t(images, generator=[torch.Generator().manual_seed(s) for s in (4, 6, 9)]).captions
    assert batch[2] == alone[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images_per_prompt": 0}, "`num_images_per_prompt` must be an integer >= 1"),
        ({"num_images_per_prompt": True}, "`num_images_per_prompt` must be an integer >= 1"),
        ({"output_type": "latents"}, "`output_type` must be one of"),
        ({"temperature": 0.0}, "`temperature` must be a finite number > 0"),
        ({"temperature": float("inf")}, "`temperature` must be a finite number > 0"),
        ({"top_k_fraction": 1.5}, r"`top_k_fraction` must be in \(0, 1\]"),
        ({"generator": 3}, "`generator` must be a torch.Generator or a list of them"),
        ({"generator": [torch.Generator(), "x"]}, "`generator` must be a torch.Generator or a list of them"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
        ({"callback_on_step_end": "print"}, "`callback_on_step_end` must be callable"),
    ],
)
def test_call_arguments_are_checked_first(t2i, kwargs, message):
    with pytest.raises(ValueError, match=message):
        t2i("white 7.", **kwargs)


SMALL_VQ = dict(
    block_out_channels=(32, 64, 64),
    latent_channels=32,
    vq_embed_dim=32,
    num_vq_embeddings=16,
    norm_num_groups=8,
    sample_size=32,
)


@pytest.mark.parametrize(
    "layout",
    [
        dict(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3),
        dict(
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
            up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
            layers_per_block=2,
        ),
    ],
)
def test_a_stock_vqmodel_refuses_a_te_folder_and_matches_a_stock_layout(tmp_path, layout):
    from diffusers import VQModel

    from te_vqgan import TEVQModel

    torch.manual_seed(0)
    te = TEVQModel(**SMALL_VQ, **layout).eval()  # replicate padding: not diffusers' network
    assert (
        not te.computes_stock_network and te.config.down_block_types[0] == "TEVQModel." + layout["down_block_types"][0]
    )
    te.save_pretrained(tmp_path / "te")
    with pytest.raises(ValueError, match=r"TEVQModel\.DownEncoderBlock2D does not exist"):
        VQModel.from_pretrained(tmp_path / "te")
    assert list(TEVQModel.from_pretrained(tmp_path / "te").config.down_block_types) == list(te.config.down_block_types)

    torch.manual_seed(0)
    stock_layout = TEVQModel(**SMALL_VQ, **layout, padding_mode="zeros").eval()
    assert stock_layout.computes_stock_network and stock_layout.config.down_block_types == layout["down_block_types"]
    stock_layout.save_pretrained(tmp_path / "stock")
    stock = VQModel.from_pretrained(tmp_path / "stock").eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = stock.encode(x).latents
        _, _, (_, _, indices) = stock.quantize(latents)
        ours = stock_layout.encode_to_indices(x)
        assert torch.equal(indices.reshape(ours.shape), ours)
        torch.testing.assert_close(
            stock.decode(latents).sample, stock_layout.decode_indices(ours), atol=1e-5, rtol=1e-5
        )


def test_folders_saved_with_diffusers_block_names_still_load_with_their_fingerprint(tmp_path):
    import json

    from te_vqgan import TEVQModel
    from te_vqgan.data.tokenized import quantizer_fingerprint

    torch.manual_seed(0)
    model = TEVQModel(
        **SMALL_VQ, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3
    )
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["down_block_types"] = [name.removeprefix("TEVQModel.") for name in config["down_block_types"]]
    config["up_block_types"] = [name.removeprefix("TEVQModel.") for name in config["up_block_types"]]
    (tmp_path / "config.json").write_text(json.dumps(config))  # as folders saved before the prefix
    old = TEVQModel.from_pretrained(tmp_path)
    assert old.config.padding_mode == "replicate" and old.config.down_block_types[0] == "TEVQModel.DownEncoderBlock2D"
    assert quantizer_fingerprint(old) == quantizer_fingerprint(model)


@pytest.mark.slow
def test_the_forward_compiles_as_one_graph():
    from te_vqgan import TEVQModel
    from te_vqgan.losses import orthogonal_loss

    model = TEVQModel(
        **{**SMALL_VQ, "sample_size": 16},
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
    )
    compiled = torch.compile(lambda x: model(x, check_finite=False).orthogonal_loss, fullgraph=True, backend="eager")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(compiled(x), model(x).orthogonal_loss)
    assert torch.compile(orthogonal_loss, fullgraph=True, backend="eager")(torch.eye(4, 8)) == 0
    with pytest.raises(ValueError, match="NaN or Inf"):  # uncompiled, the check still stands
        orthogonal_loss(torch.full((4, 8), float("nan")))


def test_load_vq_model_returns_the_model(tmp_path):
    import json

    from te_vqgan import TEVQModel
    from te_vqgan.loading import load_vq_model

    config = tmp_path / "config.json"
    config.write_text(json.dumps({**SMALL_VQ, "_class_name": "TEVQModel"}))
    model = load_vq_model(str(config), seed=1)
    assert isinstance(model, TEVQModel) and not model.training
    again, description = load_vq_model(str(config), seed=1, output_loading_info=True)
    assert (
        torch.equal(again.codebook, model.codebook)
        and "randomly initialised" in description
        and "seed 1" in description
    )


def test_python_save_and_push_write_our_cards(folder, tmp_path, local_hub):
    from huggingface_hub import ModelCard

    from te_vqgan import TEVQModel

    model = TEVQModel(
        **SMALL_VQ, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3
    )
    model.save_pretrained(tmp_path / "vq")
    card = ModelCard.load(tmp_path / "vq" / "README.md")
    assert "te-vqgan" in card.data.tags and "More Information Needed" not in card.text and "TEVQModel" in card.text
    model.push_to_hub("user/tiny-vq")
    pushed = local_hub.files("user/tiny-vq")["README.md"].decode()
    assert "More Information Needed" not in pushed and "encode_to_indices" in pushed
    ModelCard(pushed).validate()  # the local hub's /api/validate-yaml

    # A loaded pipeline keeps the folder's card; without one it writes ours, with the quantizer as base_model.
    (folder / "README.md").write_text(
        "---\nlibrary_name: diffusers\ntags: [te-vqgan, trained-run]\n---\n# a trained run\n"
    )
    TextToImagePipeline.from_pretrained(folder).push_to_hub("user/tiny-pipe")
    assert "a trained run" in local_hub.files("user/tiny-pipe")["README.md"].decode()
    (folder / "README.md").unlink()
    pipe = TextToImagePipeline.from_pretrained(folder)
    pipe.vqmodel.register_to_config(_name_or_path="user/tiny-vq")  # as if loaded from the Hub
    pipe.save_pretrained(tmp_path / "pipe")
    data = ModelCard.load(tmp_path / "pipe" / "README.md").data
    assert data.base_model == "user/tiny-vq" and data.pipeline_tag == "text-to-image" and data.datasets is None
    from te_vqgan.hub import hub_repo_id

    assert (
        hub_repo_id(str(tmp_path)) is None
        and hub_repo_id("textmnist-mnist") is None
        and hub_repo_id("org/name") == "org/name"
    )


def test_one_flag_vocabulary_with_the_old_spellings_deprecated(capsys):
    import warnings

    from te_vqgan.cli import build_parser, main
    from te_vqgan.options import resolve_hub_push

    parser = build_parser()
    new = parser.parse_args(
        [
            "build-dataset",
            "--dataset-config",
            "fashion_mnist",
            "--output-dir",
            "out",
            "--mnist-dir",
            "d",
            "--push-to-hub",
            "--hub-model-id",
            "org/x",
            "--hub-private-repo",
        ]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = parser.parse_args(
            [
                "build-dataset",
                "--config",
                "fashion_mnist",
                "--output",
                "out",
                "--data-dir",
                "d",
                "--push-to-hub",
                "org/x",
                "--private",
            ]
        )
        assert resolve_hub_push(old) == "org/x"
    said = " ".join(str(w.message) for w in caught if issubclass(w.category, FutureWarning))
    for old_flag, new_flag in (
        ("--config", "--dataset-config"),
        ("--output", "--output-dir"),
        ("--data-dir", "--mnist-dir"),
        ("--private", "--hub-private-repo"),
    ):
        assert f"{old_flag} is deprecated" in said and f"use {new_flag}" in said
    assert "--push-to-hub REPO is deprecated" in said
    for key in ("config", "output", "data_dir", "hub_private_repo"):
        assert getattr(new, key) == getattr(old, key)
    assert resolve_hub_push(new) == "org/x"

    help_text = parser._subparsers._group_actions[0].choices["build-dataset"].format_help()
    assert "--mnist-dir" in help_text and "--data-dir" not in help_text and "--private " not in help_text

    other = parser.parse_args(["equivariance", "--vqmodel", "m"]), parser.parse_args(["equivariance", "--model", "m"])
    assert other[0].model == other[1].model == "m"
    assert (
        parser.parse_args(
            ["generate", "--pipeline", "p", "--prompt", "x", "--num-images-per-prompt", "3", "--output-dir", "o"]
        ).num_images
        == 3
    )
    with pytest.raises(SystemExit):
        main(["generate", "--pipeline", "p", "--prompt", "x"])
    assert "required: --output-dir" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--push-to-hub needs --hub-model-id"):
        resolve_hub_push(parser.parse_args(["train-classifier", "--output-dir", "o", "--push-to-hub"]))
    with pytest.raises(ValueError, match="without --push-to-hub"):
        resolve_hub_push(parser.parse_args(["train-classifier", "--output-dir", "o", "--hub-model-id", "org/x"]))
