"""Text-to-image and image-to-text pipelines over one saved folder.

Both pipelines hold the same three components, so one folder serves both::

    PIPELINE/
      model_index.json   {"vqmodel": ["te_vqgan.models.te_vq_model", "TEVQModel"],
                          "generator": ["transformers", "GPT2LMHeadModel"],
                          "tokenizer": ["te_vqgan.generation.tokenizer", "TextImageTokenizer"], ...}
      vqmodel/           the frozen stage-1 quantizer (TEVQModel or a stock diffusers VQModel)
      generator/         the stage-2 GPT-2 over the merged text+image vocabulary
      tokenizer/         the merged vocabulary (TextImageTokenizer)

    >>> from te_vqgan import TextToImagePipeline, ImageToTextPipeline
    >>> t2i = TextToImagePipeline.from_pretrained("outputs/generator")          # a folder or a Hub repo id
    >>> images = t2i("the red 3 is on the upper left.", num_images_per_prompt=4,
    ...              generator=torch.Generator().manual_seed(0)).images        # PIL images
    >>> i2t = ImageToTextPipeline.from_pretrained("outputs/generator")
    >>> i2t(images).captions

The parts are checked against each other when a pipeline is built (and so when it is
loaded): vocabulary size, codebook size, text length and token grid must agree, else a
ValueError names both values.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from PIL import Image

from ..generation import (
    GENERATION_CONFIG_FILES,
    SequenceLayout,
    TextImageTokenizer,
    check_compatible,
    check_num_candidates,
    generate_caption_ids,
    generate_image_indices,
    generation_configs,
)
from ..generation.sampling import _check_sampling
from ..hub import TeVqganCardMixin, hub_repo_id, push_folder_to_hub
from ..images import images_to_tensor, tensor_to_images
from ..models.stock_vq_model import as_tokenizer
from ..torch_utils import non_finite_weights


__all__ = ["ImageToTextPipeline", "ImageToTextPipelineOutput", "TextToImagePipeline", "TextToImagePipelineOutput"]


@dataclass
class TextToImagePipelineOutput(BaseOutput):
    """Output of `TextToImagePipeline`.

    Args:
        images (`list[PIL.Image.Image]` or `np.ndarray` uint8 `[B, H, W, 3]`): the images,
            `num_images_per_prompt` per prompt, prompt by prompt.
        indices (`torch.LongTensor` of shape `(B, h, w)`): the generated code indices.
    """

    images: list | np.ndarray
    indices: torch.LongTensor | None = None


@dataclass
class ImageToTextPipelineOutput(BaseOutput):
    """Output of `ImageToTextPipeline`.

    Args:
        captions (`list[str]`): one caption per image.
    """

    captions: list[str]


OUTPUT_TYPES = ("pil", "np", "pt", "latent")
MAX_SEQUENCES_AT_ONCE = 1024  # sampled in one `generate` call unless `batch_size` says otherwise
MAX_TEMPERATURE = 1e3  # beyond it every allowed id is equally likely: a typo, not a setting

# What each component folder must hold (weights as safetensors only: a pickle is never loaded).
_COMPONENT_FILES = {
    "vqmodel": ("config.json", "diffusion_pytorch_model.safetensors"),
    "generator": ("config.json", "model.safetensors"),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json"),
}


def check_pipeline_folder(path: str | os.PathLike) -> None:
    """A one-line error for a damaged or partial pipeline folder, before diffusers reads it: a
    `model_index.json` that is not a JSON object naming the three components, a component folder
    or file missing, weights that are not safetensors or cannot be read."""
    import json

    from safetensors import safe_open

    folder = os.fspath(path)
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(f"Pipeline folder {folder!r} has no model_index.json: not a saved pipeline.")
    try:
        with open(index, encoding="utf-8") as handle:
            config = json.load(handle)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{index!r} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{index!r} must hold a JSON object (got a {type(config).__name__}).")
    missing = [name for name in _COMPONENT_FILES if name not in config]
    if missing:
        raise ValueError(f"{index!r} names no {missing}: a text-image pipeline has vqmodel, generator and tokenizer.")
    for component, files in _COMPONENT_FILES.items():
        for name in files:
            file = os.path.join(folder, component, name)
            if not os.path.isfile(file):
                pickled = [
                    f
                    for f in ("pytorch_model.bin", "diffusion_pytorch_model.bin")
                    if os.path.isfile(os.path.join(folder, component, f))
                ]
                hint = (
                    f" (it has {pickled[0]}: pickled weights are never loaded; save them as safetensors)"
                    if pickled
                    else ""
                )
                raise FileNotFoundError(f"Pipeline folder {folder!r} has no {component}/{name}{hint}.")
            if name.endswith(".safetensors"):
                try:
                    with safe_open(file, framework="pt") as weights:
                        list(weights.keys())
                except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
                    raise ValueError(
                        f"{file!r} cannot be read as safetensors ({type(error).__name__}: {error})."
                    ) from error


_DEFAULT_CARD = """---
{{ card_data }}
---

# {{ name }}

A stage-2 text-image generator saved with [te-vqgan](https://github.com/te-vqgan/te-vqgan): a stock
GPT-2 ({{ n_layer }} layers, width {{ n_embd }}) over captions and the {{ grid }} code indices of its
quantizer ({{ quantizer }}, {{ num_codes }} codes). One folder serves both directions.

```python
import torch
from te_vqgan import ImageToTextPipeline, TextToImagePipeline

t2i = TextToImagePipeline.from_pretrained("REPO_OR_FOLDER")
images = t2i("the red 3 is on the upper left.", generator=torch.Generator().manual_seed(0)).images
print(ImageToTextPipeline.from_pretrained("REPO_OR_FOLDER")(images).captions)
```

`DiffusionPipeline.from_pretrained` returns the same pipeline once `te_vqgan` is imported. Sampling
defaults: top-k {{ top_k }} of the vocabulary, temperature {{ temperature }} (`model_index.json`, and the
generator's `t2i_generation_config.json` / `i2t_generation_config.json` for `generate()`).
"""


class _TextImagePipeline(TeVqganCardMixin, DiffusionPipeline):
    """The components, their consistency check, the call conventions and Hub loading, shared by both pipelines.

    `top_k_fraction` and `temperature` are the pipeline's sampling defaults, saved in
    `model_index.json` (and as the generator's `t2i_generation_config.json` /
    `i2t_generation_config.json` for the stock `generate()` path); a call may override them.
    """

    model_cpu_offload_seq = "generator->vqmodel"
    # What `callback_on_step_end` may ask for: the tokens so far and the step's filtered scores
    # (a returned "scores" replaces them before the draw).
    _callback_tensor_inputs = ["input_ids", "scores"]

    def __init__(
        self,
        vqmodel,
        generator,
        tokenizer: TextImageTokenizer,
        top_k_fraction: float = 0.1,
        temperature: float = 1.0,
        quantizer_fingerprint: str | None = None,
    ):
        super().__init__()
        check_compatible(tokenizer, generator.config, vqmodel)
        _check_sampling(temperature, top_k_fraction)
        for name, module in (("vqmodel", vqmodel), ("generator", generator)):
            bad = non_finite_weights(module)
            if bad:  # black images or garbage captions otherwise
                raise ValueError(f"The {name} holds NaN or Inf weights ({bad[:3]}{' ...' if len(bad) > 3 else ''}).")
        if quantizer_fingerprint is not None:
            # Saved with the folder: a `vqmodel/` swapped for another quantizer (even of the same
            # size) would decode the generator's codes into other images.
            from ..data.tokenized import quantizer_fingerprint as fingerprint_of

            actual = fingerprint_of(vqmodel)
            if actual != quantizer_fingerprint:
                raise ValueError(
                    f"The pipeline's quantizer is not the one its generator was saved with (fingerprint {actual[:12]}, "
                    f"model_index.json records {str(quantizer_fingerprint)[:12]}): was `vqmodel/` replaced?"
                )
        self.register_modules(vqmodel=vqmodel, generator=generator, tokenizer=tokenizer)
        self.register_to_config(
            top_k_fraction=float(top_k_fraction),
            temperature=float(temperature),
            quantizer_fingerprint=quantizer_fingerprint,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a folder or a Hub repo id.

        diffusers refuses a Hub repo whose `model_index.json` names a module outside
        diffusers/transformers (it looks for `<component>/<module>.py`, diffusers issue
        #6563), so a repo id is downloaded first and loaded as a folder.
        """
        path = str(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            if os.path.exists(path) or path.count("/") != 1 or path.startswith((".", "/")):
                raise FileNotFoundError(
                    f"Pipeline {path!r} is neither a pipeline folder nor a Hub repo id (org/name)."
                )
            from huggingface_hub import snapshot_download

            download_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
            path = snapshot_download(path, **{k: kwargs.pop(k) for k in download_keys if k in kwargs})
        check_pipeline_folder(path)
        try:
            pipeline = super().from_pretrained(path, **kwargs)
        except (OSError, KeyError, AttributeError, TypeError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"Pipeline folder {path!r} cannot be loaded ({type(error).__name__}: {first})."
            ) from error
        pipeline._remember_card(path)
        return pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """diffusers' `save_pretrained`, plus the generator's generation configs for each direction
        (`te_vqgan.generation.generation_configs`, from the pipeline's sampling defaults) and
        te-vqgan's model card (`TeVqganCardMixin`), pushed as is with `push_to_hub=True`."""
        from ..data.tokenized import quantizer_fingerprint

        configs = generation_configs(
            self.generator.config, self.layout, self.config.top_k_fraction, self.config.temperature
        )
        self.generator.generation_config = configs["default"]
        self.register_to_config(quantizer_fingerprint=quantizer_fingerprint(self.vqmodel))
        hub = {
            key: kwargs.pop(key)
            for key in ("repo_id", "token", "private", "commit_message", "create_pr")
            if key in kwargs
        }
        super().save_pretrained(save_directory, **kwargs)
        for direction, name in GENERATION_CONFIG_FILES.items():
            configs[direction].save_pretrained(os.path.join(save_directory, "generator"), config_file_name=name)
        self._write_card(save_directory)
        if push_to_hub:
            push_folder_to_hub(
                save_directory,
                hub.get("repo_id") or os.path.basename(os.path.abspath(save_directory)),
                token=hub.get("token"),
                private=hub.get("private"),
                commit_message=hub.get("commit_message"),
                create_pr=hub.get("create_pr", False),
            )

    def default_model_card(self):
        """The card `save_pretrained` writes for a pipeline that came without one (`base_model`: the
        quantizer's Hub id, when it was loaded from the Hub)."""
        from huggingface_hub import ModelCard, ModelCardData

        source = self.vqmodel.config.get("_name_or_path")
        config = self.generator.config
        data = ModelCardData(
            library_name="diffusers",
            license="mit",
            pipeline_tag="text-to-image",
            base_model=hub_repo_id(source),
            tags=["te-vqgan", "text-to-image", "image-to-text", "gpt2", "vector-quantization"],
        )
        return ModelCard.from_template(
            data,
            template_str=_DEFAULT_CARD,
            name="te-vqgan text-image pipeline",
            n_layer=config.n_layer,
            n_embd=config.n_embd,
            grid="x".join(map(str, config.image_grid)),
            num_codes=config.codebook_size,
            quantizer=type(self.vqmodel).__name__ + (f" `{source}`" if source else ""),
            top_k=f"{100 * self.config.top_k_fraction:g}%",
            temperature=f"{self.config.temperature:g}",
        )

    @property
    def layout(self) -> SequenceLayout:
        return SequenceLayout.from_tokenizer(self.tokenizer, tuple(self.generator.config.image_grid))

    @property
    def image_size(self) -> int:
        return int(self.vqmodel.config.sample_size)

    def check_inputs(
        self,
        batch,
        top_k_fraction,
        temperature,
        generator,
        batch_size,
        output_type,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        allowed_output_types=OUTPUT_TYPES,
        num_candidates=1,
    ):
        """Every call argument, checked before any work: one-line ValueErrors that name the value."""
        _check_sampling(temperature, top_k_fraction)
        check_num_candidates(num_candidates)
        if temperature > MAX_TEMPERATURE:
            raise ValueError(
                f"`temperature` {temperature!r} is above {MAX_TEMPERATURE:g}, where sampling ignores the model."
            )
        if batch_size is None and batch * num_candidates > MAX_SEQUENCES_AT_ONCE:
            raise ValueError(
                f"{batch} samples"
                + (f" x {num_candidates} candidates" if num_candidates > 1 else "")
                + f" in one batch is more than {MAX_SEQUENCES_AT_ONCE} sampled at once; pass `batch_size` "
                "(e.g. 256) to sample them in chunks."
            )
        if isinstance(generator, (list, tuple)):
            if not all(isinstance(g, torch.Generator) for g in generator):
                raise ValueError(
                    f"`generator` must be a torch.Generator or a list of them (got {[type(g).__name__ for g in generator]})."
                )
            if len(generator) != batch:
                raise ValueError(
                    f"Got a list of {len(generator)} generators for {batch} samples; give one per sample "
                    "(prompts times `num_images_per_prompt`, or images) or a single generator."
                )
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"`generator` must be a torch.Generator or a list of them (got {type(generator).__name__})."
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"`batch_size` must be an integer >= 1 (got {batch_size!r}).")
        if output_type not in allowed_output_types:
            raise ValueError(f"`output_type` must be one of {allowed_output_types} (got {output_type!r}).")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(f"`callback_on_step_end` must be callable (got {type(callback_on_step_end).__name__}).")
        unknown = [
            name for name in callback_on_step_end_tensor_inputs or [] if name not in self._callback_tensor_inputs
        ]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` {unknown} are not among {self._callback_tensor_inputs}."
            )

    def _sample(
        self,
        sample,
        ids: torch.Tensor,
        steps: int,
        top_k_fraction,
        temperature,
        generator,
        batch_size,
        cache_implementation,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        num_candidates=1,
    ):
        """Run `sample(chunk, **options)` over `ids` in chunks of `batch_size` inputs (each sampled
        with its `num_candidates` candidates), with a progress bar over the sampling steps and
        `callback_on_step_end(pipe, step, position, callback_kwargs)` at each."""
        batch_size = batch_size or len(ids)
        chunks = list(ids.split(batch_size))
        generators = list(generator) if isinstance(generator, (list, tuple)) else None
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        names = list(callback_on_step_end_tensor_inputs or ["input_ids"])
        results = []
        with self.progress_bar(total=steps * len(chunks)) as bar:
            for number, chunk in enumerate(chunks):

                def on_step(step, input_ids, scores):
                    bar.update(1)
                    if callback_on_step_end is None:
                        return None
                    available = {"input_ids": input_ids, "scores": scores}
                    returned = callback_on_step_end(
                        self, number * steps + step, input_ids.shape[1], {n: available[n] for n in names}
                    )
                    return (returned or {}).get("scores")

                rows = generators[number * batch_size : number * batch_size + len(chunk)] if generators else generator
                results.append(
                    sample(
                        chunk.to(self.device),
                        top_k_fraction=top_k_fraction,
                        temperature=temperature,
                        generator=rows,
                        cache_implementation=cache_implementation,
                        on_step=on_step,
                        num_candidates=num_candidates,
                    )
                )
        return results


class TextToImagePipeline(_TextImagePipeline):
    r"""Images from captions: the GPT-2 samples H*W code indices after the caption (only image
    tokens are allowed at those steps), the quantizer decodes them.

    Args:
        vqmodel ([`TEVQModel`] or [`diffusers.VQModel`]): the stage-1 quantizer.
        generator ([`transformers.GPT2LMHeadModel`]): the stage-2 model.
        tokenizer ([`TextImageTokenizer`]): the merged vocabulary.
        top_k_fraction (`float`, *optional*, defaults to 0.1), temperature (`float`, *optional*,
            defaults to 1.0): the sampling defaults (the authors': top-k 10%, temperature 1).
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        top_k_fraction: float | None = None,
        temperature: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int | None = None,
        output_type: str = "pil",
        cache_implementation: str | None = None,
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        num_candidates: int = 1,
    ) -> TextToImagePipelineOutput | tuple:
        r"""
        Args:
            prompt (`str` or `list[str]`): captions in the grammar's vocabulary; a word outside
                it is a ValueError that lists the words.
            num_images_per_prompt (`int`, *optional*, defaults to 1): samples per caption.
            top_k_fraction (`float`, *optional*): keep the top `max(int(fraction * vocab_size), 1)`
                logits (default: the pipeline's, `pipe.config.top_k_fraction`).
            temperature (`float`, *optional*): softmax temperature (default: the pipeline's).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): makes sampling
                reproducible; a list has one per image (prompts times `num_images_per_prompt`),
                and then each image depends only on its own generator and prompt, whatever else is
                in the batch.
            batch_size (`int`, *optional*): sequences sampled at once (default: all).
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` (uint8), `"pt"`
                (float `[B, 3, H, W]` in [-1, 1]) or `"latent"` (the code indices `[B, h, w]`,
                not decoded; `pipe.vqmodel.decode_indices` turns them into pixels).
            cache_implementation (`str`, *optional*): e.g. `"static"` on CUDA.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                called after each sampling step as `callback_on_step_end(pipe, step, position,
                callback_kwargs)`, `position` the index of the token being drawn and
                `callback_kwargs` the tensors named in `callback_on_step_end_tensor_inputs`; a
                returned `"scores"` replaces the step's scores before the draw.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): among
                `pipe._callback_tensor_inputs` (`"input_ids"`, `"scores"`); default `["input_ids"]`.
            num_candidates (`int`, *optional*, defaults to 1): code maps sampled per image, of
                which the one the generator's image-to-text direction finds likeliest to carry
                the prompt is kept (`log p(caption | image)`: the bidirectional generator reranks
                its own samples, with no second model). Sampling costs `num_candidates` times as
                much; `batch_size` counts images, each sampled with its candidates.

        Returns:
            [`TextToImagePipelineOutput`] or `(images, indices)`.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`prompt` must be a caption or a non-empty list of captions (got {prompt!r}).")
        if (
            isinstance(num_images_per_prompt, bool)
            or not isinstance(num_images_per_prompt, int)
            or num_images_per_prompt < 1
        ):
            raise ValueError(f"`num_images_per_prompt` must be an integer >= 1 (got {num_images_per_prompt!r}).")
        top_k_fraction = self.config.top_k_fraction if top_k_fraction is None else top_k_fraction
        temperature = self.config.temperature if temperature is None else temperature
        self.check_inputs(
            len(prompts) * num_images_per_prompt,
            top_k_fraction,
            temperature,
            generator,
            batch_size,
            output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            num_candidates=num_candidates,
        )
        text_ids = self.tokenizer.encode_captions(prompts).repeat_interleave(num_images_per_prompt, dim=0)
        sample = functools.partial(generate_image_indices, self.generator, self.tokenizer)
        indices = torch.cat(
            [
                codes.cpu()
                for codes in self._sample(
                    sample,
                    text_ids,
                    self.layout.num_image_tokens + 1,
                    top_k_fraction,
                    temperature,
                    generator,
                    batch_size,
                    cache_implementation,
                    callback_on_step_end,
                    callback_on_step_end_tensor_inputs,
                    num_candidates,
                )
            ]
        )
        if output_type == "latent":
            images = indices
        else:
            quantizer = as_tokenizer(self.vqmodel)
            pixels = torch.cat(
                [
                    quantizer.decode_indices(chunk.to(self.vqmodel.device)).clamp(-1, 1).float().cpu()
                    for chunk in indices.split(batch_size or len(indices))
                ]
            )
            images = pixels if output_type == "pt" else tensor_to_images(pixels)
            if output_type == "pil":
                images = [Image.fromarray(image) for image in images]
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, indices
        return TextToImagePipelineOutput(images=images, indices=indices)


class ImageToTextPipeline(_TextImagePipeline):
    r"""Captions from images: the quantizer tokenises the image, the GPT-2 writes the caption
    after it (only text tokens are allowed), stopping at end-of-text.

    Args: as [`TextToImagePipeline`].
    """

    @torch.no_grad()
    def __call__(
        self,
        image,
        top_k_fraction: float | None = None,
        temperature: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        batch_size: int | None = None,
        cache_implementation: str | None = None,
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        num_candidates: int = 1,
    ) -> ImageToTextPipelineOutput | tuple:
        r"""
        Args:
            image (`PIL.Image.Image`, a list of them, `np.ndarray` uint8 `[B, H, W, 3]` or
                `torch.Tensor` float `[B, 3, H, W]` in [-1, 1]): RGB images of the quantizer's
                size; another size or mode is a ValueError naming it.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): one, or one per image.
            top_k_fraction, temperature, batch_size, cache_implementation, callback_on_step_end,
                callback_on_step_end_tensor_inputs: as in [`TextToImagePipeline.__call__`].
            num_candidates (`int`, *optional*, defaults to 1): captions sampled per image, of
                which the one under which the generator's text-to-image direction finds the image
                likeliest is kept (`log p(image | caption)`).

        Returns:
            [`ImageToTextPipelineOutput`] or `(captions,)`.
        """
        pixels = self.preprocess(image)
        top_k_fraction = self.config.top_k_fraction if top_k_fraction is None else top_k_fraction
        temperature = self.config.temperature if temperature is None else temperature
        self.check_inputs(
            len(pixels),
            top_k_fraction,
            temperature,
            generator,
            batch_size,
            "pil",
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            num_candidates=num_candidates,
        )
        quantizer = as_tokenizer(self.vqmodel)
        image_ids = torch.cat(
            [
                self.tokenizer.encode_image_indices(
                    quantizer.encode_to_indices(chunk.to(self.vqmodel.device, self.vqmodel.dtype)).cpu()
                )
                for chunk in pixels.split(batch_size or len(pixels))
            ]
        )
        sample = functools.partial(generate_caption_ids, self.generator, self.tokenizer)
        captions = [
            self.tokenizer.decode_caption(row)
            for ids in self._sample(
                sample,
                image_ids,
                self.layout.text_length - 1,
                top_k_fraction,
                temperature,
                generator,
                batch_size,
                cache_implementation,
                callback_on_step_end,
                callback_on_step_end_tensor_inputs,
                num_candidates,
            )
            for row in ids.cpu()
        ]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (captions,)
        return ImageToTextPipelineOutput(captions=captions)

    def preprocess(self, image) -> torch.Tensor:
        """Images -> float `[B, 3, S, S]` in [-1, 1], S the quantizer's size; checks size and mode."""
        size = self.image_size
        if image is None or isinstance(image, (str, bytes, int, float)):
            raise ValueError(
                f"`image` must be PIL images, a uint8 array or a float tensor (got {type(image).__name__})."
            )
        if isinstance(image, torch.Tensor):
            if image.ndim == 3:
                image = image[None]
            if (
                image.ndim != 4
                or image.shape[1] != 3
                or tuple(image.shape[-2:]) != (size, size)
                or not image.is_floating_point()
            ):
                raise ValueError(
                    f"Expected a float tensor [B, 3, {size}, {size}] in [-1, 1] (got {image.dtype} of shape {tuple(image.shape)})."
                )
            if image.numel() and not torch.isfinite(image).all():
                raise ValueError("`image` holds NaN or Inf values; expected floats in [-1, 1].")
            if image.numel() and (image.min() < -1.001 or image.max() > 1.001):
                raise ValueError(
                    f"`image` values span [{image.min().item():.3g}, {image.max().item():.3g}]; a float tensor must be in [-1, 1] "
                    "(pixels in [0, 255] are uint8 arrays or PIL images)."
                )
            return image.float()
        images = (
            [image]
            if isinstance(image, (Image.Image, np.ndarray)) and not (isinstance(image, np.ndarray) and image.ndim == 4)
            else list(image)
        )
        if not images:
            raise ValueError("`image` is empty: expected at least one image.")
        arrays = []
        for position, item in enumerate(images):
            if isinstance(item, Image.Image):
                if item.mode != "RGB":
                    raise ValueError(
                        f"Image {position} has mode {item.mode!r}; expected an RGB image (convert it with .convert('RGB'))."
                    )
                item = np.asarray(item)
            item = np.asarray(item)
            if item.dtype != np.uint8 or item.shape != (size, size, 3):
                raise ValueError(
                    f"Image {position} is {item.dtype} of shape {item.shape}; expected uint8 RGB of shape ({size}, {size}, 3) "
                    f"(the quantizer's size)."
                )
            arrays.append(item)
        return images_to_tensor(np.stack(arrays))


def _register_with_diffusers() -> None:
    # `DiffusionPipeline.from_pretrained(folder)` looks a folder's `_class_name` up in diffusers' own
    # namespace, which has no registry for outside pipelines. te-vqgan's two names are added there
    # (never replacing a name diffusers defines) so that the stock loader returns these classes
    # once te_vqgan is imported; without it, it fails with "module diffusers has no attribute ...".
    for cls in (TextToImagePipeline, ImageToTextPipeline):
        if getattr(diffusers, cls.__name__, None) is None:
            setattr(diffusers, cls.__name__, cls)


_register_with_diffusers()
