"""Lesson 10's checker: the zero convolution, and that a fresh ControlNet built from it leaves the U-Net as it was."""

import torch
from torch import nn

from minidiff.course.harness import Mismatch, call, compare, exercise, randn
from minidiff.models.config import UNetConfig
from minidiff.models.controlnet import ControlNetModel, zero_conv
from minidiff.models.unet import UNet2DConditionModel


def _tiny_unet_and_controlnet(seed):
    """A small random minidiff U-Net and a ControlNet copied from it, every weight non-zero."""
    config = UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                        cross_attention_dim=8, attention_head_dim=2,
                        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    g = torch.Generator().manual_seed(seed)
    unet = UNet2DConditionModel(config)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    with torch.no_grad():
        for p in [*unet.parameters(), *controlnet.parameters()]:
            p.copy_(randn(g, *p.shape) * 0.2)
    return unet, controlnet


@exercise("zero_convolution", "10-controlnet", "a 1x1 convolution initialised to zero, and why it leaves the U-Net as it was")
def check_zero_convolution(fn):
    hint = "build nn.Conv2d(in_channels, out_channels, kernel_size=1), then set its weight and bias to 0."
    count = 0
    for in_channels, out_channels in ((4, 4), (3, 8), (16, 5)):
        case = f"zero_convolution({in_channels}, {out_channels})"
        conv = call(fn, case, in_channels, out_channels)
        reference = zero_conv(in_channels, out_channels)
        if not isinstance(conv, nn.Conv2d):
            raise Mismatch(f"{case}: returned a {type(conv).__name__}; expected an nn.Conv2d. {hint}")
        for key, expected in reference.state_dict().items():
            got = conv.state_dict().get(key)
            if got is None:
                raise Mismatch(f"{case}: the convolution has no {key}; it needs a weight and a bias. {hint}")
            if got.shape != expected.shape:
                raise Mismatch(f"{case}: {key} has shape {tuple(got.shape)}, expected {tuple(expected.shape)} "
                               f"(out_channels, in_channels, 1, 1) for a 1x1 convolution. {hint}")
            if got.abs().max() != 0:
                raise Mismatch(f"{case}: {key} is not zero (largest |value| {float(got.abs().max()):.3g}): PyTorch "
                               f"initialises convolutions randomly; set it to zero, e.g. nn.init.zeros_(conv.{key}).")
        x = randn(torch.Generator().manual_seed(count), 2, in_channels, 5, 5)
        compare(call(fn, case, in_channels, out_channels)(x), reference(x), f"{case} applied to x {tuple(x.shape)}",
                "a 1x1 convolution keeps the height and width (no padding needed, stride 1).")

        # It must be able to learn: out = W x + b, so dL/dW = dL/dout x^T, which is not zero although W is.
        conv.zero_grad()
        out = conv(x)
        if out.requires_grad:
            (out * randn(torch.Generator().manual_seed(99), *out.shape)).sum().backward()
        if not conv.weight.requires_grad or conv.weight.grad is None or conv.weight.grad.abs().max() == 0:
            raise Mismatch(f"{case}: the weight gets no gradient; keep it a trainable nn.Parameter (requires_grad) "
                           "so that training can move it away from zero.")
        count += 1

    # Why it matters: with zero convolutions on every skip, a fresh ControlNet adds exactly nothing to the U-Net.
    unet, controlnet = _tiny_unet_and_controlnet(seed=0)
    channels = [conv.in_channels for conv in controlnet.controlnet_down_blocks]
    controlnet.controlnet_down_blocks = nn.ModuleList(call(fn, "the ControlNet's skips", c, c) for c in channels)
    mid = controlnet.controlnet_mid_block.in_channels
    controlnet.controlnet_mid_block = call(fn, "the ControlNet's mid block", mid, mid)
    g = torch.Generator().manual_seed(1)
    latents, context, condition = randn(g, 2, 4, 8, 8), randn(g, 2, 3, 8), torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        down, mid_residual = controlnet(latents, 500, context, condition)
        plain = unet(latents, 500, context)
        controlled = unet(latents, 500, context, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid_residual)
    compare(controlled, plain, "a tiny U-Net with a fresh ControlNet built from your zero convolutions",
            "every residual the ControlNet adds passes through a zero convolution, so at initialisation the U-Net's "
            "output must not change.")
    return count + 1
