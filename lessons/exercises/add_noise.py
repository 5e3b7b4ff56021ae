"""Exercise (lesson 1, forward diffusion): noise a clean image to timestep t in one jump.

Fill in the body, then check it:   python -m minidiff.check add_noise
"""

import torch


def add_noise(x0, noise, alphas_cumprod, t):
    """Sample q(x_t | x_0) for every image of a batch, each at its own timestep:

        x_t = sqrt(ᾱ_t) · x_0 + sqrt(1 - ᾱ_t) · ε

    x0:             (B, ...) clean images, e.g. (B, C, H, W)
    noise:          (B, ...) standard normal noise ε, the shape of x0
    alphas_cumprod: (T,) the products ᾱ_t = (1 - β_0)(1 - β_1)...(1 - β_t)
    t:              (B,) integer timesteps in 0..T-1, one per image
    returns:        (B, ...) x_t, the shape of x0

    Hint: alphas_cumprod[t] has shape (B,); reshape it to (B, 1, 1, ...) so that it multiplies each image.
    """
    raise NotImplementedError("compute x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise")
