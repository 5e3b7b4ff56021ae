"""Reference solution of lessons/exercises/euler_step.py (lesson 3)."""

import torch


def euler_step(x, denoised, sigma, sigma_next):
    """d = (x - x̂_0) / σ;  x_next = x + (σ_next - σ) d. Shapes as x."""
    d = (x - denoised) / sigma
    return x + (sigma_next - sigma) * d
