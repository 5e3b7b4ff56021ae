"""The networks' configs read the config.json files diffusers and transformers write, by one policy: metadata is
skipped, fields are read, variant switches must be off, listed harmless keys are ignored, and any other key raises."""

import json

import diffusers
import pytest
import transformers

from minidiff.models.config import CLIPTextConfig, ControlNetConfig, UNetConfig, VAEConfig

TINY_ENCODER = dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    layers_per_block=1, norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4)
TINY_TEXT = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                 hidden_act="gelu", bos_token_id=98, eos_token_id=99, pad_token_id=1, projection_dim=24)

# Stable Diffusion 1.5's text_encoder/config.json, as transformers 4.22 wrote it.
SD15_TEXT_ENCODER_FILE = {
    "_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"], "attention_dropout": 0.0,
    "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "torch_dtype": "float32",
    "transformers_version": "4.22.0.dev0", "vocab_size": 49408,
}


def saved_config(model, folder):
    """The config.json that ``model.save_pretrained`` writes, as a dict."""
    model.save_pretrained(folder)
    return json.loads((folder / "config.json").read_text())


def written_config(network, folder):
    """(minidiff config class, config.json written by diffusers or transformers) for a tiny network."""
    if network == "unet":
        unet = diffusers.UNet2DConditionModel(**TINY_ENCODER, up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        return UNetConfig, saved_config(unet, folder)
    if network == "controlnet":
        controlnet = diffusers.ControlNetModel(**TINY_ENCODER, conditioning_embedding_out_channels=(8, 16))
        return ControlNetConfig, saved_config(controlnet, folder)
    if network == "vae":
        vae = diffusers.AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                      up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8)
        return VAEConfig, saved_config(vae, folder)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_TEXT))
    return CLIPTextConfig, saved_config(text_encoder, folder)


@pytest.mark.parametrize("network", ["unet", "controlnet", "vae", "text_encoder"])
def test_a_written_config_loads_and_one_unknown_key_more_raises_naming_it(network, tmp_path):
    config_class, written = written_config(network, tmp_path)
    assert written["_diffusers_version" if network != "text_encoder" else "transformers_version"]
    config = config_class.from_dict({**written, "_name_or_path": str(tmp_path)})
    assert config_class.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown key 'use_new_feature'\. Supported keys: \w"):
        config_class.from_dict({**written, "use_new_feature": True})


def test_text_encoder_config_reads_every_key_transformers_writes():
    full = transformers.CLIPTextConfig(**TINY_TEXT).to_dict()  # every attribute, not only those that differ
    assert {"id2label", "return_dict", "chunk_size_feed_forward", "dtype", "initializer_range"} <= full.keys()
    config = CLIPTextConfig.from_dict(full)
    assert config == CLIPTextConfig(**TINY_TEXT)
    assert CLIPTextConfig.from_dict(SD15_TEXT_ENCODER_FILE) == CLIPTextConfig()  # the defaults are SD 1.5's


@pytest.mark.parametrize("key", ["dropout", "attention_dropout"])
def test_text_encoder_config_accepts_dropout_only_when_off(key):
    assert CLIPTextConfig.from_dict({**SD15_TEXT_ENCODER_FILE, key: 0.0}) == CLIPTextConfig()
    with pytest.raises(ValueError, match=rf"{key}=0\.1 is not supported.*{key}=0\.0"):
        CLIPTextConfig.from_dict({**SD15_TEXT_ENCODER_FILE, key: 0.1})
