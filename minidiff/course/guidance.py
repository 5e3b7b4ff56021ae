"""Lesson 7's checker: classifier-free guidance, against what minidiff's pipeline computes."""

from types import SimpleNamespace

import torch

from minidiff.course.harness import call, compare, exercise, randn
from minidiff.pipelines.base import PipelineBase


class _FixedOutputUNet:
    """Stands in for the U-Net inside the pipeline's guided model function: it returns fixed predictions for the
    [unconditional; conditional] batch, whatever the input."""

    dtype = torch.float32

    def __init__(self, uncond, cond):
        self.output = torch.cat([uncond, cond])

    def __call__(self, x, t, context, **residuals):
        return self.output


def minidiff_guidance(uncond, cond, scale):
    """What minidiff computes from the two predictions (B, C, H, W) at guidance scale ``scale``: the pipeline's guided
    model function, the one a sampler calls, run around a U-Net that returns them."""
    model_fn = PipelineBase.guided_unet(SimpleNamespace(unet=_FixedOutputUNet(uncond, cond)), None, scale)
    return model_fn(torch.zeros(uncond.shape), torch.tensor(500))


@exercise("classifier_free_guidance", "07-guidance", "combine the unconditional and conditional predictions")
def check_classifier_free_guidance(fn):
    hint = "guided = uncond + s (cond - uncond): start at the unconditional prediction, move s times the difference."
    cases = [((1, 4, 8, 8), 7.5), ((2, 4, 6, 6), 1.5), ((3, 4, 5, 7), 12.0), ((2, 1, 4, 4), 3.0)]
    for seed, (shape, scale) in enumerate(cases):
        g = torch.Generator().manual_seed(seed)
        uncond, cond = randn(g, *shape), randn(g, *shape)
        case = f"case {seed + 1}: predictions of shape {shape}, guidance scale {scale}"
        got = call(fn, case, uncond.clone(), cond.clone(), scale)
        compare(got, minidiff_guidance(uncond, cond, scale), case, hint, mistakes={
            "cond + s (cond - uncond): the extrapolation starts from the unconditional prediction":
                cond + scale * (cond - uncond),
            "uncond + s cond: guidance moves along the difference cond - uncond": uncond + scale * cond,
            "cond + s (uncond - cond): the sign is flipped; guidance moves away from the unconditional prediction":
                cond + scale * (uncond - cond),
        })
    return len(cases)
