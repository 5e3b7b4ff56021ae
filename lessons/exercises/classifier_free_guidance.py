"""Exercise (lesson 7, guidance): classifier-free guidance.

Fill in the body, then check it:   python -m minidiff.check classifier_free_guidance
"""

import torch


def classifier_free_guidance(noise_uncond, noise_cond, guidance_scale):
    """Combine the U-Net's two predictions for the same x_t: without the prompt (the empty text) and with it.

        ε = ε_uncond + s · (ε_cond - ε_uncond)

    s = 1 gives ε_cond; s > 1 (Stable Diffusion uses 7.5) pushes further in the direction the prompt
    changes the prediction, which follows the prompt more closely at some cost in variety.

    noise_uncond:   (B, C, H, W) ε(x_t, t, "")
    noise_cond:     (B, C, H, W) ε(x_t, t, prompt)
    guidance_scale: float s
    returns:        (B, C, H, W) the guided prediction
    """
    raise NotImplementedError("start at the unconditional prediction and move s times the difference")
