"""Exercise (lesson 3, samplers): one step of PLMS, the pseudo linear multistep sampler (PNDM, Liu et al. 2022).

Fill in the body, then check it:   python -m minidiff.check plms_step
"""

import torch


def plms_step(x, eps_history, alpha_bar, alpha_bar_prev):
    """One PLMS step from timestep t to t' = t - 1000 // steps, once four noise predictions are known.

    1. Combine the last four ε's as the Adams–Bashforth method of order 4 does (newest first):
           ε' = (55 ε_0 - 59 ε_1 + 37 ε_2 - 9 ε_3) / 24
    2. Move with the *transfer* of the paper's eq. (9), the DDIM step written with ᾱ = ᾱ_t and ᾱ' = ᾱ_t':
           x' = sqrt(ᾱ'/ᾱ) x - (ᾱ' - ᾱ) ε' / (ᾱ sqrt(1 - ᾱ') + sqrt(ᾱ (1 - ᾱ) ᾱ'))

    x:              (B, C, H, W) the latent x_t = sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε
    eps_history:    list of four (B, C, H, W) tensors, the network's ε at this step and the three before, newest first
    alpha_bar:      0-dim tensor ᾱ_t
    alpha_bar_prev: 0-dim tensor ᾱ_t' (ᾱ_0 after the last timestep)
    returns:        (B, C, H, W) x_t'
    """
    raise NotImplementedError("combine the four ε's, then apply the transfer from ᾱ to ᾱ'")
