"""The VAE matches diffusers' AutoencoderKL key for key and number for number.

Tolerances: max relative error (a - b).abs().max() / b.abs().max() <= 1e-5 in float32 and <= 1e-6 in float64.
Every reference model gets non-trivial random weights first (norm scales near 1, biases and weights random).
"""

import copy
import json
import warnings

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers.models.attention_processor import Attention as DiffusersAttention
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors.torch import load_file

import minidiff.models.attention as attention_module
from minidiff.models.config import VAEConfig
from minidiff.models.vae import AutoencoderKL, DiagonalGaussian, VAEAttention
from minidiff.tools.bench.configs import SD_VAE, randomize_

F32_TOL, F64_TOL = 1e-5, 1e-6

# Small diffusers configs: 2, 3 and 4 blocks; 1 and 2 layers per block; with and without mid-block attention
# and the 1x1 quant convs. Each comes with the image size it is tested at.
SMALL_CONFIGS = {
    "2blocks-attn": (dict(block_out_channels=[32, 64], layers_per_block=1), (2, 3, 16, 24)),
    "3blocks-noattn": (
        dict(block_out_channels=[32, 64, 64], layers_per_block=2, mid_block_add_attention=False),
        (1, 3, 16, 16),
    ),
    "4blocks-noquant": (
        dict(block_out_channels=[16, 32, 32, 32], layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False),
        (1, 3, 32, 32),
    ),
}


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def diffusers_kwargs(**overrides):
    n = len(overrides["block_out_channels"])
    return dict(
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        norm_num_groups=8,
        latent_channels=4,
        **overrides,
    )


def diffusers_and_minidiff(tmp_path, kwargs, seed=0):
    """A randomised diffusers VAE, saved with save_pretrained, and minidiff's VAE loaded from the saved files."""
    ref = DiffusersAutoencoderKL(**kwargs).eval()
    randomize_(ref, seed)
    ref.save_pretrained(tmp_path)
    config = VAEConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
    ours = AutoencoderKL(config).eval()
    ours.load_state_dict(load_file(tmp_path / "diffusion_pytorch_model.safetensors"), strict=True)
    return ref, ours


@pytest.fixture(scope="module", params=list(SMALL_CONFIGS))
def pair(request, tmp_path_factory):
    kwargs, image_shape = SMALL_CONFIGS[request.param]
    ref, ours = diffusers_and_minidiff(tmp_path_factory.mktemp(request.param), diffusers_kwargs(**kwargs))
    x = torch.rand(image_shape, generator=torch.Generator().manual_seed(1)) * 2 - 1  # image in [-1, 1]
    return ref, ours, x


def assert_vae_matches(ref, ours, x, tol):
    with torch.no_grad():
        ref_post, our_post = ref.encode(x).latent_dist, ours.encode(x)
        assert our_post.mean.shape == ref_post.mean.shape
        assert rel_err(our_post.mean, ref_post.mean) <= tol
        assert rel_err(our_post.logvar, ref_post.logvar) <= tol
        assert rel_err(our_post.std, ref_post.std) <= tol

        ref_z = ref_post.sample(generator=torch.Generator().manual_seed(7))
        our_z = our_post.sample(generator=torch.Generator().manual_seed(7))
        assert rel_err(our_z, ref_z) <= tol
        assert rel_err(ours.decode(ref_z), ref.decode(ref_z).sample) <= tol

        assert rel_err(ours(x), ref(x).sample) <= tol
        ref_out = ref(x, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample
        our_out = ours(x, sample_posterior=True, generator=torch.Generator().manual_seed(3))
        assert our_out.shape == x.shape
        assert rel_err(our_out, ref_out) <= tol


def test_encode_sample_decode_and_forward_match_diffusers_in_float32(pair):
    ref, ours, x = pair
    assert_vae_matches(ref, ours, x, F32_TOL)


def test_encode_sample_decode_and_forward_match_diffusers_in_float64(pair):
    ref, ours, x = pair
    assert_vae_matches(copy.deepcopy(ref).double(), copy.deepcopy(ours).double(), x.double(), F64_TOL)


def test_plain_attention_path_matches_diffusers(pair, monkeypatch):
    ref, ours, x = pair
    monkeypatch.setattr(attention_module, "USE_FUSED_ATTENTION", False)
    assert_vae_matches(ref, ours, x, F32_TOL)


@pytest.mark.parametrize("fused", [True, False])
def test_attention_block_matches_diffusers_with_peaked_softmax(fused, monkeypatch):
    # Weights N(0, 1) make the attention scores large, so the softmax is far from uniform.
    channels, groups = 32, 8
    ref = DiffusersAttention(
        channels,
        heads=1,
        dim_head=channels,
        eps=1e-6,
        norm_num_groups=groups,
        residual_connection=True,
        bias=True,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )
    ours = VAEAttention(channels, groups)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, channels, 6, 5, generator=g)
    monkeypatch.setattr(attention_module, "USE_FUSED_ATTENTION", fused)
    with torch.no_grad():
        assert rel_err(ours(x), ref(x)) <= F32_TOL


def test_legacy_attention_key_names_load(tmp_path):
    # Most Stable Diffusion VAE uploads name the attention layers query/key/value/proj_attn.
    ref, ours = diffusers_and_minidiff(tmp_path, diffusers_kwargs(block_out_channels=[32, 64], layers_per_block=1))
    legacy = {}
    for key, value in load_file(tmp_path / "diffusion_pytorch_model.safetensors").items():
        for new, old in {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}.items():
            key = key.replace(f".{new}.", f".{old}.")
        legacy[key] = value
    assert sum(name in key for key in legacy for name in (".query.", ".key.", ".value.", ".proj_attn.")) == 16
    fresh = AutoencoderKL(ours.config)
    fresh.load_state_dict(legacy, strict=True)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert rel_err(fresh(x), ref(x).sample) <= F32_TOL


def test_full_size_sd_vae_has_diffusers_names_and_shapes():
    with torch.device("meta"):
        ref = DiffusersAutoencoderKL.from_config(SD_VAE)
        ours = AutoencoderKL(VAEConfig.from_dict(SD_VAE))
    ref_shapes = {name: tuple(t.shape) for name, t in ref.state_dict().items()}
    our_shapes = {name: tuple(t.shape) for name, t in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    assert len(our_shapes) == 248


def test_diagonal_gaussian_matches_diffusers_including_clamped_logvar():
    g = torch.Generator().manual_seed(0)
    moments = torch.randn(3, 8, 5, 4, generator=g, dtype=torch.float64) * 3
    moments[0, 4:, 0, 0] = torch.tensor([-50.0, 40.0, -31.0, 21.0])  # logvar outside [-30, 20]
    ref, ours = DiagonalGaussianDistribution(moments), DiagonalGaussian(moments)
    torch.testing.assert_close(ours.logvar, ref.logvar, rtol=0, atol=0)
    torch.testing.assert_close(ours.std, ref.std, rtol=0, atol=0)
    torch.testing.assert_close(ours.mode(), ref.mode(), rtol=0, atol=0)
    torch.testing.assert_close(ours.kl(), ref.kl(), rtol=1e-12, atol=0)
    assert ours.kl().shape == (3,)
    draw = ours.sample(torch.Generator().manual_seed(5))
    torch.testing.assert_close(draw, ref.sample(torch.Generator().manual_seed(5)), rtol=0, atol=0)
    torch.manual_seed(9)
    unseeded = ours.sample()
    torch.manual_seed(9)
    torch.testing.assert_close(unseeded, ref.sample(), rtol=0, atol=0)


def test_posterior_sample_with_a_list_of_generators_matches_diffusers():
    """One generator per batch element: element i of the sample depends on generator i only."""
    moments = torch.randn(3, 8, 5, 4, generator=torch.Generator().manual_seed(0))
    ours = DiagonalGaussian(moments).sample([torch.Generator().manual_seed(s) for s in (4, 5, 6)])
    expected = DiagonalGaussianDistribution(moments).sample([torch.Generator().manual_seed(s) for s in (4, 5, 6)])
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="a list of 2 generators for a batch of 3"):
        DiagonalGaussian(moments).sample([torch.Generator().manual_seed(s) for s in (4, 5)])


def test_config_round_trips_through_diffusers():
    config = VAEConfig.from_dict(SD_VAE)
    assert config == VAEConfig()  # the defaults are Stable Diffusion's VAE
    small = VAEConfig.from_dict(diffusers_kwargs(block_out_channels=[32, 64], shift_factor=0.1, force_upcast=False))
    with torch.device("meta"):
        ref = DiffusersAutoencoderKL.from_config(small.to_dict())
    assert VAEConfig.from_dict(dict(ref.config)) == small


@pytest.mark.parametrize(
    "key, value",
    [
        ("act_fn", "gelu"),
        ("down_block_types", ["AttnDownEncoderBlock2D"] * 4),
        ("up_block_types", ["UpDecoderBlock2D"] * 3),
        ("latents_mean", [0.0] * 4),
        ("norm_type", "spatial"),
    ],
)
def test_config_rejects_unsupported_values_naming_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        VAEConfig.from_dict({**SD_VAE, key: value})


def test_scale_and_unscale_latents():
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        sd = AutoencoderKL(VAEConfig())
        shifted = AutoencoderKL(VAEConfig(scaling_factor=1.5, shift_factor=0.25))
    torch.testing.assert_close(sd.scale_latents(z), z * 0.18215)
    torch.testing.assert_close(shifted.scale_latents(z), (z - 0.25) * 1.5)
    for vae in (sd, shifted):
        torch.testing.assert_close(vae.unscale_latents(vae.scale_latents(z)), z)


def overflowing_fp16_vae():
    """A tiny VAE whose decoder overflows in float16 (conv_in outputs ~1e5 > 65504) but not in float32."""
    vae = AutoencoderKL(VAEConfig(**diffusers_kwargs(block_out_channels=[16, 16], layers_per_block=1))).eval()
    randomize_(vae)
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(5e4)
    return vae.half()


def test_decode_safely_redoes_an_overflowing_fp16_decode_in_fp32_and_warns_once():
    vae = overflowing_fp16_vae()
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = copy.deepcopy(vae).float().decode(z)
        assert not torch.isfinite(vae.decode(z.half())).all()  # the overflow really happens
        with pytest.warns(RuntimeWarning, match="float16"):
            image = vae.decode_safely(z)
        assert image.dtype == torch.float32 and torch.isfinite(image).all()
        torch.testing.assert_close(image, expected, rtol=0, atol=0)
        assert vae.dtype == torch.float16  # the model is back in float16
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(vae.decode_safely(z), expected, rtol=0, atol=0)  # no second warning


def test_decode_safely_keeps_a_finite_fp16_decode():
    vae = overflowing_fp16_vae()
    with torch.no_grad():
        vae.decoder.conv_in.weight.div_(5e4)
        z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            image = vae.decode_safely(z)
        assert image.dtype == torch.float16
        torch.testing.assert_close(image, vae.decode(z.half()), rtol=0, atol=0)


def test_decode_safely_in_float32_decodes_a_float16_vae_in_float32_and_gives_it_back_in_float16():
    """The pipelines pass dtype=float32 where diffusers upcasts (force_upcast): no float16 pass, no warning."""
    vae = overflowing_fp16_vae()
    z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = copy.deepcopy(vae).float().decode(z)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            image = vae.decode_safely(z, dtype=torch.float32)
    assert image.dtype == torch.float32
    torch.testing.assert_close(image, expected, rtol=0, atol=0)
    assert vae.dtype == torch.float16
