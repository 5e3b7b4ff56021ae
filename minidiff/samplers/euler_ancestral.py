"""Euler ancestral: an Euler step down to a lower σ, then fresh noise back up to the target σ, matching
diffusers' ``EulerAncestralDiscreteScheduler`` (k-diffusion's ``sample_euler_ancestral`` with eta = 1).

Going from σ to σ', the step splits σ'² = σ_down² + σ_up²: the ODE carries x down to σ_down and new noise of
standard deviation σ_up is added. Because fresh noise enters at every step, results depend on the generator.
"""

from ..noise import randn
from ..schedule import denoised_from_output
from .base import SigmaSampler, to_d
from .steps import get_ancestral_step, k_diffusion_plan


class EulerAncestralSampler(SigmaSampler):
    name = "euler_a"
    diffusers_class = "EulerAncestralDiscreteScheduler"
    stochastic = True

    def plan(self):
        return k_diffusion_plan(self.config, self.steps, None, self.schedule)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise of std ``init_noise_sigma``; returns the sampled x_0. Draws noise every step."""
        sigmas = self.sigmas
        for i, t in enumerate(self.timesteps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            model_output = model_fn(self.scale_input(x, sigma), t)
            x = x.float()  # diffusers takes this step in float32 (see "Precision" in base.py)
            denoised = denoised_from_output(model_output, x, self.config.prediction_type, sigma)
            sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next)
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
            # drawn even on the last step (σ_up = 0) so the generator advances as in diffusers
            x = x + randn(model_output.shape, generator, model_output.dtype, model_output.device) * sigma_up
            x = x.to(model_output.dtype)
            x = self.report(callback, i, t, x, denoised)
        return x
