"""A Latent Consistency Model's U-Net (time_cond_proj_dim set) matches diffusers' with the guidance scale embedded.

The guidance scale w enters as guidance_scale_embedding(w, time_cond_proj_dim), projected by
time_embedding.cond_proj onto the sinusoidal timestep embedding before linear_1. Tolerances as in test_unet.py.
"""

import json

import pytest
import torch
from diffusers import LatentConsistencyModelPipeline
from diffusers import UNet2DConditionModel as DiffusersUNet
from test_unet import F32_TOL, F64_TOL, rel_err

from minidiff.loading.components import load_network_folder
from minidiff.loading.single_file import join_original_checkpoint
from minidiff.loading.state_dict import CheckpointError
from minidiff.models.config import UNetConfig
from minidiff.models.embeddings import guidance_scale_embedding
from minidiff.models.unet import UNet2DConditionModel
from minidiff.tools.bench.configs import SD15_TEXT_ENCODER, SD15_UNET, SD_VAE, randomize_

ONE_THREAD = True
COND_DIM = 8
TINY_LCM = dict(block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=2, cross_attention_dim=16,
                norm_num_groups=8, sample_size=8, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], time_cond_proj_dim=COND_DIM)


def reference_embedding(w, dim):
    """diffusers' LatentConsistencyModelPipeline.get_guidance_scale_embedding (it does not use self)."""
    return LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)


def tiny_lcm_unet(**overrides):
    torch.manual_seed(0)
    return randomize_(DiffusersUNet(**{**TINY_LCM, **overrides})).eval()


def inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 5, TINY_LCM["cross_attention_dim"], generator=g)


@pytest.fixture(scope="module")
def saved_lcm(tmp_path_factory):
    """(diffusers LCM U-Net, the folder its save_pretrained wrote)."""
    folder = tmp_path_factory.mktemp("lcm_unet")
    reference = tiny_lcm_unet()
    reference.save_pretrained(folder)
    return reference, folder


def test_config_json_time_cond_proj_dim_is_read_and_a_missing_one_means_none(saved_lcm):
    _, folder = saved_lcm
    written = json.loads((folder / "config.json").read_text())
    assert written["time_cond_proj_dim"] == COND_DIM
    assert UNetConfig.from_dict(written).time_cond_proj_dim == COND_DIM
    without = {k: v for k, v in written.items() if k != "time_cond_proj_dim"}
    assert UNetConfig.from_dict(without).time_cond_proj_dim is None
    assert UNet2DConditionModel(UNetConfig.from_dict(without)).time_embedding.cond_proj is None
    rebuilt = DiffusersUNet.from_config(UNetConfig.from_dict(written).to_dict())  # to_dict writes it for diffusers
    assert rebuilt.config.time_cond_proj_dim == COND_DIM


def test_lcm_unet_loads_strictly_on_meta_and_matches_diffusers_with_timestep_cond(saved_lcm):
    reference, folder = saved_lcm
    ours = load_network_folder(folder, "unet", torch.float32, "cpu", allow_pickle=False, variant=None)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    assert tuple(ours.time_embedding.cond_proj.weight.shape) == (TINY_LCM["block_out_channels"][0], COND_DIM)
    assert ours.time_embedding.cond_proj.bias is None
    torch.testing.assert_close(ours.time_embedding.cond_proj.weight, reference.time_embedding.cond_proj.weight)

    sample, text = inputs()
    w_embedding = guidance_scale_embedding(torch.tensor([7.5 - 1, 3.0 - 1]), COND_DIM)  # (B, COND_DIM)
    with torch.no_grad():
        for t in (999, 259.5, torch.tensor([19, 500])):
            expected = reference(sample, t, text, timestep_cond=w_embedding).sample
            got = ours(sample, t, text, timestep_cond=w_embedding)
            assert rel_err(got, expected) <= F32_TOL, t
        unconditioned = ours(sample, 259.5, text)  # diffusers also allows leaving timestep_cond out
        assert rel_err(unconditioned, reference(sample, 259.5, text).sample) <= F32_TOL
        assert rel_err(ours(sample, 259.5, text, timestep_cond=w_embedding), unconditioned) > 1e-3  # it matters

        reference.double(), ours.double()
        expected = reference(sample.double(), 259.5, text.double(), timestep_cond=w_embedding.double()).sample
        got = ours(sample.double(), 259.5, text.double(), timestep_cond=w_embedding)  # cast to the model's dtype
        assert rel_err(got, expected) <= F64_TOL
        reference.float()


def test_weights_with_and_without_cond_proj_do_not_load_into_the_other_kind(saved_lcm):
    reference, _ = saved_lcm
    plain = UNet2DConditionModel(UNetConfig.from_dict({**dict(reference.config), "time_cond_proj_dim": None}))
    with pytest.raises(RuntimeError, match="time_embedding.cond_proj.weight"):
        plain.load_state_dict(reference.state_dict(), strict=True)
    lcm = UNet2DConditionModel(UNetConfig.from_dict(dict(reference.config)))
    with pytest.raises(RuntimeError, match="time_embedding.cond_proj.weight"):
        lcm.load_state_dict(plain.state_dict(), strict=True)


def test_full_size_lcm_parameter_names_and_shapes_equal_diffusers():
    config = {**SD15_UNET, "time_cond_proj_dim": 256}  # LCM_Dreamshaper_v7's U-Net: SD 1.5's, with cond_proj
    with torch.device("meta"):
        reference = DiffusersUNet.from_config(config)
        ours = UNet2DConditionModel(UNetConfig.from_dict(config))
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()
    }
    assert tuple(ours.state_dict()["time_embedding.cond_proj.weight"].shape) == (320, 256)


def test_single_file_layout_names_cond_proj_instead_of_dropping_it():
    config = {**SD15_UNET, "time_cond_proj_dim": 256}
    with torch.device("meta"):
        unet = UNet2DConditionModel(UNetConfig.from_dict(config))
    configs = {"unet": config, "vae": SD_VAE, "text_encoder": SD15_TEXT_ENCODER}
    with pytest.raises(CheckpointError, match=r"1 keys .*unet: time_embedding\.cond_proj\.weight"):
        join_original_checkpoint({"unet": unet.state_dict()}, "sd1", configs)


@pytest.mark.parametrize("dim", [4, 5, 8, 9, 256, 257, 512])
def test_guidance_scale_embedding_equals_diffusers(dim):
    w = torch.tensor([0.0, 0.5, 1.0, 3.5, 6.5, 7.0, 14.5])  # guidance scales 1 .. 15.5, less one
    expected = reference_embedding(w, dim)
    got = guidance_scale_embedding(w, dim)
    assert got.shape == (len(w), dim) and got.dtype == torch.float32
    assert torch.equal(got, expected)
    if dim % 2:
        assert torch.equal(got[:, -1], torch.zeros(len(w)))
    assert torch.equal(guidance_scale_embedding(w.double(), dim), reference_embedding(w.double(), dim))


def test_guidance_scale_embedding_takes_a_number_or_a_0d_tensor():
    expected = reference_embedding(torch.tensor([7.5 - 1]), 16)
    assert torch.equal(guidance_scale_embedding(7.5 - 1, 16), expected)
    assert torch.equal(guidance_scale_embedding(torch.tensor(7.5 - 1), 16), expected)
    half = 8
    torch.testing.assert_close(expected[0, :half] ** 2 + expected[0, half:] ** 2, torch.ones(half))  # sin² + cos²


def test_guidance_scale_embedding_rejects_too_small_dims_and_2d_scales():
    with pytest.raises(ValueError, match="dim >= 4"):
        guidance_scale_embedding(torch.tensor([1.0]), 3)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        guidance_scale_embedding(torch.ones(2, 1), 8)


def test_timestep_cond_is_rejected_by_a_plain_unet_and_checked_for_shape(saved_lcm):
    reference, _ = saved_lcm
    sample, text = inputs()
    plain = UNet2DConditionModel(UNetConfig.from_dict({**dict(reference.config), "time_cond_proj_dim": None}))
    with pytest.raises(ValueError, match="no time_cond_proj_dim") as error:
        plain(sample, 10, text, timestep_cond=torch.zeros(2, COND_DIM))
    assert "\n" not in str(error.value)
    lcm = UNet2DConditionModel(UNetConfig.from_dict(dict(reference.config)))
    for shape in [(2, COND_DIM + 1), (1, COND_DIM), (COND_DIM,)]:
        with pytest.raises(ValueError, match=r"timestep_cond must have shape .*\(2, 8\)") as error:
            lcm(sample, 10, text, timestep_cond=torch.zeros(shape))
        assert "\n" not in str(error.value)
