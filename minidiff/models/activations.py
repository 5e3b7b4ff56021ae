"""The activations that config files name, by the names they use (CLIP's ``hidden_act``).

The convolutional networks (U-Net, VAE, ControlNet) always use SiLU, x * sigmoid(x), and call ``F.silu``
directly; their configs accept only ``act_fn="silu"``.
"""

import torch
import torch.nn.functional as F


def quick_gelu(x):
    """x * sigmoid(1.702 x): the fast approximation of GELU that OpenAI's CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}
