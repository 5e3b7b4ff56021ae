"""The bundled model in ``weights/``: a small Stable Diffusion trained from scratch on captioned shapes.

Same architecture family as Stable Diffusion 1.x, scaled down so that it runs on a laptop CPU in seconds:

    component      Stable Diffusion 1.5                          bundled model
    images         512 x 512                                     128 x 128
    VAE            128-256-512-512, 2 layers/block, 84 M         32-64-128-128, 1 layer/block (x8 down, 4 channels)
    text encoder   CLIP ViT-L/14 text: 768 wide, 12 layers       CLIP text: 256 wide, 4 layers, quick_gelu, 77 tokens
    tokenizer      CLIP BPE, 49,408 tokens                       the CLIP BPE reduced to the caption words
    U-Net          320-640-1280-1280, 860 M                      64-128-192, 2 layers/block, cross-attention 256
    ControlNet     copy of the U-Net encoder                     the same, trained on Canny edges
    scheduler      scaled_linear 0.00085-0.012, 1000 steps, epsilon (identical)

This module holds those configs, the reduced vocabulary, how a finished stage is read back from its
checkpoint (``run_stage``), ``export``, which writes the diffusers folder (float16 weights) with its
minidiff_settings.json and records each stage's step count in its ``training.json``, and ``import_folder``, which
turns such a folder back into checkpoints that the stages resume from (to train the shipped model further).

    python -m minidiff train vae --device cuda      # then clip, unet, controlnet (each resumes if stopped)
    python -m minidiff train export --to weights
    python -m minidiff train import --from weights  # continue from the shipped weights instead of from scratch
"""

import dataclasses
import json
import os

import torch

from minidiff.data.captions import (BACKGROUND_PHRASES, COLORS, FRAMES, POSITION_PHRASES, RELATION_PHRASES, SHAPES,
                                    SIZE_WORDS)
from minidiff.loading.components import SETTINGS_FILE, Components, load_components
from minidiff.loading.saving import save_components
from minidiff.loading.safetensors_file import write_safetensors
from minidiff.models.config import CLIPTextConfig, UNetConfig, VAEConfig
from minidiff.models.controlnet import ControlNetModel
from minidiff.models.tokenizer import CLIPTokenizer, find_openclip_vocab, load_openclip_bpe, reduced_vocabulary
from minidiff.models.unet import UNet2DConditionModel
from minidiff.models.vae import AutoencoderKL
from minidiff.samplers import SchedulerConfig
from minidiff.schedule import NoiseSchedule
from minidiff.train.clip import CLIP, CLIPTrainConfig, ImageTowerConfig, load_clip_folder, train_clip
from minidiff.train.common import save_checkpoint
from minidiff.train.controlnet import ControlNetTrainConfig, train_controlnet
from minidiff.train.unet import LatentBatches, UNetTrainConfig, train_unet
from minidiff.train.vae import VAETrainConfig, train_vae

IMAGE_SIZE = 128
SHARD_BYTES = 16_000_000  # export splits larger networks (the U-Net) into shards: no file over 16 MB in git
# The minidiff_settings.json `export` writes for a model of this recipe (as weights/ has it), which every command
# reads: Euler ancestral, 20 steps and guidance 5 scored best with `python -m minidiff evaluate` (weights/README.md),
# LMS needs 30 steps with it, and it knows only the caption words. A model `import_folder` brought in keeps its own.
# The fewest steps at which each sampler's prompt adherence holds on this model (benchmarks/sampler_steps.py; the
# measurement and its limits are in weights/README.md).
MIN_STEPS = {"ddpm": 20, "ddim": 12, "euler_a": 20, "dpmpp_2m": 20, "lms": 50, "lms karras": 50}
SETTINGS = dict(sampler="euler_a", steps=20, cfg=5.0, width=IMAGE_SIZE, height=IMAGE_SIZE, min_steps=MIN_STEPS,
                vocabulary="shapes")


def caption_words():
    """Every word the caption grammar can produce (plus plural shapes), for the reduced vocabulary."""
    phrases = [*COLORS, *SHAPES, *(s + "s" for s in SHAPES), "a", "an", "and", "with", "background", "centre"]
    phrases += [w for words in SIZE_WORDS.values() for w in words]
    phrases += [p for table in (POSITION_PHRASES, RELATION_PHRASES) for ps in table.values() for p in ps]
    phrases += [p.format("") for p in (*BACKGROUND_PHRASES, *FRAMES)]
    return sorted({word for phrase in phrases for word in phrase.split()})


def make_tokenizer():
    """CLIP's tokenizer with only the merges the caption words need: the same pieces, far fewer ids.

    Any other text still tokenises (into the 512 byte tokens every CLIP vocabulary keeps), so the model never
    fails on an unknown word; it just has not learnt what such pieces mean.
    """
    vocab, merges = load_openclip_bpe(find_openclip_vocab())
    return CLIPTokenizer(*reduced_vocabulary(vocab, merges, caption_words()))


def text_config(tokenizer):
    return CLIPTextConfig(
        vocab_size=len(tokenizer.vocab), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=256,
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
    )


def image_tower_config():
    return ImageTowerConfig(image_size=IMAGE_SIZE, channels=(32, 64, 128, 128, 128), embed_dim=256)


def vae_config(scaling_factor=1.0):
    return VAEConfig(block_out_channels=(32, 64, 128, 128), layers_per_block=1, sample_size=IMAGE_SIZE,
                     scaling_factor=scaling_factor, force_upcast=False)


def unet_config():
    return UNetConfig(
        sample_size=IMAGE_SIZE // 8, block_out_channels=(64, 128, 192), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=256, attention_head_dim=4,
    )


def scheduler_config():
    return SchedulerConfig(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                           prediction_type="epsilon", timestep_spacing="leading", steps_offset=1)


# The training recipe: each stage's settings (steps are the targets; see weights/README.md for where runs stopped).
RECIPE = {
    "vae": VAETrainConfig(steps=6000, batch_size=64, lr=4e-4, warmup_steps=200, kl_weight=1e-6),
    "clip": CLIPTrainConfig(steps=4000, batch_size=512, lr=5e-4, warmup_steps=200, weight_decay=0.1,
                            hard_negatives=True),
    "unet": UNetTrainConfig(steps=40000, batch_size=256, noise_draws=4, lr=3e-4, warmup_steps=200, ema_decay=0.999,
                            caption_dropout=0.1),
    "controlnet": ControlNetTrainConfig(steps=8000, batch_size=64, noise_draws=4, lr=2e-4, warmup_steps=100,
                                        ema_decay=0.999, caption_dropout=0.5),
}
STAGES = tuple(RECIPE)
# The stages each one trains against: their checkpoints must be in out_dir first (the VAE's with its vae.json).
BUILDS_ON = {"vae": (), "clip": (), "unet": ("vae", "clip"), "controlnet": ("vae", "clip", "unet")}


def check_earlier_stages(stage, out_dir, train_encoder=True):
    """Refuse, in one line naming the commands to run, to start ``stage`` while a stage it builds on has left no
    checkpoint in ``out_dir`` (the decoder-only VAE builds on the vae stage's own checkpoint)."""
    needed = BUILDS_ON[stage] if train_encoder else ("vae",)
    files = {name: (f"{name}.pt", "vae.json") if name == "vae" else (f"{name}.pt",) for name in needed}
    missing = [name for name in needed if not all(os.path.exists(os.path.join(out_dir, f)) for f in files[name])]
    if missing:
        listed = f"{', '.join(missing[:-1])} and {missing[-1]}" if len(missing) > 1 else missing[0]
        then = "".join(f", then {name}" for name in missing[1:])
        raise FileNotFoundError(
            f"'{stage}'{'' if train_encoder else ' --decoder-only'} builds on the checkpoints of {listed}, "
            f"which are not in {out_dir}: train {'them' if then else 'it'} first "
            f"(python -m minidiff train {missing[0]} --out {out_dir}{then}) or start from the bundled model's "
            f"weights (python -m minidiff train import --out {out_dir})."
        )


def load_trained(model, out_dir, name):
    """Load stage ``name``'s finished weights from ``out_dir/{name}.pt`` into ``model`` (the EMA when it has one).

    The weights are rounded to float16 and back, so that later stages train against exactly the networks
    that ``export`` ships.
    """
    path = os.path.join(out_dir, f"{name}.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: run the '{name}' stage first (python -m minidiff train {name}).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = state["model"]
    if state["ema"] is not None:  # the average covers the floating-point tensors; integer buffers come from "model"
        weights = {**weights, **state["ema"]["shadow"]}
    model.load_state_dict(weights)
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(tensor.half())
    return model.eval()


def trained_vae_config(out_dir):
    """The config of the 'vae' stage's VAE, with the scaling_factor measured after it (out_dir/vae.json)."""
    with open(os.path.join(out_dir, "vae.json")) as f:
        return VAEConfig.from_dict(json.load(f))


def trained_vae(out_dir):
    """The VAE of the 'vae' stage, with the scaling_factor measured after it."""
    return load_trained(AutoencoderKL(trained_vae_config(out_dir)), out_dir, "vae")


def trained_clip(out_dir, tokenizer):
    """Both towers of the 'clip' stage; ``.text_model`` is the Stable Diffusion text encoder."""
    return load_trained(CLIP(text_config(tokenizer), image_tower_config()), out_dir, "clip")


def run_stage(stage, out_dir, device="cuda", seed=0, time_limit=None, **overrides):
    """Train one stage of the recipe (``overrides``: fields of its config, e.g. steps=10); returns the network.

    Every stage reads what the earlier ones left in ``out_dir`` and writes its checkpoint there; without them it
    refuses to start (``check_earlier_stages``).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)} (in that order).")
    check_earlier_stages(stage, out_dir, overrides.get("train_encoder", True))
    tokenizer = make_tokenizer()
    config = dataclasses.replace(RECIPE[stage], device=device, seed=seed, **overrides)
    if stage == "vae":
        # Fine-tuning the decoder alone keeps the latent space, so its measured scaling_factor is kept too.
        vae_cfg = vae_config() if config.train_encoder else trained_vae_config(out_dir)
        vae = train_vae(vae_cfg, config, out_dir, time_limit=time_limit)
        with open(os.path.join(out_dir, "vae.json"), "w") as f:
            json.dump(vae.config.to_dict(), f, indent=2)
        return vae
    if stage == "clip":
        return train_clip(text_config(tokenizer), image_tower_config(), tokenizer, config, out_dir,
                          time_limit=time_limit)
    batches = LatentBatches(trained_vae(out_dir), trained_clip(out_dir, tokenizer).text_model, tokenizer, config)
    schedule = NoiseSchedule.from_config(scheduler_config())
    if stage == "unet":
        return train_unet(unet_config(), batches, schedule, config, out_dir, time_limit=time_limit)
    unet = load_trained(UNet2DConditionModel(unet_config()), out_dir, "unet")
    return train_controlnet(unet, batches, schedule, config, out_dir, time_limit=time_limit)


def export_checkpoints(out_dir, folder):
    """Read every stage's finished weights from ``out_dir`` and ``export`` them to ``folder``, with the settings
    of the model they were imported from (``out_dir/minidiff_settings.json``), else the recipe's ``SETTINGS``."""
    tokenizer = make_tokenizer()
    clip = trained_clip(out_dir, tokenizer)
    unet = load_trained(UNet2DConditionModel(unet_config()), out_dir, "unet")
    controlnet = load_trained(ControlNetModel.from_unet(unet), out_dir, "controlnet")
    settings = SETTINGS
    if os.path.exists(os.path.join(out_dir, SETTINGS_FILE)):
        with open(os.path.join(out_dir, SETTINGS_FILE)) as f:
            settings = json.load(f)
    export(folder, tokenizer, clip.text_model, trained_vae(out_dir), unet, controlnet, clip, settings)
    steps = {name: torch.load(os.path.join(out_dir, f"{name}.pt"), mmap=True, weights_only=True)["step"]
             for name in STAGES}  # mmap: only the step is read, not the tensors again
    with open(os.path.join(folder, "training.json"), "w") as f:
        json.dump({"steps": steps}, f, indent=2)
    return folder


def import_folder(folder, out_dir):
    """Write ``out_dir/{stage}.pt`` for every stage from an exported model folder, so that training continues
    from its weights: ``run_stage`` then resumes each stage at the step recorded in ``folder/training.json``.

    The networks load as any model folder does (``load_components``, and ``load_clip_folder`` for CLIP). The
    folder holds only the float16 (EMA) weights, so each checkpoint is a slim one (see ``slim_checkpoint``):
    AdamW restarts with a fresh warm-up and the EMA restarts from these weights. The folder's
    minidiff_settings.json, if it has one, is copied to ``out_dir`` for ``export_checkpoints``. Returns the step
    counts.
    """
    parts = load_components(folder)  # float32; strict about every network's keys
    networks = {"vae": parts.vae, "clip": load_clip_folder(folder, parts.text_encoder), "unet": parts.unet,
                "controlnet": parts.controlnet}
    with open(os.path.join(folder, "training.json")) as f:
        steps = json.load(f)["steps"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vae.json"), "w") as f:
        json.dump(parts.vae.config.to_dict(), f, indent=2)
    if parts.settings is not None:
        with open(os.path.join(out_dir, SETTINGS_FILE), "w") as f:
            json.dump(parts.settings, f, indent=2)
    for name in STAGES:
        model = networks[name]
        config = dataclasses.replace(RECIPE[name], steps=max(RECIPE[name].steps, steps[name]))
        save_checkpoint(os.path.join(out_dir, f"{name}.pt"), model, None, None, steps[name], [], config,
                        with_optimizer=False)
    return steps


def export(folder, tokenizer, text_encoder, vae, unet, controlnet, clip, settings=None):
    """Write the diffusers folder: model_index.json, tokenizer/, text_encoder/, vae/, unet/, controlnet/,
    scheduler/ (float16 weights), clip/ with the image tower and projections for the CLIP score, and ``settings``
    (a dict such as ``SETTINGS``; None: none) as minidiff_settings.json."""
    half = {name: net.half() for name, net in
            dict(text_encoder=text_encoder, vae=vae, unet=unet, controlnet=controlnet).items()}
    save_components(Components(tokenizer, scheduler_config=scheduler_config(), settings=settings, **half), folder,
                    max_shard_bytes=SHARD_BYTES)
    os.makedirs(os.path.join(folder, "clip"))
    tower = {k: v for k, v in clip.state_dict().items() if not k.startswith("text_model.")}
    write_safetensors({k: v.half() for k, v in tower.items()}, os.path.join(folder, "clip", "model.safetensors"),
                      metadata={"format": "pt"})
    config = {"image_tower": clip.vision_model.config.to_dict(), "projection_dim": clip.text_projection.out_features,
              "text_encoder": "../text_encoder"}
    with open(os.path.join(folder, "clip", "config.json"), "w") as f:
        json.dump(config, f, indent=2)

