"""The convolutional building blocks shared by the VAE and the U-Net.

A ResNet block refines a feature map and adds it back to its input:

    h = conv2(act(norm2(conv1(act(norm1(x))) + proj(act(t_emb)))))
    out = shortcut(x) + h

In the U-Net, ``t_emb`` (the timestep embedding) tells every block how noisy the input is; the VAE has no
timestep and leaves it out. ``Downsample2D`` halves the resolution with a stride-2 convolution;
``Upsample2D`` doubles it with nearest-neighbour interpolation followed by a convolution.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, with an optional timestep projection in between; residual output.

    x: (B, in_channels, H, W); temb: (B, temb_channels) or None. Returns (B, out_channels, H, W).
    """

    def __init__(self, in_channels, out_channels=None, temb_channels=None, groups=32, eps=1e-6, dropout=0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels is not None else None
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        # A 1x1 convolution matches channel counts when the block changes them.
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample2D(nn.Module):
    """Stride-2 3x3 convolution: (B, C, H, W) -> (B, out_channels, H/2, W/2).

    The VAE encoder uses ``padding=0`` and pads one pixel on the right and bottom only (as the original
    Stable Diffusion code does); the U-Net uses symmetric ``padding=1``.
    """

    def __init__(self, channels, out_channels=None, padding=1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, out_channels or channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 (or to ``output_size``), then a 3x3 convolution: (B, C, H, W) -> (B, C', 2H, 2W)."""

    def __init__(self, channels, out_channels=None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, kernel_size=3, padding=1)

    def forward(self, x, output_size=None):
        if output_size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=output_size, mode="nearest")
        return self.conv(x)
