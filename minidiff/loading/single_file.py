"""The original single-file checkpoint layout (CompVis / A1111 ``.ckpt``/``.safetensors``) <-> diffusers names.

A single-file Stable Diffusion checkpoint stores the three networks side by side, under the module names of
the original CompVis code:

    model.diffusion_model.*   the U-Net         input_blocks / middle_block / output_blocks, time_embed, out
    first_stage_model.*       the VAE           encoder.down.{i}.block.{j}, mid.attn_1, decoder.up.{i}, ...
    cond_stage_model.*        the text encoder  SD 1.x: transformer.text_model.* (OpenAI CLIP, already HF names)
                                                SD 2.x: model.* (OpenCLIP: resblocks, fused in_proj q/k/v)

minidiff's networks use diffusers' names. ``rename_table(configs, kind)`` builds ONE explicit table of
(original module, component, diffusers module) rows from the block counts in the configs, and both directions
read it: ``split_original_checkpoint`` (single file -> diffusers state dicts) and ``join_original_checkpoint``
(diffusers state dicts -> single file). A row maps a module prefix, so every parameter under it follows:
``model.diffusion_model.input_blocks.1.1`` -> ``down_blocks.0.attentions.0`` carries the whole transformer
(``...transformer_blocks.0.attn1.to_q.weight``), whose inner names the two codebases share.

A few rows of SD 1.5's table (304 rows in all; the U-Net's prefix model.diffusion_model. left out):

    original                          component  diffusers                              how
    time_embed.0                      unet       time_embedding.linear_1                same
    input_blocks.0.0                  unet       conv_in                                same
    input_blocks.1.0.in_layers.2      unet       down_blocks.0.resnets.0.conv1          same
    input_blocks.1.1                  unet       down_blocks.0.attentions.0             same
    output_blocks.2.1.conv            unet       up_blocks.0.upsamplers.0.conv          same
    first_stage_model.encoder.mid.attn_1.q    vae    encoder.mid_block.attentions.0.to_q    conv1x1

Two kinds of row also change the tensor, not just the name:
  * ``conv1x1``: the VAE's mid-block attention q/k/v/proj_out are 1x1 convolutions in the original, (C, C, 1, 1),
    and Linear layers in diffusers, (C, C): the same numbers, reshaped.
  * ``qkv``: OpenCLIP stores the q, k and v projections as one ``in_proj_weight`` (3D, D), stacked along dim 0.

Only keys in ORIGINAL_KEYS_NOT_USED are ever left out, each with its reason; any other key that no row maps is
an error. ``infer_configs`` reads the architecture (SD 1.x or 2.x, inpainting or not, block counts, widths)
from the tensor shapes of a single file.
"""

import re
import warnings
from dataclasses import dataclass

import torch

from minidiff.loading.state_dict import KNOWN_HARMLESS_KEYS, CheckpointError, listed

UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model."
SD1_TEXT, SD2_TEXT = TEXT + "transformer.", TEXT + "model."

# Sub-module names inside one residual block: original -> diffusers.
UNET_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
# The VAE's single-head attention; q, k, v and proj_out are 1x1 convolutions in the original.
VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
# One OpenCLIP transformer layer (besides the fused in_proj).
OPENCLIP_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}

# Keys of original files that hold nothing minidiff's networks use, and why. Everything else must map.
ORIGINAL_KEYS_NOT_USED = {
    **{
        name: "the training noise schedule, which the scheduler config recomputes"
        for name in (
            "betas alphas_cumprod alphas_cumprod_prev sqrt_alphas_cumprod sqrt_one_minus_alphas_cumprod "
            "log_one_minus_alphas_cumprod sqrt_recip_alphas_cumprod sqrt_recipm1_alphas_cumprod posterior_variance "
            "posterior_log_variance_clipped posterior_mean_coef1 posterior_mean_coef2 logvar"
        ).split()
    },
    SD2_TEXT + "text_projection": "OpenCLIP's projection into the image-text space, used only in CLIP training",
    SD2_TEXT + "logit_scale": "OpenCLIP's contrastive temperature, used only in CLIP training",
}
# Training checkpoints hold a second copy of the U-Net (its exponential moving average) under model_ema.*;
# "emaonly" files keep just the two counters below. minidiff uses model.diffusion_model.* and skips model_ema.*.
EMA_PREFIX = "model_ema."
EMA_COUNTERS = ("model_ema.decay", "model_ema.num_updates")

# OpenCLIP ViT-H/14 has 24 blocks; SD 2.x conditions on the output of the 23rd (the penultimate), so the
# diffusers text encoder of SD 2.x has 23 layers and the 24th block's weights are never used. minidiff
# drops block N exactly when the file holds N + 1 blocks and the config says N layers. Files minidiff writes
# hold only the N used blocks (as diffusers' exporter's do); A1111 reads them, as it also stops at block 23.
OPENCLIP_FULL_DEPTH = 24


@dataclass(frozen=True)
class Rename:
    """One row: a module (or key) of the original file <-> a module (or key) of one diffusers component.

    how: "same" (rename only), "conv1x1" (original (C, C, 1, 1) <-> diffusers (C, C)), or "qkv" (one original
    key <-> a tuple of three diffusers keys, stacked along dim 0).
    """

    original: str
    component: str
    diffusers: str | tuple
    how: str = "same"


def _block(rows, component, original, diffusers, names, how="same"):
    """Rows for the named sub-modules of one block: original.{a} <-> diffusers.{names[a]}."""
    rows += [Rename(f"{original}.{a}", component, f"{diffusers}.{b}", how) for a, b in names.items()]


def unet_rows(config):
    """Rename rows of the U-Net. The original counts blocks flat (input_blocks.0..11); diffusers nests them."""
    rows = [
        Rename(UNET + "time_embed.0", "unet", "time_embedding.linear_1"),
        Rename(UNET + "time_embed.2", "unet", "time_embedding.linear_2"),
        Rename(UNET + "input_blocks.0.0", "unet", "conv_in"),
        Rename(UNET + "out.0", "unet", "conv_norm_out"),
        Rename(UNET + "out.2", "unet", "conv_out"),
    ]
    levels, n = len(config["block_out_channels"]), config["layers_per_block"]
    i = 1  # input_blocks.0 is conv_in
    for b, block_type in enumerate(config["down_block_types"]):
        for j in range(n):
            _block(rows, "unet", f"{UNET}input_blocks.{i}.0", f"down_blocks.{b}.resnets.{j}", UNET_RESNET)
            if block_type.startswith("CrossAttn"):
                rows.append(Rename(f"{UNET}input_blocks.{i}.1", "unet", f"down_blocks.{b}.attentions.{j}"))
            i += 1
        if b < levels - 1:
            rows.append(Rename(f"{UNET}input_blocks.{i}.0.op", "unet", f"down_blocks.{b}.downsamplers.0.conv"))
            i += 1
    _block(rows, "unet", UNET + "middle_block.0", "mid_block.resnets.0", UNET_RESNET)
    rows.append(Rename(UNET + "middle_block.1", "unet", "mid_block.attentions.0"))
    _block(rows, "unet", UNET + "middle_block.2", "mid_block.resnets.1", UNET_RESNET)
    i = 0
    for b, block_type in enumerate(config["up_block_types"]):
        attn = block_type.startswith("CrossAttn")
        for j in range(n + 1):  # up blocks have one more resnet: it takes the skip of the downsampler
            _block(rows, "unet", f"{UNET}output_blocks.{i}.0", f"up_blocks.{b}.resnets.{j}", UNET_RESNET)
            if attn:
                rows.append(Rename(f"{UNET}output_blocks.{i}.1", "unet", f"up_blocks.{b}.attentions.{j}"))
            if j == n and b < levels - 1:  # the upsampler follows the resnet (and attention) in the last layer
                up = f"{UNET}output_blocks.{i}.{2 if attn else 1}.conv"
                rows.append(Rename(up, "unet", f"up_blocks.{b}.upsamplers.0.conv"))
            i += 1
    return rows


def vae_rows(config):
    """Rename rows of the VAE. The original decoder numbers its levels from the bottom (up.3 runs first)."""
    rows = [Rename(VAE + name, "vae", name) for name in ("quant_conv", "post_quant_conv")]
    levels, n = len(config["block_out_channels"]), config["layers_per_block"]
    for side in ("encoder", "decoder"):
        rows += [Rename(f"{VAE}{side}.{name}", "vae", f"{side}.{name}") for name in ("conv_in", "conv_out")]
        rows.append(Rename(f"{VAE}{side}.norm_out", "vae", f"{side}.conv_norm_out"))
        for k in (0, 1):
            _block(rows, "vae", f"{VAE}{side}.mid.block_{k + 1}", f"{side}.mid_block.resnets.{k}", VAE_RESNET)
        attn_original, attn_diffusers = f"{VAE}{side}.mid.attn_1", f"{side}.mid_block.attentions.0"
        rows.append(Rename(f"{attn_original}.norm", "vae", f"{attn_diffusers}.group_norm"))
        linears = {a: b for a, b in VAE_ATTENTION.items() if a != "norm"}
        _block(rows, "vae", attn_original, attn_diffusers, linears, "conv1x1")
    for b in range(levels):
        down, up = f"{VAE}encoder.down.{b}", f"{VAE}decoder.up.{levels - 1 - b}"  # up.{levels - 1} runs first
        for j in range(n):
            _block(rows, "vae", f"{down}.block.{j}", f"encoder.down_blocks.{b}.resnets.{j}", VAE_RESNET)
        for j in range(n + 1):
            _block(rows, "vae", f"{up}.block.{j}", f"decoder.up_blocks.{b}.resnets.{j}", VAE_RESNET)
        if b < levels - 1:
            rows.append(Rename(f"{down}.downsample.conv", "vae", f"encoder.down_blocks.{b}.downsamplers.0.conv"))
            rows.append(Rename(f"{up}.upsample.conv", "vae", f"decoder.up_blocks.{b}.upsamplers.0.conv"))
    return rows


def text_rows(config, kind):
    """Rename rows of the text encoder: 'sd1' (OpenAI CLIP, HF names already) or 'sd2' (OpenCLIP)."""
    if kind == "sd1":
        return [Rename(SD1_TEXT + "text_model", "text_encoder", "text_model")]
    rows = [
        Rename(SD2_TEXT + "token_embedding", "text_encoder", "text_model.embeddings.token_embedding"),
        Rename(SD2_TEXT + "positional_embedding", "text_encoder", "text_model.embeddings.position_embedding.weight"),
        Rename(SD2_TEXT + "ln_final", "text_encoder", "text_model.final_layer_norm"),
    ]
    for i in range(config["num_hidden_layers"]):
        original, diffusers = f"{SD2_TEXT}transformer.resblocks.{i}", f"text_model.encoder.layers.{i}"
        _block(rows, "text_encoder", original, diffusers, OPENCLIP_LAYER)
        for param in ("weight", "bias"):
            qkv = tuple(f"{diffusers}.self_attn.{p}_proj.{param}" for p in "qkv")
            rows.append(Rename(f"{original}.attn.in_proj_{param}", "text_encoder", qkv, "qkv"))
    return rows


def rename_table(configs, kind):
    """The full table for {"unet": config, "vae": config, "text_encoder": config} (diffusers config dicts)."""
    if kind not in ("sd1", "sd2"):
        raise ValueError(f"kind must be 'sd1' (OpenAI CLIP text encoder) or 'sd2' (OpenCLIP), found {kind!r}.")
    return unet_rows(configs["unet"]) + vae_rows(configs["vae"]) + text_rows(configs["text_encoder"], kind)


def _lookup(prefixes, key):
    """Find the longest dotted prefix of ``key`` in ``prefixes``: returns (value, rest) or (None, None)."""
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        value = prefixes.get(".".join(parts[:cut]))
        if value is not None:
            return value, "".join("." + p for p in parts[cut:])
    return None, None


def text_kind(state_dict):
    """'sd2' if the file's text encoder is OpenCLIP (cond_stage_model.model.*), else 'sd1'."""
    return "sd2" if any(k.startswith(SD2_TEXT) for k in state_dict) else "sd1"


def split_original_checkpoint(state_dict, configs=None):
    """Single-file state dict -> {"unet": {...}, "vae": {...}, "text_encoder": {...}} with diffusers names.

    configs: the diffusers configs of the three networks; inferred from the shapes when None. Keys listed in
    ORIGINAL_KEYS_NOT_USED (and the EMA copy, with a warning) are left out; any other unmapped key is an error.
    """
    kind = text_kind(state_dict)
    configs = configs or infer_configs(state_dict, prediction_type="epsilon")
    by_original = {row.original: row for row in rename_table(configs, kind)}
    layers = configs["text_encoder"]["num_hidden_layers"]
    unused_block = f"{SD2_TEXT}transformer.resblocks.{layers}."  # OpenCLIP's last block (see OPENCLIP_FULL_DEPTH)
    if kind != "sd2" or any(k.startswith(f"{SD2_TEXT}transformer.resblocks.{layers + 1}.") for k in state_dict):
        unused_block = None  # not one surplus block: any surplus block is an error below

    out = {"unet": {}, "vae": {}, "text_encoder": {}}
    unknown = []
    for key, tensor in state_dict.items():
        row, rest = _lookup(by_original, key)
        if row is None:
            skip = key in ORIGINAL_KEYS_NOT_USED or key.startswith(EMA_PREFIX)
            if not (skip or unused_block and key.startswith(unused_block)):
                unknown.append(key)
            continue
        if row.how == "qkv":
            for name, part in zip(row.diffusers, tensor.chunk(3, dim=0)):  # (3D, ...) -> 3 x (D, ...)
                out[row.component][name] = part
            continue
        if row.how == "conv1x1" and tensor.ndim == 4:
            tensor = tensor.reshape(tensor.shape[:2])  # (C, C, 1, 1) -> (C, C)
        out[row.component][row.diffusers + rest] = tensor
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} keys of the single-file checkpoint match no network of the "
            f"{'SD 2.x' if kind == 'sd2' else 'SD 1.x'} layout: {listed(unknown)}. It may hold another model "
            "(SDXL, a LoRA, a ControlNet) or extra networks minidiff does not support."
        )
    if any(k.startswith(EMA_PREFIX) and k not in EMA_COUNTERS for k in state_dict):
        warnings.warn(
            "the checkpoint also holds EMA weights (model_ema.*); minidiff uses the U-Net under "
            "model.diffusion_model.* and ignores the EMA copy.",
            stacklevel=2,
        )
    for component, prefix in (("unet", UNET), ("vae", VAE), ("text_encoder", TEXT)):
        if not out[component]:
            raise CheckpointError(f"the single-file checkpoint has no {component} weights ({prefix}*).")
    return out


def join_original_checkpoint(components_state_dicts, kind, configs):
    """{"unet": {...}, "vae": {...}, "text_encoder": {...}} (diffusers names) -> one single-file state dict.

    kind: 'sd1' (OpenAI CLIP names) or 'sd2' (OpenCLIP names); configs: the three diffusers config dicts.
    """
    by_diffusers = {"unet": {}, "vae": {}, "text_encoder": {}}
    for row in rename_table(configs, kind):
        names = row.diffusers if row.how == "qkv" else (row.diffusers,)
        for index, name in enumerate(names):
            by_diffusers[row.component][name] = (row, index)

    out, fused, unknown = {}, {}, []
    for component, state_dict in components_state_dicts.items():
        for key, tensor in state_dict.items():
            if key in KNOWN_HARMLESS_KEYS:
                continue
            key = "text_model." + key if component == "text_encoder" and not key.startswith("text_model.") else key
            found, rest = _lookup(by_diffusers[component], key)
            if found is None:
                unknown.append(f"{component}: {key}")
                continue
            row, index = found
            if row.how == "qkv":
                fused.setdefault(row.original, [None, None, None])[index] = tensor
                continue
            if row.how == "conv1x1" and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]  # (C, C) -> (C, C, 1, 1)
            out[row.original + rest] = tensor
    for key, parts in fused.items():
        if any(p is None for p in parts):
            unknown.append(f"text_encoder: the q, k and v projections of {key} (some are missing)")
            continue
        out[key] = torch.cat(parts, dim=0)  # 3 x (D, ...) -> (3D, ...)
    if unknown:
        raise CheckpointError(f"{len(unknown)} keys have no place in the single-file layout: {listed(unknown)}.")
    return out


# What the shapes cannot tell: SD 1.x uses 8 heads per attention layer, SD 2.x 64-dimensional heads (diffusers
# stores both in "attention_head_dim"); OpenAI CLIP uses quick_gelu, OpenCLIP gelu; SD 2.x's released configs
# upcast attention to float32. SD 2.x comes as a 512 px epsilon model and a 768 px v-prediction model with
# identical shapes, so the prediction type must be given, and sets the default size.
FAMILY = {
    "sd1": {"label": "SD 1.x", "hidden_act": "quick_gelu", "upcast_attention": False, "projection_dim": 768},
    "sd2": {"label": "SD 2.x", "hidden_act": "gelu", "upcast_attention": True, "projection_dim": 512},
}

SCHEDULER_CONFIG = {  # the noise schedule every SD 1.x / 2.x model was trained with
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "timestep_spacing": "leading",
}


def _count(state_dict, pattern):
    """How many distinct values the (\\d+) group of a regex takes over the keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for key in state_dict if (m := regex.match(key))})


def _shape(state_dict, key):
    if key not in state_dict:
        raise CheckpointError(f"the single-file checkpoint lacks {key}, which every SD 1.x/2.x file has.")
    return tuple(state_dict[key].shape)


def infer_unet_config(sd, kind):
    """U-Net config from the shapes under model.diffusion_model.*."""
    levels = _count(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    n = (_count(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.") - 1 - (levels - 1)) // levels
    first = [1 + b * (n + 1) for b in range(levels)]  # the first input block of each level
    channels = [_shape(sd, f"{UNET}input_blocks.{i}.0.out_layers.3.weight")[0] for i in first]
    down_attn = [f"{UNET}input_blocks.{i}.1.proj_in.weight" in sd for i in first]
    up_attn = [f"{UNET}output_blocks.{b * (n + 1)}.1.proj_in.weight" in sd for b in range(levels)]
    depth = _count(sd, re.escape(UNET) + r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    if depth != 1:
        raise CheckpointError(
            f"the U-Net has {depth} transformer blocks per attention layer; SD 1.x/2.x have exactly 1 (SDXL and "
            "others are not supported)."
        )
    head_width = 64 if kind == "sd2" else None
    if any(c % 32 or (head_width and c % head_width) for c in channels):
        raise CheckpointError(
            f"the U-Net's block widths {channels} do not fit {FAMILY[kind]['label']}'s conventions (multiples of "
            f"32 for its 32 norm groups{', and of 64 for its 64-wide heads' if head_width else ''})."
        )
    conv_in = _shape(sd, UNET + "input_blocks.0.0.weight")  # (C0, in_channels, 3, 3)
    return {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8 if kind == "sd1" else [c // 64 for c in channels],
        "block_out_channels": channels,
        "center_input_sample": False,
        "cross_attention_dim": _shape(sd, UNET + "middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attn],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": conv_in[1],
        "layers_per_block": n,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": _shape(sd, UNET + "out.2.weight")[0],
        "sample_size": 64,
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attn],
        "upcast_attention": FAMILY[kind]["upcast_attention"],
        "use_linear_projection": len(_shape(sd, UNET + "middle_block.1.proj_in.weight")) == 2,  # Linear, not 1x1 conv
    }


def infer_vae_config(sd):
    """VAE config from the shapes under first_stage_model.*."""
    levels = _count(sd, re.escape(VAE) + r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
    n = _count(sd, re.escape(VAE) + r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight")
    channels = [_shape(sd, f"{VAE}encoder.down.{b}.block.0.conv2.weight")[0] for b in range(levels)]
    if any(c % 32 for c in channels):
        raise CheckpointError(f"the VAE's block widths {channels} are not multiples of its 32 norm groups.")
    return {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "in_channels": _shape(sd, VAE + "encoder.conv_in.weight")[1],
        "latent_channels": _shape(sd, VAE + "decoder.conv_in.weight")[1],
        "layers_per_block": n,
        "norm_num_groups": 32,
        "out_channels": _shape(sd, VAE + "decoder.conv_out.weight")[0],
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
    }


def infer_text_config(sd, kind):
    """CLIPTextModel config from the shapes under cond_stage_model.*; CLIP's heads are 64-dimensional."""
    if kind == "sd1":
        prefix = SD1_TEXT + "text_model."
        vocab, hidden = _shape(sd, prefix + "embeddings.token_embedding.weight")
        positions = _shape(sd, prefix + "embeddings.position_embedding.weight")[0]
        layers = _count(sd, re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
        intermediate = _shape(sd, prefix + "encoder.layers.0.mlp.fc1.weight")[0]
    else:
        vocab, hidden = _shape(sd, SD2_TEXT + "token_embedding.weight")
        positions = _shape(sd, SD2_TEXT + "positional_embedding")[0]
        blocks = _count(sd, re.escape(SD2_TEXT) + r"transformer\.resblocks\.(\d+)\.")
        layers = blocks - 1 if blocks == OPENCLIP_FULL_DEPTH else blocks  # SD 2.x stops at the penultimate block
        intermediate = _shape(sd, SD2_TEXT + "transformer.resblocks.0.mlp.c_fc.weight")[0]
    if hidden % 64:
        raise CheckpointError(
            f"the text encoder is {hidden} wide, not a multiple of CLIP's 64-wide attention heads; it is not an "
            "SD 1.x/2.x text encoder."
        )
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_attention_heads": hidden // 64,
        "num_hidden_layers": layers,
        "max_position_embeddings": positions,
        "hidden_act": FAMILY[kind]["hidden_act"],
        "layer_norm_eps": 1e-05,
        "projection_dim": FAMILY[kind]["projection_dim"],
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


def check_layout(state_dict):
    """Raise CheckpointError unless the file has the three networks of an SD 1.x/2.x single file."""
    missing = [prefix + "*" for prefix in (UNET, VAE, TEXT) if not any(k.startswith(prefix) for k in state_dict)]
    if missing:
        roots = sorted({key.split(".")[0] for key in state_dict})
        sdxl = " (conditioner.* is SDXL's text encoders: SDXL is not supported)" if "conditioner" in roots else ""
        raise CheckpointError(
            f"not a Stable Diffusion 1.x/2.x single-file checkpoint: it has no {', '.join(missing)} keys; its keys "
            f"start with {', '.join(roots[:10])}{sdxl}. For one network of a diffusers folder, give the whole folder."
        )


def infer_configs(state_dict, prediction_type=None):
    """Read the architecture of a single-file checkpoint from its tensor shapes.

    Returns {"unet", "vae", "text_encoder", "scheduler"} config dicts in diffusers' format. prediction_type
    ("epsilon" or "v_prediction") cannot be read from weights: it defaults to "epsilon" for SD 1.x and must be
    given for SD 2.x. "v_prediction" also sets the default image size to 768 px (SD 2.x 768-v).
    """
    check_layout(state_dict)
    kind = text_kind(state_dict)
    if prediction_type is None and kind == "sd2":
        raise CheckpointError(
            "this is an SD 2.x checkpoint, which comes as an 'epsilon' model (512 px base) and a 'v_prediction' "
            "model (768 px) with identical weights shapes; say which with prediction_type (command line: "
            "--prediction-type epsilon|v_prediction)."
        )
    prediction_type = prediction_type or "epsilon"
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', found {prediction_type!r}.")
    unet, vae = infer_unet_config(state_dict, kind), infer_vae_config(state_dict)
    if prediction_type == "v_prediction":
        unet["sample_size"], vae["sample_size"] = 96, 768
    scheduler = {**SCHEDULER_CONFIG, "prediction_type": prediction_type}
    return {"unet": unet, "vae": vae, "text_encoder": infer_text_config(state_dict, kind), "scheduler": scheduler}
