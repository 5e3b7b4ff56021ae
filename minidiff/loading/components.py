"""Loading and saving a whole Stable Diffusion model: tokenizer, text encoder, VAE, U-Net, scheduler config.

Two layouts exist on disk:

    diffusers folder                         single file (CompVis / A1111)
    model_index.json                         model.safetensors (or .ckpt): the three networks side by side
    tokenizer/      vocab.json, merges.txt       under their original names (see single_file.py); no
    text_encoder/   config.json, model.safetensors   tokenizer, no configs: the architecture is read from
    vae/            config.json, diffusion_pytorch_model.safetensors   the shapes, the tokenizer is CLIP's
    unet/           config.json, diffusion_pytorch_model.safetensors   standard vocabulary.
    scheduler/      scheduler_config.json
    controlnet/     (optional) config.json, diffusion_pytorch_model.safetensors
    minidiff_settings.json   (optional) the model's recommended sampler, steps, guidance, size (see
                             minidiff/commands/model_settings.py), kept as it is and written back on saving

A network's weights may also be split into shards with an index (``diffusion_pytorch_model-00001-of-00002.safetensors``,
..., ``diffusion_pytorch_model.safetensors.index.json``), as diffusers writes large networks.

``load_components`` reads either into minidiff's networks (``saving.py`` writes them back). Every
network is built on the ``meta`` device (shapes only, no memory) and then takes the file's tensors, after
``load_state_dict_strict`` has checked that every name and shape matches.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from minidiff.loading.pickle_file import PICKLE_SUFFIXES, read_pickle_checkpoint
from minidiff.loading.safetensors_file import INDEX_SUFFIX, read_safetensors, read_sharded_safetensors
from minidiff.loading.single_file import infer_configs, split_original_checkpoint
from minidiff.loading.state_dict import CheckpointError, load_state_dict_strict
from minidiff.models.clip import CLIPTextModel, clip_text_state_dict
from minidiff.models.config import CLIPTextConfig, ControlNetConfig, UNetConfig, VAEConfig
from minidiff.models.controlnet import ControlNetModel
from minidiff.models.tokenizer import EOS, CLIPTokenizer, find_openclip_vocab, load_openclip_bpe
from minidiff.models.unet import UNet2DConditionModel
from minidiff.models.vae import AutoencoderKL
from minidiff.samplers import SchedulerConfig

# component folder -> (config class, model class, weights file name, class name in model_index.json)
NETWORKS = {
    "text_encoder": (CLIPTextConfig, CLIPTextModel, "model", ["transformers", "CLIPTextModel"]),
    "vae": (VAEConfig, AutoencoderKL, "diffusion_pytorch_model", ["diffusers", "AutoencoderKL"]),
    "unet": (UNetConfig, UNet2DConditionModel, "diffusion_pytorch_model", ["diffusers", "UNet2DConditionModel"]),
    "controlnet": (ControlNetConfig, ControlNetModel, "diffusion_pytorch_model", ["diffusers", "ControlNetModel"]),
}
# The pad token of each text tower's tokenizer (SD 2.x's OpenCLIP tokenizer pads with "!").
PAD_TOKEN = {"sd1": EOS, "sd2": "!"}
# A single file carries no tokenizer: it is read with CLIP's (49,408 tokens), so its text encoder must have as many.
CLIP_VOCAB_SIZE = CLIPTextConfig.vocab_size
# A model folder's recommended settings. commands/model_settings.py reads and checks them, under the same name (it
# keeps its own copy of the name, so that the command line's options are read without importing torch).
SETTINGS_FILE = "minidiff_settings.json"


@dataclass
class Components:
    """Everything a pipeline needs; ``source`` is the file or folder it came from; ``settings``: the JSON object of
    its folder's minidiff_settings.json, which saving writes back (None: there is none, as in a single file)."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler_config: SchedulerConfig
    controlnet: ControlNetModel | None = None
    source: str = ""
    settings: dict | None = None


# The random fills skip_random_init leaves undone. torch.nn.init's normal_, uniform_ and kaiming_uniform_ reach a
# torch function mode as one call each; its other random fills (kaiming_normal_, xavier_*, trunc_normal_) reach it
# as the tensor methods normal_ and uniform_ they call.
INIT_FUNCTIONS = (nn.init.normal_, nn.init.uniform_, nn.init.kaiming_uniform_, torch.Tensor.normal_,
                  torch.Tensor.uniform_)


class skip_random_init(TorchFunctionMode):  # lower case, as torch.no_grad: a context manager
    """``with skip_random_init():`` layers are built without their random values, which a checkpoint's weights
    replace anyway; on the meta device this matters, as normal_ there goes through torch._refs, whose first call
    imports torch._dynamo (about 1.5 s in torch 2.13). A torch function mode: it holds only inside the ``with``,
    on this thread, and leaves torch.nn.init itself as it is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in INIT_FUNCTIONS:
            return args[0] if args else kwargs["tensor"]  # the tensor, left as it is
        return func(*args, **kwargs)


def build_network(name, config, state_dict, source, dtype, device):
    """Build network ``name`` from its config on the meta device, then take ``state_dict`` strictly."""
    _, model_class, _, _ = NETWORKS[name]
    with torch.device("meta"), skip_random_init():
        model = model_class(config)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    load_state_dict_strict(model, state_dict, source, assign=True)
    return model.to(device).eval()


def read_weights(path, allow_pickle):
    """{name: tensor} from a .safetensors file, the index of a sharded one, or a pickle file when ``allow_pickle``."""
    path = str(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    if path.endswith(INDEX_SUFFIX):
        return read_sharded_safetensors(path)
    if path.endswith(PICKLE_SUFFIXES):
        return read_pickle_checkpoint(path, allow_pickle=allow_pickle)
    raise CheckpointError(
        f"{path}: unknown weights format; expected .safetensors "
        f"(or, with --allow-pickle, {', '.join(PICKLE_SUFFIXES)})."
    )


def read_json(path):
    """A JSON object from a config file, or a CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a diffusers model folder has one here.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object {{...}}, found a {type(data).__name__}.")
    return data


def weights_file(folder, stem, variant, allow_pickle):
    """The weights file of one component folder: ``{stem}[.{variant}].safetensors``, else the index of its
    shards (``{stem}[.{variant}].safetensors.index.json``), else the pickle ``.bin``."""
    suffix = f".{variant}" if variant else ""
    for candidate in (folder / f"{stem}{suffix}.safetensors", folder / f"{stem}{suffix}{INDEX_SUFFIX}",
                      folder / f"{stem}{suffix}.bin"):
        if candidate.is_file() and (candidate.suffix != ".bin" or allow_pickle):
            return candidate
    found = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "config.json")
    hint = "; pass --allow-pickle to read the .bin file" if (folder / f"{stem}{suffix}.bin").is_file() else ""
    if not hint and variant is None and any(".fp16." in name for name in found):
        hint = "; to read half-precision weights pass variant='fp16' (--variant fp16)"
    raise CheckpointError(f"{folder}: no {stem}{suffix}.safetensors; the folder holds {found or 'no files'}{hint}.")


def load_network_folder(folder, name, dtype, device, allow_pickle, variant):
    """One network from its diffusers component folder (config.json + weights)."""
    config_class = NETWORKS[name][0]
    config_path = folder / "config.json"
    config_dict = read_json(config_path)
    try:
        config = config_class.from_dict(config_dict)
    except (ValueError, TypeError) as exc:  # values minidiff does not build, or of the wrong type
        raise CheckpointError(f"{config_path}: {exc}") from None
    path = weights_file(folder, NETWORKS[name][2], variant, allow_pickle)
    state_dict = read_weights(path, allow_pickle)
    if name == "text_encoder":
        state_dict = clip_text_state_dict(state_dict)  # "text_model." prefix or not, as transformers versions differ
    return build_network(name, config, state_dict, path, dtype, device)


def load_folder(folder, dtype, device, allow_pickle, variant, prediction_type):
    """Components from a diffusers model folder (see the module docstring for the layout)."""
    required = ["tokenizer", "text_encoder", "vae", "unet", "scheduler"]
    missing = [name for name in required if not (folder / name).is_dir()]
    if missing:
        found = sorted(p.name for p in folder.iterdir())
        raise CheckpointError(
            f"{folder}: missing the component folders {missing}; a Stable Diffusion model folder has "
            f"{', '.join(required)} (and model_index.json); this one holds {found or 'nothing'}."
        )
    if (folder / "model_index.json").is_file():
        read_json(folder / "model_index.json")  # only checked to be readable: the subfolders say what is there
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        scheduler_config = SchedulerConfig.from_json(folder / "scheduler")
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    settings = read_json(folder / SETTINGS_FILE) if (folder / SETTINGS_FILE).is_file() else None
    networks = {
        name: load_network_folder(folder / name, name, dtype, device, allow_pickle, variant)
        for name in NETWORKS
        if name != "controlnet" or (folder / name).is_dir()
    }
    if prediction_type is not None:
        scheduler_config = dataclasses.replace(scheduler_config, prediction_type=prediction_type)
    return Components(tokenizer, scheduler_config=scheduler_config, source=str(folder), settings=settings, **networks)


def load_single_file(path, dtype, device, allow_pickle, prediction_type):
    """Components from one original-layout checkpoint: configs from the shapes, CLIP's standard tokenizer."""
    state_dict = read_weights(path, allow_pickle)
    try:
        configs = infer_configs(state_dict, prediction_type)
        parts = split_original_checkpoint(state_dict, configs)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    vocab_size = configs["text_encoder"]["vocab_size"]
    if vocab_size != CLIP_VOCAB_SIZE:  # before the tokenizer is looked for: no installed one could fit
        raise CheckpointError(
            f"{path}: the text encoder has {vocab_size} token embeddings, not the {CLIP_VOCAB_SIZE} of CLIP's "
            "vocabulary; a single file carries no tokenizer and is read with CLIP's, so this file cannot be used "
            "whatever is installed: use the diffusers folder it came from, which keeps its own tokenizer."
        )
    networks = {
        name: build_network(name, NETWORKS[name][0].from_dict(configs[name]), parts[name], path, dtype, device)
        for name in ("text_encoder", "vae", "unet")
    }
    kind = "sd2" if configs["text_encoder"]["hidden_act"] == "gelu" else "sd1"
    tokenizer = CLIPTokenizer(*load_openclip_bpe(find_openclip_vocab()), pad_token=PAD_TOKEN[kind])
    scheduler_config = SchedulerConfig.from_dict(configs["scheduler"])
    return Components(tokenizer, scheduler_config=scheduler_config, source=str(path), **networks)


def load_components(path, dtype=torch.float32, device="cpu", allow_pickle=False, variant=None, prediction_type=None):
    """Load a Stable Diffusion model from a diffusers folder or a single checkpoint file.

    dtype: floating-point weights are converted to it; variant: e.g. "fp16" reads *.fp16.safetensors in a folder;
    prediction_type: "epsilon" or "v_prediction", overriding the scheduler config (required for SD 2.x single
    files, whose weights cannot tell). Pickle files are read only with allow_pickle. Returns Components.
    """
    path = Path(path)
    if path.is_dir():
        return load_folder(path, dtype, device, allow_pickle, variant, prediction_type)
    if path.is_file():
        return load_single_file(path, dtype, device, allow_pickle, prediction_type)
    raise CheckpointError(f"{path}: no such file or folder; give a diffusers model folder or a checkpoint file.")
