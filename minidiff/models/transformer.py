"""The spatial transformer: how the U-Net looks across the image and reads the text.

Each position of a (B, C, H, W) feature map becomes one token of a sequence of H*W tokens. A transformer block
then applies, each with a pre-LayerNorm and a residual connection:

    x = x + SelfAttention(norm1(x))             every position looks at every other position
    x = x + CrossAttention(norm2(x), context)   every position looks at the text tokens (B, T, D)
    x = x + FeedForward(norm3(x))               GEGLU MLP, 4x wider inside

Cross-attention is where the prompt enters the image: the queries come from the image, the keys and values from
the text encoder's hidden states. ``record_cross_attention`` lets a lesson look at those attention maps.
Module names follow diffusers' ``Transformer2DModel``, so its weights load key for key.
"""

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.models.attention import attention


class CrossAttention(nn.Module):
    """Multi-head attention; self-attention when no context is given.

    out = to_out(concat_heads(softmax(q k^T / sqrt(d)) v)), q = to_q(x), k = to_k(c), v = to_v(c), c = context or x.
    x: (B, T_q, query_dim); context: (B, T_k, context_dim). Returns (B, T_q, query_dim).
    ``upcast_attention`` (SD 2.x's configs set it) is kept but, as in diffusers' default attention processor
    (``F.scaled_dot_product_attention``, whose kernels accumulate in float32), changes nothing: half-precision
    runs then match diffusers' bit for bit. diffusers' older processor computed the scores in float32 instead.
    """

    def __init__(self, query_dim, heads, head_dim, context_dim=None, upcast_attention=False):
        super().__init__()
        inner_dim = heads * head_dim
        self.heads, self.head_dim, self.upcast_attention = heads, head_dim, upcast_attention
        self.is_cross_attention = context_dim is not None
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim)])
        self.recorder = None  # set by record_cross_attention: a function that receives the attention probabilities

    def split_heads(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, T, d)

    def forward(self, x, context=None):
        context = x if context is None else context
        q = self.split_heads(self.to_q(x))  # (B, heads, T_q, d)
        k, v = self.split_heads(self.to_k(context)), self.split_heads(self.to_v(context))  # (B, heads, T_k, d)
        if self.recorder is None:
            h = attention(q, k, v)  # (B, heads, T_q, d)
        else:
            probs = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(dim=-1)  # (B, heads, T_q, T_k)
            self.recorder(probs)
            h = probs @ v
        B, _, T_q, _ = h.shape
        h = h.to(x.dtype).transpose(1, 2).reshape(B, T_q, self.heads * self.head_dim)  # concatenate the heads
        return self.to_out[0](h)


class GEGLU(nn.Module):
    """Gated GELU: a * GELU(g), where [a, g] = proj(x). (B, T, dim_in) -> (B, T, dim_out)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to 4 * dim, then Linear back to dim. (B, T, dim) -> (B, T, dim)."""

    def __init__(self, dim, mult=4):
        super().__init__()
        # net.1 is a dropout layer in diffusers (with p = 0 in Stable Diffusion); the placeholder keeps the name net.2.
        self.net = nn.ModuleList([GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim)])

    def forward(self, x):
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the context, feed-forward; each pre-normed and residual.

    x: (B, HW, dim); context: (B, T, context_dim). Returns (B, HW, dim).
    """

    def __init__(self, dim, heads, head_dim, context_dim, upcast_attention=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = CrossAttention(dim, heads, head_dim, upcast_attention=upcast_attention)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, heads, head_dim, context_dim=context_dim, upcast_attention=upcast_attention)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """GroupNorm, project in, transformer blocks over the H*W tokens, project out; added back to the input.

    proj_in/proj_out are 1x1 convolutions (SD 1.x) or, with ``use_linear_projection``, Linear layers applied to the
    tokens (SD 2.x); both compute the same kind of map. x: (B, C, H, W); context: (B, T, D). Returns (B, C, H, W).
    """

    def __init__(self, channels, heads, context_dim, groups, num_layers=1, use_linear_projection=False,
                 upcast_attention=False):
        super().__init__()
        head_dim = channels // heads
        inner_dim = heads * head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        if use_linear_projection:
            self.proj_in = nn.Linear(channels, inner_dim)
        else:
            self.proj_in = nn.Conv2d(channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, heads, head_dim, context_dim, upcast_attention) for _ in range(num_layers)
        )
        if use_linear_projection:
            self.proj_out = nn.Linear(inner_dim, channels)
        else:
            self.proj_out = nn.Conv2d(inner_dim, channels, kernel_size=1)

    def forward(self, x, context):
        B, C, H, W = x.shape
        to_tokens = lambda h: h.permute(0, 2, 3, 1).reshape(B, H * W, -1)  # (B, c, H, W) -> (B, HW, c)
        # (B, HW, c) -> (B, c, H, W); diffusers parity: made contiguous, since float16 convolutions round
        # differently in the channels-last layout the permute would leave
        to_image = lambda h: h.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        h = self.norm(x)
        h = self.proj_in(to_tokens(h)) if self.use_linear_projection else to_tokens(self.proj_in(h))  # (B, HW, inner)
        for block in self.transformer_blocks:
            h = block(h, context)
        h = to_image(self.proj_out(h)) if self.use_linear_projection else self.proj_out(to_image(h))  # (B, C, H, W)
        return h + x  # diffusers parity: h first, so the sum takes h's (contiguous) layout when x is channels-last


@contextmanager
def record_cross_attention(model):
    """Record every cross-attention map of ``model`` while the ``with`` block runs.

    Yields a list that each forward pass extends with (layer_name, probs), probs: (B, heads, H*W, T) = how much each
    image position attends to each text token. Recording uses the plain (non-fused) attention path.

        with record_cross_attention(unet) as maps:
            unet(latents, t, text_states)
    """
    records = []
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, CrossAttention) and m.is_cross_attention]
    for name, layer in layers:
        layer.recorder = lambda probs, name=name: records.append((name, probs.detach()))
    try:
        yield records
    finally:
        for _, layer in layers:
            layer.recorder = None
