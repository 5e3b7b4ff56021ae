"""Reference solution of lessons/exercises/cross_attention.py (lesson 6)."""

import torch


def cross_attention(x, context, w_q, w_k, w_v, w_out, b_out, heads):
    """out = W_out · concat_heads(softmax(q k^T / sqrt(d)) v) + b_out. x: (B, T_q, Dq); context: (B, T_k, Dc)."""
    B, T_q, _ = x.shape
    inner_dim = w_q.shape[0]
    d = inner_dim // heads

    def split_heads(h):  # (B, T, inner_dim) -> (B, heads, T, d)
        return h.view(B, h.shape[1], heads, d).transpose(1, 2)

    q = split_heads(x @ w_q.T)
    k = split_heads(context @ w_k.T)
    v = split_heads(context @ w_v.T)
    scores = q @ k.transpose(-1, -2) / d**0.5  # (B, heads, T_q, T_k)
    h = scores.softmax(dim=-1) @ v  # (B, heads, T_q, d)
    h = h.transpose(1, 2).reshape(B, T_q, inner_dim)  # join the heads
    return h @ w_out.T + b_out  # (B, T_q, Dq)
