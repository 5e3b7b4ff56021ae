"""Reference solution of lessons/exercises/zero_convolution.py (lesson 10).

1. The U-Net is unchanged at first: every feature the ControlNet adds to a skip connection leaves through a zero
   convolution, whose output is W x + b = 0 for any input x. The U-Net receives skip + 0.
2. It still learns: out = W x + b is linear in W, so ∂L/∂W = ∂L/∂out · x, which is not zero when the input x
   (the ControlNet's features) is not. After the first optimiser step W is no longer zero, and the control
   signal fades in from nothing instead of starting as noise that would disturb the trained U-Net.
"""

from torch import nn


def zero_convolution(in_channels, out_channels):
    """A trainable 1x1 nn.Conv2d with weight (out, in, 1, 1) and bias (out,) set to zero."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
