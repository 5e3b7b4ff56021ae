"""Exercise (lesson 6, U-Net): multi-head cross-attention, image tokens attending to text tokens.

Fill in the body, then check it:   python -m minidiff.check cross_attention
Use plain tensor operations (matmul, softmax, view, transpose); no torch.nn.functional attention call.
"""

import torch


def cross_attention(x, context, w_q, w_k, w_v, w_out, b_out, heads):
    """Queries from x, keys and values from the context, `heads` heads of width d = inner_dim / heads:

        q = x W_q^T,   k = context W_k^T,   v = context W_v^T            (B, T, inner_dim) each
        split each into heads:                                            (B, heads, T, d)
        h = softmax(q k^T / sqrt(d)) v      softmax over the T_k context tokens   (B, heads, T_q, d)
        join the heads:                                                   (B, T_q, inner_dim)
        out = h W_out^T + b_out                                           (B, T_q, query_dim)

    x:       (B, T_q, query_dim) image tokens
    context: (B, T_k, context_dim) text tokens
    w_q:     (inner_dim, query_dim);  w_k, w_v: (inner_dim, context_dim)   (nn.Linear's weight layout)
    w_out:   (query_dim, inner_dim);  b_out: (query_dim,)
    heads:   int, the number of heads; inner_dim = heads * d
    returns: (B, T_q, query_dim)
    """
    raise NotImplementedError("project to q, k, v; split heads; attend; join heads; project out")
