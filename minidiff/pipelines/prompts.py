"""Prompts -> the text embeddings the U-Net attends to, batched for classifier-free guidance.

Classifier-free guidance (Ho & Salimans, 2022) runs the U-Net twice per step, once with the prompt and once
with an "unconditional" text (the empty prompt, or a negative prompt), and extrapolates away from the latter:

    ε = ε(x, t, c_uncond) + s · (ε(x, t, c) - ε(x, t, c_uncond))        s = guidance_scale

Both runs go through the U-Net as one batch of 2B: the unconditional half first, then the conditional half.
With s <= 1 guidance is off and the batch holds only the B prompt embeddings.
"""

import warnings

import torch


def as_prompt_list(prompt, name="prompt"):
    """A prompt or list of prompts -> list of str (the empty string is a valid, unconditional prompt)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{name} must be a string or a non-empty list of strings, got {prompt!r}")
    return prompts


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompts, clip_skip=None):
    """list of B prompts -> (B, 77, D) embeddings: tokenize (warning about cut tokens), run the text encoder.

    clip_skip = k takes the output of the layer k before the last (through the final LayerNorm).
    """
    tokens = tokenizer(prompts)
    for prompt, dropped in zip(prompts, tokens.truncated):
        if dropped:
            warnings.warn(
                f"the prompt {prompt[:40]!r}... is longer than CLIP's {tokenizer.max_length}-token window: its last "
                f"{dropped} token{'s' if dropped > 1 else ''} were dropped; shorten it to keep them",
                UserWarning,
                stacklevel=3,
            )
    input_ids = tokens.input_ids.to(next(text_encoder.parameters()).device)  # (B, 77)
    return text_encoder(input_ids, clip_skip=clip_skip).last_hidden_state  # (B, 77, D)


def prompt_embeddings(tokenizer, text_encoder, prompt, negative_prompt=None, num_images_per_prompt=1,
                      guidance=True, clip_skip=None):
    """The U-Net's context for B = len(prompts) * num_images_per_prompt images.

    Returns (2B, 77, D) = [unconditional; conditional] with guidance, else (B, 77, D). Each prompt's embedding is
    repeated num_images_per_prompt times in a row: p0, p0, p1, p1, ... The unconditional text is "" or
    ``negative_prompt`` (one string for all prompts, or one per prompt). As in diffusers, ``clip_skip`` applies to
    the prompts only, not to the unconditional text.
    """
    prompts = as_prompt_list(prompt)
    cond = encode_text(tokenizer, text_encoder, prompts, clip_skip)  # (P, 77, D)
    cond = cond.repeat_interleave(num_images_per_prompt, dim=0)  # (B, 77, D)
    if not guidance:
        return cond
    negatives = [""] * len(prompts) if negative_prompt is None else as_prompt_list(negative_prompt, "negative_prompt")
    if len(negatives) == 1:
        negatives = negatives * len(prompts)
    if len(negatives) != len(prompts):
        raise ValueError(
            f"got {len(negatives)} negative prompts for {len(prompts)} prompts; give one negative prompt for all "
            f"or one per prompt"
        )
    uncond = encode_text(tokenizer, text_encoder, negatives)  # (P, 77, D)
    uncond = uncond.repeat_interleave(num_images_per_prompt, dim=0)  # (B, 77, D)
    return torch.cat([uncond, cond])  # (2B, 77, D)
