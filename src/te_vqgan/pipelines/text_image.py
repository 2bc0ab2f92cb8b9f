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

import os
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image

from ..generation import (
    SequenceLayout,
    TextImageTokenizer,
    check_compatible,
    generate_caption_ids,
    generate_image_indices,
)
from ..metrics import as_tokenizer, images_to_tensor, tensor_to_images


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


class _TextImagePipeline(DiffusionPipeline):
    """The components, their consistency check and Hub loading, shared by both pipelines."""

    model_cpu_offload_seq = "generator->vqmodel"

    def __init__(self, vqmodel, generator, tokenizer: TextImageTokenizer):
        super().__init__()
        check_compatible(tokenizer, generator.config, vqmodel)
        self.register_modules(vqmodel=vqmodel, generator=generator, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a folder or a Hub repo id.

        diffusers refuses a Hub repo whose `model_index.json` names a module outside
        diffusers/transformers (it looks for `<component>/<module>.py`, diffusers issue
        #6563), so a repo id is downloaded first and loaded as a folder.
        """
        # The loader needs the component modules imported (it resolves them by name).
        import te_vqgan.generation.tokenizer  # noqa: F401
        import te_vqgan.models.te_vq_model  # noqa: F401

        path = str(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download

            download_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
            path = snapshot_download(path, **{k: kwargs.pop(k) for k in download_keys if k in kwargs})
        return super().from_pretrained(path, **kwargs)

    @property
    def layout(self) -> SequenceLayout:
        return SequenceLayout.from_tokenizer(self.tokenizer, tuple(self.generator.config.image_grid))

    @property
    def image_size(self) -> int:
        return int(self.vqmodel.config.sample_size)

    def _sampling_options(self, top_k_fraction: float, temperature: float, generator, cache_implementation):
        return dict(
            top_k_fraction=top_k_fraction, temperature=temperature, generator=generator,
            cache_implementation=cache_implementation,
        )


class TextToImagePipeline(_TextImagePipeline):
    r"""Images from captions: the GPT-2 samples H*W code indices after the caption (only image
    tokens are allowed at those steps), the quantizer decodes them.

    Args:
        vqmodel ([`TEVQModel`] or [`diffusers.VQModel`]): the stage-1 quantizer.
        generator ([`transformers.GPT2LMHeadModel`]): the stage-2 model.
        tokenizer ([`TextImageTokenizer`]): the merged vocabulary.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        top_k_fraction: float = 0.1,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        output_type: str = "pil",
        cache_implementation: str | None = None,
        return_dict: bool = True,
    ) -> TextToImagePipelineOutput | tuple:
        r"""
        Args:
            prompt (`str` or `list[str]`): captions in the grammar's vocabulary; a word outside
                it is a ValueError that lists the words.
            num_images_per_prompt (`int`, *optional*, defaults to 1): samples per caption.
            top_k_fraction (`float`, *optional*, defaults to 0.1): keep the top
                `max(int(fraction * vocab_size), 1)` logits (the authors keep 10%).
            temperature (`float`, *optional*, defaults to 1.0): softmax temperature.
            generator (`torch.Generator`, *optional*): makes sampling reproducible.
            batch_size (`int`, *optional*): sequences sampled at once (default: all).
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` (uint8) or
                `"pt"` (float `[B, 3, H, W]` in [-1, 1]).
            cache_implementation (`str`, *optional*): e.g. `"static"` on CUDA.

        Returns:
            [`TextToImagePipelineOutput`] or `(images, indices)`.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`prompt` must be a caption or a non-empty list of captions (got {prompt!r}).")
        if num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be >= 1 (got {num_images_per_prompt}).")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt' (got {output_type!r}).")
        text_ids = self.tokenizer.encode_captions(prompts).repeat_interleave(num_images_per_prompt, dim=0)
        batch_size = batch_size or len(text_ids)
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1 (got {batch_size}).")
        quantizer = as_tokenizer(self.vqmodel)
        options = self._sampling_options(top_k_fraction, temperature, generator, cache_implementation)
        indices, pixels = [], []
        for chunk in text_ids.split(batch_size):
            codes = generate_image_indices(self.generator, self.tokenizer, chunk.to(self.device), **options)
            indices.append(codes.cpu())
            pixels.append(quantizer.decode_indices(codes.to(self.vqmodel.device)).clamp(-1, 1).float().cpu())
        indices, pixels = torch.cat(indices), torch.cat(pixels)
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
        top_k_fraction: float = 0.1,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        cache_implementation: str | None = None,
        return_dict: bool = True,
    ) -> ImageToTextPipelineOutput | tuple:
        r"""
        Args:
            image (`PIL.Image.Image`, a list of them, `np.ndarray` uint8 `[B, H, W, 3]` or
                `torch.Tensor` float `[B, 3, H, W]` in [-1, 1]): RGB images of the quantizer's
                size; another size or mode is a ValueError naming it.
            top_k_fraction, temperature, generator, batch_size, cache_implementation: as in
                [`TextToImagePipeline.__call__`].

        Returns:
            [`ImageToTextPipelineOutput`] or `(captions,)`.
        """
        pixels = self.preprocess(image)
        batch_size = batch_size or len(pixels)
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1 (got {batch_size}).")
        quantizer = as_tokenizer(self.vqmodel)
        options = self._sampling_options(top_k_fraction, temperature, generator, cache_implementation)
        captions: list[str] = []
        for chunk in pixels.split(batch_size):
            codes = quantizer.encode_to_indices(chunk.to(self.vqmodel.device, self.vqmodel.dtype))
            image_ids = self.tokenizer.encode_image_indices(codes.cpu()).to(self.device)
            ids = generate_caption_ids(self.generator, self.tokenizer, image_ids, **options)
            captions.extend(self.tokenizer.decode_caption(row) for row in ids.cpu())
        self.maybe_free_model_hooks()
        if not return_dict:
            return (captions,)
        return ImageToTextPipelineOutput(captions=captions)

    def preprocess(self, image) -> torch.Tensor:
        """Images -> float `[B, 3, S, S]` in [-1, 1], S the quantizer's size; checks size and mode."""
        size = self.image_size
        if isinstance(image, torch.Tensor):
            if image.ndim == 3:
                image = image[None]
            if image.ndim != 4 or image.shape[1] != 3 or tuple(image.shape[-2:]) != (size, size) or not image.is_floating_point():
                raise ValueError(
                    f"Expected a float tensor [B, 3, {size}, {size}] in [-1, 1] (got {image.dtype} of shape {tuple(image.shape)})."
                )
            return image.float()
        images = [image] if isinstance(image, (Image.Image, np.ndarray)) and not (isinstance(image, np.ndarray) and image.ndim == 4) else list(image)
        if not images:
            raise ValueError("`image` is empty: expected at least one image.")
        arrays = []
        for position, item in enumerate(images):
            if isinstance(item, Image.Image):
                if item.mode != "RGB":
                    raise ValueError(f"Image {position} has mode {item.mode!r}; expected an RGB image (convert it with .convert('RGB')).")
                item = np.asarray(item)
            item = np.asarray(item)
            if item.dtype != np.uint8 or item.shape != (size, size, 3):
                raise ValueError(
                    f"Image {position} is {item.dtype} of shape {item.shape}; expected uint8 RGB of shape ({size}, {size}, 3) "
                    f"(the quantizer's size)."
                )
            arrays.append(item)
        return images_to_tensor(np.stack(arrays))

