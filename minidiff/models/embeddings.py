"""How the U-Net learns the noise level: the timestep t becomes a vector, then an MLP makes it a conditioning signal.

The sinusoidal embedding (as in the Transformer's positional encoding and in DDPM) spreads t over frequencies
f_i = max_period^(-i / (half - freq_shift)), i = 0 .. half - 1:

    emb(t) = [cos(t f_0), ..., cos(t f_{half-1}), sin(t f_0), ..., sin(t f_{half-1})]   (flip_sin_to_cos=True)

``TimestepEmbedding`` computes emb(t) and maps it through Linear -> SiLU -> Linear to the vector that every ResNet
block of the U-Net adds to its features (diffusers splits this into ``time_proj`` and ``time_embedding``; only
the latter has weights). A Latent Consistency Model's U-Net also takes the guidance scale: ``guidance_scale_embedding``
makes it a vector, and ``TimestepEmbedding``'s ``cond_proj`` adds its projection to emb(t) before the MLP.
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


def guidance_scale_embedding(w, dim):
    """LCM's embedding of the guidance scale w (number, () or (B,)) -> (B, dim), always in float32.

    w is the paper's omega in eps = (1 + w) eps_c - w eps_u, i.e. a guidance scale s of classifier-free guidance
    gives w = s - 1. With half = dim // 2 and f_i = 10000^(-i / (half - 1)), i = 0 .. half - 1 (from 1 down to 1e-4):

        emb(w) = [sin(1000 w f_0), ..., sin(1000 w f_{half-1}), cos(1000 w f_0), ..., cos(1000 w f_{half-1})]

    An odd ``dim`` gets one zero channel at the end. Equal to diffusers' ``get_guidance_scale_embedding``.
    """
    if dim < 4:
        raise ValueError(f"guidance_scale_embedding needs dim >= 4 (at least 2 frequencies), found dim={dim}.")
    w = torch.as_tensor(w)
    if w.ndim > 1:
        raise ValueError(f"guidance_scale_embedding takes one w per sample, shape (B,); found {tuple(w.shape)}.")
    scaled = (w.reshape(-1) * 1000.0).float()  # (B,)
    half = dim // 2
    # diffusers parity: the step log(10000) / (half - 1) is rounded to float32 first, then multiplied by i. (Dividing
    # i log(10000) by half - 1, as timestep_embedding does, moves the angles by up to 1e-3 at dim 256, w = 14.5.)
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=scaled.device) * -step)  # (half,)
    angles = scaled[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return F.pad(emb, (0, dim % 2))  # (B, dim)


class TimestepEmbedding(nn.Module):
    """The U-Net's time conditioning: linear_2(SiLU(linear_1(emb(t)))), emb the sinusoidal embedding above.

    timesteps: (B,) -> (B, time_embed_dim). ``channels`` is the width of emb(t) (the U-Net's first block width).
    With ``cond_proj_dim`` (an LCM U-Net) a condition c (B, cond_proj_dim) joins in as
    linear_2(SiLU(linear_1(emb(t) + cond_proj(c)))), cond_proj a Linear without bias.
    """

    def __init__(self, channels, time_embed_dim, flip_sin_to_cos=True, freq_shift=0, cond_proj_dim=None):
        super().__init__()
        self.channels, self.flip_sin_to_cos, self.freq_shift = channels, flip_sin_to_cos, freq_shift
        self.linear_1 = nn.Linear(channels, time_embed_dim)
        self.cond_proj = nn.Linear(cond_proj_dim, channels, bias=False) if cond_proj_dim is not None else None
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, timesteps, condition=None):
        emb = timestep_embedding(timesteps, self.channels, self.flip_sin_to_cos, self.freq_shift)  # (B, channels)
        emb = emb.to(self.linear_1.weight.dtype)  # computed in float32 whatever the model's dtype
        if condition is not None:
            emb = emb + self.cond_proj(condition.to(emb.dtype))  # (B, channels)
        return self.linear_2(F.silu(self.linear_1(emb)))  # (B, time_embed_dim)
