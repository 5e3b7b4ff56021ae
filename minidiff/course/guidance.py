"""Lesson 7's checker: classifier-free guidance, against the function minidiff's pipelines use."""

import torch

from minidiff.course.harness import call, compare, exercise, randn
from minidiff.pipelines.guidance import classifier_free_guidance


@exercise("classifier_free_guidance", "07-guidance", "combine the unconditional and conditional predictions")
def check_classifier_free_guidance(fn):
    hint = "guided = uncond + s (cond - uncond): start at the unconditional prediction, move s times the difference."
    cases = [((1, 4, 8, 8), 7.5), ((2, 4, 6, 6), 1.5), ((3, 4, 5, 7), 12.0), ((2, 1, 4, 4), 3.0)]
    for seed, (shape, scale) in enumerate(cases):
        g = torch.Generator().manual_seed(seed)
        uncond, cond = randn(g, *shape), randn(g, *shape)
        case = f"case {seed + 1}: predictions of shape {shape}, guidance scale {scale}"
        got = call(fn, case, uncond.clone(), cond.clone(), scale)
        compare(got, classifier_free_guidance(uncond, cond, scale), case, hint, mistakes={
            "cond + s (cond - uncond): the extrapolation starts from the unconditional prediction":
                cond + scale * (cond - uncond),
            "uncond + s cond: guidance moves along the difference cond - uncond": uncond + scale * cond,
            "cond + s (uncond - cond): the sign is flipped; guidance moves away from the unconditional prediction":
                cond + scale * (uncond - cond),
        })
    return len(cases)
