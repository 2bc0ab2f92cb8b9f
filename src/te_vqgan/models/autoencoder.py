"""The encoder and decoder of `TEVQModel`: diffusers' VQ-VAE blocks, built with the padding and the
downsampling that TE-VQGAN needs.

diffusers' blocks make every 3x3 conv with zero padding and downsample with a strided conv; TE-VQGAN
pads by replicating the border (as the authors' code does) and compares four downsampling layers
(`downsampling.Downsample`). A block that holds a padded conv or a downsampler is therefore a copy of
diffusers' block, marked `# Copied from diffusers.<module>.<name>` with what differs, and takes
`padding_mode` (and, in the encoder, `downsample_type`) as a constructor argument. The copies keep only
the path that `diffusers.VQModel` takes through them (no time embedding, no up/down sampling inside a
res block, no gradient checkpointing) and keep diffusers' module and attribute names, so a state dict
maps one to one. Where diffusers has two blocks that differ by one part, one copy serves both: the res
block by its `norm_type` (`ResnetBlock2D` / `ResnetBlockCondNorm2D`), the down and up blocks by an
optional attention after each res block (`DownEncoderBlock2D` / `AttnDownEncoderBlock2D`,
`UpDecoderBlock2D` / `AttnUpDecoderBlock2D`; a block without attention holds None entries, which have
no weights). The parts that need no change are diffusers' own, used as they are: `Attention`,
`SpatialNorm` and `get_activation`.

With `padding_mode="zeros"` and `downsample_type="strided_conv"` these blocks compute exactly what
diffusers' do; tests/test_te_vq_model_composition.py checks this against the installed diffusers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.activations import get_activation
from diffusers.models.attention_processor import Attention, SpatialNorm

from .downsampling import Downsample


__all__ = [
    "DOWN_BLOCK_TYPES",
    "UP_BLOCK_TYPES",
    "Decoder",
    "DownEncoderBlock2D",
    "Encoder",
    "ResnetBlock2D",
    "UNetMidBlock2D",
    "UpDecoderBlock2D",
    "Upsample2D",
]

NORM_TYPES = ("group", "spatial")


def _norm(norm_type: str, channels: int, groups: int, eps: float, temb_channels: int | None) -> nn.Module:
    """The norm of `norm_type` as diffusers' VQ-VAE builds it: a `GroupNorm`, or a `SpatialNorm`
    conditioned on the quantized latents (`temb_channels` of them; it has 32 groups of its own)."""
    if norm_type == "spatial":
        return SpatialNorm(channels, temb_channels)
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=eps, affine=True)


def _apply_norm(norm: nn.Module, hidden_states: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
    """`norm(hidden_states)`, or `norm(hidden_states, temb)` for a `SpatialNorm`."""
    return norm(hidden_states) if temb is None else norm(hidden_states, temb)


# Copied from diffusers.models.resnet.ResnetBlock2D and diffusers.models.resnet.ResnetBlockCondNorm2D, as
# one class: `norm_type="group"` is ResnetBlock2D's path and `"spatial"` ResnetBlockCondNorm2D's (its
# SpatialNorms; no "ada_group"). The VQ-VAE's path only (no time embedding, no up/down sampling, one
# group count), with `padding_mode` for the two 3x3 convs.
class ResnetBlock2D(nn.Module):
    r"""A res block: (norm, activation, 3x3 conv) twice, plus the input (through a 1x1 conv when the
    channel count changes).

    Args:
        in_channels (`int`): channels of the input.
        out_channels (`int`, *optional*): channels of the output; `in_channels` when None.
        dropout (`float`, *optional*, defaults to `0.0`): dropout before the second conv.
        groups (`int`, *optional*, defaults to `32`): groups of both group norms.
        eps (`float`, *optional*, defaults to `1e-6`): epsilon of both group norms.
        non_linearity (`str`, *optional*, defaults to `"swish"`): the activation (diffusers' `get_activation`).
        output_scale_factor (`float`, *optional*, defaults to `1.0`): the sum is divided by it.
        norm_type (`str`, *optional*, defaults to `"group"`): `"group"` (group norms) or `"spatial"`
            (`SpatialNorm`s conditioned on `temb`, the quantized latents: MoVQ).
        temb_channels (`int`, *optional*): channels of the spatial norms' conditioning.
        padding_mode (`str`, *optional*, defaults to `"zeros"`): padding of the 3x3 convs.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int | None = None,
        dropout: float = 0.0,
        groups: int = 32,
        eps: float = 1e-6,
        non_linearity: str = "swish",
        output_scale_factor: float = 1.0,
        norm_type: str = "group",
        temb_channels: int | None = None,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        self.in_channels = in_channels
        out_channels = in_channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.output_scale_factor = output_scale_factor
        self.norm_type = norm_type

        self.norm1 = _norm(norm_type, in_channels, groups, eps, temb_channels)
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=1, padding=1, padding_mode=padding_mode
        )
        self.norm2 = _norm(norm_type, out_channels, groups, eps, temb_channels)
        self.dropout = torch.nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, kernel_size=3, stride=1, padding=1, padding_mode=padding_mode
        )
        self.nonlinearity = get_activation(non_linearity)

        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        # `temb`: the spatial norms' conditioning; group norms take none (both blocks are called alike).
        temb = temb if self.norm_type == "spatial" else None
        hidden_states = _apply_norm(self.norm1, input_tensor, temb)
        hidden_states = self.nonlinearity(hidden_states)
        hidden_states = self.conv1(hidden_states)
        hidden_states = _apply_norm(self.norm2, hidden_states, temb)
        hidden_states = self.nonlinearity(hidden_states)
        hidden_states = self.dropout(hidden_states)
        hidden_states = self.conv2(hidden_states)

        if self.conv_shortcut is not None:
            # As diffusers' ResnetBlock2D (not its CondNorm block): contiguous only in training, against
            # DDP's gradient-stride warning (diffusers#12975).
            if self.training and self.norm_type == "group":
                input_tensor = input_tensor.contiguous()
            input_tensor = self.conv_shortcut(input_tensor)

        return (input_tensor + hidden_states) / self.output_scale_factor


def _attention(
    channels: int,
    attention_head_dim: int,
    eps: float,
    norm_type: str,
    groups: int,
    temb_channels: int | None,
    output_scale_factor: float = 1.0,
) -> Attention:
    """diffusers' `Attention` as its VQ-VAE blocks build it: one residual self-attention over the pixels,
    normed as the res blocks around it (a group norm, or a spatial norm on the quantized latents)."""
    spatial = norm_type == "spatial"
    return Attention(
        channels,
        heads=channels // attention_head_dim,
        dim_head=attention_head_dim,
        rescale_output_factor=output_scale_factor,
        eps=eps,
        norm_num_groups=None if spatial else groups,
        spatial_norm_dim=temb_channels if spatial else None,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )


def _resnets(num_layers: int, in_channels: int, out_channels: int, **kwargs) -> list[ResnetBlock2D]:
    """The `num_layers` res blocks of a down, up or mid block: the first from `in_channels`, all to
    `out_channels` (`kwargs`: the rest of `ResnetBlock2D`'s arguments)."""
    return [
        ResnetBlock2D(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels, **kwargs)
        for i in range(num_layers)
    ]


def _attentions(
    num_layers: int,
    channels: int,
    attention_head_dim: int | None,
    eps: float,
    norm_type: str,
    groups: int,
    temb_channels: int | None,
    output_scale_factor: float,
) -> list[Attention | None]:
    """The self-attention of each of `num_layers` layers (`_attention`); None entries, which hold no
    weights, when `attention_head_dim` is None (a block without attention)."""
    if attention_head_dim is None:
        return [None] * num_layers
    return [
        _attention(channels, attention_head_dim, eps, norm_type, groups, temb_channels, output_scale_factor)
        for _ in range(num_layers)
    ]


# Copied from diffusers.models.upsampling.Upsample2D: nearest x2 then a 3x3 conv (`use_conv=True`; no
# transposed conv, no norm, no `output_size`), with `padding_mode`.
class Upsample2D(nn.Module):
    r"""Doubles the spatial size (nearest neighbour), then a 3x3 conv.

    Args:
        channels (`int`): channels of the input.
        out_channels (`int`, *optional*): channels of the output; `channels` when None.
        padding_mode (`str`, *optional*, defaults to `"zeros"`): padding of the conv.
    """

    def __init__(self, channels: int, out_channels: int | None = None, padding_mode: str = "zeros"):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.conv = nn.Conv2d(self.channels, self.out_channels, kernel_size=3, padding=1, padding_mode=padding_mode)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # upsample_nearest_nhwc fails with large batches (diffusers#984) and large outputs (pytorch#141831).
        if hidden_states.shape[0] >= 64 or hidden_states.numel() * 2 > pow(2, 31):
            hidden_states = hidden_states.contiguous()
        hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
        return self.conv(hidden_states)


# Copied from diffusers.models.unets.unet_2d_blocks.DownEncoderBlock2D and AttnDownEncoderBlock2D, as one
# class: with `attention_head_dim`, diffusers' `Attention` after each res block (AttnDownEncoderBlock2D),
# without, none (DownEncoderBlock2D). Group-norm res blocks only, with `padding_mode`, and te-vqgan's
# `Downsample` (`downsample_type`) where diffusers has `Downsample2D`.
class DownEncoderBlock2D(nn.Module):
    r"""`num_layers` res blocks (each followed by self-attention when `attention_head_dim` is given),
    then (unless it is the last level) one downsampling layer.

    Args:
        in_channels (`int`): channels of the input.
        out_channels (`int`): channels of the res blocks and the output.
        dropout (`float`, *optional*, defaults to `0.0`): dropout of the res blocks.
        num_layers (`int`, *optional*, defaults to `1`): number of res blocks.
        resnet_eps (`float`, *optional*, defaults to `1e-6`): group-norm epsilon.
        resnet_act_fn (`str`, *optional*, defaults to `"swish"`): activation.
        resnet_groups (`int`, *optional*, defaults to `32`): group-norm groups.
        attention_head_dim (`int`, *optional*): channels per attention head; None: no attention.
        output_scale_factor (`float`, *optional*, defaults to `1.0`): res-block output scale.
        add_downsample (`bool`, *optional*, defaults to `True`): end with a downsampling layer.
        downsample_type (`str`, *optional*, defaults to `"strided_conv"`): one of `downsampling.DOWNSAMPLE_TYPES`.
        padding_mode (`str`, *optional*, defaults to `"zeros"`): padding of every conv and blur.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        num_layers: int = 1,
        resnet_eps: float = 1e-6,
        resnet_act_fn: str = "swish",
        resnet_groups: int = 32,
        attention_head_dim: int | None = None,
        output_scale_factor: float = 1.0,
        add_downsample: bool = True,
        downsample_type: str = "strided_conv",
        padding_mode: str = "zeros",
    ):
        super().__init__()
        resnets = _resnets(
            num_layers,
            in_channels,
            out_channels,
            eps=resnet_eps,
            groups=resnet_groups,
            dropout=dropout,
            non_linearity=resnet_act_fn,
            output_scale_factor=output_scale_factor,
            padding_mode=padding_mode,
        )
        attentions = _attentions(
            num_layers, out_channels, attention_head_dim, resnet_eps, "group", resnet_groups, None, output_scale_factor
        )
        # Registered in diffusers' order, so the state dict lists the keys as diffusers' does.
        self.attentions = nn.ModuleList(attentions)
        self.resnets = nn.ModuleList(resnets)
        self.downsamplers = (
            nn.ModuleList([Downsample(out_channels, downsample_type, padding_mode)]) if add_downsample else None
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for resnet, attn in zip(self.resnets, self.attentions):
            hidden_states = resnet(hidden_states)
            if attn is not None:
                hidden_states = attn(hidden_states)

        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)

        return hidden_states


# Copied from diffusers.models.unets.unet_2d_blocks.UpDecoderBlock2D and AttnUpDecoderBlock2D, as one class:
# with `attention_head_dim`, diffusers' `Attention` after each res block (AttnUpDecoderBlock2D), without,
# none (UpDecoderBlock2D). `norm_type` ("group" or "spatial") in place of `resnet_time_scale_shift`, with
# `padding_mode`.
class UpDecoderBlock2D(nn.Module):
    r"""`num_layers` res blocks (each followed by self-attention when `attention_head_dim` is given),
    then (unless it is the last level) one nearest x2 upsampling + conv.

    Args:
        in_channels (`int`): channels of the input.
        out_channels (`int`): channels of the res blocks and the output.
        dropout (`float`, *optional*, defaults to `0.0`): dropout of the res blocks.
        num_layers (`int`, *optional*, defaults to `1`): number of res blocks.
        resnet_eps (`float`, *optional*, defaults to `1e-6`): norm epsilon.
        norm_type (`str`, *optional*, defaults to `"group"`): `"group"` or `"spatial"` (norms conditioned on `temb`).
        resnet_act_fn (`str`, *optional*, defaults to `"swish"`): activation.
        resnet_groups (`int`, *optional*, defaults to `32`): group-norm groups.
        attention_head_dim (`int`, *optional*): channels per attention head; None: no attention.
        output_scale_factor (`float`, *optional*, defaults to `1.0`): res-block output scale.
        add_upsample (`bool`, *optional*, defaults to `True`): end with an upsampling layer.
        temb_channels (`int`, *optional*): channels of the spatial norm's conditioning (the quantized latents).
        padding_mode (`str`, *optional*, defaults to `"zeros"`): padding of every 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dropout: float = 0.0,
        num_layers: int = 1,
        resnet_eps: float = 1e-6,
        norm_type: str = "group",
        resnet_act_fn: str = "swish",
        resnet_groups: int = 32,
        attention_head_dim: int | None = None,
        output_scale_factor: float = 1.0,
        add_upsample: bool = True,
        temb_channels: int | None = None,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        resnets = _resnets(
            num_layers,
            in_channels,
            out_channels,
            eps=resnet_eps,
            groups=resnet_groups,
            dropout=dropout,
            non_linearity=resnet_act_fn,
            output_scale_factor=output_scale_factor,
            norm_type=norm_type,
            temb_channels=temb_channels,
            padding_mode=padding_mode,
        )
        attentions = _attentions(
            num_layers,
            out_channels,
            attention_head_dim,
            resnet_eps,
            norm_type,
            resnet_groups,
            temb_channels,
            output_scale_factor,
        )
        # Registered in diffusers' order, so the state dict lists the keys as diffusers' does.
        self.attentions = nn.ModuleList(attentions)
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, out_channels=out_channels, padding_mode=padding_mode)])
            if add_upsample
            else None
        )

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        for resnet, attn in zip(self.resnets, self.attentions):
            hidden_states = resnet(hidden_states, temb=temb)
            if attn is not None:
                hidden_states = attn(hidden_states, temb=temb)

        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states)

        return hidden_states


# Copied from diffusers.models.unets.unet_2d_blocks.UNetMidBlock2D: `norm_type` ("group" or "spatial") in
# place of `resnet_time_scale_shift`, with `padding_mode`.
class UNetMidBlock2D(nn.Module):
    r"""A res block, then `num_layers` (self-attention, res block) pairs, at constant size.

    Args:
        in_channels (`int`): channels of the input and the output.
        temb_channels (`int`, *optional*): channels of the spatial norm's conditioning (the quantized latents).
        dropout (`float`, *optional*, defaults to `0.0`): dropout of the res blocks.
        num_layers (`int`, *optional*, defaults to `1`): number of (attention, res block) pairs.
        resnet_eps (`float`, *optional*, defaults to `1e-6`): norm epsilon.
        norm_type (`str`, *optional*, defaults to `"group"`): `"group"` or `"spatial"` (norms conditioned on `temb`).
        resnet_act_fn (`str`, *optional*, defaults to `"swish"`): activation.
        resnet_groups (`int`, *optional*, defaults to `32`): group-norm groups (of the attention too).
        add_attention (`bool`, *optional*, defaults to `True`): self-attention between the res blocks.
        attention_head_dim (`int`, *optional*, defaults to `1`): channels per attention head.
        output_scale_factor (`float`, *optional*, defaults to `1.0`): res-block and attention output scale.
        padding_mode (`str`, *optional*, defaults to `"zeros"`): padding of every 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int,
        temb_channels: int | None = None,
        dropout: float = 0.0,
        num_layers: int = 1,
        resnet_eps: float = 1e-6,
        norm_type: str = "group",
        resnet_act_fn: str = "swish",
        resnet_groups: int = 32,
        add_attention: bool = True,
        attention_head_dim: int = 1,
        output_scale_factor: float = 1.0,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        self.add_attention = add_attention
        resnets = _resnets(
            num_layers + 1,  # there is always at least one res block
            in_channels,
            in_channels,
            eps=resnet_eps,
            groups=resnet_groups,
            dropout=dropout,
            non_linearity=resnet_act_fn,
            output_scale_factor=output_scale_factor,
            norm_type=norm_type,
            temb_channels=temb_channels,
            padding_mode=padding_mode,
        )
        attentions = _attentions(
            num_layers,
            in_channels,
            attention_head_dim if add_attention else None,
            resnet_eps,
            norm_type,
            resnet_groups,
            temb_channels,
            output_scale_factor,
        )
        # Registered in diffusers' order, so the state dict lists the keys as diffusers' does.
        self.attentions = nn.ModuleList(attentions)
        self.resnets = nn.ModuleList(resnets)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = self.resnets[0](hidden_states, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            if attn is not None:
                hidden_states = attn(hidden_states, temb=temb)
            hidden_states = resnet(hidden_states, temb)

        return hidden_states


# diffusers' block names, and whether the block has self-attention after each res block.
DOWN_BLOCK_TYPES = {"DownEncoderBlock2D": False, "AttnDownEncoderBlock2D": True}
UP_BLOCK_TYPES = {"UpDecoderBlock2D": False, "AttnUpDecoderBlock2D": True}


def _has_attention(kind: str, name: str, types: dict[str, bool]) -> bool:
    if name not in types:
        raise ValueError(f"`{kind}` entries must be one of {list(types)} (got {name!r}).")
    return types[name]


# Copied from diffusers.models.autoencoders.vae.Encoder: `double_z=False` (a VQ encoder), the block types
# of `DOWN_BLOCK_TYPES`, with `padding_mode` and `downsample_type`.
class Encoder(nn.Module):
    r"""Images to latents: 3x3 conv, one down block per level, the mid block, norm, SiLU, 3x3 conv.

    Args:
        in_channels (`int`, *optional*, defaults to `3`): channels of the input image.
        out_channels (`int`, *optional*, defaults to `3`): channels of the latents.
        down_block_types (`tuple[str, ...]`, *optional*, defaults to `("DownEncoderBlock2D",)`): one block per
            level, from `DOWN_BLOCK_TYPES`; every level but the last halves the size.
        block_out_channels (`tuple[int, ...]`, *optional*, defaults to `(64,)`): channels per level.
        layers_per_block (`int`, *optional*, defaults to `2`): res blocks per level.
        norm_num_groups (`int`, *optional*, defaults to `32`): group-norm groups.
        act_fn (`str`, *optional*, defaults to `"silu"`): activation of the res blocks.
        mid_block_add_attention (`bool`, *optional*, defaults to `True`): self-attention in the mid block.
        downsample_type (`str`, *optional*, defaults to `"strided_conv"`): one of `downsampling.DOWNSAMPLE_TYPES`.
        padding_mode (`str`, *optional*, defaults to `"zeros"`): padding of every 3x3 conv and blur.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",),
        block_out_channels: tuple[int, ...] = (64,),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        mid_block_add_attention: bool = True,
        downsample_type: str = "strided_conv",
        padding_mode: str = "zeros",
    ):
        super().__init__()
        self.layers_per_block = layers_per_block
        self.conv_in = nn.Conv2d(
            in_channels, block_out_channels[0], kernel_size=3, stride=1, padding=1, padding_mode=padding_mode
        )

        self.down_blocks = nn.ModuleList([])
        output_channel = block_out_channels[0]
        for i, down_block_type in enumerate(down_block_types):
            input_channel = output_channel
            output_channel = block_out_channels[i]
            is_final_block = i == len(block_out_channels) - 1
            attention = _has_attention("down_block_types", down_block_type, DOWN_BLOCK_TYPES)
            self.down_blocks.append(
                DownEncoderBlock2D(
                    num_layers=self.layers_per_block,
                    in_channels=input_channel,
                    out_channels=output_channel,
                    add_downsample=not is_final_block,
                    resnet_eps=1e-6,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    attention_head_dim=output_channel if attention else None,
                    downsample_type=downsample_type,
                    padding_mode=padding_mode,
                )
            )

        self.mid_block = UNetMidBlock2D(
            in_channels=block_out_channels[-1],
            resnet_eps=1e-6,
            resnet_act_fn=act_fn,
            output_scale_factor=1,
            norm_type="group",
            attention_head_dim=block_out_channels[-1],
            resnet_groups=norm_num_groups,
            temb_channels=None,
            add_attention=mid_block_add_attention,
            padding_mode=padding_mode,
        )

        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[-1], num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        sample = self.conv_in(sample)
        for down_block in self.down_blocks:
            sample = down_block(sample)
        sample = self.mid_block(sample)

        sample = self.conv_norm_out(sample)
        sample = self.conv_act(sample)
        sample = self.conv_out(sample)
        return sample


# Copied from diffusers.models.autoencoders.vae.Decoder: the block types of `UP_BLOCK_TYPES`, with
# `padding_mode`.
class Decoder(nn.Module):
    r"""Latents to images: 3x3 conv, the mid block, one up block per level, norm, SiLU, 3x3 conv.

    Args:
        in_channels (`int`, *optional*, defaults to `3`): channels of the latents.
        out_channels (`int`, *optional*, defaults to `3`): channels of the output image.
        up_block_types (`tuple[str, ...]`, *optional*, defaults to `("UpDecoderBlock2D",)`): one block per
            level, from `UP_BLOCK_TYPES`; every level but the last doubles the size.
        block_out_channels (`tuple[int, ...]`, *optional*, defaults to `(64,)`): channels per level, as the
            encoder's (the decoder reads them backwards).
        layers_per_block (`int`, *optional*, defaults to `2`): res blocks per level, minus one.
        norm_num_groups (`int`, *optional*, defaults to `32`): group-norm groups.
        act_fn (`str`, *optional*, defaults to `"silu"`): activation of the res blocks.
        norm_type (`str`, *optional*, defaults to `"group"`): `"group"` or `"spatial"` (norms conditioned on
            the quantized latents, which `forward` then takes as `latent_embeds`).
        mid_block_add_attention (`bool`, *optional*, defaults to `True`): self-attention in the mid block.
        padding_mode (`str`, *optional*, defaults to `"zeros"`): padding of every 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",),
        block_out_channels: tuple[int, ...] = (64,),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        norm_type: str = "group",
        mid_block_add_attention: bool = True,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"`norm_type` must be one of {NORM_TYPES} (got {norm_type!r}).")
        self.layers_per_block = layers_per_block
        self.conv_in = nn.Conv2d(
            in_channels, block_out_channels[-1], kernel_size=3, stride=1, padding=1, padding_mode=padding_mode
        )

        self.up_blocks = nn.ModuleList([])  # registered before the mid block, as diffusers' (the state-dict order)

        temb_channels = in_channels if norm_type == "spatial" else None
        self.mid_block = UNetMidBlock2D(
            in_channels=block_out_channels[-1],
            resnet_eps=1e-6,
            resnet_act_fn=act_fn,
            output_scale_factor=1,
            norm_type=norm_type,
            attention_head_dim=block_out_channels[-1],
            resnet_groups=norm_num_groups,
            temb_channels=temb_channels,
            add_attention=mid_block_add_attention,
            padding_mode=padding_mode,
        )

        reversed_block_out_channels = list(reversed(block_out_channels))
        output_channel = reversed_block_out_channels[0]
        for i, up_block_type in enumerate(up_block_types):
            prev_output_channel = output_channel
            output_channel = reversed_block_out_channels[i]
            is_final_block = i == len(block_out_channels) - 1
            attention = _has_attention("up_block_types", up_block_type, UP_BLOCK_TYPES)
            self.up_blocks.append(
                UpDecoderBlock2D(
                    num_layers=self.layers_per_block + 1,
                    in_channels=prev_output_channel,
                    out_channels=output_channel,
                    add_upsample=not is_final_block,
                    resnet_eps=1e-6,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    temb_channels=temb_channels,
                    norm_type=norm_type,
                    attention_head_dim=output_channel if attention else None,
                    padding_mode=padding_mode,
                )
            )

        self.conv_norm_out = _norm(norm_type, block_out_channels[0], norm_num_groups, 1e-6, temb_channels)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, sample: torch.Tensor, latent_embeds: torch.Tensor | None = None) -> torch.Tensor:
        sample = self.conv_in(sample)
        sample = self.mid_block(sample, latent_embeds)
        for up_block in self.up_blocks:
            sample = up_block(sample, latent_embeds)

        sample = _apply_norm(self.conv_norm_out, sample, latent_embeds)
        sample = self.conv_act(sample)
        sample = self.conv_out(sample)
        return sample
