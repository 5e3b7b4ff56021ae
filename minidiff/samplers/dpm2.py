"""DPM2 and DPM2 ancestral: a second-order midpoint method in σ-space, matching diffusers' ``KDPM2DiscreteScheduler``
and ``KDPM2AncestralDiscreteScheduler`` (k-diffusion's ``sample_dpm_2`` and ``sample_dpm_2_ancestral``, written for
Karras et al., 2022; its midpoint in log σ is DPM-Solver-2's midpoint in λ = -log σ, Lu et al., 2022).

Each step from σ to σ' takes an Euler step to the midpoint σ_mid = exp((log σ + log σ') / 2), evaluates the slope
there and takes the whole step with it:

    d = (x - x_0(x, σ)) / σ,   x_mid = x + (σ_mid - σ) d,   d_mid = (x_mid - x_0(x_mid, σ_mid)) / σ_mid,
    x' = x + (σ' - σ) d_mid

The ancestral variant splits σ'² = σ_down² + σ_up² (as Euler ancestral does), takes the step above down to σ_down
(so σ_mid = sqrt(σ σ_down), which is σ' itself) and adds fresh noise of standard deviation σ_up:

    x' = x + (σ_down - σ) d_mid + σ_up ε

Both take two network calls per step, except the last (σ' = 0), a plain Euler step x' = x + (0 - σ) d, which lands
on that call's x_0: in log σ the midpoint between σ and 0 is 0 itself, where the slope (x - x_0) / σ is undefined.
The timesteps list has one entry per call: t_0, t_mid_0, t_1, t_mid_1, ..., t_{n-1}; the callback runs after each
call and sees x_mid (then x') and the x_0 just predicted, as diffusers' step returns them.
"""

from ..noise import randn
from ..schedule import denoised_from_output
from .base import SigmaSampler, to_d
from .steps import SIGMA_SPACINGS, get_ancestral_step, midpoint_plan


class DPM2Sampler(SigmaSampler):
    name = "dpm2"
    diffusers_class = "KDPM2DiscreteScheduler"
    spacings = SIGMA_SPACINGS
    order = 2
    accuracy = 2
    supports_zero_snr = False
    ancestral = False  # whether each step ends at σ_down and adds fresh noise of std σ_up

    def plan(self):
        """Two calls per step, at σ_i and at the step's log-σ midpoint (``steps.midpoint_plan``)."""
        return midpoint_plan(self.config, self.steps, self.spacing, self.schedule, self.ancestral)

    def add_noise(self, x0, noise, step_index=0):
        """``Sampler.add_noise``, except before a midpoint call: there, x0 is noised to the σ that step ends at."""
        # diffusers parity: KDPM2's add_noise at a midpoint call (odd index) reads σ_{i+1}, not σ_mid, so inpainting
        # re-noises its known region to σ_{i+1} before the midpoint evaluation
        midpoint = step_index % 2 == 1 and step_index < len(self.timesteps)
        return super().add_noise(x0, noise, step_index + 1 if midpoint else step_index)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise of std ``init_noise_sigma``; returns the sampled x_0. The ancestral variant draws
        noise once per two-call step (not on the last step)."""
        sigmas, timesteps = self.sigmas, self.timesteps

        def denoise(x, sigma, t):
            model_output = model_fn(self.scale_input(x, sigma), t)
            return model_output, denoised_from_output(model_output, x, self.config.prediction_type, sigma)

        call = 0
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            _, denoised = denoise(x, sigma, timesteps[call])
            d = to_d(x, sigma, denoised)
            if sigma_next == 0:  # the last step: one Euler step to σ' = 0
                x = self.report(callback, call, timesteps[call], x + d * (sigma_next - sigma), denoised)
                break
            sigma_mid = self.sigma_at(call + 1)
            x_mid = self.report(callback, call, timesteps[call], x + d * (sigma_mid - sigma), denoised)
            model_output, denoised = denoise(x_mid, sigma_mid, timesteps[call + 1])
            d_mid = to_d(x_mid, sigma_mid, denoised)
            if self.ancestral:
                sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next)
                noise = randn(model_output.shape, generator, model_output.dtype, model_output.device)
                x = x + d_mid * (sigma_down - sigma) + noise * sigma_up
            else:
                x = x + d_mid * (sigma_next - sigma)
            x = self.report(callback, call + 1, timesteps[call + 1], x, denoised)
            call += 2
        return x


class DPM2AncestralSampler(DPM2Sampler):
    name = "dpm2_a"
    diffusers_class = "KDPM2AncestralDiscreteScheduler"
    accuracy = 1  # fresh noise every step, as euler_a
    stochastic = True
    ancestral = True
