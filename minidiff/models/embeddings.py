"""How the U-Net learns the noise level: the timestep t becomes a vector, then an MLP makes it a conditioning signal.

The sinusoidal embedding (as in the Transformer's positional encoding and in DDPM) spreads t over frequencies
f_i = max_period^(-i / (half - freq_shift)), i = 0 .. half - 1:

    emb(t) = [cos(t f_0), ..., cos(t f_{half-1}), sin(t f_0), ..., sin(t f_{half-1})]   (flip_sin_to_cos=True)

``TimestepEmbedding`` computes emb(t) and maps it through Linear -> SiLU -> Linear to the vector that every ResNet
block of the U-Net adds to its features (diffusers splits this into ``time_proj`` and ``time_embedding``; only
the latter has weights).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_batch(timestep, batch_size, device):
    """A timestep given as a Python number, a 0-d tensor or a (B,) tensor -> a (batch_size,) tensor on ``device``."""
    t = torch.as_tensor(timestep, device=device)
    return t.reshape(-1).expand(batch_size)  # one value is shared by the whole batch


def timestep_embedding(timesteps, dim, flip_sin_to_cos=True, freq_shift=0, max_period=10000):
    """Sinusoidal embedding of (possibly fractional) timesteps: (B,) -> (B, dim), always in float32.

    Half of the channels hold cos(t f_i), the other half sin(t f_i), with f_i = max_period^(-i / (dim/2 - freq_shift));
    ``flip_sin_to_cos`` puts the cosines first. An odd ``dim`` gets one zero channel at the end.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))  # (half,)
    angles = timesteps[:, None].float() * freqs[None, :]  # (B, half)
    if flip_sin_to_cos:
        emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    else:
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb  # (B, dim)


class TimestepEmbedding(nn.Module):
    """The U-Net's time conditioning: linear_2(SiLU(linear_1(emb(t)))), emb the sinusoidal embedding above.

    timesteps: (B,) -> (B, time_embed_dim). ``channels`` is the width of emb(t) (the U-Net's first block width).
    """

    def __init__(self, channels, time_embed_dim, flip_sin_to_cos=True, freq_shift=0):
        super().__init__()
        self.channels, self.flip_sin_to_cos, self.freq_shift = channels, flip_sin_to_cos, freq_shift
        self.linear_1 = nn.Linear(channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, timesteps):
        emb = timestep_embedding(timesteps, self.channels, self.flip_sin_to_cos, self.freq_shift)  # (B, channels)
        emb = emb.to(self.linear_1.weight.dtype)  # computed in float32 whatever the model's dtype
        return self.linear_2(F.silu(self.linear_1(emb)))  # (B, time_embed_dim)
