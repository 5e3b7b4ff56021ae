"""Lesson 6's checker: multi-head cross-attention, against the U-Net's CrossAttention layer."""

import torch

from minidiff.course.harness import call, close, compare, exercise, randn
from minidiff.models.transformer import CrossAttention


@exercise("cross_attention", "06-unet", "multi-head cross-attention from the q/k/v/out projection weights")
def check_cross_attention(fn):
    hint = ("q = x W_q^T, k = context W_k^T, v = context W_v^T; split the last dimension into `heads` heads of "
            "d = inner_dim / heads; per head softmax(q k^T / sqrt(d)) v with the softmax over the context tokens; "
            "join the heads back to (B, T_q, inner_dim); out = h W_out^T + b_out.")
    # (B, T_q, query_dim, T_k, context_dim, heads, head_dim)
    cases = [(2, 16, 32, 7, 24, 4, 8), (1, 5, 12, 3, 12, 1, 12), (3, 9, 20, 77, 16, 2, 6), (2, 4, 8, 10, 8, 8, 1)]
    for seed, (B, T_q, query_dim, T_k, context_dim, heads, head_dim) in enumerate(cases):
        g = torch.Generator().manual_seed(seed)
        layer = CrossAttention(query_dim, heads, head_dim, context_dim=context_dim)
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(randn(g, *p.shape) * 0.3)
        x, context = randn(g, B, T_q, query_dim), randn(g, B, T_k, context_dim)
        case = (f"case {seed + 1}: x {tuple(x.shape)}, context {tuple(context.shape)}, {heads} heads of "
                f"{head_dim} channels")
        weights = [layer.to_q.weight, layer.to_k.weight, layer.to_v.weight, layer.to_out[0].weight,
                   layer.to_out[0].bias]
        got = call(fn, case, x.clone(), context.clone(), *[w.detach().clone() for w in weights], heads)
        with torch.no_grad():
            expected = layer(x, context)

            def variant(scale=None, n_heads=heads, softmax_dim=-1, project=True):
                """The attention with one thing done differently (for naming a learner's mistake)."""
                d = heads * head_dim // n_heads
                split = lambda h: h.view(B, -1, n_heads, d).transpose(1, 2)  # (B, n_heads, T, d)
                q, k, v = split(layer.to_q(x)), split(layer.to_k(context)), split(layer.to_v(context))
                scores = q @ k.transpose(-1, -2) * (d**-0.5 if scale is None else scale)  # (B, n_heads, T_q, T_k)
                h = (scores.softmax(softmax_dim) @ v).transpose(1, 2).reshape(B, T_q, heads * head_dim)
                return layer.to_out[0](h) if project else h

            mistakes = {
                "attention without the 1/sqrt(d) scale of the scores": variant(scale=1.0),
                "the scores scaled by 1/sqrt(inner_dim) instead of 1/sqrt(d), d the width of one head":
                    variant(scale=(heads * head_dim) ** -0.5),
                "the softmax taken over the image tokens (dim -2); it must normalise over the context tokens":
                    variant(softmax_dim=-2),
                "one head of width inner_dim: split the channels into `heads` heads": variant(n_heads=1),
                "the attention output before the output projection (W_out, b_out)": variant(project=False),
            }
            # a "mistake" that gives the right answer for this case (one head, say) is no mistake here
            mistakes = {k: v for k, v in mistakes.items() if not close(v, expected, 1e-4, 1e-5)}
        compare(got, expected, case, hint, mistakes=mistakes)
    return len(cases)
