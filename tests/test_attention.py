"""The fused and the plain attention paths compute the same thing, alone and inside the whole U-Net.

Tolerances: max relative error <= 1e-5 in float32, <= 1e-12 in float64 (same formula, different summation order).
"""

import pytest
import torch
from diffusers import UNet2DConditionModel as DiffusersUNet
from test_unet import SMALL_CONFIGS, inputs, rel_err

import minidiff.models.attention as attention_module
import minidiff.models.transformer as transformer_module
from minidiff.models.attention import attention, attention_reference
from minidiff.models.config import UNetConfig
from minidiff.models.transformer import CrossAttention
from minidiff.models.unet import UNet2DConditionModel
from minidiff.tools.bench.configs import randomize_


def qkv(T_q, T_k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, T_q, 8, generator=g, dtype=dtype)
    k = torch.randn(2, 3, T_k, 8, generator=g, dtype=dtype)
    v = torch.randn(2, 3, T_k, 8, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("T_q, T_k", [(5, 5), (16, 7), (3, 11)])
def test_fused_attention_equals_the_formula(T_q, T_k, dtype, tol):
    q, k, v = qkv(T_q, T_k, dtype)
    # An additive mask that hides the last two keys of the second sample, broadcast over heads and queries.
    mask = torch.zeros(2, 1, 1, T_k, dtype=dtype)
    mask[1, ..., -2:] = -10000.0
    for kwargs in (dict(), dict(mask=mask), dict(scale=0.1), dict(mask=mask, scale=0.1)):
        assert rel_err(attention(q, k, v, **kwargs), attention_reference(q, k, v, **kwargs)) <= tol, kwargs
    # The masked keys get (numerically) no weight: dropping them gives the same output.
    masked = attention(q, k, v, mask=mask)
    assert rel_err(masked[1], attention(q[1:], k[1:, :, :-2], v[1:, :, :-2])[0]) <= tol


def test_attention_reference_is_softmax_of_scaled_scores():
    q, k, v = qkv(4, 6, torch.float64)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)  # (B, heads, T_q, T_k)
    torch.testing.assert_close(attention_reference(q, k, v), weights @ v)


@pytest.mark.parametrize("upcast", [True, False])
def test_cross_attention_runs_in_the_model_dtype_whatever_upcast_attention_says(upcast, monkeypatch):
    """diffusers' default processor (scaled_dot_product_attention) ignores upcast_attention; so does minidiff."""
    seen = []

    def spy(q, k, v, **kwargs):
        seen.append(q.dtype)
        return attention(q, k, v, **kwargs)

    monkeypatch.setattr(transformer_module, "attention", spy)
    torch.manual_seed(0)
    layer = CrossAttention(16, heads=2, head_dim=8, context_dim=12, upcast_attention=upcast)
    x, context = torch.randn(1, 5, 16), torch.randn(1, 3, 12)
    expected = layer(x, context)
    got = layer.to(torch.bfloat16)(x.bfloat16(), context.bfloat16())
    assert seen == [torch.float32, torch.bfloat16]
    assert got.dtype == torch.bfloat16
    assert rel_err(got.float(), expected) <= 3e-2  # bfloat16 keeps about 3 significant digits


@pytest.mark.parametrize("name", ["sd1-style", "sd2-style"])
def test_unet_output_is_the_same_with_fused_and_plain_attention(name, monkeypatch):
    reference = randomize_(DiffusersUNet(norm_num_groups=8, sample_size=16, **SMALL_CONFIGS[name][0]))
    unet = UNet2DConditionModel(UNetConfig.from_dict(dict(reference.config))).eval()
    unet.load_state_dict(reference.state_dict(), strict=True)
    sample, text = inputs(name)
    with torch.no_grad():
        fused = unet(sample, 321, text)
        calls = []
        monkeypatch.setattr(attention_module, "USE_FUSED_ATTENTION", False)
        monkeypatch.setattr(attention_module, "attention_reference",
                            lambda *args, **kwargs: calls.append(1) or attention_reference(*args, **kwargs))
        plain = unet(sample, 321, text)
    assert len(calls) == sum(isinstance(m, CrossAttention) for m in unet.modules())  # every layer took the plain path
    assert rel_err(plain, fused) <= 1e-5
