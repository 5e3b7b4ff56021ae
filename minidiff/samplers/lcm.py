"""LCM (Luo et al., 2023, "Latent Consistency Models"): multistep consistency sampling, matching diffusers'
``LCMScheduler``.

A consistency model maps any point x_t of a trajectory straight to its clean end. LCM builds it from the network's
x_0 prediction F(x_t, t) (ε, v or x_0, converted as usual) with boundary scalings that make f(x, 0) ≈ x:

    f(x_t, t) = c_skip(t) x_t + c_out(t) F(x_t, t),    τ = timestep_scaling · t,  σ_data = 0.5
    c_skip = σ_data² / (τ² + σ_data²),                 c_out = τ / sqrt(τ² + σ_data²)

(at timestep_scaling 10 and t >= 19, c_skip < 7e-6: f is essentially the x_0 prediction). Sampling (Song et al.,
2023, "Consistency Models", algorithm 1) jumps to the clean estimate, then noises it afresh to the next timestep:

    x̂_0 = f(x_t, t);    x_{t'} = sqrt(ᾱ_{t'}) x̂_0 + sqrt(1 - ᾱ_{t'}) z,  z ~ N(0, I)   (so the generator matters)

and the last step returns x̂_0 itself (diffusers' ``denoised``). The timesteps are picked from the 50 the model was
distilled on (``steps.lcm_plan``); 2 to 8 steps suffice. With ``strength`` < 1 (img2img) all steps still run, picked
from the least noisy part of those 50, as diffusers' LatentConsistencyModelImg2ImgPipeline runs them.

``timestep_spacing``, ``steps_offset`` and ``set_alpha_to_one`` change nothing here, as in LCMScheduler. The guidance
scale is not the sampler's business: an LCM U-Net takes it as an input (``minidiff/pipelines/guidance.py``).
"""

from ..noise import randn
from ..schedule import x0_from_output
from .base import Sampler
from .steps import lcm_plan

SIGMA_DATA = 0.5  # the data's standard deviation assumed by the boundary scalings (Karras et al. 2022)


def boundary_scalings(t, timestep_scaling):
    """(c_skip, c_out) at timestep t: σ_d² / (τ² + σ_d²) and τ / sqrt(τ² + σ_d²), τ = timestep_scaling · t."""
    tau = t * timestep_scaling
    return SIGMA_DATA**2 / (tau**2 + SIGMA_DATA**2), tau / (tau**2 + SIGMA_DATA**2) ** 0.5


class LCMSampler(Sampler):
    name = "lcm"
    diffusers_class = "LCMScheduler"
    stochastic = True
    defaults = {"timestep_spacing": "leading"}  # LCMScheduler's (its timesteps do not use it)

    def __init__(self, config, steps, karras=None, eta=0.0, strength=1.0, sigmas=None):
        # LCM places img2img's start in its plan and runs every step: the generic late start skips none
        self.strength = strength
        super().__init__(config, steps, karras=karras, eta=eta, strength=1.0, sigmas=sigmas)

    def plan(self):
        return lcm_plan(self.config, self.steps, self.strength)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1) or a noised picture; returns the last x̂_0; draws noise between steps."""
        config = self.config
        alphas_cumprod = self.schedule.alphas_cumprod  # float32, like diffusers: the scalars below stay float32
        last = len(self.timesteps) - 1
        for i, t in enumerate(self.timesteps):
            model_output = model_fn(x, t)
            x0 = x0_from_output(model_output, x, alphas_cumprod[t], config.prediction_type)
            if config.clip_sample:
                x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
            c_skip, c_out = boundary_scalings(t, config.timestep_scaling)
            denoised = c_out * x0 + c_skip * x  # f(x_t, t), the consistency model's clean estimate
            if i < last:
                ab_next = alphas_cumprod[self.timesteps[i + 1]]
                noise = randn(model_output.shape, generator, denoised.dtype, model_output.device)
                x = ab_next.sqrt() * denoised + (1 - ab_next).sqrt() * noise
            else:
                x = denoised
            x = self.report(callback, i, t, x, denoised)
        return x
