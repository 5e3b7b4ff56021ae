"""The ControlNet matches diffusers' ControlNetModel key for key and number for number, and starts harmless.

Tolerances: max relative error <= 1e-5 in float32 and <= 1e-6 in float64, on every returned residual. Reference
models get random weights everywhere first, zero convs included (diffusers zero-initialises them).
"""

import json

import pytest
import torch
from diffusers import ControlNetModel as DiffusersControlNet
from diffusers import UNet2DConditionModel as DiffusersUNet
from safetensors.torch import load_file
from test_unet import rel_err

from minidiff.models.config import ControlNetConfig, UNetConfig
from minidiff.models.controlnet import ControlNetModel
from minidiff.models.unet import UNet2DConditionModel
from minidiff.tools.bench.configs import SD15_CONTROLNET, randomize_

F32_TOL, F64_TOL = 1e-5, 1e-6

# Small diffusers configs, each with its latent shape; the condition image is 2^(len(cond widths) - 1) times larger.
SMALL_CONFIGS = {
    "sd1-style": (dict(block_out_channels=[32, 64], layers_per_block=2, attention_head_dim=4, cross_attention_dim=16,
                       down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                       conditioning_embedding_out_channels=[8, 16, 16]), (2, 4, 8, 8)),
    "sd2-style-bgr-odd": (dict(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=8,
                               num_attention_heads=[2, 4], cross_attention_dim=32, use_linear_projection=True,
                               upcast_attention=True, controlnet_conditioning_channel_order="bgr",
                               down_block_types=["CrossAttnDownBlock2D"] * 2,
                               conditioning_embedding_out_channels=[8, 16]), (2, 4, 5, 7)),
}
SMALL_UNET = dict(block_out_channels=[32, 64], layers_per_block=2, attention_head_dim=4, cross_attention_dim=16,
                  norm_num_groups=8, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
COND_WIDTHS = (8, 16, 16)


def inputs(latent_shape, cross_attention_dim, cond_widths, seed=1):
    g = torch.Generator().manual_seed(seed)
    B, _, h, w = latent_shape
    factor = 2 ** (len(cond_widths) - 1)
    sample = torch.randn(latent_shape, generator=g)
    text = torch.randn(B, 7, cross_attention_dim, generator=g)
    cond = torch.rand(B, 3, h * factor, w * factor, generator=g)  # an image in [0, 1]
    return sample, text, cond


@pytest.mark.parametrize("name", list(SMALL_CONFIGS))
def test_controlnet_matches_diffusers(name, tmp_path):
    kwargs, shape = SMALL_CONFIGS[name]
    torch.manual_seed(0)
    reference = randomize_(DiffusersControlNet(norm_num_groups=8, **kwargs)).eval()
    reference.save_pretrained(tmp_path)
    ours = ControlNetModel(ControlNetConfig.from_dict(json.loads((tmp_path / "config.json").read_text())))
    ours.load_state_dict(load_file(tmp_path / "diffusion_pytorch_model.safetensors"), strict=True)
    ours.eval()
    sample, text, cond = inputs(shape, kwargs["cross_attention_dim"], kwargs["conditioning_embedding_out_channels"])
    cases = [(torch.float32, 999, 1.0, F32_TOL), (torch.float32, 250.5, 0.5, F32_TOL),
             (torch.float64, 250.5, 0.5, F64_TOL)]  # (dtype, timestep, conditioning_scale, tolerance)
    with torch.no_grad():
        for dtype, t, scale, tol in cases:
            reference.to(dtype), ours.to(dtype)
            args = (sample.to(dtype), t, text.to(dtype), cond.to(dtype), scale)
            down, mid = ours(*args)
            expected_down, expected_mid = reference(*args, return_dict=False)
            assert len(down) == len(expected_down) == len(ours.controlnet_down_blocks)
            for got, expected in zip(down + (mid,), list(expected_down) + [expected_mid]):
                assert got.shape == expected.shape
                assert rel_err(got, expected) <= tol, (dtype, t, scale)


def small_unets():
    """A diffusers U-Net with random weights and minidiff's copy of it."""
    torch.manual_seed(0)
    reference = randomize_(DiffusersUNet(**SMALL_UNET)).eval()
    ours = UNet2DConditionModel(UNetConfig.from_dict(dict(reference.config))).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def test_fresh_controlnet_from_unet_leaves_the_unet_output_unchanged():
    _, unet = small_unets()
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=COND_WIDTHS).eval()
    sample, text, cond = inputs((2, 4, 8, 8), 16, COND_WIDTHS)
    with torch.no_grad():
        down, mid = controlnet(sample, 500, text, cond)
        controlled = unet(sample, 500, text, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        plain = unet(sample, 500, text)
        assert all(torch.count_nonzero(r) == 0 for r in down + (mid,))
        assert torch.equal(controlled, plain)
        # Once the zero convs are trained away from zero, the ControlNet does steer the U-Net.
        randomize_(controlnet)
        down, mid = controlnet(sample, 500, text, cond)
        controlled = unet(sample, 500, text, down_block_additional_residuals=down, mid_block_additional_residual=mid)
    assert rel_err(controlled, plain) > 1e-3


def test_from_unet_copies_the_same_weights_as_diffusers():
    reference_unet, unet = small_unets()
    reference = DiffusersControlNet.from_unet(reference_unet, conditioning_embedding_out_channels=COND_WIDTHS)
    ours = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=COND_WIDTHS)
    assert ControlNetConfig.from_dict(dict(reference.config)) == ours.config
    expected, got = reference.state_dict(), ours.state_dict()
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in expected.items()}
    # Everything but the condition embedding's randomly initialised first convs is deterministic: copied or zero.
    random_init = ("controlnet_cond_embedding.conv_in.", "controlnet_cond_embedding.blocks.")
    compared = [k for k in expected if not k.startswith(random_init)]
    assert any(k.startswith("controlnet_down_blocks.") for k in compared)
    assert any(k.startswith("controlnet_cond_embedding.conv_out.") for k in compared)
    for key in compared:
        assert torch.equal(got[key], expected[key]), key


def test_full_size_sd15_controlnet_parameter_names_and_shapes_equal_diffusers():
    with torch.device("meta"):
        reference = DiffusersControlNet.from_config(SD15_CONTROLNET)
        ours = ControlNetModel(ControlNetConfig.from_dict(SD15_CONTROLNET))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected


def test_config_round_trips_through_diffusers():
    assert ControlNetConfig.from_dict(SD15_CONTROLNET) == ControlNetConfig()  # the defaults are SD 1.5's
    for kwargs, _ in SMALL_CONFIGS.values():
        config = ControlNetConfig.from_dict(dict(DiffusersControlNet(norm_num_groups=8, **kwargs).config))
        rebuilt = DiffusersControlNet.from_config(config.to_dict())
        assert ControlNetConfig.from_dict(dict(rebuilt.config)) == config
    assert config.heads_per_block() == (2, 4)  # num_attention_heads, when given, wins over attention_head_dim


@pytest.mark.parametrize(
    "key, value",
    [("global_pool_conditions", True), ("class_embed_type", "timestep"),
     ("controlnet_conditioning_channel_order", "grb"), ("not_a_key", 1)],
)
def test_unsupported_config_values_raise(key, value):
    with pytest.raises(ValueError, match=key):
        ControlNetConfig.from_dict({**SD15_CONTROLNET, key: value})
