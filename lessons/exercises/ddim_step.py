"""Exercise (lesson 3, samplers): one deterministic DDIM step (eta = 0) from timestep t to the previous one.

Fill in the body, then check it:   python -m minidiff.check ddim_step
"""

import torch


def ddim_step(x_t, eps, alpha_bar_t, alpha_bar_prev):
    """Move x_t to the noise level ᾱ_prev of the next timestep the sampler visits, using the network's ε:

        x̂_0    = (x_t - sqrt(1 - ᾱ_t) · ε) / sqrt(ᾱ_t)          the clean image the prediction implies
        x_prev = sqrt(ᾱ_prev) · x̂_0 + sqrt(1 - ᾱ_prev) · ε      put the same noise back, at the lower level

    x_t:            (B, C, H, W) the current sample
    eps:            (B, C, H, W) the network's noise prediction ε(x_t, t)
    alpha_bar_t:    0-dim tensor, ᾱ at the current timestep t
    alpha_bar_prev: 0-dim tensor, ᾱ at the timestep the step lands on (larger than ᾱ_t: less noise)
    returns:        (B, C, H, W) x_prev
    """
    raise NotImplementedError("predict x0 from eps, then rebuild the sample at the level alpha_bar_prev")
