"""Euler: the first-order solver of the probability-flow ODE in σ-space, matching diffusers'
``EulerDiscreteScheduler`` (Karras et al., 2022, Algorithm 1 without churn; k-diffusion's ``sample_euler``).

    dx/dσ = (x - x_0(x, σ)) / σ          x_{i+1} = x_i + (σ_{i+1} - σ_i) · dx/dσ
"""

from ..schedule import denoised_from_output
from .base import SigmaSampler, to_d
from .steps import SIGMA_SPACINGS, k_diffusion_plan


class EulerSampler(SigmaSampler):
    name = "euler"
    diffusers_class = "EulerDiscreteScheduler"
    spacings = SIGMA_SPACINGS

    def plan(self):
        return k_diffusion_plan(self.config, self.steps, self.spacing, self.schedule, self.config.final_sigmas_type)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise of std ``init_noise_sigma``; returns the sampled x_0. Deterministic."""
        sigmas = self.sigmas
        for i, t in enumerate(self.timesteps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            model_output = model_fn(self.scale_input(x, sigma), t)
            x = x.float()  # diffusers takes this step in float32 (see "Precision" in base.py)
            denoised = denoised_from_output(model_output, x, self.config.prediction_type, sigma)
            x = (x + to_d(x, sigma, denoised) * (sigma_next - sigma)).to(model_output.dtype)
            x = self.report(callback, i, t, x, denoised)
        return x
