"""CLIP's text transformer: 77 token ids -> 77 vectors, the prompt embedding the U-Net attends to.

A pre-LayerNorm transformer whose tokens only look backwards (a causal mask), as in GPT:

    x_0 = token_embedding[ids] + position_embedding[0..T-1]            # (B, T, D)
    x_l = x_{l-1} + Attention(LN1(x_{l-1}))    token t attends to tokens 0..t
    x_l = x_l + fc2(act(fc1(LN2(x_l))))         act: quick_gelu (SD 1.x) or gelu (SD 2.x)
    last_hidden_state = LN_final(x_L)          # (B, T, D), what Stable Diffusion conditions on
    pooler_output = last_hidden_state at the <|endoftext|> token   # (B, D), one vector per prompt

"CLIP skip" conditions on an earlier layer instead: LN_final(x_{L - clip_skip}).
Parameter names equal those of Stable Diffusion's text_encoder/model.safetensors, so the files load key for key.
"""

from typing import NamedTuple

import torch
from torch import nn

from minidiff.models.activations import ACTIVATIONS
from minidiff.models.attention import attention
from minidiff.models.config import CLIPTextConfig


class CLIPTextOutput(NamedTuple):
    """last_hidden_state: (B, T, D); pooler_output: (B, D); hidden_states: L + 1 tensors (B, T, D)."""

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    hidden_states: tuple


class CLIPTextEmbeddings(nn.Module):
    """ids (B, T) -> token embedding + learned position embedding (B, T, D)."""

    def __init__(self, config):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids):
        length, positions = input_ids.shape[1], self.position_embedding.num_embeddings
        if length > positions:
            raise ValueError(
                f"The text encoder reads at most {positions} tokens, got {length}: "
                f"tokenize with max_length={positions}."
            )
        return self.token_embedding(input_ids) + self.position_embedding.weight[:length]


class CLIPAttention(nn.Module):
    """Multi-head self-attention: (B, T, D) -> (B, T, D), heads of size D / num_heads."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x, mask):
        B, T, D = x.shape
        heads = (B, T, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(heads).transpose(1, 2)  # (B, heads, T, d)
        k = self.k_proj(x).view(heads).transpose(1, 2)
        v = self.v_proj(x).view(heads).transpose(1, 2)
        out = attention(q, k, v, mask=mask, scale=self.head_dim**-0.5)  # (B, heads, T, d)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class CLIPMLP(nn.Module):
    """fc2(act(fc1(x))): (B, T, D) -> (B, T, intermediate_size) -> (B, T, D)."""

    def __init__(self, config):
        super().__init__()
        self.activation = ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """One pre-LN block: x + Attention(LN1(x)), then x + MLP(LN2(x)). (B, T, D) -> (B, T, D)."""

    def __init__(self, config):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    """The stack of layers; returns every intermediate state: (x_0, x_1, ..., x_L), each (B, T, D)."""

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask):
        states = [x]
        for layer in self.layers:
            states.append(layer(states[-1], mask))
        return tuple(states)


class CLIPTextTransformer(nn.Module):
    """Embeddings -> causal transformer -> final LayerNorm -> pooled end token. See ``CLIPTextModel.forward``."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, clip_skip=None):
        layers = self.config.num_hidden_layers
        if clip_skip is not None and not 0 <= clip_skip < layers:
            raise ValueError(f"clip_skip must be None or an integer from 0 to {layers - 1}, got {clip_skip!r}.")
        x = self.embeddings(input_ids)  # (B, T, D)
        T = x.shape[1]
        # Additive mask: -inf above the diagonal, so token t never attends to a later token.
        causal_mask = torch.full((T, T), float("-inf"), dtype=x.dtype, device=x.device).triu(1)  # (T, T)
        hidden_states = self.encoder(x, causal_mask)
        last_hidden_state = self.final_layer_norm(hidden_states[-1])  # (B, T, D)

        if self.config.eos_token_id == 2:
            # Config files written before the end-token id was fixed say 2; the end token <|endoftext|> is then
            # found as the largest id in the row (it is the last entry of CLIP's vocabulary).
            end = input_ids.argmax(dim=-1)  # (B,)
        else:
            end = (input_ids == self.config.eos_token_id).int().argmax(dim=-1)  # (B,) first end token
        pooler_output = last_hidden_state[torch.arange(len(end), device=end.device), end]  # (B, D)

        if clip_skip is not None:
            last_hidden_state = self.final_layer_norm(hidden_states[-(clip_skip + 1)])
        return CLIPTextOutput(last_hidden_state, pooler_output, hidden_states)


class CLIPTextModel(nn.Module):
    """CLIP's text encoder with the parameter names of Stable Diffusion's files (all under ``text_model.``).

    forward(input_ids (B, T), clip_skip=None) -> CLIPTextOutput. With clip_skip = k, ``last_hidden_state`` is
    LN_final(hidden_states[-(k + 1)]), the output of the layer k before the last (k = 0: the usual output);
    ``pooler_output`` and ``hidden_states`` are always those of the full stack.
    """

    def __init__(self, config=None):
        super().__init__()
        self.config = config or CLIPTextConfig()
        self.text_model = CLIPTextTransformer(self.config)

    def forward(self, input_ids, clip_skip=None):
        return self.text_model(input_ids, clip_skip=clip_skip)


def clip_text_state_dict(state_dict):
    """A text encoder file's weights under minidiff's names, ready for ``load_state_dict(..., strict=True)``.

    Stable Diffusion's files name them ``text_model.embeddings...``; transformers 5 saves them without the
    ``text_model.`` prefix; files from older transformers also carry ``position_ids`` (0..76, not a weight).
    """
    converted = {}
    for key, value in state_dict.items():
        key = key if key.startswith("text_model.") else "text_model." + key
        if key != "text_model.embeddings.position_ids":
            converted[key] = value
    return converted
