"""Exercise (lesson 3, samplers): one Euler step of the probability-flow ODE, in σ-space (x = x_0 + σ ε).

Fill in the body, then check it:   python -m minidiff.check euler_step
"""

import torch


def euler_step(x, denoised, sigma, sigma_next):
    """Follow the ODE dx/dσ = (x - x̂_0) / σ from noise level σ down to σ_next with one straight step:

        d      = (x - denoised) / σ          the slope: which way the noise points, per unit of σ
        x_next = x + (σ_next - σ) · d        σ_next < σ, so this removes part of the noise

    x:          (B, C, H, W) the current sample at noise level σ
    denoised:   (B, C, H, W) the network's estimate x̂_0 of the clean sample
    sigma:      0-dim tensor, the current noise level σ > 0
    sigma_next: 0-dim tensor, the next noise level (0 on the last step)
    returns:    (B, C, H, W) x_next
    """
    raise NotImplementedError("compute the slope d, then take the step from sigma to sigma_next")
