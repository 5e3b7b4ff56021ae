"""The KL autoencoder (VAE) of Stable Diffusion: images <-> latents, 8x smaller in each side.

Diffusion runs on latents, not pixels. The encoder maps an image x in [-1, 1] to a diagonal Gaussian
q(z | x) = N(mean, diag(exp(logvar))) over latents with 4 channels; the decoder maps a latent z back to an image:

    x (B, 3, H, W) -> encoder -> quant_conv -> (mean, logvar) (B, 4, H/8, W/8) -> z -> post_quant_conv -> decoder -> x'

Training added a small KL penalty towards N(0, I) (hence "KL autoencoder"); at inference the mean is usually
enough. Module and parameter names follow diffusers' ``AutoencoderKL``, so its ``diffusion_pytorch_model.safetensors``
loads key for key.
"""

import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.models.attention import attention
from minidiff.models.config import VAEConfig
from minidiff.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from minidiff.noise import randn


class DiagonalGaussian:
    """q(z | x) = N(mean, diag(std^2)), from the encoder's moments (B, 2C, h, w) = [mean, logvar] along channels.

    logvar is clamped to [-30, 20] so that exp() stays finite. mean, logvar, std: (B, C, h, w).
    """

    def __init__(self, moments):
        self.mean, logvar = moments.chunk(2, dim=1)  # (B, C, h, w) each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator=None):
        """z = mean + std * eps, eps ~ N(0, I) in the moments' dtype; generator: one, or a list of one per batch
        element (``minidiff.noise.randn``, as diffusers draws it). (B, C, h, w)."""
        return self.mean + self.std * randn(self.mean.shape, generator, self.mean.dtype, self.mean.device)

    def mode(self):
        """The most likely latent: the mean. (B, C, h, w)."""
        return self.mean

    def kl(self):
        """KL(q || N(0, I)) = 0.5 * sum_{C,h,w} (mean^2 + var - 1 - logvar). Returns (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=[1, 2, 3])


class VAEAttention(nn.Module):
    """Self-attention over the h*w positions with one head as wide as the channels, added back to the input.

    out = x + to_out(softmax(q k^T / sqrt(C)) v), where q, k, v = to_q, to_k, to_v(GroupNorm(x)). x: (B, C, h, w).
    """

    # Older diffusers-format VAE files (most Stable Diffusion uploads) use these names for the same Linear layers.
    LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

    def __init__(self, channels, groups, eps=1e-6):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])
        self.register_load_state_dict_pre_hook(self._rename_legacy_keys)

    @staticmethod
    def _rename_legacy_keys(module, state_dict, prefix, *args):
        """Runs before ``load_state_dict`` fills this block: renames legacy keys in place (e.g. query -> to_q)."""
        for old, new in VAEAttention.LEGACY_NAMES.items():
            for param in ("weight", "bias"):
                if prefix + f"{old}.{param}" in state_dict:
                    state_dict[prefix + f"{new}.{param}"] = state_dict.pop(prefix + f"{old}.{param}")

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.group_norm(x.view(B, C, H * W)).transpose(1, 2)  # (B, HW, C): one token per position
        q, k, v = (proj(h).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))  # (B, 1, HW, C)
        h = attention(q, k, v).squeeze(1)  # (B, HW, C)
        h = self.to_out[0](h).transpose(1, 2).reshape(B, C, H, W)
        # h first: the sum keeps h's channels-last memory layout, so the next convolutions run the same kernels
        # as diffusers' (bit-identical outputs).
        return h + x


class MidBlock2D(nn.Module):
    """ResNet -> attention -> ResNet at the lowest resolution (diffusers: UNetMidBlock2D). (B, C, h, w) -> same."""

    def __init__(self, channels, groups, add_attention=True):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, groups=groups) for _ in range(2)])
        self.attentions = nn.ModuleList([VAEAttention(channels, groups)] if add_attention else [])

    def forward(self, x):
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


def resnet_stack(in_channels, out_channels, num_layers, groups):
    """``num_layers`` ResNet blocks in a row; the first changes in_channels to out_channels."""
    return nn.ModuleList(
        ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups=groups) for i in range(num_layers)
    )


class DownEncoderBlock2D(nn.Module):
    """ResNet blocks, then (except in the last block) halve the resolution. (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, in_channels, out_channels, num_layers, groups, add_downsample):
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, num_layers, groups)
        # Asymmetric padding (right and bottom only), as the original Stable Diffusion encoder pads.
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=0)]) if add_downsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Module):
    """ResNet blocks, then (except in the last block) double the resolution. (B, C_in, h, w) -> (B, C_out, 2h, 2w)."""

    def __init__(self, in_channels, out_channels, num_layers, groups, add_upsample):
        super().__init__()
        self.resnets = resnet_stack(in_channels, out_channels, num_layers, groups)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> moments (B, 2 * latent_channels, H / 2^(n-1), W / 2^(n-1)), n blocks."""

    def __init__(self, config):
        super().__init__()
        channels, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], kernel_size=3, padding=1)
        last = len(channels) - 1
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock2D(c_in, c_out, config.layers_per_block, groups, add_downsample=i < last)
            for i, (c_in, c_out) in enumerate(zip(channels[:1] + channels[:-1], channels))
        )
        self.mid_block = MidBlock2D(channels[-1], groups, config.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(channels[-1], 2 * config.latent_channels, kernel_size=3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)  # (B, C0, H, W)
        for block in self.down_blocks:
            h = block(h)  # resolution halves in every block but the last
        h = self.mid_block(h)  # (B, C_last, h, w)
        return self.conv_out(F.silu(self.conv_norm_out(h)))  # (B, 2 * latent_channels, h, w)


class Decoder(nn.Module):
    """Latent (B, latent_channels, h, w) -> image (B, out_channels, h * 2^(n-1), w * 2^(n-1)); mirrors the encoder."""

    def __init__(self, config):
        super().__init__()
        channels, groups = config.block_out_channels[::-1], config.norm_num_groups  # widest first
        self.conv_in = nn.Conv2d(config.latent_channels, channels[0], kernel_size=3, padding=1)
        self.mid_block = MidBlock2D(channels[0], groups, config.mid_block_add_attention)
        # One more ResNet per block than the encoder has.
        last = len(channels) - 1
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock2D(c_in, c_out, config.layers_per_block + 1, groups, add_upsample=i < last)
            for i, (c_in, c_out) in enumerate(zip(channels[:1] + channels[:-1], channels))
        )
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(channels[-1], config.out_channels, kernel_size=3, padding=1)

    def forward(self, z):
        h = self.mid_block(self.conv_in(z))  # (B, C_last, h, w)
        for block in self.up_blocks:
            h = block(h)  # resolution doubles in every block but the last
        return self.conv_out(F.silu(self.conv_norm_out(h)))  # (B, out_channels, H, W)


class AutoencoderKL(nn.Module):
    """The Stable Diffusion VAE: ``encode`` image -> DiagonalGaussian over latents, ``decode`` latent -> image.

    With the 4 blocks of Stable Diffusion, x (B, 3, H, W) in [-1, 1] <-> z (B, 4, H/8, W/8).
    """

    def __init__(self, config=None):
        super().__init__()
        self.config = config or VAEConfig()
        c = self.config
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        # 1x1 convolutions between the networks and the latent space (the name is a leftover of the VQ autoencoder).
        self.quant_conv = nn.Conv2d(2 * c.latent_channels, 2 * c.latent_channels, 1) if c.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1) if c.use_post_quant_conv else None
        self._warned_fp16_overflow = False

    @property
    def dtype(self):
        """The dtype of the weights (float32, float16, ...)."""
        return next(self.parameters()).dtype

    def encode(self, x):
        """x (B, in_channels, H, W) in [-1, 1] -> q(z | x), a DiagonalGaussian over (B, latent_channels, h, w)."""
        moments = self.encoder(x)  # (B, 2 * latent_channels, h, w)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussian(moments)

    def decode(self, z):
        """z (B, latent_channels, h, w), unscaled -> image (B, out_channels, H, W), roughly in [-1, 1]."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, x, sample_posterior=False, generator=None):
        """Reconstruct x: decode(a sample of q(z | x) if ``sample_posterior`` else its mean). (B, C, H, W) -> same."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z)

    def scale_latents(self, z):
        """Latents as the diffusion model sees them: (z - shift_factor) * scaling_factor (shift 0 when unset)."""
        shift = self.config.shift_factor or 0.0
        return (z - shift) * self.config.scaling_factor

    def unscale_latents(self, z):
        """Inverse of ``scale_latents``: z / scaling_factor + shift_factor, ready for ``decode``."""
        shift = self.config.shift_factor or 0.0
        return z / self.config.scaling_factor + shift

    @contextmanager
    def cast(self, dtype):
        """Run the block with the weights in ``dtype``, then put them back in their own dtype (float16 -> float32
        -> float16 is lossless). Yields the model."""
        own = self.dtype
        self.to(dtype)
        try:
            yield self
        finally:
            self.to(own)

    def decode_safely(self, z, dtype=None):
        """``decode`` in ``dtype`` (default: the weights' dtype); if float16 overflowed (inf/NaN in the image), decode
        again in float32.

        Activations of the SD VAE decoder can exceed float16's range (65504) at high resolution. The retry runs the
        model in float32 (``cast``) and returns the float32 image; it warns once per model. A pipeline that follows
        ``force_upcast`` passes dtype=float32 and skips the float16 pass. z: (B, latent_channels, h, w) ->
        (B, out_channels, H, W).
        """
        dtype = dtype or self.dtype
        with self.cast(dtype):
            image = self.decode(z.to(dtype))
        if dtype != torch.float16 or torch.isfinite(image).all():
            return image
        if not self._warned_fp16_overflow:
            warnings.warn(
                "The VAE decoder overflowed in float16 (the image had inf/NaN values), so it was decoded again in "
                "float32. To skip the wasted float16 pass, keep the VAE in float32 (vae.float()).",
                RuntimeWarning,
                stacklevel=2,
            )
            self._warned_fp16_overflow = True
        with self.cast(torch.float32):
            return self.decode(z.float())
