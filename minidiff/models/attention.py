"""Scaled dot-product attention, in two equivalent forms.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

``attention_reference`` writes the formula out so a lesson can show every step;
``attention`` calls PyTorch's fused kernel (``F.scaled_dot_product_attention``), which computes
the same thing without materialising the (T_q, T_k) score matrix. Tests check that they agree.
"""

import math

import torch
import torch.nn.functional as F

# Flip to False (for example in a lesson) to route every attention layer through the plain path.
USE_FUSED_ATTENTION = True


def attention_reference(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale + mask) v, step by step.

    q: (B, heads, T_q, d); k, v: (B, heads, T_k, d); mask: additive, broadcastable to (B, heads, T_q, T_k).
    Returns (B, heads, T_q, d).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, heads, T_q, T_k)
    if mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-1)
    return torch.matmul(weights, v)  # (B, heads, T_q, d)


def attention(q, k, v, mask=None, scale=None):
    """Same contract as ``attention_reference``; uses the fused kernel unless it is switched off."""
    if not USE_FUSED_ATTENTION:
        return attention_reference(q, k, v, mask=mask, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
