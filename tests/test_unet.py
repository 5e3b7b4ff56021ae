"""The U-Net matches diffusers' UNet2DConditionModel key for key and number for number.

Tolerances: max relative error (a - b).abs().max() / b.abs().max() <= 1e-5 in float32 and <= 1e-6 in float64.
Every reference model gets non-trivial random weights first (diffusers zero-initialises conv_out and proj_out).
"""

import json

import pytest
import torch
from diffusers import UNet2DConditionModel as DiffusersUNet
from safetensors.torch import load_file

from minidiff.models.config import UNetConfig
from minidiff.models.transformer import record_cross_attention
from minidiff.models.unet import UNet2DConditionModel
from minidiff.tools.bench.configs import SD15_INPAINT_UNET, SD15_UNET, SD21_UNET, randomize_

F32_TOL, F64_TOL = 1e-5, 1e-6

SD1_LAYOUT = dict(down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
MIXED_3_BLOCKS = dict(
    block_out_channels=[16, 32, 32],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
)

# Small diffusers configs (all with norm_num_groups=8), each with the latent shape it is tested at.
SMALL_CONFIGS = {
    "sd1-style": (dict(block_out_channels=[32, 64], layers_per_block=2, attention_head_dim=4, cross_attention_dim=16,
                       **SD1_LAYOUT), (2, 4, 16, 16)),
    "sd2-style": (dict(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=[2, 4],
                       cross_attention_dim=32, use_linear_projection=True, upcast_attention=True,
                       down_block_types=["CrossAttnDownBlock2D"] * 2, up_block_types=["CrossAttnUpBlock2D"] * 2),
                  (2, 4, 8, 8)),
    "inpaint-9ch": (dict(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=2, cross_attention_dim=16,
                         in_channels=9, **SD1_LAYOUT), (2, 9, 8, 8)),
    "3blocks-mixed": (dict(layers_per_block=1, attention_head_dim=[1, 2, 4], cross_attention_dim=16,
                           transformer_layers_per_block=2, **MIXED_3_BLOCKS), (2, 4, 16, 16)),
    "odd-size-9x14": (dict(layers_per_block=2, attention_head_dim=2, cross_attention_dim=16, center_input_sample=True,
                           freq_shift=1, flip_sin_to_cos=False, **MIXED_3_BLOCKS), (2, 4, 9, 14)),
}
TEXT_TOKENS = 7


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def diffusers_unet(name, randomize=True):
    kwargs, _ = SMALL_CONFIGS[name]
    torch.manual_seed(0)
    model = DiffusersUNet(norm_num_groups=8, sample_size=16, **kwargs).eval()
    return randomize_(model) if randomize else model


def inputs(name, seed=1):
    kwargs, shape = SMALL_CONFIGS[name]
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(shape, generator=g)
    text = torch.randn(shape[0], TEXT_TOKENS, kwargs["cross_attention_dim"], generator=g)
    return sample, text


def load_like_a_checkpoint(reference, tmp_path):
    """save_pretrained the diffusers model, then build minidiff's from its config.json and safetensors file."""
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    ours = UNet2DConditionModel(UNetConfig.from_dict(config))
    ours.load_state_dict(load_file(tmp_path / "diffusion_pytorch_model.safetensors"), strict=True)
    return ours.eval()


@pytest.mark.parametrize("name", list(SMALL_CONFIGS))
def test_unet_matches_diffusers_in_float32_and_float64(name, tmp_path):
    reference = diffusers_unet(name)
    ours = load_like_a_checkpoint(reference, tmp_path)
    sample, text = inputs(name)
    timesteps = [981, 499.5, torch.tensor([3, 700])]  # int, float, (B,) tensor
    with torch.no_grad():
        for t in timesteps:
            expected = reference(sample, t, text).sample
            assert expected.shape == sample.shape[:1] + (4,) + sample.shape[2:]
            assert rel_err(ours(sample, t, text), expected) <= F32_TOL, t
        reference.double(), ours.double()
        expected = reference(sample.double(), 499.5, text.double()).sample
        assert rel_err(ours(sample.double(), 499.5, text.double()), expected) <= F64_TOL


def encoder_shapes(unet, sample, text):
    """The shapes of the U-Net's skip connections and of its mid-block output, from running its encoder."""
    with torch.no_grad():
        temb = unet.time_embedding(torch.zeros(sample.shape[0]))
        h = unet.conv_in(sample)
        skips = [h]
        for block in unet.down_blocks:
            h, block_skips = block(h, temb, text)
            skips += block_skips
        return [s.shape for s in skips], unet.mid_block(h, temb, text).shape


@pytest.mark.parametrize("name", ["sd1-style", "odd-size-9x14"])
def test_additional_residuals_match_diffusers(name):
    reference = diffusers_unet(name)
    ours = UNet2DConditionModel(UNetConfig.from_dict(dict(reference.config))).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    sample, text = inputs(name)
    skip_shapes, mid_shape = encoder_shapes(ours, sample, text)
    g = torch.Generator().manual_seed(2)
    down = tuple(torch.randn(shape, generator=g) for shape in skip_shapes)
    mid = torch.randn(mid_shape, generator=g)
    residuals = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
    with torch.no_grad():
        expected = reference(sample, 10, text, **residuals).sample
        got = ours(sample, 10, text, **residuals)
        plain = ours(sample, 10, text)
    assert rel_err(got, expected) <= F32_TOL
    assert rel_err(got, plain) > 1e-3  # the residuals did change the output
    with pytest.raises(ValueError, match="together"):
        ours(sample, 10, text, down_block_additional_residuals=down)
    with pytest.raises(ValueError, match="skip connections"):
        ours(sample, 10, text, down_block_additional_residuals=down[:-1], mid_block_additional_residual=mid)


@pytest.mark.parametrize("config", [SD15_UNET, SD15_INPAINT_UNET, SD21_UNET], ids=["sd15", "sd15-inpaint", "sd21"])
def test_full_size_parameter_names_and_shapes_equal_diffusers(config):
    with torch.device("meta"):
        reference = DiffusersUNet.from_config(config)
        ours = UNet2DConditionModel(UNetConfig.from_dict(config))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected


def test_config_round_trips_through_diffusers():
    for name in SMALL_CONFIGS:
        reference = diffusers_unet(name, randomize=False)
        config = UNetConfig.from_dict(dict(reference.config))
        rebuilt = DiffusersUNet.from_config(config.to_dict())
        assert UNetConfig.from_dict(dict(rebuilt.config)) == config
    assert UNetConfig.from_dict(SD15_UNET) == UNetConfig()  # the defaults are SD 1.5's
    assert UNetConfig.from_dict(SD21_UNET).heads_per_block() == (5, 10, 20, 20)


@pytest.mark.parametrize(
    "key, value",
    [
        ("class_embed_type", "timestep"),
        ("addition_embed_type", "text_time"),
        ("num_attention_heads", 8),
        ("down_block_types", ["AttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]),
        ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
        ("transformer_layers_per_block", [1, 2, 2, 2]),
        ("attention_head_dim", [8, 8]),
        ("not_a_key", 1),
    ],
)
def test_unsupported_config_values_raise(key, value):
    with pytest.raises(ValueError, match=key):
        UNetConfig.from_dict({**SD15_UNET, key: value})


def test_record_cross_attention_gives_each_layers_probabilities():
    reference = diffusers_unet("3blocks-mixed")
    ours = UNet2DConditionModel(UNetConfig.from_dict(dict(reference.config))).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    sample, text = inputs("3blocks-mixed")
    with torch.no_grad():
        plain = ours(sample, 10, text)
        with record_cross_attention(ours) as maps:
            recorded = ours(sample, 10, text)
        after = ours(sample, 10, text)
    names = [name for name, _ in maps]
    expected_names = [n for n, _ in ours.named_modules() if n.endswith("attn2")]
    assert sorted(names) == sorted(expected_names)
    assert len(names) == (2 + 1 + 2 * 2) * 2  # (down, mid, up) layers, 2 transformer blocks each
    assert names[0] == "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    B, _, H, W = sample.shape
    _, probs = maps[0]
    assert probs.shape == (B, 2, (H // 2) * (W // 2), TEXT_TOKENS)  # 2 heads at half resolution
    for _, probs in maps:
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert rel_err(recorded, plain) <= F32_TOL
    assert torch.equal(after, plain)  # recording is off again
