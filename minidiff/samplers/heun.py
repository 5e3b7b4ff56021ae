"""Heun: a second-order solver of the probability-flow ODE, matching diffusers' ``HeunDiscreteScheduler``
(Karras et al., 2022, Algorithm 1 without churn; k-diffusion's ``sample_heun``).

Each step takes an Euler step to σ', evaluates the slope there too and redoes the step with the average slope:

    d = (x - x_0(x, σ)) / σ,   x̃ = x + (σ' - σ) d,   d' = (x̃ - x_0(x̃, σ')) / σ',   x' = x + (σ' - σ)(d + d') / 2

That is two network calls per step, except the last (σ' = 0), which is a plain Euler step. The timesteps list
has one entry per call: t_0, t_1, t_1, t_2, t_2, ..., t_{n-1}, t_{n-1}, and the callback runs after each call.
"""

import torch

from ..schedule import denoised_from_output
from .base import SigmaSampler, to_d
from .steps import SIGMA_SPACINGS, Plan, k_diffusion_plan


class HeunSampler(SigmaSampler):
    name = "heun"
    accuracy = 2
    diffusers_class = "HeunDiscreteScheduler"
    spacings = SIGMA_SPACINGS
    order = 2
    supports_zero_snr = False

    def plan(self):
        """One entry per network call: every timestep after the first is visited twice (predictor, corrector), and
        call k runs at σ_{(k+1)//2}."""
        plan = k_diffusion_plan(self.config, self.steps, self.spacing, self.schedule)
        ts, sigmas = plan.timesteps, plan.sigmas
        return Plan(torch.cat([ts[:1], ts[1:].repeat_interleave(2)]), sigmas,  # (2 steps - 1,)
                    torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2)]))

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise of std ``init_noise_sigma``; returns the sampled x_0. Deterministic."""
        sigmas, timesteps = self.sigmas, self.timesteps
        prediction_type, clip = self.config.prediction_type, self.config.clip_sample

        def denoise(x, sigma, t):
            denoised = denoised_from_output(model_fn(self.scale_input(x, sigma), t), x, prediction_type, sigma)
            return denoised.clamp(-self.config.clip_sample_range, self.config.clip_sample_range) if clip else denoised

        call = 0
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            denoised = denoise(x, sigma, timesteps[call])
            d = to_d(x, sigma, denoised)
            dt = sigma_next - sigma
            x_next = self.report(callback, call, timesteps[call], x + d * dt, denoised)
            call += 1
            if sigma_next > 0:  # correct with the slope at σ' (the last step, down to σ' = 0, stays Euler)
                denoised = denoise(x_next, sigma_next, timesteps[call])
                d_next = to_d(x_next, sigma_next, denoised)
                x_next = self.report(callback, call, timesteps[call], x + (d + d_next) / 2 * dt, denoised)
                call += 1
            x = x_next
        return x
