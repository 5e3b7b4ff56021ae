"""The conditional U-Net of Stable Diffusion: predicts the noise eps_theta(z_t, t, c) in a noisy latent z_t.

    z_t (B, 4, h, w) -> conv_in -> down blocks (halve the resolution, save skips) -> mid block
        -> up blocks (double the resolution, concatenate the skips) -> conv_out -> eps (B, 4, h, w)

Every ResNet block receives the timestep embedding (how noisy z_t is); every spatial transformer cross-attends to
the text encoder's hidden states c (B, 77, D). Blocks named "CrossAttn..." have a transformer after each ResNet,
the others only ResNets. Module and parameter names follow diffusers' ``UNet2DConditionModel``, so its
``diffusion_pytorch_model.safetensors`` loads key for key.
"""

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.models.config import UNetConfig
from minidiff.models.embeddings import TimestepEmbedding, timestep_batch
from minidiff.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from minidiff.models.transformer import Transformer2DModel


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
        self.time_embedding = TimestepEmbedding(channels[0], 4 * channels[0], c.flip_sin_to_cos, c.freq_shift,
                                                c.time_cond_proj_dim)
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
                mid_block_additional_residual=None, timestep_cond=None):
        """The additional residuals (a ControlNet's outputs, given together) are added to the skips and to the
        mid-block output: one (B, C_i, H_i, W_i) tensor per skip, and one (B, C_last, h, w).

        timestep_cond (B, time_cond_proj_dim), only for a U-Net whose config sets time_cond_proj_dim (an LCM's):
        the embedded guidance scale, ``guidance_scale_embedding(guidance_scale - 1, time_cond_proj_dim)``."""
        if (down_block_additional_residuals is None) != (mid_block_additional_residual is None):
            raise ValueError(
                "Give down_block_additional_residuals and mid_block_additional_residual together (a ControlNet "
                "returns both), or neither."
            )
        batch, cond_dim = sample.shape[0], self.config.time_cond_proj_dim
        if timestep_cond is not None and cond_dim is None:
            raise ValueError("timestep_cond was given, but this U-Net has no time_cond_proj_dim (it is not an LCM "
                             "U-Net); leave timestep_cond out.")
        if timestep_cond is not None and tuple(timestep_cond.shape) != (batch, cond_dim):
            raise ValueError(f"timestep_cond must have shape (batch, time_cond_proj_dim) = {(batch, cond_dim)}, "
                             f"found {tuple(timestep_cond.shape)}.")
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        context = encoder_hidden_states  # (B, T, D)
        t = timestep_batch(timestep, batch, sample.device)  # (B,)
        temb = self.time_embedding(t, timestep_cond)  # (B, 4 * C0)

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
