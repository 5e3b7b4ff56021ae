"""Loading a state dict into a network strictly, with errors that say what went wrong.

A state dict maps parameter names to tensors: ``{"conv_in.weight": (320, 4, 3, 3), ...}``. Loading one that
does not match the network is the most common checkpoint failure, and PyTorch's ``strict=False`` hides it: the
missing layers keep their random values and the images come out as noise. minidiff always loads strictly and
turns a mismatch into one ``CheckpointError`` that names the file, lists what differs and guesses why.
"""

import torch


class CheckpointError(ValueError):
    """A checkpoint file or folder cannot be used as it is; the message names the file and the problem."""


# Keys that some files carry but that hold nothing a network needs. Only these are ever dropped silently.
KNOWN_HARMLESS_KEYS = {
    # Older transformers versions saved the constant 0..76 position indices of CLIP as a buffer.
    "text_model.embeddings.position_ids": "the constant positions 0..76 that older transformers versions saved",
}

# How many keys an error message lists before it says "... and N more".
MAX_LISTED = 10

# (key, axis, {size: meaning}): telltale shapes of one Stable Diffusion family or another.
TELLTALE_SHAPES = [
    (
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        1,
        {
            768: "an SD 1.x U-Net (768-wide CLIP text features)",
            1024: "an SD 2.x U-Net (1024-wide OpenCLIP text features)",
        },
    ),
    ("conv_in.weight", 1, {4: "a text-to-image U-Net (4 input channels)", 9: "an inpainting U-Net (9 input channels)"}),
    (
        "text_model.embeddings.token_embedding.weight",
        1,
        {
            768: "an SD 1.x text encoder (CLIP ViT-L, 768 wide)",
            1024: "an SD 2.x text encoder (OpenCLIP ViT-H, 1024 wide)",
        },
    ),
]


def listed(keys):
    """The first MAX_LISTED keys, comma-separated, then a count of the rest."""
    keys = sorted(keys)
    text = ", ".join(keys[:MAX_LISTED])
    if len(keys) > MAX_LISTED:
        text += f" ... and {len(keys) - MAX_LISTED} more"
    return text


def diagnose(expected_shapes, found_shapes):
    """A sentence guessing why two key sets differ, or '' when no rule applies.

    expected_shapes / found_shapes: {key: shape} of the network and of the file.
    """
    for key, axis, meanings in TELLTALE_SHAPES:
        if key in expected_shapes and key in found_shapes:
            want, got = expected_shapes[key][axis], found_shapes[key][axis]
            if want != got and want in meanings and got in meanings:
                return f"This looks like {meanings[got]} but the config describes {meanings[want]}."
    found_roots = {key.split(".")[0] for key in found_shapes}
    if found_roots & {"model", "first_stage_model", "cond_stage_model"}:
        return (
            "The file uses the original (CompVis / A1111) single-file names: load it with "
            "minidiff.loading.load_components, or convert it with `python -m minidiff convert`."
        )
    expected_roots = {key.split(".")[0] for key in expected_shapes}
    if len(found_roots) == 1 and not found_roots & expected_roots:
        root = found_roots.pop()
        return f"Every key in the file starts with '{root}.': it holds a whole pipeline or a wrapper, not this network."
    return ""


def load_state_dict_strict(module, state_dict, source, assign=False):
    """Copy ``state_dict`` into ``module`` if the keys and shapes match exactly; otherwise raise CheckpointError.

    Only the keys in KNOWN_HARMLESS_KEYS may be absent from the network and are then dropped. ``source`` is the
    file (or a description of it) named in the error. assign=True makes the file's tensors the parameters
    (no copy; for a network built on the meta device). Returns the module.
    """
    expected = {key: tuple(t.shape) for key, t in module.state_dict().items()}
    state_dict = {k: v for k, v in state_dict.items() if k in expected or k not in KNOWN_HARMLESS_KEYS}
    found = {key: tuple(t.shape) for key, t in state_dict.items()}

    missing = expected.keys() - found.keys()
    unexpected = found.keys() - expected.keys()
    mismatched = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys: {listed(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys: {listed(unexpected)}")
        if mismatched:
            shown = [f"{k} (network {list(expected[k])}, file {list(found[k])})" for k in mismatched[:MAX_LISTED]]
            more = f" ... and {len(mismatched) - MAX_LISTED} more" if len(mismatched) > MAX_LISTED else ""
            problems.append(f"{len(mismatched)} shape mismatches: {', '.join(shown)}{more}")
        hint = diagnose(expected, found)
        raise CheckpointError(
            f"{source}: the weights do not fit {type(module).__name__}. " + (hint + " " if hint else "")
            + "Check that the config.json beside the weights describes the same model. Found "
            + "; ".join(problems) + "."
        )
    with torch.no_grad():
        module.load_state_dict(state_dict, strict=True, assign=assign)
    left_empty = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left_empty:
        name = type(module).__name__
        raise RuntimeError(f"{name} has tensors no file fills (it was built on 'meta'): {listed(left_empty)}.")
    return module
