"""Lesson 1's checker: the forward process q(x_t | x_0), against minidiff/schedule.py."""

import torch

from minidiff.course.harness import call, compare, exercise, randn
from minidiff.schedule import NoiseSchedule, make_betas


@exercise("add_noise", "01-forward-diffusion", "sample q(x_t | x_0): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε")
def check_add_noise(fn):
    hint = ("x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, with ᾱ_t = alphas_cumprod[t[b]] for sample b, reshaped to "
            "(B, 1, 1, ...) so it broadcasts over the other dimensions of x0.")
    cases = [("scaled_linear", (4, 3, 8, 8)), ("linear", (2, 4, 16, 16)), ("squaredcos_cap_v2", (5, 2)),
             ("scaled_linear", (3, 1, 4, 6, 2))]
    for seed, (beta_schedule, shape) in enumerate(cases):
        g = torch.Generator().manual_seed(seed)
        schedule = NoiseSchedule(make_betas(beta_schedule))
        x0, noise = randn(g, *shape), randn(g, *shape)
        t = torch.randint(0, 1000, (shape[0],), generator=g)
        t[0] = 0 if seed % 2 else 999  # both ends of the schedule
        case = f"case {seed + 1}: {beta_schedule} schedule, x0 of shape {shape}, t = {t.tolist()}"
        got = call(fn, case, x0.clone(), noise.clone(), schedule.alphas_cumprod.clone(), t.clone())
        ab = schedule.alphas_cumprod[t].reshape(-1, *[1] * (len(shape) - 1))
        compare(got, schedule.add_noise(x0, noise, t), case, hint, mistakes={
            "ᾱ x0 + (1 - ᾱ) ε: the coefficients need square roots (the variances add, not the standard deviations)":
                ab * x0 + (1 - ab) * noise,
            "sqrt(ᾱ) x0 + (1 - ᾱ) ε: the noise coefficient needs a square root too": ab.sqrt() * x0 + (1 - ab) * noise,
            "sqrt(1 - ᾱ) x0 + sqrt(ᾱ) ε: the two coefficients are swapped": (1 - ab).sqrt() * x0 + ab.sqrt() * noise,
        })
    return len(cases)
