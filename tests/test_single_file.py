"""The single-file (CompVis / A1111) <-> diffusers rename table, checked against diffusers' own converters.

Full-size SD 1.5, SD 1.5-inpainting and SD 2.1 are built on the meta device (names and shapes only). Each
diffusers key goes through minidiff's table to an original key; diffusers' converters
(``diffusers.loaders.single_file_utils``) must turn that original key set back into exactly the diffusers key
set, and minidiff's forward table must send every original key where theirs does. Tiny random models then
check the values: join -> split gives identical tensors, and split equals diffusers' converters.
"""

import warnings

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as reference
from transformers import CLIPTextConfig, CLIPTextModel

from minidiff.loading.single_file import (
    ORIGINAL_KEYS_NOT_USED,
    infer_configs,
    join_original_checkpoint,
    rename_table,
    split_original_checkpoint,
)
from minidiff.loading.state_dict import CheckpointError
from minidiff.tools.bench.configs import (SD15_INPAINT_UNET, SD15_TEXT_ENCODER, SD15_UNET, SD21_TEXT_ENCODER, SD21_UNET,
                                          SD_VAE)

FULL_SIZE = {
    "sd15": (SD15_UNET, SD15_TEXT_ENCODER, "sd1", "epsilon"),
    "sd15-inpainting": (SD15_INPAINT_UNET, SD15_TEXT_ENCODER, "sd1", "epsilon"),
    "sd21": (SD21_UNET, SD21_TEXT_ENCODER, "sd2", "v_prediction"),
}


def diffusers_models(unet_config, vae_config, text_config, device="meta"):
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text = CLIPTextModel(CLIPTextConfig(**text_config))
    return unet, vae, text


def state_dicts(unet, vae, text):
    # transformers 5 names CLIPTextModel's keys without the "text_model." prefix that SD files use.
    text_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in text.state_dict().items()}
    return {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": text_sd}


def reference_split(original, unet, vae, text, kind):
    """diffusers' converters: original single-file state dict -> three diffusers state dicts."""
    if kind == "sd1":
        text_sd = reference.convert_ldm_clip_checkpoint(original)
    else:
        text_sd = reference.convert_open_clip_checkpoint(text, original)
    return {
        "unet": reference.convert_ldm_unet_checkpoint(original, dict(unet.config)),
        "vae": reference.convert_ldm_vae_checkpoint(original, dict(vae.config)),
        "text_encoder": text_sd,
    }


def tagged(shapes):
    """A cheap stand-in for each tensor: a 1-element tensor broadcast to the shape, its value the key's index.

    Any rename, reshape or slice keeps the value, so it tells which original key a converted tensor came from.
    """
    return {key: torch.tensor([float(i)]).expand(shapes[key]) for i, key in enumerate(sorted(shapes))}


@pytest.fixture(scope="module", params=list(FULL_SIZE))
def full_size(request):
    unet_config, text_config, kind, prediction_type = FULL_SIZE[request.param]
    unet, vae, text = diffusers_models(unet_config, SD_VAE, text_config)
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": text_config}
    diffusers_sd = state_dicts(unet, vae, text)
    original = join_original_checkpoint(diffusers_sd, kind, configs)
    cheap = tagged({k: v.shape for k, v in original.items()})
    return {
        "name": request.param, "kind": kind, "prediction_type": prediction_type, "models": (unet, vae, text),
        "configs": configs, "diffusers": diffusers_sd, "original": cheap,
    }


def test_full_size_original_keys_convert_back_to_exactly_the_diffusers_keys(full_size):
    theirs = reference_split(full_size["original"], *full_size["models"], full_size["kind"])
    for component, expected in full_size["diffusers"].items():
        assert set(theirs[component]) == set(expected), component
        for key, tensor in theirs[component].items():
            assert tensor.shape == expected[key].shape, key


def test_full_size_forward_table_agrees_with_diffusers_key_for_key(full_size):
    theirs = reference_split(full_size["original"], *full_size["models"], full_size["kind"])
    mine = split_original_checkpoint(full_size["original"], full_size["configs"])
    for component in ("unet", "vae", "text_encoder"):
        assert set(mine[component]) == set(theirs[component]), component
        for key, tensor in mine[component].items():
            assert tensor.shape == theirs[component][key].shape, key
            assert tensor.flatten()[0] == theirs[component][key].flatten()[0], f"{key} comes from another tensor"


def test_full_size_table_is_one_to_one(full_size):
    rows = rename_table(full_size["configs"], full_size["kind"])
    originals = [r.original for r in rows]
    targets = [(r.component, d) for r in rows for d in (r.diffusers if r.how == "qkv" else (r.diffusers,))]
    assert len(set(originals)) == len(originals)
    assert len(set(targets)) == len(targets)
    # every original tensor lands on exactly one diffusers tensor (fused q/k/v on three), none is invented
    mine = split_original_checkpoint(full_size["original"], full_size["configs"])
    n_fused = sum(k.endswith(("in_proj_weight", "in_proj_bias")) for k in full_size["original"])
    assert sum(len(v) for v in mine.values()) == len(full_size["original"]) + 2 * n_fused
    assert sum(len(v) for v in mine.values()) == sum(len(v) for v in full_size["diffusers"].values())


def test_full_size_original_keys_are_the_real_ones(full_size):
    original = full_size["original"]
    # keys diffusers itself uses to recognise the originals (diffusers.loaders.single_file_utils.CHECKPOINT_KEY_NAMES)
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in original
    assert "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight" in original
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in original
    assert original["first_stage_model.decoder.mid.attn_1.proj_out.weight"].shape == (512, 512, 1, 1)
    if full_size["kind"] == "sd1":
        assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in original
    else:
        assert original["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3072, 1024)
        assert "cond_stage_model.model.token_embedding.weight" in original


def test_infer_configs_recovers_the_real_architecture(full_size):
    unet_config, text_config, _, prediction_type = FULL_SIZE[full_size["name"]]
    inferred = infer_configs(full_size["original"], prediction_type=prediction_type)
    vae_config = {k: v for k, v in SD_VAE.items() if k != "sample_size"}  # 512 in this shared test config
    pairs = ((inferred["unet"], unet_config), (inferred["vae"], vae_config), (inferred["text_encoder"], text_config))
    for got, want in pairs:
        for key in want.keys() & got.keys():
            assert got[key] == want[key], key
    # the inferred configs build networks with exactly the real names and shapes
    models = diffusers_models(inferred["unet"], inferred["vae"], inferred["text_encoder"])
    for component, sd in state_dicts(*models).items():
        assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in full_size["diffusers"][component].items()}
    assert inferred["scheduler"]["prediction_type"] == prediction_type


def test_sd2_file_extras_are_dropped_and_nothing_else():
    """A real SD 2.x file holds 24 OpenCLIP blocks, text_projection, logit_scale and the schedule buffers."""
    unet, vae, text = diffusers_models(SD21_UNET, SD_VAE, SD21_TEXT_ENCODER)
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": SD21_TEXT_ENCODER}
    original = join_original_checkpoint(state_dicts(unet, vae, text), "sd2", configs)
    last = {k.replace("resblocks.22.", "resblocks.23."): v for k, v in original.items() if ".resblocks.22." in k}
    extras = {
        **last,
        "cond_stage_model.model.text_projection": torch.empty(1024, 1024, device="meta"),
        "cond_stage_model.model.logit_scale": torch.empty((), device="meta"),
        "alphas_cumprod": torch.empty(1000, device="meta"),
        "model_ema.decay": torch.empty((), device="meta"),
        "model_ema.num_updates": torch.empty((), device="meta"),
    }
    full = {**original, **extras}
    inferred = infer_configs(full, prediction_type="epsilon")
    assert inferred["text_encoder"]["num_hidden_layers"] == 23
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the EMA counters of an "emaonly" file are no reason to warn
        split = split_original_checkpoint(full)
    assert sum(len(v) for v in split.values()) == sum(len(v) for v in state_dicts(unet, vae, text).values())
    with pytest.warns(UserWarning, match="EMA weights"):
        split_original_checkpoint({**full, "model_ema.diffusion_modelout2weight": torch.empty(4, device="meta")})
    assert set(ORIGINAL_KEYS_NOT_USED) >= {"cond_stage_model.model.text_projection", "alphas_cumprod"}

    with pytest.raises(CheckpointError, match="prediction_type"):
        infer_configs(full)
    # a 25th block is not the unused penultimate-layer block: refuse instead of guessing
    beyond = {k.replace("resblocks.23.", "resblocks.24."): v for k, v in last.items()}
    with pytest.raises(CheckpointError, match="resblocks.23"):
        split_original_checkpoint({**full, **beyond}, configs)


def test_unknown_keys_and_missing_networks_are_errors():
    unet, vae, text = diffusers_models(SD15_UNET, SD_VAE, SD15_TEXT_ENCODER)
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": SD15_TEXT_ENCODER}
    original = join_original_checkpoint(state_dicts(unet, vae, text), "sd1", configs)
    lora = {"lora_unet_down_blocks_0_attentions_0.alpha": torch.empty((), device="meta")}
    with pytest.raises(CheckpointError, match="1 keys .* match no network.*lora_unet"):
        split_original_checkpoint({**original, **lora}, configs)
    unet_only = {k: v for k, v in original.items() if k.startswith("model.diffusion_model.")}
    with pytest.raises(CheckpointError, match="no vae weights"):
        split_original_checkpoint(unet_only, configs)
    with pytest.raises(CheckpointError, match="no place in the single-file layout.*unet: extra.weight"):
        join_original_checkpoint({"unet": {"extra.weight": torch.empty(1)}}, "sd1", configs)


TINY_UNET = {
    "block_out_channels": [32, 32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "sample_size": 16,
}
TINY_VAE = {
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "latent_channels": 4,
    "sample_size": 32,
}
TINY_TEXT = {
    "vocab_size": 100, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
    "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_tiny_models_round_trip_with_real_values(kind):
    unet_config = {**TINY_UNET, "use_linear_projection": kind == "sd2"}
    unet, vae, text = diffusers_models(unet_config, TINY_VAE, TINY_TEXT, device="cpu")
    generator = torch.Generator().manual_seed(0)
    for model in (unet, vae, text):
        for p in model.parameters():
            p.data.normal_(0, 0.05, generator=generator)  # diffusers zero-inits some layers; make all distinct
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": TINY_TEXT}
    diffusers_sd = state_dicts(unet, vae, text)

    original = join_original_checkpoint(diffusers_sd, kind, configs)
    assert original["first_stage_model.encoder.mid.attn_1.k.weight"].shape == (64, 64, 1, 1)
    split = split_original_checkpoint(original, configs)
    theirs = reference_split(original, unet, vae, text, kind)
    for component, expected in diffusers_sd.items():
        assert set(split[component]) == set(expected) == set(theirs[component])
        for key in expected:
            assert torch.equal(split[component][key], expected[key]), key
            assert torch.equal(split[component][key], theirs[component][key]), key


def test_files_of_other_layouts_are_named():
    t = torch.empty(1, device="meta")
    sdxl = {"model.diffusion_model.input_blocks.0.0.weight": t, "first_stage_model.encoder.conv_in.weight": t,
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": t}
    with pytest.raises(CheckpointError, match=r"no cond_stage_model\.\* keys.*SDXL is not supported"):
        infer_configs(sdxl)
    one_network = {"conv_in.weight": t, "down_blocks.0.resnets.0.conv1.weight": t}
    with pytest.raises(CheckpointError, match="its keys start with conv_in, down_blocks. For one network of a diffusers"):
        infer_configs(one_network)
