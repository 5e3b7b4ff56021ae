"""Strict state-dict loading: every mismatch is one CheckpointError naming the file, the keys and a likely cause."""

import re

import pytest
import torch

from minidiff.loading.state_dict import CheckpointError, load_state_dict_strict
from minidiff.models.clip import CLIPTextModel
from minidiff.models.config import CLIPTextConfig, UNetConfig
from minidiff.models.unet import UNet2DConditionModel
from minidiff.tools.bench.configs import SD15_INPAINT_UNET, SD15_TEXT_ENCODER, SD15_UNET, SD21_TEXT_ENCODER, SD21_UNET


def on_meta(model_class, config_class, config):
    with torch.device("meta"):
        return model_class(config_class.from_dict(config))


def tiny_text_encoder(seed=0):
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                        num_attention_heads=2))


def test_matching_state_dict_loads_every_value():
    source, target = tiny_text_encoder(0), tiny_text_encoder(1)
    assert load_state_dict_strict(target, source.state_dict(), "te.safetensors") is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_assign_fills_a_meta_network_without_copying():
    source = tiny_text_encoder()
    with torch.device("meta"):
        target = CLIPTextModel(source.config)
    state_dict = source.state_dict()
    load_state_dict_strict(target, state_dict, "te.safetensors", assign=True)
    key = "text_model.final_layer_norm.weight"
    assert target.state_dict()[key].data_ptr() == state_dict[key].data_ptr()


def test_only_listed_harmless_keys_are_dropped():
    source, target = tiny_text_encoder(0), tiny_text_encoder(1)
    state_dict = {**source.state_dict(), "text_model.embeddings.position_ids": torch.arange(77)[None]}
    load_state_dict_strict(target, state_dict, "te.safetensors")
    state_dict["text_model.embeddings.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"te.safetensors: .*1 unexpected keys: text_model.embeddings.extra\."):
        load_state_dict_strict(target, state_dict, "te.safetensors")


def test_missing_keys_are_listed_and_counted():
    source, target = tiny_text_encoder(0), tiny_text_encoder(1)
    state_dict = {k: v for k, v in source.state_dict().items() if "layers.1." not in k}
    with pytest.raises(CheckpointError) as error:
        load_state_dict_strict(target, state_dict, "te.safetensors")
    message = str(error.value)
    assert message.startswith("te.safetensors: the weights do not fit CLIPTextModel. Check that the config.json")
    assert "Found 16 missing keys: " in message
    assert "... and 6 more" in message
    assert len(re.findall(r"text_model\.encoder\.layers\.1\.", message)) == 10  # the first ten, then a count


@pytest.mark.parametrize(
    "file_config, network_config, expected",
    [
        (SD21_UNET, SD15_UNET, "looks like an SD 2.x U-Net (1024-wide OpenCLIP text features) but the config "
                               "describes an SD 1.x U-Net"),
        (SD15_INPAINT_UNET, SD15_UNET, "looks like an inpainting U-Net (9 input channels) but the config describes "
                                       "a text-to-image U-Net"),
    ],
)
def test_sd_family_mismatch_is_named(file_config, network_config, expected):
    file_sd = on_meta(UNet2DConditionModel, UNetConfig, file_config).state_dict()
    network = on_meta(UNet2DConditionModel, UNetConfig, network_config)
    with pytest.raises(CheckpointError) as error:
        load_state_dict_strict(network, file_sd, "unet/diffusion_pytorch_model.safetensors")
    message = str(error.value)
    assert message.startswith("unet/diffusion_pytorch_model.safetensors: the weights do not fit UNet2DConditionModel")
    assert "shape mismatches: " in message and expected in message


def test_text_encoder_family_and_original_layout_hints():
    file_sd = on_meta(CLIPTextModel, CLIPTextConfig, SD21_TEXT_ENCODER).state_dict()
    network = on_meta(CLIPTextModel, CLIPTextConfig, SD15_TEXT_ENCODER)
    with pytest.raises(CheckpointError, match="SD 2.x text encoder .* but the config describes an SD 1.x text encoder"):
        load_state_dict_strict(network, file_sd, "text_encoder/model.safetensors")

    original = {"model.diffusion_model." + k: v for k, v in network.state_dict().items()}
    with pytest.raises(CheckpointError, match="original .* single-file names.*python -m minidiff convert"):
        load_state_dict_strict(network, original, "v1-5.safetensors")
