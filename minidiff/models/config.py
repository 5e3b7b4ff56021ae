"""Every network's config: a dataclass whose fields are what minidiff builds, with the checks of their values.

The configs read the ``config.json`` beside each network's weights (diffusers writes the U-Net's, the VAE's and the
ControlNet's, transformers the text encoder's). ``read_config`` gives every key of such a file one of five fates:

1. metadata (a leading ``_``: ``_class_name``, ``_diffusers_version``, ``_name_or_path``) is skipped;
2. a field of the dataclass is read;
3. a key that selects a variant minidiff does not build (SDXL's ``addition_embed_type``, a class embedding, ...) is
   accepted only at the value that switches the variant off, a ValueError otherwise: the ``*_FIXED`` tables;
4. a key that leaves the network's computation unchanged is skipped if the config's ``*_IGNORED`` table lists it.
   Only the text encoder has one (transformers' bookkeeping, initialisation and output switches): every key diffusers
   writes for the other networks is read or fixed;
5. any other key is a ValueError naming it and the keys minidiff accepts: a newer library may have added it, and no
   key is skipped before someone has checked that it leaves the network unchanged.
"""

from dataclasses import asdict, dataclass, fields

from minidiff.models.activations import ACTIVATIONS


def read_config(cls, d, name, fixed, ignored=()):
    """Build the dataclass ``cls`` from a ``config.json`` dict by the five rules of the module docstring."""
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key.startswith("_") or key in ignored:
            continue
        if key in fixed:
            if value not in fixed[key]:
                allowed = " or ".join(repr(v) for v in fixed[key])
                raise ValueError(
                    f"{name} config: {key}={value!r} is not supported; minidiff builds only the Stable Diffusion "
                    f"1.x/2.x architecture, which has {key}={allowed}."
                )
            continue
        if key not in known:
            accepted = ", ".join(sorted(known | set(fixed) | set(ignored)))
            raise ValueError(f"{name} config: unknown key {key!r}. Supported keys: {accepted}.")
        kwargs[key] = value
    return cls(**kwargs)


def to_json_dict(config, **header):
    """The config as a ``config.json`` dict: ``header`` first, then the fields, tuples written as lists."""
    d = {**header, **asdict(config)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --- The U-Net and the ControlNet (which copies the U-Net's encoder) ---

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")

# diffusers' UNet2DConditionModel keys that select variants minidiff does not build, with the values that switch
# them off.
UNET_FIXED = {
    # the blocks
    "mid_block_type": ("UNetMidBlock2DCrossAttn",), "act_fn": ("silu",), "mid_block_scale_factor": (1,),
    "resnet_time_scale_shift": ("default",), "resnet_skip_time_act": (False,), "resnet_out_scale_factor": (1.0,),
    "conv_in_kernel": (3,), "conv_out_kernel": (3,),
    # the attention layers (diffusers' UNet2DConditionModel refuses num_attention_heads too; see UNetConfig)
    "num_attention_heads": (None,), "only_cross_attention": (False,), "mid_block_only_cross_attention": (None, False),
    "dual_cross_attention": (False,), "reverse_transformer_layers_per_block": (None,), "attention_type": ("default",),
    "cross_attention_norm": (None,), "encoder_hid_dim": (None,), "encoder_hid_dim_type": (None,),
    # the timestep embedding
    "time_embedding_type": ("positional",), "time_embedding_dim": (None,), "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    # embeddings added to the timestep's: class labels, or SDXL's "text_time" (pooled text and image sizes)
    "class_embed_type": (None,), "num_class_embeds": (None,), "class_embeddings_concat": (False,),
    "projection_class_embeddings_input_dim": (None,), "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,), "addition_embed_type_num_heads": (64,),
}


def per_block(value, n, key, name):
    """An int for every block, or a list with one entry per block -> a tuple of n ints."""
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ValueError(f"{name} config: {key}={list(value)} must have one entry per block ({n}), or be one int.")
    return tuple(value)


def check_encoder_fields(config, name):
    """Checks shared by the U-Net and the ControlNet configs (the fields that build conv_in, down and mid blocks)."""
    n = len(config.block_out_channels)
    if len(config.down_block_types) != n or any(t not in DOWN_BLOCK_TYPES for t in config.down_block_types):
        raise ValueError(
            f"{name} config: down_block_types must list one of {DOWN_BLOCK_TYPES} per entry of "
            f"block_out_channels ({n}), found {list(config.down_block_types)}."
        )
    for key in ("layers_per_block", "transformer_layers_per_block", "cross_attention_dim", "norm_num_groups"):
        if not isinstance(getattr(config, key), int):
            raise ValueError(
                f"{name} config: {key} must be a single int (the same for all blocks), found "
                f"{getattr(config, key)!r}; minidiff does not build per-block values of it."
            )
    per_block(config.attention_head_dim, n, "attention_head_dim", name)


@dataclass
class UNetConfig:
    """The fields of diffusers' UNet2DConditionModel ``config.json``; the defaults are Stable Diffusion 1.5's U-Net.

    ``attention_head_dim`` is, despite its name, the number of attention heads (one int, or one per block): diffusers
    kept this historical misnaming, and each head is block_channels // attention_head_dim wide (SD 1.x: 8 heads;
    SD 2.x: [5, 10, 20, 20] heads of 64 channels).
    """

    # the latent in and out
    sample_size: int = 64
    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False
    # the timestep embedding
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    time_cond_proj_dim: int | None = None  # a Latent Consistency Model's: the width of its guidance-scale embedding
    # the blocks, one entry per resolution
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    dropout: float = 0.0
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    # the spatial transformers
    cross_attention_dim: int = 768
    transformer_layers_per_block: int = 1
    attention_head_dim: int | tuple = 8
    use_linear_projection: bool = False
    upcast_attention: bool = False

    def __post_init__(self):
        for key in ("down_block_types", "up_block_types", "block_out_channels"):
            setattr(self, key, tuple(getattr(self, key)))
        if not isinstance(self.attention_head_dim, int):
            self.attention_head_dim = tuple(self.attention_head_dim)
        check_encoder_fields(self, "UNet")
        n = len(self.block_out_channels)
        if len(self.up_block_types) != n or any(t not in UP_BLOCK_TYPES for t in self.up_block_types):
            raise ValueError(
                f"UNet config: up_block_types must list one of {UP_BLOCK_TYPES} per entry of block_out_channels ({n}), "
                f"found {list(self.up_block_types)}."
            )

    def heads_per_block(self):
        """Number of attention heads of each down block (the up blocks use them in reverse, the mid block the last)."""
        return per_block(self.attention_head_dim, len(self.block_out_channels), "attention_head_dim", "UNet")

    @classmethod
    def from_dict(cls, d):
        """Read a diffusers UNet2DConditionModel ``config.json`` (as a dict); unsupported values raise ValueError."""
        return read_config(cls, d, "UNet", UNET_FIXED)

    def to_dict(self):
        """A ``config.json`` dict that diffusers' ``UNet2DConditionModel.from_config`` loads."""
        return to_json_dict(self, _class_name="UNet2DConditionModel")


# The keys of UNET_FIXED that diffusers' ControlNetModel has, and one of its own (pooling the residuals).
CONTROLNET_FIXED = {
    **{key: UNET_FIXED[key] for key in (
        "mid_block_type", "act_fn", "mid_block_scale_factor", "only_cross_attention", "encoder_hid_dim",
        "encoder_hid_dim_type", "class_embed_type", "num_class_embeds", "projection_class_embeddings_input_dim",
        "addition_embed_type", "addition_time_embed_dim", "addition_embed_type_num_heads", "resnet_time_scale_shift",
    )},
    "global_pool_conditions": (False,),
}


@dataclass
class ControlNetConfig:
    """The fields of diffusers' ControlNetModel ``config.json``; the defaults are the SD 1.5 ControlNets'.

    The encoder fields mean what they mean in UNetConfig; ``num_attention_heads``, when set, overrides the
    (misnamed) ``attention_head_dim`` as the number of heads. ``conditioning_embedding_out_channels`` are the widths
    of the condition-image convnet; ``controlnet_conditioning_channel_order`` "bgr" flips the condition's channels.
    """

    in_channels: int = 4
    conditioning_channels: int = 3
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    downsample_padding: int = 1
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int = 768
    transformer_layers_per_block: int = 1
    attention_head_dim: int | tuple = 8
    num_attention_heads: int | tuple | None = None
    use_linear_projection: bool = False
    upcast_attention: bool = False
    controlnet_conditioning_channel_order: str = "rgb"
    conditioning_embedding_out_channels: tuple = (16, 32, 96, 256)

    def __post_init__(self):
        for key in ("down_block_types", "block_out_channels", "conditioning_embedding_out_channels"):
            setattr(self, key, tuple(getattr(self, key)))
        for key in ("attention_head_dim", "num_attention_heads"):
            if isinstance(getattr(self, key), list):
                setattr(self, key, tuple(getattr(self, key)))
        check_encoder_fields(self, "ControlNet")
        if self.controlnet_conditioning_channel_order not in ("rgb", "bgr"):
            raise ValueError(
                "ControlNet config: controlnet_conditioning_channel_order must be 'rgb' or 'bgr', found "
                f"{self.controlnet_conditioning_channel_order!r}."
            )

    def heads_per_block(self):
        """Number of attention heads of each down block; the mid block uses the last."""
        heads = self.num_attention_heads or self.attention_head_dim
        return per_block(heads, len(self.block_out_channels), "num_attention_heads", "ControlNet")

    @classmethod
    def from_dict(cls, d):
        """Read a diffusers ControlNetModel ``config.json`` (as a dict); unsupported values raise ValueError."""
        return read_config(cls, d, "ControlNet", CONTROLNET_FIXED)

    def to_dict(self):
        """A ``config.json`` dict that diffusers' ``ControlNetModel.from_config`` loads."""
        return to_json_dict(self, _class_name="ControlNetModel")


# --- The VAE ---

# diffusers' AutoencoderKL keys that select variants minidiff does not build (per-channel latent statistics that
# some later models normalise with), with the values that switch them off.
VAE_FIXED = {"latents_mean": (None,), "latents_std": (None,)}


@dataclass
class VAEConfig:
    """The fields of diffusers' AutoencoderKL ``config.json``; the defaults are Stable Diffusion 1.x/2.x's VAE."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple = ("DownEncoderBlock2D",) * 4
    up_block_types: tuple = ("UpDecoderBlock2D",) * 4
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 512
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self):
        for key in ("down_block_types", "up_block_types", "block_out_channels"):
            setattr(self, key, tuple(getattr(self, key)))
        n = len(self.block_out_channels)
        for key, block_type in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            value = getattr(self, key)
            if value != (block_type,) * n:
                raise ValueError(
                    f"VAE config: {key} must be {n} x '{block_type}' (one per entry of block_out_channels), "
                    f"found {list(value)}; minidiff builds only the plain blocks Stable Diffusion's VAE uses."
                )
        if self.act_fn != "silu":
            raise ValueError(
                f"VAE config: act_fn must be 'silu' (the only activation the VAE uses), found {self.act_fn!r}."
            )

    @classmethod
    def from_dict(cls, d):
        """Read a diffusers AutoencoderKL ``config.json`` (as a dict); unsupported values raise ValueError."""
        return read_config(cls, d, "VAE", VAE_FIXED)

    def to_dict(self):
        """A ``config.json`` dict that diffusers' ``AutoencoderKL.from_config`` loads."""
        return to_json_dict(self, _class_name="AutoencoderKL")


# --- The text encoder ---

# transformers' CLIPTextConfig keys for training-time dropout, which minidiff's CLIP does not apply.
CLIP_FIXED = {"dropout": (0.0,), "attention_dropout": (0.0,)}

# Keys of a transformers config.json that leave the text transformer's output unchanged.
CLIP_IGNORED = frozenset({
    # what the file describes and who wrote it (from_dict checks model_type)
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype",
    # how fresh weights are initialised; a file's weights replace them
    "initializer_range", "initializer_factor",
    # transformers' generic switches: what forward returns, other models' heads, computing the MLP in chunks
    "return_dict", "output_attentions", "output_hidden_states", "id2label", "label2id", "problem_type",
    "is_encoder_decoder", "chunk_size_feed_forward",
})


@dataclass
class CLIPTextConfig:
    """The text encoder's shape; defaults are Stable Diffusion 1.x's (CLIP ViT-L/14's text half).

    Stable Diffusion 2.x uses OpenCLIP ViT-H/14: hidden_size 1024, intermediate_size 4096, 16 heads,
    23 layers (the 24th of OpenCLIP is dropped), hidden_act "gelu". eos_token_id 2 is a historical mistake
    kept in those config files; ``CLIPTextModel`` then finds the end token as the largest id (see pooling).
    """

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 768  # used only by CLIP's projection head, kept so config.json round-trips
    bos_token_id: int = 0
    eos_token_id: int = 2
    pad_token_id: int = 1

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must split evenly into num_attention_heads "
                f"({self.num_attention_heads}) heads."
            )
        if not isinstance(self.eos_token_id, int):
            raise ValueError(f"eos_token_id must be a single integer, got {self.eos_token_id!r}.")

    @classmethod
    def from_dict(cls, d):
        """Read a transformers CLIPTextModel ``config.json`` (as a dict); unsupported values raise ValueError."""
        model_type = d.get("model_type", "clip_text_model")
        if model_type != "clip_text_model":
            raise ValueError(
                f"Expected the config.json of a CLIP text encoder (model_type 'clip_text_model'), got {model_type!r}."
                " Stable Diffusion keeps it in the text_encoder/ folder."
            )
        return read_config(cls, d, "Text encoder", CLIP_FIXED, CLIP_IGNORED)

    def to_dict(self):
        """A config.json that transformers' CLIPTextModel loads."""
        return to_json_dict(self, architectures=["CLIPTextModel"], model_type="clip_text_model")
