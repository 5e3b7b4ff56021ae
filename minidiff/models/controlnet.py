"""ControlNet: steer a frozen U-Net with an image condition (edges, depth, pose, ...).

A ControlNet is a trainable copy of the U-Net's encoder (conv_in, down blocks, mid block). A small convnet embeds
the condition image (B, 3, 8h, 8w) to the latent grid and adds it after conv_in. Each skip connection and the
mid-block output then pass through a "zero convolution" (a 1x1 conv initialised to zero) and are added to the
U-Net's own:

    r_i = zero_conv_i(skip_i(z_t + E(cond), t, c)) * scale      U-Net skip_i <- skip_i + r_i

Because the zero convs start at zero, a fresh ControlNet leaves the U-Net's output unchanged; training then moves
them away from zero. Module names follow diffusers' ``ControlNetModel``, so its weight files load key for key.
"""

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.models.config import ControlNetConfig
from minidiff.models.embeddings import TimestepEmbedding, timestep_batch
from minidiff.models.unet import UNetMidBlock2DCrossAttn, make_down_blocks


def zero_conv(in_channels, out_channels, kernel_size=1):
    """A convolution whose weights and bias start at zero, so that its output starts at zero."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlNetConditioningEmbedding(nn.Module):
    """Condition image -> features on the latent grid: conv, then (conv, stride-2 conv) per extra width, SiLU
    after each, then a zero-initialised conv. (B, 3, H, W) -> (B, out_channels, H/8, W/8) with 4 widths."""

    def __init__(self, conditioning_channels, block_out_channels, out_channels):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))  # halves H and W
        self.conv_out = zero_conv(block_out_channels[-1], out_channels, kernel_size=3)

    def forward(self, cond):
        h = F.silu(self.conv_in(cond))
        for conv in self.blocks:
            h = F.silu(conv(h))
        return self.conv_out(h)


class ControlNetModel(nn.Module):
    """The U-Net encoder plus zero convs. forward -> (down_block_res_samples, mid_block_res_sample), ready for
    ``UNet2DConditionModel.forward(down_block_additional_residuals=..., mid_block_additional_residual=...)``."""

    def __init__(self, config=None):
        super().__init__()
        self.config = c = config or ControlNetConfig()
        channels = c.block_out_channels
        self.conv_in = nn.Conv2d(c.in_channels, channels[0], kernel_size=3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], 4 * channels[0], c.flip_sin_to_cos, c.freq_shift)
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(
            c.conditioning_channels, c.conditioning_embedding_out_channels, channels[0]
        )
        self.down_blocks = make_down_blocks(c)
        # One zero conv per skip connection of the U-Net: conv_in's, each layer's, each downsampler's.
        skip_channels = [channels[0]]
        for i, ch in enumerate(channels):
            skip_channels += [ch] * (c.layers_per_block + (i < len(channels) - 1))
        self.controlnet_down_blocks = nn.ModuleList(zero_conv(ch, ch) for ch in skip_channels)
        self.mid_block = UNetMidBlock2DCrossAttn(c, channels[-1], c.heads_per_block()[-1])
        self.controlnet_mid_block = zero_conv(channels[-1], channels[-1])

    @classmethod
    def from_unet(cls, unet, conditioning_embedding_out_channels=(16, 32, 96, 256)):
        """A ControlNet whose encoder is a copy of ``unet``'s (conv_in, time embedding, down and mid blocks).

        The zero convs and the condition embedding's last conv are zero, so that at first the U-Net's output is
        unchanged. The new model is float32 on the CPU, as any freshly built one.
        """
        u = unet.config
        config = ControlNetConfig(
            in_channels=u.in_channels, flip_sin_to_cos=u.flip_sin_to_cos, freq_shift=u.freq_shift,
            down_block_types=u.down_block_types, block_out_channels=u.block_out_channels,
            layers_per_block=u.layers_per_block, downsample_padding=u.downsample_padding,
            norm_num_groups=u.norm_num_groups, norm_eps=u.norm_eps, cross_attention_dim=u.cross_attention_dim,
            transformer_layers_per_block=u.transformer_layers_per_block, attention_head_dim=u.attention_head_dim,
            use_linear_projection=u.use_linear_projection, upcast_attention=u.upcast_attention,
            conditioning_embedding_out_channels=conditioning_embedding_out_channels,
        )
        controlnet = cls(config)
        for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
            getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict())
        return controlnet

    @property
    def dtype(self):
        return self.conv_in.weight.dtype

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0):
        """sample (B, C, h, w); timestep (number, () or (B,)); encoder_hidden_states (B, T, D); controlnet_cond
        (B, 3, 8h, 8w) in [0, 1]. Returns (tuple of one (B, C_i, h_i, w_i) per U-Net skip, (B, C_last, h', w')),
        all multiplied by ``conditioning_scale``."""
        if self.config.controlnet_conditioning_channel_order == "bgr":
            controlnet_cond = torch.flip(controlnet_cond, dims=[1])
        context = encoder_hidden_states
        temb = self.time_embedding(timestep_batch(timestep, sample.shape[0], sample.device))  # (B, 4 * C0)

        h = self.conv_in(sample) + self.controlnet_cond_embedding(controlnet_cond)  # (B, C0, h, w)
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = block(h, temb, context)
            skips += block_skips
        h = self.mid_block(h, temb, context)

        down = tuple(zero(skip) * conditioning_scale for zero, skip in zip(self.controlnet_down_blocks, skips))
        return down, self.controlnet_mid_block(h) * conditioning_scale
