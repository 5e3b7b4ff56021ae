"""Classifier-free guidance (Ho & Salimans, 2022): one network, two predictions, pushed apart.

The U-Net runs on a doubled batch, once with the empty (or negative) prompt and once with the prompt, and the two
predictions are combined as

    ε = ε_u + s (ε_c - ε_u)

s = 1 gives the conditional prediction alone; s > 1 moves further along the direction the prompt adds. Lesson 7
derives it; the pipelines (``base.py``), the CUDA-graph step (``minidiff/fast.py``) and the exercise checker all use
this one function.

A Latent Consistency Model (Luo et al., 2023) was distilled from guided predictions with ε = (1 + ω) ε_c - ω ε_u,
ω = s - 1, and takes ω as an input instead: its U-Net (``config.time_cond_proj_dim`` set) runs once, on the prompt
batch alone, with ``timestep_cond = guidance_scale_embedding(ω)``, as diffusers' pipelines run it. Such a model has
no unconditional half, so it takes no negative prompt.
"""

import torch

from minidiff.models.embeddings import guidance_scale_embedding


def classifier_free_guidance(uncond, cond, guidance_scale):
    """ε_u + s (ε_c - ε_u) for predictions uncond, cond of the same shape (B, C, h, w); returns (B, C, h, w)."""
    return uncond + guidance_scale * (cond - uncond)


def uses_classifier_free_guidance(unet, guidance_scale):
    """Whether ``unet`` runs on the doubled [unconditional; conditional] batch: guidance_scale > 1, and the U-Net
    does not take the scale as an input (an LCM's does, see ``guidance_condition``)."""
    return guidance_scale > 1 and unet.config.time_cond_proj_dim is None


def guidance_condition(unet, guidance_scale, batch):
    """An LCM U-Net's ``timestep_cond``: guidance_scale_embedding(ω = s - 1) for each of ``batch`` latents, (B, D)
    in the U-Net's dtype and on its device; None for a U-Net without ``config.time_cond_proj_dim``."""
    if unet.config.time_cond_proj_dim is None:
        return None
    omega = torch.full((batch,), guidance_scale - 1.0)  # (B,) float32
    weight = unet.conv_in.weight
    return guidance_scale_embedding(omega, unet.config.time_cond_proj_dim).to(weight.device, weight.dtype)
