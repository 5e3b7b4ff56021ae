"""Saving a whole Stable Diffusion model: the inverse of ``components.load_components``.

``save_components`` writes a diffusers folder that ``diffusers.StableDiffusionPipeline.from_pretrained`` loads;
``save_single_file`` writes the three networks as one original-layout file, as A1111 and ComfyUI read it.
"""

import json
from pathlib import Path

from minidiff.atomic import atomic_folder
from minidiff.loading.components import CLIP_VOCAB_SIZE, NETWORKS, SETTINGS_FILE
from minidiff.loading.safetensors_file import write_safetensors, write_sharded_safetensors
from minidiff.loading.single_file import join_original_checkpoint

SCHEDULER_CLASS = "PNDMScheduler"  # what SD 1.5's model_index.json names; every diffusers scheduler reads its config


def scheduler_json(scheduler_config):
    """A scheduler_config.json dict for diffusers: minidiff's fields plus the class name and PNDM's SD setting.

    A field the model's file did not set (``timestep_spacing`` in SD 1.5's) is left out, never written as null:
    every diffusers scheduler class then applies its own default, as minidiff's samplers do."""
    return {"_class_name": SCHEDULER_CLASS, "skip_prk_steps": True, **scheduler_config.to_dict()}


def write_model_folder_configs(components, folder):
    """Everything of a diffusers model folder but the weights: model_index.json, tokenizer/, scheduler/, each
    network's config.json and, when ``components.settings`` holds them, minidiff_settings.json, written into the
    existing ``folder``."""
    index = {
        "_class_name": "StableDiffusionControlNetPipeline" if components.controlnet else "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", SCHEDULER_CLASS],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    components.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    scheduler = scheduler_json(components.scheduler_config)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    for name, (_, _, _, class_name) in NETWORKS.items():
        model = getattr(components, name)
        if model is not None:
            index[name] = class_name
            (folder / name).mkdir()
            (folder / name / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if components.settings is not None:  # so that the copy draws with the original's sampler, steps and size
        (folder / SETTINGS_FILE).write_text(json.dumps(components.settings, indent=2) + "\n")


def save_components(components, folder, max_shard_bytes=None):
    """Write ``components`` as a diffusers model folder (which must not exist yet), atomically.

    Everything is written into a temporary sibling folder that is renamed at the end, so a failure leaves
    nothing behind. Weights are saved in the networks' current dtype; with ``max_shard_bytes``, a network
    larger than that is split into shards with an index, as diffusers reads them.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; choose a new folder name (minidiff never overwrites a model).")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as tmp:
        write_model_folder_configs(components, tmp)
        for name, (_, _, stem, _) in NETWORKS.items():
            model = getattr(components, name)
            if model is not None:
                write_sharded_safetensors(model.state_dict(), tmp / name, stem, max_shard_bytes or float("inf"),
                                          metadata={"format": "pt"})


def save_single_file(components, path):
    """Write the U-Net, VAE and text encoder as one original-layout .safetensors file (A1111 / ComfyUI read it).

    The text encoder's layout follows its activation: quick_gelu is OpenAI CLIP (SD 1.x), gelu OpenCLIP (SD 2.x).
    A single file has no room for a ControlNet, a tokenizer, a scheduler config or minidiff_settings.json: it is
    read back with CLIP's tokenizer, so a model with another vocabulary (such as the bundled model's reduced one)
    is refused before anything is written.
    """
    if not str(path).endswith(".safetensors"):
        raise ValueError(f"{path}: minidiff writes single files only as .safetensors (never pickle).")
    embeddings, tokens = components.text_encoder.config.vocab_size, len(components.tokenizer.vocab)
    if embeddings != CLIP_VOCAB_SIZE or tokens != CLIP_VOCAB_SIZE:
        raise ValueError(
            f"{path}: the text encoder has {embeddings} token embeddings and the tokenizer {tokens} tokens, but a "
            f"single file holds no tokenizer and is read back with CLIP's, of {CLIP_VOCAB_SIZE} tokens, so nothing "
            "could read it: keep this model as a diffusers folder."
        )
    if components.controlnet is not None:
        raise ValueError(
            "a single file holds only the U-Net, VAE and text encoder; this model also has a ControlNet, which "
            "would be lost: save it as a diffusers folder instead, or leave the ControlNet out (convert "
            "--without-controlnet; in Python, components.controlnet = None)."
        )
    networks = {name: getattr(components, name) for name in ("unet", "vae", "text_encoder")}
    configs = {name: model.config.to_dict() for name, model in networks.items()}
    kind = "sd1" if networks["text_encoder"].config.hidden_act == "quick_gelu" else "sd2"
    state_dict = join_original_checkpoint({n: m.state_dict() for n, m in networks.items()}, kind, configs)
    write_safetensors(state_dict, path, metadata={"format": "pt"})
