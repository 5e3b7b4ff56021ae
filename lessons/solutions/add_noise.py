"""Reference solution of lessons/exercises/add_noise.py (lesson 1)."""

import torch


def add_noise(x0, noise, alphas_cumprod, t):
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, each image at its own t. x0, noise: (B, ...); t: (B,)."""
    alpha_bar = alphas_cumprod[t].reshape(-1, *[1] * (x0.ndim - 1))  # (B, 1, 1, ...)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
