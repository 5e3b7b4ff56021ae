"""The fast path computes what the plain path computes.

optimize_unet (channels-last + fused q/k/v projections) against the plain model: float32 max relative error
<= 1e-5, float64 <= 1e-12 (the same sums, grouped differently), and the state dict keeps its keys and values.
The CUDA graph tests run only where a GPU is present: a replayed step against the eager step, float32 with TF32
off <= 1e-5; the same in float16 against the float32 eager step <= 1e-2 (float16 rounding).
No timing is asserted anywhere: speed is measured by ``python -m minidiff bench``.
"""

import math

import pytest
import torch

from minidiff.fast import CUDAGraphStep, FusedCrossAttention, capture_guided_step, optimize_unet
from minidiff.models.config import UNetConfig
from minidiff.models.transformer import CrossAttention, record_cross_attention
from minidiff.models.unet import UNet2DConditionModel

F32_TOL, F64_TOL = 1e-5, 1e-12

CONFIGS = {
    "sd1-style": UNetConfig(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=4,
                            cross_attention_dim=16, norm_num_groups=8,
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    "sd2-style": UNetConfig(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
                            cross_attention_dim=24, norm_num_groups=8, use_linear_projection=True,
                            upcast_attention=True, down_block_types=("CrossAttnDownBlock2D",) * 2,
                            up_block_types=("CrossAttnUpBlock2D",) * 2),
}
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; none is present")


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@torch.no_grad()
def random_unet(config, seed=0, dtype=torch.float32, device="cpu"):
    """Norm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2), weights N(0, 1/fan_in): no layer is left at zero."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(config).eval()
    g = torch.Generator().manual_seed(seed)
    for name, p in unet.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if p.ndim == 1:
            p.copy_(0.1 * noise + (1.0 if name.endswith("weight") else 0.0))
        else:
            p.copy_(noise / math.sqrt(p[0].numel()))
    return unet.to(device, dtype)


def inputs(config, batch=2, seed=1, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 16, 16, generator=g)
    context = torch.randn(batch, 7, config.cross_attention_dim, generator=g)
    return x.to(device, dtype), context.to(device, dtype)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.float64, F64_TOL)])
def test_optimize_unet_keeps_outputs_and_state_dict(name, dtype, tol):
    config = CONFIGS[name]
    unet = random_unet(config, dtype=dtype)
    x, context = inputs(config, dtype=dtype)
    with torch.no_grad():
        expected = unet(x, 321, context)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    n_attention = sum(isinstance(m, CrossAttention) for m in unet.modules())

    optimize_unet(unet, channels_last=True, fuse_qkv=True)
    assert sum(isinstance(m, FusedCrossAttention) for m in unet.modules()) == n_attention > 0
    with torch.no_grad():
        got = unet(x, 321, context)
    assert rel_err(got, expected) <= tol
    optimized = unet.state_dict()
    assert list(optimized) == list(state)
    assert all(torch.equal(optimized[k], state[k]) for k in state)


def test_fused_weights_follow_load_state_dict_and_dtype_changes():
    config = CONFIGS["sd1-style"]
    unet, other = random_unet(config, seed=0), random_unet(config, seed=5)
    x, context = inputs(config)
    optimize_unet(unet)
    unet.load_state_dict(other.state_dict(), strict=True)  # copies in place: the fused buffers see new weights
    with torch.no_grad():
        assert rel_err(unet(x, 10, context), other(x, 10, context)) <= F32_TOL
        unet.double()  # converts each tensor separately: the layers are fused again afterwards
        got = unet(x.double(), 10, context.double())
        expected = other.double()(x.double(), 10, context.double())
    assert rel_err(got, expected) <= F64_TOL
    for layer in (m for m in unet.modules() if isinstance(m, FusedCrossAttention)):
        assert layer.fused_weight.dtype == torch.float64
        assert layer.to_k.weight.untyped_storage().data_ptr() == layer.fused_weight.untyped_storage().data_ptr()


def test_recording_and_training_take_the_plain_path():
    config = CONFIGS["sd1-style"]
    unet = optimize_unet(random_unet(config))
    x, context = inputs(config)
    with torch.no_grad(), record_cross_attention(unet) as maps:
        unet(x, 10, context)
    assert len(maps) == 4 and maps[0][1].shape[-1] == context.shape[1]

    unet(x, 10, context).square().mean().backward()  # gradients must reach the layers' own weights
    layer = next(m for m in unet.modules() if isinstance(m, FusedCrossAttention))
    assert layer.to_q.weight.grad is not None and layer.to_q.weight.grad.abs().sum() > 0


def test_cuda_graph_step_refuses_cpu_tensors():
    with pytest.raises(ValueError, match="CUDA tensors"):
        CUDAGraphStep(lambda x: x * 2, torch.ones(3))


@cuda_only
def test_cuda_graph_replays_the_eager_step():
    config = CONFIGS["sd1-style"]
    unet = random_unet(config, device="cuda")
    x, context = inputs(config, device="cuda")
    x2 = torch.randn_like(x)
    t = torch.tensor(321.0, device="cuda")
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        step = CUDAGraphStep(lambda x: unet(x, t, context), x)
        first = step(x)
        second = step(x2)  # the first result is a copy: the replay must not overwrite it
        with torch.no_grad():
            assert rel_err(first, unet(x, t, context)) <= F32_TOL
            assert rel_err(second, unet(x2, t, context)) <= F32_TOL
        with pytest.raises(ValueError, match="captured for inputs of shape"):
            step(x[:1])
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32


@cuda_only
@pytest.mark.parametrize("dtype,tol", [(torch.float32, F32_TOL), (torch.float16, 1e-2)])
def test_guided_step_matches_plain_guidance(dtype, tol):
    """The captured, optimised guided step against eps_u + s (eps_c - eps_u) from the plain float32 model."""
    config = CONFIGS["sd1-style"]
    plain = random_unet(config, device="cuda")
    fast = optimize_unet(random_unet(config, dtype=dtype, device="cuda"))
    latents, _ = inputs(config, batch=1, device="cuda")
    _, context = inputs(config, batch=2, seed=2, device="cuda")
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        step = capture_guided_step(fast, latents.shape, context.to(dtype), guidance_scale=7.5)
        for t, ctx in ((981, context), (torch.tensor(41.0), context.flip(0))):
            step.set_context(ctx.to(dtype))
            got = step(latents, t)
            with torch.no_grad():
                uncond, cond = plain(torch.cat([latents] * 2), t, ctx).chunk(2)
            assert got.dtype == dtype
            assert rel_err(got.float(), uncond + 7.5 * (cond - uncond)) <= tol
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
