"""Reference solution of lessons/exercises/classifier_free_guidance.py (lesson 7)."""

import torch


def classifier_free_guidance(noise_uncond, noise_cond, guidance_scale):
    """ε = ε_uncond + s (ε_cond - ε_uncond). Shapes as the inputs."""
    return noise_uncond + guidance_scale * (noise_cond - noise_uncond)
