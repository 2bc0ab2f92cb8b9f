"""TE-VQGAN: a VQGAN with an orthogonal codebook and a choice of downsampling, as a diffusers model.

Shin et al., "Exploration into Translation-Equivariant Image Quantization" (ICASSP 2023).
The encoder, decoder and codebook are VQGAN's (taming-transformers); the additions are

- the orthogonal regulariser on the codebook (`te_vqgan.losses.orthogonal_loss`, Eq. 5),
  weighted by `orthogonal_reg_weight` (10 for TE-VQGAN, 0 for plain VQGAN);
- the downsampling layer (`downsample_type`), for the paper's four baselines;
- replicate padding in every 3x3 conv, as in the authors' code;
- beta on the commitment term (diffusers' default quantizer puts it on the codebook term);
- a token API: `encode_to_indices` and `decode_indices`.

How it is built: `TEVQModel` is a `ModelMixin, ConfigMixin` (as `diffusers.VQModel` is, not a subclass
of it) whose `__init__` constructs, from its config, the same parts under the same names as
`VQModel`: `encoder` (`autoencoder.Encoder`), `quant_conv`, `quantize` (`quantizer.TEVectorQuantizer`),
`post_quant_conv` and `decoder` (`autoencoder.Decoder`). The encoder and decoder are copies of
diffusers' VQ-VAE blocks (marked `# Copied from diffusers...` in `autoencoder.py`) that take
`padding_mode` and `downsample_type` as constructor arguments, so the network is what the config says
from construction on; the state-dict keys are diffusers' (`encoder.down_blocks.0.downsamplers.0.conv...`,
`quantize.embedding.weight`), so a folder whose network is diffusers' own (zero padding, strided conv)
loads in a stock `diffusers.VQModel` with identical outputs. `encode` and `decode` keep `VQModel`'s
signatures and outputs (`.latents`, `.sample`), so code written for a stock VQ model runs unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from diffusers import ModelMixin, VQModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.autoencoders.vq_model import VQEncoderOutput
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..hub import TeVqganCardMixin, push_folder_to_hub
from ..losses import orthogonal_loss
from ..torch_utils import check_integer_tensor
from .autoencoder import Decoder, Encoder
from .downsampling import DOWNSAMPLE_TYPES, PADDING_MODES
from .quantizer import TEVectorQuantizer, check_code_indices, downsample_factor


__all__ = ["TE_BLOCK_PREFIX", "TEVQModel", "TEVQModelOutput", "check_config_keys", "stock_block_type"]


def check_config_keys(model_class, config, source: str = "the config") -> None:
    """ValueError for a key of `config` that `model_class.__init__` does not take (a typo such
    as `orthogonal_reg_wieght` would otherwise be dropped with a warning and the default used),
    naming the key, the nearest valid name and `source`. Keys starting with `_` are metadata."""
    import difflib
    import inspect

    valid = [name for name in inspect.signature(model_class.__init__).parameters if name not in ("self", "kwargs")]
    for key in config:
        if not key.startswith("_") and key not in valid:
            nearest = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
            raise ValueError(
                f"Unknown {model_class.__name__} config key {key!r} in {source}{hint}; valid keys: {sorted(valid)}."
            )


# The block type names a TEVQModel folder saves when the network is not diffusers' own (replicate
# padding, another downsampling or code lookup): diffusers' name behind this prefix. A stock
# `diffusers.VQModel.from_pretrained` then stops with "TEVQModel.DownEncoderBlock2D does not exist."
# instead of loading the weights into another network with only a warning (how few indices then
# agree: README, "Stock diffusers.VQModel never half-loads a TE folder"); a folder whose network is
# stock keeps the plain names and loads in both alike.
TE_BLOCK_PREFIX = "TEVQModel."


def stock_block_type(name: str) -> str:
    """diffusers' block type behind a TEVQModel config's name (`"TEVQModel.DownEncoderBlock2D"` -> `"DownEncoderBlock2D"`)."""
    if not isinstance(name, str):
        raise ValueError(f"Block types must be strings (got {name!r}).")
    return name.removeprefix(TE_BLOCK_PREFIX)


def te_block_type(name: str, stock: bool) -> str:
    """The name a TEVQModel saves for block type `name`: diffusers' own when the network is `stock`."""
    base = stock_block_type(name)
    return base if stock else TE_BLOCK_PREFIX + base


@dataclass
class TEVQModelOutput(BaseOutput):
    """Output of `TEVQModel.forward`.

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`):
            The reconstruction.
        indices (`torch.LongTensor` of shape `(batch_size, height / f, width / f)`):
            The code index of every token.
        commit_loss (`torch.Tensor`):
            The VQ loss: codebook term + `commitment_beta` x commitment term (diffusers' name).
        orthogonal_loss (`torch.Tensor`):
            The orthogonal regulariser already multiplied by `orthogonal_reg_weight`.
    """

    sample: torch.Tensor
    # Defaults only so that `BaseOutput` can be rebuilt from a dict (Accelerate does this to
    # cast mixed-precision outputs back to fp32); the model always fills every field.
    indices: torch.LongTensor | None = None
    commit_loss: torch.Tensor | None = None
    orthogonal_loss: torch.Tensor | None = None


_DEFAULT_CARD = """---
{{ card_data }}
---

# {{ name }}

A {{ kind }} image quantizer (VQ model) saved with [te-vqgan](https://github.com/te-vqgan/te-vqgan)
(Shin et al., *Exploration into Translation-Equivariant Image Quantization*, ICASSP 2023,
[arXiv:2112.00384](https://arxiv.org/abs/2112.00384)): {{ size }}x{{ size }} images to
{{ grid }}x{{ grid }} code indices from a codebook of {{ num_codes }} codes.

```python
from te_vqgan import TEVQModel

model = TEVQModel.from_pretrained("REPO_OR_FOLDER")
indices = model.encode_to_indices(images)          # images: float [B, 3, {{ size }}, {{ size }}] in [-1, 1]
reconstructions = model.decode_indices(indices)
```

{{ stock_note }}

## Config

```json
{{ config_json }}
```
"""


class TEVQModel(TeVqganCardMixin, ModelMixin, ConfigMixin):
    r"""A VQGAN whose codebook is regularised to be orthogonal (TE-VQGAN).

    The defaults are the authors' stage-1 model for 64x64 colored MNIST: ch 128, ch_mult
    (1, 2, 2) so f=4 and 16x16 tokens, one res block per level, attention at resolution 16,
    K=128 codes of dimension 256, strided-conv downsampling and lambda=10.

    Parameters (those of [`diffusers.VQModel`], with these defaults, plus the last eight):
        in_channels (`int`, *optional*, defaults to `3`): channels of the input image.
        out_channels (`int`, *optional*, defaults to `3`): channels of the output image.
        down_block_types (`tuple[str]`, *optional*): encoder blocks, one per level: `"DownEncoderBlock2D"`
            or `"AttnDownEncoderBlock2D"` (saved behind `TE_BLOCK_PREFIX` unless the network is diffusers' own).
        up_block_types (`tuple[str]`, *optional*): decoder blocks, one per level: `"UpDecoderBlock2D"` or
            `"AttnUpDecoderBlock2D"` (likewise).
        block_out_channels (`tuple[int]`, *optional*, defaults to `(128, 256, 256)`): channels
            per level; `len(block_out_channels) - 1` halvings give f.
        layers_per_block (`int`, *optional*, defaults to `1`): res blocks per encoder level.
        act_fn (`str`, *optional*, defaults to `"silu"`): activation.
        latent_channels (`int`, *optional*, defaults to `256`): encoder output channels (z).
        sample_size (`int`, *optional*, defaults to `64`): image size the model was built for.
        num_vq_embeddings (`int`, *optional*, defaults to `128`): K, the codebook size.
        norm_num_groups (`int`, *optional*, defaults to `32`): GroupNorm groups.
        vq_embed_dim (`int`, *optional*, defaults to `256`): d, the code size.
        scaling_factor (`float`, *optional*, defaults to `0.18215`): kept for diffusers.
        norm_type (`str`, *optional*, defaults to `"group"`): `"group"` or `"spatial"`.
        mid_block_add_attention (`bool`, *optional*, defaults to `True`): attention in the mid block.
        lookup_from_codebook (`bool`, *optional*, defaults to `False`): see `decode`.
        force_upcast (`bool`, *optional*, defaults to `False`): kept for diffusers.
        downsample_type (`str`, *optional*, defaults to `"strided_conv"`): one of
            `"strided_conv"`, `"conv_blurpool"`, `"maxpool"`, `"max_blurpool"`.
        padding_mode (`str`, *optional*, defaults to `"replicate"`): padding of every 3x3 conv
            and blur, `"replicate"` (the authors' code) or `"zeros"` (diffusers' default).
        orthogonal_reg_weight (`float`, *optional*, defaults to `10.0`): lambda of Eq. (5);
            10 is TE-VQGAN, 0 is plain VQGAN.
        orthogonal_reg_max_codes (`int`, *optional*): when set and smaller than K, the
            regulariser is computed on this many codes drawn at random at each call, so that a
            16384-code book stays cheap. `None` uses the whole codebook.
        commitment_beta (`float`, *optional*, defaults to `0.25`): weight of the commitment term.
        orthogonal_reg_active_codes_only (`bool`, *optional*, defaults to `False`): compute the
            regulariser only on the codes the batch uses (as lucidrains' `vector-quantize-pytorch`
            offers): the paper's term on the whole book pushes the rarely chosen codes hardest,
            since its gradient grows as 1/||code||, which is one road to collapse.
        codebook_lookup (`str`, *optional*, defaults to `"euclidean"`): `"euclidean"` or
            `"cosine"` (normalised latents and codes; see `TEVectorQuantizer`).
        codebook_parametrization (`str`, *optional*, defaults to `"direct"`): `"direct"` or
            `"simvq"` (codes = frozen basis x one learnt linear map; see `TEVectorQuantizer`).

    Remedies against codebook collapse that act during training only (k-means initialisation
    of the codes, dead-code restarts) live in `te_vqgan.training.codebook`.

    Example::

        >>> import torch
        >>> from te_vqgan import TEVQModel
        >>> model = TEVQModel(block_out_channels=(32, 64, 64), latent_channels=64, vq_embed_dim=64)
        >>> indices = model.encode_to_indices(torch.rand(2, 3, 64, 64) * 2 - 1)
        >>> indices.shape
        torch.Size([2, 16, 16])
        >>> model.decode_indices(indices).shape
        torch.Size([2, 3, 64, 64])
    """

    # As diffusers' VQModel: layerwise casting leaves the codebook in full precision.
    _skip_layerwise_casting_patterns = ["quantize"]
    _supports_group_offloading = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        up_block_types: tuple[str, ...] = ("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels: tuple[int, ...] = (128, 256, 256),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 256,
        sample_size: int = 64,
        num_vq_embeddings: int = 128,
        norm_num_groups: int = 32,
        vq_embed_dim: int | None = 256,
        scaling_factor: float = 0.18215,
        norm_type: str = "group",
        mid_block_add_attention: bool = True,
        lookup_from_codebook: bool = False,
        force_upcast: bool = False,
        downsample_type: str = "strided_conv",
        padding_mode: str = "replicate",
        orthogonal_reg_weight: float = 10.0,
        orthogonal_reg_max_codes: int | None = None,
        commitment_beta: float = 0.25,
        orthogonal_reg_active_codes_only: bool = False,
        codebook_lookup: str = "euclidean",
        codebook_parametrization: str = "direct",
    ):
        if downsample_type not in DOWNSAMPLE_TYPES:
            raise ValueError(f"`downsample_type` must be one of {DOWNSAMPLE_TYPES} (got {downsample_type!r}).")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {PADDING_MODES} (got {padding_mode!r}).")
        if not orthogonal_reg_weight >= 0:
            raise ValueError(f"`orthogonal_reg_weight` must be >= 0 (got {orthogonal_reg_weight}).")
        if orthogonal_reg_max_codes is not None and (
            not isinstance(orthogonal_reg_max_codes, int) or orthogonal_reg_max_codes < 2
        ):
            raise ValueError(
                f"`orthogonal_reg_max_codes` must be None or an integer >= 2 (got {orthogonal_reg_max_codes})."
            )
        if not commitment_beta >= 0:
            raise ValueError(f"`commitment_beta` must be >= 0 (got {commitment_beta}).")
        for name, value in (
            ("num_vq_embeddings", num_vq_embeddings),
            ("latent_channels", latent_channels),
            ("sample_size", sample_size),
            ("norm_num_groups", norm_num_groups),
            ("layers_per_block", layers_per_block),
            ("in_channels", in_channels),
            ("out_channels", out_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1 (got {value!r}).")
        if vq_embed_dim is not None and (
            isinstance(vq_embed_dim, bool) or not isinstance(vq_embed_dim, int) or vq_embed_dim < 1
        ):
            raise ValueError(
                f"`vq_embed_dim` must be None (= latent_channels) or an integer >= 1 (got {vq_embed_dim!r})."
            )
        undivided = [c for c in block_out_channels if c % norm_num_groups]
        if undivided:
            raise ValueError(
                f"`norm_num_groups` {norm_num_groups} must divide every entry of `block_out_channels` (got {list(block_out_channels)})."
            )
        if not len(down_block_types) == len(up_block_types) == len(block_out_channels):
            raise ValueError(
                "`down_block_types`, `up_block_types` and `block_out_channels` need one entry per level "
                f"(got {len(down_block_types)}, {len(up_block_types)} and {len(block_out_channels)})."
            )
        super().__init__()
        # VQModel's parts under VQModel's names (the state-dict keys of every saved folder), each built
        # with the padding and the downsampling of this config.
        levels = dict(
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            mid_block_add_attention=mid_block_add_attention,
            padding_mode=padding_mode,
        )
        self.encoder = Encoder(
            in_channels=in_channels,
            out_channels=latent_channels,
            down_block_types=tuple(stock_block_type(name) for name in down_block_types),
            downsample_type=downsample_type,
            **levels,
        )
        embed_dim = vq_embed_dim if vq_embed_dim is not None else latent_channels
        self.quant_conv = nn.Conv2d(latent_channels, embed_dim, 1)
        # Our quantizer: beta on the commitment term, indices kept as [B, H, W].
        self.quantize = TEVectorQuantizer(
            num_vq_embeddings,
            embed_dim,
            commitment_beta=commitment_beta,
            lookup=codebook_lookup,
            parametrization=codebook_parametrization,
        )
        self.post_quant_conv = nn.Conv2d(embed_dim, latent_channels, 1)
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=tuple(stock_block_type(name) for name in up_block_types),
            norm_type=norm_type,
            **levels,
        )

        # The block types say which network the folder computes (see `stock_block_type`): a stock
        # `diffusers.VQModel` refuses the "TEVQModel." ones instead of computing another network.
        stock = self.computes_stock_network
        self.register_to_config(  # the sequence type as given (a JSON list stays a list)
            down_block_types=type(down_block_types)(te_block_type(name, stock) for name in down_block_types),
            up_block_types=type(up_block_types)(te_block_type(name, stock) for name in up_block_types),
        )

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs: bool = False, **kwargs):
        """As `ConfigMixin.from_config` (and so `from_pretrained`), but a config of another class
        or with an unknown key is a ValueError instead of a warning.

        A stock diffusers `VQModel` folder is refused rather than converted: loaded as a
        TEVQModel it would silently switch to replicate padding and lambda = 10. Load it with
        `diffusers.VQModel.from_pretrained` (the metrics wrap it) or `te_vqgan.loading.load_vq_model`.
        """
        if isinstance(config, dict):
            found = config.get("_class_name")
            if found not in (None, cls.__name__):
                hint = (
                    " A stock diffusers VQModel would load with other padding and an orthogonal term it was not trained "
                    "with: use diffusers.VQModel.from_pretrained or te_vqgan.loading.load_vq_model instead."
                    if found == "VQModel"
                    else ""
                )
                raise ValueError(
                    f"The config describes a {found!r}; {cls.__name__} loads only configs of class {cls.__name__!r}.{hint}"
                )
            check_config_keys(cls, config)
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    # ------------------------------------------------------------------ saving and loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' `from_pretrained`; the folder's model card is kept for a later `save_pretrained`/`push_to_hub`."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if os.path.isdir(str(pretrained_model_name_or_path)):
            model._remember_card(Path(str(pretrained_model_name_or_path)) / (kwargs.get("subfolder") or ""))
        return loaded

    def save_pretrained(self, save_directory, is_main_process: bool = True, push_to_hub: bool = False, **kwargs):
        """diffusers' `save_pretrained`, plus te-vqgan's model card (`TeVqganCardMixin`), pushed as is."""
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            self._write_card(save_directory)
            if push_to_hub:
                push_folder_to_hub(
                    save_directory,
                    kwargs.get("repo_id") or Path(save_directory).name,
                    token=kwargs.get("token"),
                    private=kwargs.get("private"),
                    commit_message=kwargs.get("commit_message"),
                    create_pr=kwargs.get("create_pr", False),
                )

    # The VQModel config keys a conversion carries over, and the TEVQModel keys it may set (the
    # training losses only: anything else would change the network the stock weights compute).
    _STOCK_KEYS = (
        "in_channels",
        "out_channels",
        "down_block_types",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "act_fn",
        "latent_channels",
        "sample_size",
        "num_vq_embeddings",
        "norm_num_groups",
        "vq_embed_dim",
        "scaling_factor",
        "norm_type",
        "mid_block_add_attention",
        "lookup_from_codebook",
        "force_upcast",
    )
    _LOSS_KEYS = (
        "orthogonal_reg_weight",
        "orthogonal_reg_max_codes",
        "commitment_beta",
        "orthogonal_reg_active_codes_only",
    )

    @classmethod
    def from_vq_model(cls, vq_model, **loss_settings) -> TEVQModel:
        """A TEVQModel that computes exactly what the stock `diffusers.VQModel` `vq_model` computes
        (zero padding, diffusers' strided-conv downsampling, the nearest-code lookup; the same
        weights), ready to be fine-tuned with the orthogonal term, e.g. by `training/train_vqgan.py
        --pretrained_model_name_or_path STOCK_FOLDER`. It saves with diffusers' block names, so the
        folder still loads in a stock `VQModel` with identical outputs until a fine-tune changes
        the weights.

        Args:
            vq_model (`diffusers.VQModel`): the model to convert (not modified).
            loss_settings: any of `orthogonal_reg_weight` (default 10), `orthogonal_reg_max_codes`,
                `commitment_beta`, `orthogonal_reg_active_codes_only`; they change the training
                loss only.

        Example::

            >>> from diffusers import VQModel
            >>> te = TEVQModel.from_vq_model(VQModel.from_pretrained("some/vq-model"), orthogonal_reg_weight=10.0)
        """
        if not isinstance(vq_model, VQModel):
            raise ValueError(f"`vq_model` must be a stock diffusers.VQModel (got {type(vq_model).__name__}).")
        other = sorted(set(loss_settings) - set(cls._LOSS_KEYS))
        if other:
            raise ValueError(
                f"from_vq_model takes only the loss settings {list(cls._LOSS_KEYS)} (got {other}): the network stays the "
                "stock one; build a TEVQModel from a config to change it."
            )
        if not getattr(vq_model.quantize, "legacy", True) or getattr(vq_model.quantize, "remap", None) is not None:
            raise ValueError(
                "`vq_model`'s quantizer uses `remap` or non-legacy indexing, which TEVQModel does not compute."
            )
        config = {key: vq_model.config[key] for key in cls._STOCK_KEYS if key in vq_model.config}
        model = cls(
            **config,
            padding_mode="zeros",
            downsample_type="strided_conv",
            codebook_lookup="euclidean",
            codebook_parametrization="direct",
            **loss_settings,
        )
        missing, unexpected = model.load_state_dict(vq_model.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"`vq_model`'s weights do not map onto a TEVQModel (missing {missing[:5]}, unexpected {unexpected[:5]})."
            )
        if vq_model.dtype != model.dtype:
            model.to(dtype=vq_model.dtype)
        return model.to(vq_model.device).train(vq_model.training)

    def default_model_card(self):
        """The card `save_pretrained` writes for a model that came without one."""
        from huggingface_hub import ModelCard, ModelCardData

        config = self.config
        size = config.sample_size
        data = ModelCardData(
            library_name="diffusers",
            license="mit",
            tags=["te-vqgan", "vqgan", "image-tokenizer", "vector-quantization"],
        )
        stock = (
            "The network is diffusers' own (zero padding, strided-conv downsampling), so a stock "
            "`diffusers.VQModel.from_pretrained` computes the same indices."
            if self.computes_stock_network
            else "Load it with `te_vqgan.TEVQModel`: a stock `diffusers.VQModel` would compute another network "
            f"({config.padding_mode} padding, {config.downsample_type} downsampling) and refuses the folder."
        )
        return ModelCard.from_template(
            data,
            template_str=_DEFAULT_CARD,
            name=Path(str(config.get("_name_or_path") or "TE-VQGAN")).name or "TE-VQGAN",
            kind="TE-VQGAN" if config.orthogonal_reg_weight > 0 else "VQGAN",
            size=size,
            grid=size // self.downsample_factor,
            num_codes=config.num_vq_embeddings,
            stock_note=stock,
            config_json=json.dumps(
                {k: v for k, v in dict(config).items() if not k.startswith("_")}, indent=2, default=str
            ),
        )

    # ------------------------------------------------------------------ properties
    @property
    def computes_stock_network(self) -> bool:
        """Whether a stock `diffusers.VQModel` with these weights computes the same indices and
        reconstructions: zero padding, strided-conv downsampling (diffusers' `Downsample2D`, the
        same (0, 1, 0, 1) pad) and a plain nearest-code lookup. Only such folders keep diffusers'
        block type names (the training losses, beta and lambda, do not change the forward)."""
        config = self.config
        return (
            config.padding_mode == "zeros"
            and config.downsample_type == "strided_conv"
            and config.codebook_lookup == "euclidean"
            and config.codebook_parametrization == "direct"
        )

    @property
    def downsample_factor(self) -> int:
        """f: the image side divided by the token-map side."""
        return downsample_factor(self.config)

    @property
    def num_codes(self) -> int:
        """K: the codebook size."""
        return self.config.num_vq_embeddings

    @property
    def codebook(self) -> torch.Tensor:
        """The `(K, d)` code vectors (`quantize.embedding.weight`, or SimVQ's projected basis)."""
        return self.quantize.codes

    # ------------------------------------------------------------------ input checks
    def _check_images(self, images: torch.Tensor, check_finite: bool = True) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"Expected images as a torch.Tensor (got {type(images).__name__}).")
        if images.ndim != 4:
            raise ValueError(
                f"Expected images of shape (batch, channels, height, width) (got shape {tuple(images.shape)})."
            )
        if not images.is_floating_point():
            raise ValueError(
                f"Expected floating-point images in [-1, 1] (got dtype {images.dtype}); "
                "convert uint8 images with `images.float() / 127.5 - 1`."
            )
        channels, height, width = images.shape[1:]
        if channels != self.config.in_channels:
            raise ValueError(
                f"Expected images with {self.config.in_channels} channels (got {channels}, shape {tuple(images.shape)})."
            )
        f = self.downsample_factor
        if height % f or width % f:
            raise ValueError(
                f"Image height and width must be divisible by the downsampling factor {f} (got {height}x{width})."
            )
        if len(images) == 0:
            raise ValueError(f"Got an empty batch (shape {tuple(images.shape)}); expected at least one image.")
        weights_dtype = self.quantize.embedding.weight.dtype
        if images.dtype != weights_dtype and not torch.is_autocast_enabled(images.device.type):
            raise ValueError(
                f"Images are {images.dtype} but the model's weights are {weights_dtype}; convert them with "
                f"`images.to({weights_dtype})` (or run under torch.autocast)."
            )
        if check_finite and not torch.isfinite(images).all():
            bad = (~torch.isfinite(images)).sum().item()
            raise ValueError(f"Images contain {bad} NaN or Inf values; expected finite values in [-1, 1].")

    def _check_indices(self, indices: torch.Tensor) -> None:
        check_integer_tensor("indices", indices)
        if indices.ndim != 3:
            raise ValueError(f"Expected indices of shape (batch, height, width) (got shape {tuple(indices.shape)}).")
        check_code_indices(indices, self.num_codes)

    # ------------------------------------------------------------------ losses
    def compute_orthogonal_loss(self, indices: torch.Tensor | None = None, check_finite: bool = True) -> torch.Tensor:
        """`orthogonal_reg_weight * orthogonal_loss(codebook, check_finite)`: with
        `orthogonal_reg_active_codes_only`, on the codes that `indices` use (the whole book
        when `indices` is None); then on a random subset of `orthogonal_reg_max_codes` codes
        when that is set and smaller than the codes left."""
        weight = self.config.orthogonal_reg_weight
        codebook = self.codebook
        if weight == 0:
            return codebook.new_zeros((), dtype=torch.float32)
        if self.config.orthogonal_reg_active_codes_only and indices is not None:
            active = torch.unique(indices)
            if active.numel() < 2:  # one code alone is orthogonal to nothing: no term
                return codebook.new_zeros((), dtype=torch.float32)
            codebook = codebook[active]
        max_codes = self.config.orthogonal_reg_max_codes
        if max_codes is not None and max_codes < codebook.shape[0]:
            subset = torch.randperm(codebook.shape[0], device=codebook.device)[:max_codes]
            codebook = codebook[subset]
        return weight * orthogonal_loss(codebook, check_finite=check_finite)

    # ------------------------------------------------------------------ encode and decode
    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple[torch.Tensor]:
        """The un-quantized latents of images, as `diffusers.VQModel.encode`.

        Args:
            x (`torch.Tensor` of shape `(B, C, H, W)`): floats in [-1, 1], H and W divisible by f.
            return_dict (`bool`, *optional*, defaults to `True`): return a `VQEncoderOutput` rather than `(latents,)`.

        Returns:
            `VQEncoderOutput` whose `latents` have shape `(B, vq_embed_dim, H / f, W / f)`.
        """
        latents = self.quant_conv(self.encoder(x))
        if not return_dict:
            return (latents,)
        return VQEncoderOutput(latents=latents)

    @apply_forward_hook
    def decode(
        self,
        h: torch.Tensor,
        force_not_quantize: bool = False,
        return_dict: bool = True,
        shape: tuple[int, ...] | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor, torch.Tensor]:
        """Images from latents, as `diffusers.VQModel.decode`.

        Args:
            h (`torch.Tensor`): latents `(B, d, h, w)`, quantized to their nearest codes first unless
                `force_not_quantize`; with `force_not_quantize` and the config's `lookup_from_codebook`,
                flat code indices whose codes are looked up (then `shape` is `(B, h, w, d)`).
            force_not_quantize (`bool`, *optional*, defaults to `False`): decode `h` as it is (already quantized).
            return_dict (`bool`, *optional*, defaults to `True`): return a `DecoderOutput` rather than
                `(sample, commit_loss)`.
            shape (`tuple[int]`, *optional*): see `h`.

        Returns:
            `DecoderOutput` with the image `sample` `(B, out_channels, h * f, w * f)` and the VQ `commit_loss`
            (zeros when nothing was quantized).
        """
        if not force_not_quantize:
            quantized = self.quantize(h)
            quant, commit_loss = quantized.quantized, quantized.loss
        elif self.config.lookup_from_codebook:
            quant = self.quantize.get_codebook_entry(h, shape)
            commit_loss = torch.zeros(h.shape[0], device=h.device, dtype=quant.dtype)
        else:
            quant = h
            commit_loss = torch.zeros(h.shape[0], device=h.device, dtype=h.dtype)
        sample = self._decode_quantized(quant)
        if not return_dict:
            return sample, commit_loss
        return DecoderOutput(sample=sample, commit_loss=commit_loss)

    def _decode_quantized(self, quant: torch.Tensor) -> torch.Tensor:
        hidden = self.post_quant_conv(quant)
        return self.decoder(hidden, quant if self.config.norm_type == "spatial" else None)

    # ------------------------------------------------------------------ token API
    @torch.no_grad()
    def encode_to_indices(self, images: torch.Tensor) -> torch.LongTensor:
        """Tokenize images.

        Args:
            images (`torch.Tensor` of shape `(B, C, H, W)`): floats in [-1, 1], H and W divisible by f.

        Returns:
            `torch.LongTensor` of shape `(B, H / f, W / f)`: code indices in [0, K).
        """
        self._check_images(images)
        latents = self.encode(images).latents
        return self.quantize.nearest_indices(latents)

    def decode_indices(self, indices: torch.LongTensor) -> torch.Tensor:
        """Images from code indices.

        Args:
            indices (`torch.LongTensor` of shape `(B, h, w)`): values in [0, K).

        Returns:
            `torch.Tensor` of shape `(B, out_channels, h * f, w * f)`.
        """
        self._check_indices(indices)
        quant = self.quantize.embed(indices.long())
        return self._decode_quantized(quant)

    def forward(
        self, sample: torch.Tensor, return_dict: bool = True, check_finite: bool = True
    ) -> TEVQModelOutput | tuple:
        r"""Encode, quantize and decode.

        Args:
            sample (`torch.Tensor` of shape `(B, C, H, W)`): floats in [-1, 1].
            return_dict (`bool`, *optional*, defaults to `True`): return a [`TEVQModelOutput`]
                rather than the tuple `(sample, indices, commit_loss, orthogonal_loss)`.
            check_finite (`bool`, *optional*, defaults to `True`): refuse NaN/Inf in `sample` and the codebook.
                The check reads a value back from the device (a sync per call on a GPU); the
                training step turns it off, since its images are decoded from uint8 files and
                a non-finite loss is caught by the training engine.
        """
        self._check_images(sample, check_finite=check_finite)
        latents = self.encode(sample).latents
        quantized = self.quantize(latents)
        reconstruction = self._decode_quantized(quantized.quantized)
        ortho = self.compute_orthogonal_loss(quantized.indices, check_finite=check_finite)
        if not return_dict:
            return reconstruction, quantized.indices, quantized.loss, ortho
        return TEVQModelOutput(
            sample=reconstruction, indices=quantized.indices, commit_loss=quantized.loss, orthogonal_loss=ortho
        )
