"""Reference solution of lessons/exercises/ddim_step.py (lesson 3)."""

import torch


def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev):
    """x̂_0 = (x_t - sqrt(1-ᾱ_t) ε) / sqrt(ᾱ_t);  x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1-ᾱ_prev) ε. Shapes as x_t."""
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps
