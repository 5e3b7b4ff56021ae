"""Lesson 3's checkers: one step of DDIM, of Euler and of PLMS, against minidiff's samplers.

Each step of the learner's update is compared with the same step of minidiff's sampler, run with a fixed made-up
network so that every step sees different, non-trivial inputs.
"""

import torch

from minidiff.course.harness import call, compare, exercise, randn
from minidiff.samplers import SchedulerConfig, make_sampler


def made_up_network(x, t):
    """A deterministic stand-in for a trained network: some smooth function of x and t, shaped like x."""
    return torch.tanh(x) * 0.7 + 0.1 * torch.sin(torch.as_tensor(t, dtype=x.dtype) / 100.0) + 0.05 * x.roll(1, -1)


def record_run(sampler, x):
    """Run ``sampler`` with the made-up network; return one dict per step: x before, model output, x0, x after."""
    steps, outputs = [], []

    def model_fn(x_in, t):
        outputs.append(made_up_network(x_in, t))
        return outputs[-1]

    def callback(i, t, x_after, x0):
        steps.append({"t": t, "x_after": x_after.clone(), "x0": x0.clone(), "output": outputs[-1].clone()})

    sampler.sample(model_fn, x, callback=callback)
    for i, step in enumerate(steps):
        step["x_before"] = x if i == 0 else steps[i - 1]["x_after"]
    return steps


@exercise("ddim_step", "03-samplers", "one deterministic DDIM update from x_t and the predicted noise ε")
def check_ddim_step(fn):
    hint = ("first x0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t), then x_prev = sqrt(ᾱ_prev) x0 + sqrt(1 - ᾱ_prev) ε "
            "(the same ε: with eta = 0 no fresh noise is drawn).")
    settings = [
        ("Stable Diffusion's schedule, 10 steps", SchedulerConfig(), 10, (2, 4, 8, 8)),
        ("trailing spacing, ᾱ = 1 after the last step, 4 steps",
         SchedulerConfig(timestep_spacing="trailing", set_alpha_to_one=True), 4, (1, 3, 6, 6)),
        ("linear betas, 7 steps", SchedulerConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02), 7, (3, 2, 5)),
    ]
    count = 0
    for seed, (label, config, steps, shape) in enumerate(settings):
        sampler = make_sampler("ddim", config, steps)
        alphas_cumprod = sampler.schedule.alphas_cumprod
        final = torch.tensor(1.0) if config.set_alpha_to_one else alphas_cumprod[0]
        x = randn(torch.Generator().manual_seed(seed), *shape)
        for i, step in enumerate(record_run(sampler, x)):
            t = int(step["t"])
            t_prev = t - config.num_train_timesteps // steps
            ab, ab_prev = alphas_cumprod[t], (alphas_cumprod[t_prev] if t_prev >= 0 else final)
            case = (f"{label}, step {i + 1} (t = {t} -> {t_prev if t_prev >= 0 else 'the end'}, "
                    f"ᾱ_t = {float(ab):.4g}, ᾱ_prev = {float(ab_prev):.4g}), x_t of shape {shape}")
            x_t, eps = step["x_before"], step["output"]
            got = call(fn, case, x_t.clone(), eps.clone(), ab.clone(), ab_prev.clone())
            x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
            compare(got, step["x_after"], case, hint, mistakes={
                "sqrt(ᾱ_prev) x_t + sqrt(1 - ᾱ_prev) ε: x_t must first be turned into the predicted x0":
                    ab_prev.sqrt() * x_t + (1 - ab_prev).sqrt() * eps,
                "sqrt(ᾱ_prev) x0 + sqrt(1 - ᾱ_t) ε: the noise is re-added at the new level, sqrt(1 - ᾱ_prev)":
                    ab_prev.sqrt() * x0 + (1 - ab).sqrt() * eps,
                "the predicted x0 itself: the step should land at noise level ᾱ_prev, not at the clean image":
                    x0,
            })
            count += 1
    return count


@exercise("euler_step", "03-samplers", "one Euler step of the probability-flow ODE in σ-space")
def check_euler_step(fn):
    hint = "the slope is d = (x - denoised) / σ and the step is x_next = x + (σ_next - σ) d."
    settings = [
        ("Stable Diffusion's schedule, 8 steps", SchedulerConfig(), 8, False, (2, 4, 8, 8)),
        ("Karras sigmas, 5 steps", SchedulerConfig(), 5, True, (1, 3, 6, 6)),
        ("linspace spacing, v-prediction, 6 steps",
         SchedulerConfig(timestep_spacing="linspace", prediction_type="v_prediction"), 6, False, (3, 2, 5)),
    ]
    count = 0
    for seed, (label, config, steps, karras, shape) in enumerate(settings):
        sampler = make_sampler("euler", config, steps, karras=karras)
        sigmas = sampler.sigmas
        x = randn(torch.Generator().manual_seed(seed), *shape) * sampler.init_noise_sigma
        for i, step in enumerate(record_run(sampler, x)):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            case = f"{label}, step {i + 1} (σ = {float(sigma):.4g} -> {float(sigma_next):.4g}), x of shape {shape}"
            x_before, denoised = step["x_before"], step["x0"]
            got = call(fn, case, x_before.clone(), denoised.clone(), sigma.clone(), sigma_next.clone())
            d = (x_before - denoised) / sigma
            compare(got, step["x_after"], case, hint, mistakes={
                "x + (σ - σ_next) d: the step goes from σ to σ_next, so it is (σ_next - σ) d, a negative multiple":
                    x_before + (sigma - sigma_next) * d,
                "x + (σ_next - σ) (x - denoised): the slope is divided by σ": x_before + (sigma_next - sigma) * d * sigma,
                "x + (σ_next - σ) (denoised - x) / σ: the slope points from the clean image to x, (x - denoised) / σ":
                    x_before - (sigma_next - sigma) * d,
            })
            count += 1
    return count


@exercise("plms_step", "03-samplers", "one PLMS (PNDM) step: four ε's combined, then the transfer of eq. (9)")
def check_plms_step(fn):
    hint = ("ε' = (55 ε_0 - 59 ε_1 + 37 ε_2 - 9 ε_3) / 24 with ε_0 the newest, then x' = sqrt(ᾱ'/ᾱ) x - (ᾱ' - ᾱ) ε' / "
            "(ᾱ sqrt(1 - ᾱ') + sqrt(ᾱ (1 - ᾱ) ᾱ')).")
    settings = [  # Stable Diffusion's files skip the Runge–Kutta warm-up: PLMS from the first step
        ("Stable Diffusion's schedule, 10 steps", SchedulerConfig(skip_prk_steps=True), 10, (2, 4, 8, 8)),
        ("ᾱ = 1 after the last step, 7 steps", SchedulerConfig(skip_prk_steps=True, set_alpha_to_one=True), 7,
         (1, 3, 6, 6)),
        ("linear betas, 8 steps", SchedulerConfig(skip_prk_steps=True, beta_schedule="linear", beta_start=1e-4,
                                                  beta_end=0.02), 8, (3, 2, 5)),
    ]
    count = 0
    for seed, (label, config, steps, shape) in enumerate(settings):
        sampler = make_sampler("pndm", config, steps)
        alphas_cumprod = sampler.schedule.alphas_cumprod
        final = torch.tensor(1.0) if config.set_alpha_to_one else alphas_cumprod[0]
        x = randn(torch.Generator().manual_seed(seed), *shape)
        history = []  # every call's ε but the warm-up's second (call 1, a correction at the same step), newest last
        for i, step in enumerate(record_run(sampler, x)):
            if i != 1:
                history.append(step["output"])
            if len(history) < 4 or i < 4:
                continue  # the first steps use fewer ε's: the exercise is the four-term step
            t = int(step["t"])
            t_prev = t - config.num_train_timesteps // steps
            ab, ab_prev = alphas_cumprod[t], (alphas_cumprod[t_prev] if t_prev >= 0 else final)
            case = (f"{label}, call {i + 1} (t = {t} -> {t_prev if t_prev >= 0 else 'the end'}, ᾱ = {float(ab):.4g}, "
                    f"ᾱ' = {float(ab_prev):.4g}), x of shape {shape}")
            eps = [e.clone() for e in history[::-1][:4]]
            got = call(fn, case, step["x_before"].clone(), eps, ab.clone(), ab_prev.clone())
            x_t, e = step["x_before"], eps
            denominator = ab * (1 - ab_prev).sqrt() + (ab * (1 - ab) * ab_prev).sqrt()
            transfer = lambda eps_: (ab_prev / ab).sqrt() * x_t - (ab_prev - ab) * eps_ / denominator  # noqa: E731
            compare(got, step["x_after"], case, hint, mistakes={
                "only the newest ε: that is a DDIM step; PLMS combines the last four":
                    transfer(e[0]),
                "the coefficients in the wrong order: 55 belongs to the newest ε, ε_0 (eps_history[0])":
                    transfer((55 * e[3] - 59 * e[2] + 37 * e[1] - 9 * e[0]) / 24),
                "the mean of the four ε's: the Adams–Bashforth weights are 55, -59, 37, -9 over 24":
                    transfer(sum(e) / 4),
            })
            count += 1
    return count
