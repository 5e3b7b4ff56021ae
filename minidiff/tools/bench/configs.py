"""The architectures the benchmark and the tests build, and one way to give them random weights.

The first configs are those of real Stable Diffusion checkpoints, as their ``config.json`` files give them. The
benchmark builds SD 1.5's at full size; the tests build all of them on the ``meta`` device (no memory, no
compute) to check that minidiff's parameter names and shapes equal diffusers' and transformers'. The tiny ones
keep SD 1.5's layout with a few channels, for trying the benchmark itself on a CPU in seconds.
"""

import math

import torch

from minidiff.models.clip import CLIPTextModel
from minidiff.models.config import CLIPTextConfig, UNetConfig, VAEConfig
from minidiff.models.unet import UNet2DConditionModel
from minidiff.models.vae import AutoencoderKL

SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_INPAINT_UNET = {**SD15_UNET, "in_channels": 9}

SD21_UNET = {
    **SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "sample_size": 96,
    "use_linear_projection": True,
    "upcast_attention": True,
    "dual_cross_attention": False,
}

SD_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

SD15_TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

SD21_TEXT_ENCODER = {
    **SD15_TEXT_ENCODER,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "hidden_act": "gelu",
    "projection_dim": 512,
}

SD15_CONTROLNET = {
    "_class_name": "ControlNetModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "class_embed_type": None,
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "global_pool_conditions": False,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "only_cross_attention": False,
    "resnet_time_scale_shift": "default",
    "upcast_attention": False,
    "use_linear_projection": False,
}

TINY_UNET = {**SD15_UNET, "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8,
             "cross_attention_dim": 32, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
TINY_VAE = {**SD_VAE, "block_out_channels": [32, 64], "norm_num_groups": 8, "layers_per_block": 1,
            "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}
TINY_TEXT_ENCODER = {**SD15_TEXT_ENCODER, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                     "num_hidden_layers": 2, "projection_dim": 32}


# minidiff's class for each network the benchmark times, and the class of its config.
MINIDIFF_CLASSES = {"unet": (UNet2DConditionModel, UNetConfig), "vae": (AutoencoderKL, VAEConfig),
                    "text": (CLIPTextModel, CLIPTextConfig)}


def bench_configs(tiny=False):
    """{"unet", "vae", "text": config}: the networks the benchmark times, SD 1.5's or the tiny ones."""
    if tiny:
        return {"unet": TINY_UNET, "vae": TINY_VAE, "text": TINY_TEXT_ENCODER}
    return {"unet": SD15_UNET, "vae": SD_VAE, "text": SD15_TEXT_ENCODER}


@torch.no_grad()
def randomize_(model, seed=0):
    """Norm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2), weights N(0, 1/fan_in), in place; returns ``model``.

    Realistic activation sizes, and no zero-initialised layer (diffusers zero-initialises some) hides an error.
    The numbers are drawn on the model's device, in the order of ``named_parameters``.
    """
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator, device=p.device)
        if p.ndim == 1:  # 1-D weights are norm scales
            p.copy_(0.1 * noise + (1.0 if name.endswith("weight") else 0.0))
        else:
            p.copy_(noise / math.sqrt(p[0].numel()))
    return model


def build_references(device, tiny=False):
    """{"unet", "vae", "text": model}: diffusers' U-Net and VAE and transformers' text encoder, float32, random
    weights (seeds 0, 1, 2), on ``device``."""
    import diffusers
    import transformers

    configs = bench_configs(tiny)
    with torch.device(device):
        models = {"unet": diffusers.UNet2DConditionModel.from_config(configs["unet"]),
                  "vae": diffusers.AutoencoderKL.from_config(configs["vae"]),
                  "text": transformers.CLIPTextModel(transformers.CLIPTextConfig(**configs["text"]))}
    for seed, model in enumerate(models.values()):
        randomize_(model, seed)
        model.eval().requires_grad_(False)
    return models


def minidiff_copy(name, reference, dtype, tiny=False):
    """minidiff's network ``name`` ("unet", "vae", "text") in ``dtype``, on the reference's device, with the
    reference's weights, key for key. Each call builds a new model."""
    model_class, config_class = MINIDIFF_CLASSES[name]
    with torch.device("meta"):
        ours = model_class(config_class.from_dict(bench_configs(tiny)[name]))
    ours.to_empty(device=next(reference.parameters()).device).to(dtype)
    state = reference.state_dict()
    if name == "text":  # transformers 5 names the weights without the "text_model." prefix
        state = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in state.items()}
        state.pop("text_model.embeddings.position_ids", None)
    ours.load_state_dict(state, strict=True)
    return ours.eval().requires_grad_(False)
