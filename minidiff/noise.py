"""Standard normal noise, drawn the way diffusers draws it (``randn_tensor``), so that a seed gives the same numbers.

Every random number of minidiff comes from ``randn``: the VAE's posterior samples, a pipeline's start noise and
the fresh noise of stochastic samplers. Where the numbers are drawn depends on the generator:

* none: from torch's global generator, on the target device;
* a CPU generator: on the CPU, then moved to the target device, so a seed draws the same numbers for every device;
* a generator on another device (CUDA): on that device, which must be the target's kind of device.

A list of generators, one per batch element, draws element i of the batch from generator i alone (in order), so
that each picture of a batch depends only on its own generator.
"""

import torch


def randn(shape, generator=None, dtype=torch.float32, device="cpu"):
    """ε ~ N(0, I) of ``shape`` (B, ...) in ``dtype`` on ``device``; ``generator``: None, one torch.Generator, or
    a list of B of them (see the module docstring)."""
    device = torch.device(device)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(
                f"got a list of {len(generator)} generators for a batch of {shape[0]}; pass one generator per "
                f"batch element, or a single generator for the whole batch"
            )
        return torch.cat([randn((1, *shape[1:]), g, dtype, device) for g in generator])  # (B, ...)
    draw_device = device
    if generator is not None:
        if generator.device.type == "cpu":
            draw_device = torch.device("cpu")
        elif generator.device.type != device.type:
            raise ValueError(
                f"a {generator.device.type} generator cannot draw noise for the {device.type} device; make the "
                f"generator on {device.type} (or on the CPU, which works for every device)"
            )
    return torch.randn(shape, generator=generator, dtype=dtype, device=draw_device).to(device)
