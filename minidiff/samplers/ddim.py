"""DDIM (Song et al., 2021): a deterministic (eta = 0) or partly stochastic sampler, matching diffusers'
``DDIMScheduler``.

From the predicted x_0 and ε at timestep t, DDIM rebuilds the latent at t' = t - T // steps:

    x_{t'} = sqrt(ᾱ') x_0 + sqrt(1 - ᾱ' - s²) ε + s z,      s = eta · sqrt((1 - ᾱ')/(1 - ᾱ) · (1 - ᾱ/ᾱ'))

eta = 0 is the ODE-like DDIM; eta = 1 has DDPM's variance. After the last step ᾱ' is 1 if ``set_alpha_to_one``
else ᾱ_0. As in diffusers, t' is always t - T // steps, whatever the spacing of the timesteps.
"""

import torch

from ..schedule import eps_from_output, x0_from_output
from ..noise import randn
from .base import Sampler
from .steps import discrete_plan


class DDIMSampler(Sampler):
    defaults = {"timestep_spacing": "leading"}
    name = "ddim"
    diffusers_class = "DDIMScheduler"

    stochastic = False  # eta > 0 draws noise

    def plan(self):
        return discrete_plan(self.config, self.steps)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise; returns the sampled x_0. With eta > 0, noise is drawn after every step."""
        config = self.config
        alphas_cumprod = self.schedule.alphas_cumprod  # float32, like diffusers: the scalars below stay float32
        final_alpha_cumprod = torch.tensor(1.0) if config.set_alpha_to_one else alphas_cumprod[0]
        for i, t in enumerate(self.timesteps):
            model_output = model_fn(x, t)
            t_prev = t - config.num_train_timesteps // self.steps
            ab = alphas_cumprod[t]
            ab_prev = alphas_cumprod[t_prev] if t_prev >= 0 else final_alpha_cumprod

            x0 = x0_from_output(model_output, x, ab, config.prediction_type)
            eps = eps_from_output(model_output, x, ab, config.prediction_type)  # from the unclipped x_0
            if config.clip_sample:
                x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
            std = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
            # With eta = 1 and ᾱ = 0 (zero terminal SNR) the direction's weight 1 - ᾱ' - s² is exactly 0, and
            # float32 rounding can make it -1e-8: clamp, where diffusers' DDIMScheduler returns NaN.
            x_prev = ab_prev**0.5 * x0 + (1 - ab_prev - std**2).clamp(min=0) ** 0.5 * eps
            if self.eta > 0:
                x_prev = x_prev + std * randn(model_output.shape, generator, model_output.dtype, model_output.device)
            x = self.report(callback, i, t, x_prev, x0)
        return x
