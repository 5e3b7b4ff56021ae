"""DDPM (Ho et al., 2020): ancestral sampling of the reverse chain, matching diffusers' ``DDPMScheduler``.

Each step jumps from timestep t to the next one in the schedule, t' (or to "clean", ᾱ = 1, after the last).
With ᾱ = ᾱ_t, ᾱ' = ᾱ_{t'} and the jump's own β = 1 - ᾱ/ᾱ', the posterior q(x_{t'} | x_t, x_0) is Gaussian:

    mean     = sqrt(ᾱ') β / (1 - ᾱ) · x_0  +  sqrt(ᾱ/ᾱ') (1 - ᾱ') / (1 - ᾱ) · x_t
    variance = (1 - ᾱ') / (1 - ᾱ) · β                     ("fixed_small", the DDPM paper's σ_t² = β̃_t)

and the sampler draws x_{t'} from it, with x_0 predicted by the network (and clipped if ``clip_sample``).
"""

import torch

from ..schedule import x0_from_output
from ..noise import randn
from .base import Sampler
from .steps import discrete_plan


class DDPMSampler(Sampler):
    defaults = {"timestep_spacing": "leading"}
    name = "ddpm"
    diffusers_class = "DDPMScheduler"

    stochastic = True

    def plan(self):
        return discrete_plan(self.config, self.steps)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise; returns the sampled x_0. Noise is drawn after each step with t > 0."""
        alphas_cumprod = self.schedule.alphas_cumprod  # float32, like diffusers: the scalars below stay float32
        following = torch.cat([self.timesteps[1:], torch.tensor([-1])])  # the timestep each step jumps to
        for i, (t, t_next) in enumerate(zip(self.timesteps, following)):
            model_output = model_fn(x, t)
            ab = alphas_cumprod[t]
            ab_next = alphas_cumprod[t_next] if t_next >= 0 else torch.tensor(1.0)
            alpha = ab / ab_next  # this jump's α = 1 - β (α_t itself when it spans one training step)
            beta = 1 - alpha

            x0 = x0_from_output(model_output, x, ab, self.config.prediction_type)
            if self.config.clip_sample:
                x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
            x_next = (ab_next**0.5 * beta) / (1 - ab) * x0 + alpha**0.5 * (1 - ab_next) / (1 - ab) * x
            if t > 0:
                # diffusers floors the variance at 1e-20 (it is exactly 0 on the jump to "clean")
                variance = ((1 - ab_next) / (1 - ab) * beta).clamp(min=1e-20)
                noise = randn(model_output.shape, generator, model_output.dtype, model_output.device)
                x_next = x_next + variance**0.5 * noise
            x = self.report(callback, i, t, x_next, x0)
        return x
