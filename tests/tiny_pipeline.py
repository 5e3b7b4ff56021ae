"""A tiny random Stable Diffusion, built with diffusers and transformers and saved as a diffusers folder.

Tests and lessons use it as the reference for whole pipelines: every network is small (a U-Net with
block_out_channels (32, 64), a 4-block VAE with the real 8x downsampling, a 3-layer CLIP text encoder of width 64
over CLIP's full vocabulary) and every weight is random and non-trivial (diffusers zero-initialises conv_out and the
ControlNet's zero convolutions, which would hide bugs).

The sizes keep Stable Diffusion 1's conventions, which a single checkpoint file relies on because it stores no
configs: 32 norm groups, 8 attention heads in the U-Net, 64-wide heads in CLIP, CLIP's vocabulary. So the same
model can also be saved and read as a single file.

    tiny = tiny_model()               # built once per process, saved under a temporary folder
    tiny.path                         # diffusers folder: tokenizer, text_encoder, vae, unet (4 ch.), scheduler,
                                      # controlnet
    tiny.inpaint_path                 # the same with a 9-channel inpainting U-Net, without controlnet
    tiny.reference("text_to_image")   # the matching diffusers pipeline over the saved folder
    tiny_v_model()                    # an SD 2.1-style folder (v-prediction, zero terminal SNR; see save_tiny_model)
"""

import atexit
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from minidiff.models.tokenizer import CLIPTokenizer, find_openclip_vocab, load_openclip_bpe
from minidiff.samplers import SAMPLERS

UNET = dict(block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=32, cross_attention_dim=64,
            attention_head_dim=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), sample_size=8)
VAE = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=32, latent_channels=4,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                 set_alpha_to_one=False, steps_offset=1)  # Stable Diffusion 1.5's
CONTROLNET_EMBEDDING = (8, 16, 16, 16)  # three stride-2 convs: condition pictures at 8x the latent size
# SD 2.1's differences, at the tiny size: per-block head counts, linear projections, attention in float32, a gelu
# text encoder padding with "!", and the scheduler of SD 2.1 with zero terminal SNR and trailing spacing (Lin et
# al., 2024), as its "v" checkpoints are best sampled.
SD2_UNET = dict(attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True)
SD2_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                     steps_offset=1, clip_sample=False, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                     timestep_spacing="trailing")


@torch.no_grad()
def randomize_(model, seed):
    """Norm scales 1 + N(0, 0.1²), biases N(0, 0.1²), other weights N(0, 1/fan_in): nothing stays zero."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if p.ndim == 1:
            is_scale = name.endswith("weight") and "norm" in name
            p.copy_(0.1 * noise + (1.0 if is_scale else 0.0))
        else:
            p.copy_(noise / math.sqrt(p[0].numel()))
    return model


def clip_tokenizer():
    """Stable Diffusion 1's tokenizer: CLIP's 49,408-token vocabulary, padding with <|endoftext|>."""
    return CLIPTokenizer(*load_openclip_bpe(find_openclip_vocab()))


def save_tiny_model(folder, inpaint=False, controlnet=True, seed=0, sd2=False):
    """Build the random networks with diffusers/transformers and save them as a diffusers folder; ``sd2``: with
    SD 2.1's differences (``SD2_UNET``, ``SD2_SCHEDULER``, a gelu text encoder, "!" padding)."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    tokenizer = clip_tokenizer()
    if sd2:
        tokenizer = CLIPTokenizer(tokenizer.vocab, tokenizer.merges, pad_token="!")
    tokenizer.save_pretrained(folder / "tokenizer")
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer.vocab), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=1, max_position_embeddings=77, projection_dim=64,
        hidden_act="gelu" if sd2 else "quick_gelu",
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
    )
    torch.manual_seed(seed)
    randomize_(CLIPTextModel(text_config), seed).save_pretrained(folder / "text_encoder")
    randomize_(AutoencoderKL(**VAE), seed + 1).save_pretrained(folder / "vae")
    unet_config = {**UNET, **(SD2_UNET if sd2 else {})}
    unet = randomize_(UNet2DConditionModel(**unet_config, in_channels=9 if inpaint else 4, out_channels=4), seed + 2)
    unet.save_pretrained(folder / "unet")
    if sd2:
        DDIMScheduler(**SD2_SCHEDULER).save_pretrained(folder / "scheduler")
    else:
        PNDMScheduler(**SCHEDULER).save_pretrained(folder / "scheduler")
        # SD 1.5's file also says clip_sample: false. PNDM does not take the key, but DDIM read from this config
        # does: without it diffusers' img2img and inpainting pipelines would clip DDIM's x_0 prediction (its default).
        config_file = folder / "scheduler" / "scheduler_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "clip_sample": False}, indent=2))
    if controlnet:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_EMBEDDING)
        randomize_(net, seed + 3).save_pretrained(folder / "controlnet")
    return folder


# diffusers pipeline class of each task, and the scheduler class of each minidiff sampler
PIPELINES = {
    "text_to_image": "StableDiffusionPipeline",
    "image_to_image": "StableDiffusionImg2ImgPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
    "control": "StableDiffusionControlNetPipeline",
}
SCHEDULERS = {name: sampler.diffusers_class for name, sampler in SAMPLERS.items()}  # read from the sampler table


@lru_cache(maxsize=None)
def reference_parts(path, dtype=torch.float32):
    """The saved networks loaded with diffusers and transformers in ``dtype`` (once per folder and dtype)."""
    import diffusers
    import transformers

    path = Path(path)
    parts = dict(
        tokenizer=transformers.CLIPTokenizer.from_pretrained(path / "tokenizer"),
        text_encoder=transformers.CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype),
        vae=diffusers.AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype),
        unet=diffusers.UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    if (path / "controlnet").is_dir():
        parts["controlnet"] = diffusers.ControlNetModel.from_pretrained(path / "controlnet", torch_dtype=dtype)
    return parts


def reference_pipeline(path, task, sampler="euler", karras=False, dtype=torch.float32):
    """The diffusers pipeline for ``task`` over the saved folder ``path``, with minidiff's ``sampler``, its
    networks in ``dtype``."""
    import diffusers

    parts = dict(reference_parts(str(path), dtype))
    if task != "control":
        parts.pop("controlnet", None)
    config = diffusers.PNDMScheduler.load_config(Path(path) / "scheduler")
    scheduler_class = getattr(diffusers, SCHEDULERS[sampler])
    parts["scheduler"] = scheduler_class.from_config(config, **({"use_karras_sigmas": True} if karras else {}),
                                                     **SAMPLERS[sampler].diffusers_options)
    pipe = getattr(diffusers, PIPELINES[task])(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class TinyModel:
    path: Path
    inpaint_path: Path

    def reference(self, task, sampler="euler", karras=False, inpaint_unet=False, dtype=torch.float32):
        return reference_pipeline(self.inpaint_path if inpaint_unet else self.path, task, sampler, karras, dtype)


@lru_cache(maxsize=None)
def tiny_model():
    """Build and save both tiny models once per process (test files and lessons share them)."""
    root = Path(tempfile.mkdtemp(prefix="minidiff-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return TinyModel(save_tiny_model(root / "tiny-sd"), save_tiny_model(root / "tiny-sd-inpaint", inpaint=True,
                                                                         controlnet=False))


@lru_cache(maxsize=None)
def tiny_v_model():
    """Build and save the SD 2.1-style tiny model once per process (no ControlNet); returns a TinyModel whose
    inpaint_path is None."""
    root = Path(tempfile.mkdtemp(prefix="minidiff-tiny-v-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return TinyModel(save_tiny_model(root / "tiny-sd2", controlnet=False, seed=10, sd2=True), None)
