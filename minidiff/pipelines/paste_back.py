"""Paste-back: put the kept pixels of the original picture back over an inpainting, with a feathered seam.

Inpainting does not keep the unmasked pixels exactly (lesson 9): the picture goes through the VAE and back, and
the latent blend works on the 8 × 8 pixel blocks of the latent grid, so the decoder redraws the kept region too,
and most of all near the hole. Pasting the original back afterwards restores it:

    out = m̃ · generated + (1 − m̃) · original

where m̃ is the mask dilated by ``radius`` pixels and then averaged over a (2·radius + 1)² box. So m̃ = 1 on
the whole hole (every pixel of it is generated), falls off across the 2·radius pixels around it, and is 0
from 2·radius + 1 pixels on (the original, exactly). The command line does this by default, as AUTOMATIC1111's
web UI does; the Python API returns the pipeline's pictures unchanged, as diffusers does.
"""

import torch
import torch.nn.functional as F

# 4 px: the seam blends over 8 pixels, one latent cell, wide enough to hide the step between the decoder's
# colours and the original's, narrow enough to keep the original right up to the mask.
FEATHER_RADIUS = 4


def feathered_mask(mask, radius=FEATHER_RADIUS):
    """Binary mask (B, 1, H, W), 1 = repaint -> m̃ (B, 1, H, W) in [0, 1]: 1 on the hole, 0 beyond 2·radius px."""
    size = 2 * radius + 1
    dilated = F.max_pool2d(mask, size, stride=1, padding=radius)  # 1 within radius px of the hole (square reach)
    # count_include_pad=False: at the picture's border, average over the pixels that exist (a hole there stays 1)
    return F.avg_pool2d(dilated, size, stride=1, padding=radius, count_include_pad=False)


def paste_back(generated, original, mask, radius=FEATHER_RADIUS):
    """generated (B, 3, H, W), original (1, 3, H, W), mask (1, 1, H, W) binary, 1 = repaint -> (B, 3, H, W):
    out = m̃ · generated + (1 − m̃) · original, with m̃ = ``feathered_mask(mask, radius)``."""
    m = feathered_mask(mask.float(), radius)
    return m * generated + (1 - m) * original


def paste_back_outpainting(generated, original, left=0, right=0, top=0, bottom=0, radius=FEATHER_RADIUS):
    """``paste_back`` for an outpainting: original (1, 3, H, W) sits at (top, left) of generated (B, 3, H', W');
    the hole is the new border around it."""
    pads = (left, right, top, bottom)
    canvas = F.pad(original, pads)  # (1, 3, H', W'); the border's values are never used (m̃ = 1 there)
    hole = F.pad(torch.zeros_like(original[:, :1]), pads, value=1.0)  # (1, 1, H', W')
    return paste_back(generated, canvas, hole, radius)
