"""Exercise (lesson 10, ControlNet): the zero convolution.

Fill in the body, then check it:   python -m minidiff.check zero_convolution
The checker also builds a small ControlNet from your zero convolutions and checks the claim below.
"""

from torch import nn


def zero_convolution(in_channels, out_channels):
    """A 1x1 convolution (in_channels -> out_channels) whose weight and bias start at exactly zero.

        out[b, o, y, x] = bias[o] + Σ_i weight[o, i, 0, 0] · in[b, i, y, x]        weight: (out, in, 1, 1)

    A ControlNet passes each of its features through one before adding it to a skip connection of the
    frozen U-Net. Think about these two questions (lesson 10 answers them):
      1. Why is the U-Net's output unchanged when a freshly built ControlNet is attached?
      2. If the weight is zero, is its gradient zero too? (What is ∂out/∂weight?) Can it learn?

    returns: an nn.Conv2d with kernel_size 1, trainable, weight and bias zero
    """
    raise NotImplementedError("build an nn.Conv2d with kernel_size=1 and set its weight and bias to zero")
