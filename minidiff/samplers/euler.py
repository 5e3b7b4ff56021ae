"""Euler: the first-order solver of the probability-flow ODE in σ-space, matching diffusers'
``EulerDiscreteScheduler`` (Karras et al., 2022, Algorithm 1 without churn; k-diffusion's ``sample_euler``).

    dx/dσ = (x - x_0(x, σ)) / σ          x_{i+1} = x_i + (σ_{i+1} - σ_i) · dx/dσ
"""

from .base import SigmaSampler, denoised_from_output, to_d


class EulerSampler(SigmaSampler):
    name = "euler"
    diffusers_class = "EulerDiscreteScheduler"
    supports_karras = True

    def final_sigma(self):
        """The σ after the last step: 0, or σ of training step 0 with ``final_sigmas_type="sigma_min"``."""
        if self.config.final_sigmas_type == "sigma_min":
            return self.train_sigmas()[0]
        return 0.0

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise of std ``init_noise_sigma``; returns the sampled x_0. Deterministic."""
        sigmas = self.sigmas
        for i, t in enumerate(self.timesteps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            model_output = model_fn(self.scale_input(x, sigma), t)
            x = x.float()  # diffusers takes this step in float32 (see "Precision" in base.py)
            denoised = denoised_from_output(model_output, x, sigma, self.config.prediction_type)
            x = (x + to_d(x, sigma, denoised) * (sigma_next - sigma)).to(model_output.dtype)
            x = self.report(callback, i, t, x, denoised)
        return x
