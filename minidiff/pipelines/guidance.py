"""Classifier-free guidance (Ho & Salimans, 2022): one network, two predictions, pushed apart.

The U-Net runs on a doubled batch, once with the empty (or negative) prompt and once with the prompt, and the two
predictions are combined as

    ε = ε_u + s (ε_c - ε_u)

s = 1 gives the conditional prediction alone; s > 1 moves further along the direction the prompt adds. Lesson 7
derives it; the pipelines (``base.py``), the CUDA-graph step (``minidiff/fast.py``) and the exercise checker all use
this one function.
"""


def classifier_free_guidance(uncond, cond, guidance_scale):
    """ε_u + s (ε_c - ε_u) for predictions uncond, cond of the same shape (B, C, h, w); returns (B, C, h, w)."""
    return uncond + guidance_scale * (cond - uncond)
