"""The conditional U-Net of Stable Diffusion: predicts the noise eps_theta(z_t, t, c) in a noisy latent z_t.

    z_t (B, 4, h, w) -> conv_in -> down blocks (halve the resolution, save skips) -> mid block
        -> up blocks (double the resolution, concatenate the skips) -> conv_out -> eps (B, 4, h, w)

Every ResNet block receives the timestep embedding (how noisy z_t is); every spatial transformer cross-attends to
the text encoder's hidden states c (B, 77, D). Blocks named "CrossAttn..." have a transformer after each ResNet,
the others only ResNets. Module and parameter names follow diffusers' ``UNet2DConditionModel``, so its
``diffusion_pytorch_model.safetensors`` loads key for key.
"""

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.models.embeddings import TimestepEmbedding, timestep_batch
from minidiff.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from minidiff.models.transformer import Transformer2DModel

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")

# diffusers config keys that select variants minidiff does not build: each must hold one of the values listed.
_FIXED_KEYS = {
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
    "act_fn": ("silu",),
    "mid_block_scale_factor": (1,),
    "num_attention_heads": (None,),  # diffusers' UNet2DConditionModel refuses it too; see UNetConfig
    "only_cross_attention": (False,),
    "mid_block_only_cross_attention": (None, False),
    "dual_cross_attention": (False,),
    "reverse_transformer_layers_per_block": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "class_embeddings_concat": (False,),
    "projection_class_embeddings_input_dim": (None,),
    "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,),
    "addition_embed_type_num_heads": (64,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1.0,),
    "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "attention_type": ("default",),
    "cross_attention_norm": (None,),
}


def config_from_dict(cls, d, fixed_keys, model_name):
    """Build the dataclass ``cls`` from a diffusers ``config.json`` dict.

    Keys starting with ``_`` are metadata and skipped; keys in ``fixed_keys`` must hold one of their listed values
    (minidiff builds only that variant); any other key must be a field of ``cls``.
    """
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key.startswith("_"):
            continue
        if key in fixed_keys:
            if value not in fixed_keys[key]:
                allowed = " or ".join(repr(v) for v in fixed_keys[key])
                raise ValueError(
                    f"{model_name} config: {key}={value!r} is not supported; minidiff builds only the Stable Diffusion "
                    f"1.x/2.x architecture, which has {key}={allowed}."
                )
            continue
        if key not in known:
            supported = ", ".join(sorted(known | set(fixed_keys)))
            raise ValueError(f"{model_name} config: unknown key {key!r}. Supported keys: {supported}.")
        kwargs[key] = value
    return cls(**kwargs)


def per_block(value, n, key, model_name):
    """An int for every block, or a list with one entry per block -> a tuple of n ints."""
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ValueError(
            f"{model_name} config: {key}={list(value)} must have one entry per block ({n}), or be one int."
        )
    return tuple(value)


def check_encoder_fields(config, model_name):
    """Checks shared by the U-Net and the ControlNet configs (the fields that build conv_in, down and mid blocks)."""
    n = len(config.block_out_channels)
    if len(config.down_block_types) != n or any(t not in DOWN_BLOCK_TYPES for t in config.down_block_types):
        raise ValueError(
            f"{model_name} config: down_block_types must list one of {DOWN_BLOCK_TYPES} per entry of "
            f"block_out_channels ({n}), found {list(config.down_block_types)}."
        )
    for key in ("layers_per_block", "transformer_layers_per_block", "cross_attention_dim", "norm_num_groups"):
        if not isinstance(getattr(config, key), int):
            raise ValueError(
                f"{model_name} config: {key} must be a single int (the same for all blocks), found "
                f"{getattr(config, key)!r}; minidiff does not build per-block values of it."
            )
    per_block(config.attention_head_dim, n, "attention_head_dim", model_name)


@dataclass
class UNetConfig:
    """The fields of diffusers' UNet2DConditionModel ``config.json``; the defaults are Stable Diffusion 1.5's U-Net.

    ``attention_head_dim`` is, despite its name, the number of attention heads (one int, or one per block): diffusers
    kept this historical misnaming, and each head is block_channels // attention_head_dim wide (SD 1.x: 8 heads;
    SD 2.x: [5, 10, 20, 20] heads of 64 channels).
    """

    sample_size: int = 64
    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    dropout: float = 0.0
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 768
    transformer_layers_per_block: int = 1
    attention_head_dim: int | tuple = 8
    use_linear_projection: bool = False
    upcast_attention: bool = False

    def __post_init__(self):
        for key in ("down_block_types", "up_block_types", "block_out_channels"):
            setattr(self, key, tuple(getattr(self, key)))
        if not isinstance(self.attention_head_dim, int):
            self.attention_head_dim = tuple(self.attention_head_dim)
        check_encoder_fields(self, "UNet")
        n = len(self.block_out_channels)
        if len(self.up_block_types) != n or any(t not in UP_BLOCK_TYPES for t in self.up_block_types):
            raise ValueError(
                f"UNet config: up_block_types must list one of {UP_BLOCK_TYPES} per entry of block_out_channels ({n}), "
                f"found {list(self.up_block_types)}."
            )

    def heads_per_block(self):
        """Number of attention heads of each down block (the up blocks use them in reverse, the mid block the last)."""
        return per_block(self.attention_head_dim, len(self.block_out_channels), "attention_head_dim", "UNet")

    @classmethod
    def from_dict(cls, d):
        """Read a diffusers UNet2DConditionModel ``config.json`` (as a dict); unsupported values raise ValueError."""
        return config_from_dict(cls, d, _FIXED_KEYS, "UNet")

    def to_dict(self):
        """A ``config.json`` dict that diffusers' ``UNet2DConditionModel.from_config`` loads."""
        d = {"_class_name": "UNet2DConditionModel", **asdict(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def resnet(config, in_channels, out_channels, dropout):
    """A ResnetBlock2D with the config's GroupNorm settings and the time embedding width (4x the first block)."""
    return ResnetBlock2D(in_channels, out_channels, temb_channels=4 * config.block_out_channels[0],
                         groups=config.norm_num_groups, eps=config.norm_eps, dropout=dropout)


def spatial_transformer(config, channels, heads):
    """A Transformer2DModel over a (B, channels, H, W) map, cross-attending to (B, T, cross_attention_dim)."""
    return Transformer2DModel(channels, heads, config.cross_attention_dim, config.norm_num_groups,
                              config.transformer_layers_per_block, config.use_linear_projection,
                              config.upcast_attention)


class DownBlock2D(nn.Module):
    """ResNet blocks (each followed by a spatial transformer in a CrossAttnDownBlock2D), then halve the resolution.

    ``config``: a UNetConfig or a ControlNetConfig. x: (B, C_in, H, W) -> (B, C_out, H/2, W/2) (H, W in the last
    block), plus the skip connections the up path will use: each layer's output and the downsampled output.
    """

    def __init__(self, config, in_channels, out_channels, heads, cross_attention, add_downsample, dropout=0.0):
        super().__init__()
        n = config.layers_per_block
        self.resnets = nn.ModuleList(
            resnet(config, in_channels if i == 0 else out_channels, out_channels, dropout) for i in range(n)
        )
        n_attentions = n if cross_attention else 0
        self.attentions = nn.ModuleList(spatial_transformer(config, out_channels, heads) for _ in range(n_attentions))
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, padding=config.downsample_padding)]) if add_downsample else None
        )

    def forward(self, x, temb, context):
        skips = []
        for i, resnet_block in enumerate(self.resnets):
            x = resnet_block(x, temb)
            if self.attentions:
                x = self.attentions[i](x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UNetMidBlock2DCrossAttn(nn.Module):
    """ResNet -> spatial transformer -> ResNet at the lowest resolution. (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, config, channels, heads, dropout=0.0):
        super().__init__()
        self.resnets = nn.ModuleList(resnet(config, channels, channels, dropout) for _ in range(2))
        self.attentions = nn.ModuleList([spatial_transformer(config, channels, heads)])

    def forward(self, x, temb, context):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, temb)


class UpBlock2D(nn.Module):
    """Each layer concatenates one skip connection, then ResNet (and a transformer in a CrossAttnUpBlock2D);
    finally double the resolution (except in the last block).

    The block has one layer more than a down block, since it also takes the skip saved by the downsampler (or by
    conv_in) of the level below; that last skip has ``last_skip_channels`` channels, the others ``out_channels``.
    x: (B, prev_channels, h, w), skips: the block's skips in the order they were saved -> (B, C_out, 2h, 2w).
    """

    def __init__(self, config, prev_channels, out_channels, last_skip_channels, heads, cross_attention,
                 add_upsample, dropout=0.0):
        super().__init__()
        n = config.layers_per_block + 1
        self.resnets = nn.ModuleList()
        for i in range(n):
            in_channels = prev_channels if i == 0 else out_channels
            skip_channels = last_skip_channels if i == n - 1 else out_channels
            self.resnets.append(resnet(config, in_channels + skip_channels, out_channels, dropout))
        n_attentions = n if cross_attention else 0
        self.attentions = nn.ModuleList(spatial_transformer(config, out_channels, heads) for _ in range(n_attentions))
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x, skips, temb, context, upsample_size=None):
        for i, (resnet_block, skip) in enumerate(zip(self.resnets, reversed(skips))):
            x = torch.cat([x, skip], dim=1)  # (B, C + C_skip, h, w): the latest skip first
            x = resnet_block(x, temb)
            if self.attentions:
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, output_size=upsample_size)
        return x


def make_down_blocks(config, dropout=0.0):
    """The down path shared by the U-Net and the ControlNet: one DownBlock2D per entry of block_out_channels."""
    channels, heads = config.block_out_channels, config.heads_per_block()
    return nn.ModuleList(
        DownBlock2D(config, in_channels=channels[max(i - 1, 0)], out_channels=channels[i], heads=heads[i],
                    cross_attention=block_type == "CrossAttnDownBlock2D", add_downsample=i < len(channels) - 1,
                    dropout=dropout)
        for i, block_type in enumerate(config.down_block_types)
    )


class UNet2DConditionModel(nn.Module):
    """eps_theta(z_t, t, c): sample (B, in_channels, H, W), timestep (number, () or (B,)), encoder_hidden_states
    (B, T, cross_attention_dim) -> predicted noise (B, out_channels, H, W).

    H and W need not be multiples of 2^(number of downsamplings): each upsampler resizes to its skip's size.
    """

    def __init__(self, config=None):
        super().__init__()
        self.config = c = config or UNetConfig()
        channels, heads = c.block_out_channels, c.heads_per_block()
        self.conv_in = nn.Conv2d(c.in_channels, channels[0], kernel_size=3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], 4 * channels[0], c.flip_sin_to_cos, c.freq_shift)
        self.down_blocks = make_down_blocks(c, c.dropout)
        self.mid_block = UNetMidBlock2DCrossAttn(c, channels[-1], heads[-1], c.dropout)
        # The up path mirrors the down path: widest block first.
        rev_channels, rev_heads, last = channels[::-1], heads[::-1], len(channels) - 1
        self.up_blocks = nn.ModuleList(
            UpBlock2D(c, prev_channels=rev_channels[max(i - 1, 0)], out_channels=rev_channels[i],
                      last_skip_channels=rev_channels[min(i + 1, last)], heads=rev_heads[i],
                      cross_attention=block_type == "CrossAttnUpBlock2D", add_upsample=i < last, dropout=c.dropout)
            for i, block_type in enumerate(c.up_block_types)
        )
        self.conv_norm_out = nn.GroupNorm(c.norm_num_groups, channels[0], eps=c.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], c.out_channels, kernel_size=3, padding=1)

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def forward(self, sample, timestep, encoder_hidden_states, down_block_additional_residuals=None,
                mid_block_additional_residual=None):
        """The additional residuals (a ControlNet's outputs, given together) are added to the skips and to the
        mid-block output: one (B, C_i, H_i, W_i) tensor per skip, and one (B, C_last, h, w)."""
        if (down_block_additional_residuals is None) != (mid_block_additional_residual is None):
            raise ValueError(
                "Give down_block_additional_residuals and mid_block_additional_residual together (a ControlNet "
                "returns both), or neither."
            )
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        context = encoder_hidden_states  # (B, T, D)
        temb = self.time_embedding(timestep_batch(timestep, sample.shape[0], sample.device))  # (B, 4 * C0)

        h = self.conv_in(sample)  # (B, C0, H, W)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb, context)
            skips += block_skips
        if down_block_additional_residuals is not None:
            if len(down_block_additional_residuals) != len(skips):
                raise ValueError(
                    f"down_block_additional_residuals has {len(down_block_additional_residuals)} tensors; this U-Net "
                    f"has {len(skips)} skip connections (was the ControlNet built for another U-Net?)."
                )
            skips = [s + r for s, r in zip(skips, down_block_additional_residuals)]

        h = self.mid_block(h, temb, context)  # (B, C_last, h, w)
        if mid_block_additional_residual is not None:
            h = h + mid_block_additional_residual

        for block in self.up_blocks:
            block_skips, skips = skips[-len(block.resnets):], skips[:-len(block.resnets)]
            # Upsample to the size of the next skip, so that odd sizes (e.g. 9 -> 5 -> 9) come back exactly.
            h = block(h, block_skips, temb, context, upsample_size=skips[-1].shape[-2:] if skips else None)

        return self.conv_out(F.silu(self.conv_norm_out(h)))  # (B, out_channels, H, W)
