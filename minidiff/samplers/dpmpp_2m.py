"""DPM++ 2M (Lu et al., 2022): the second-order multistep DPM-Solver++, matching diffusers'
``DPMSolverMultistepScheduler`` (solver_order 2, algorithm_type "dpmsolver++", solver_type "midpoint").

It works on the ᾱ-form latent x_t = α_t x_0 + s_t ε (α = 1/sqrt(σ² + 1), s = σ α) in "log-SNR time"
λ = log(α / s). With h = λ_{i+1} - λ_i, the exact solution of the ODE for a constant x_0 prediction gives
the first-order step, and the previous step's x_0 adds a correction (the "2M", two-step multistep):

    x_{i+1} = (s_{i+1} / s_i) x_i - α_{i+1} (e^{-h} - 1) D,     D = x0_i                            (first order)
                                                                 D = x0_i + (x0_i - x0_{i-1}) / (2 r), r = h_{i-1} / h

The first step has no previous x_0; the last step is first order too when ``final_sigmas_type`` is "zero",
with ``euler_at_final``, or with ``lower_order_final`` and fewer than 15 steps (all as in diffusers).
"""

import numpy as np
import torch

from ..schedule import x0_from_scaled_output
from .base import Sampler, karras_sigmas, sigma_to_t


def dpm_timesteps(config, steps):
    """DPM-Solver's spacing: linspace and leading place steps + 1 points and drop the last. (steps,) float64."""
    T = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1]
    if config.timestep_spacing == "leading":
        return (np.arange(steps + 1) * (T // (steps + 1))).round()[::-1][:-1] + config.steps_offset
    return np.arange(T, 0, -T / steps).round() - 1


def alpha_sigma(sigma):
    """(α, s) of the ᾱ-form latent at σ-space noise level σ: α = 1 / sqrt(σ² + 1), s = σ α."""
    alpha = 1 / (sigma**2 + 1) ** 0.5
    return alpha, sigma * alpha


class DPMPP2MSampler(Sampler):
    name = "dpmpp_2m"
    diffusers_class = "DPMSolverMultistepScheduler"
    supports_karras = True

    def make_schedule(self):
        alphas_cumprod = self.schedule.alphas_cumprod
        if self.config.rescale_betas_zero_snr:
            alphas_cumprod[-1] = 2**-24  # as diffusers: keeps the last σ finite (≈ 4096) when ᾱ_{T-1} = 0
        train_sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).numpy()  # (T,) float32
        timesteps = dpm_timesteps(self.config, self.steps)
        if self.karras:  # from the smallest to the largest training σ
            sigmas = karras_sigmas(train_sigmas[0].item(), train_sigmas[-1].item(), self.steps)
            timesteps = sigma_to_t(sigmas, np.log(train_sigmas))
            if self.config.beta_schedule != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        final = train_sigmas[0] if self.config.final_sigmas_type == "sigma_min" else 0.0
        self.all_sigmas = torch.from_numpy(np.append(sigmas, final).astype(np.float32))  # (steps + 1,)
        self.all_timesteps = torch.from_numpy(timesteps.astype(np.int64))  # (steps,)

    @property
    def sigmas(self):
        """The σ before each call and the final one, from the img2img start. (calls + 1,) float32."""
        return self.all_sigmas[self.begin_index :]

    def sigma_at(self, step_index):
        return self.sigmas[step_index]

    def add_noise(self, x0, noise, step_index=0):
        """Noise clean x0 (B, C, H, W) to the level before call ``step_index``: α x0 + s ε."""
        self._check_step_index(step_index)
        alpha, s = alpha_sigma(self.sigma_at(step_index).to(x0.device, x0.dtype))
        return alpha * x0 + s * noise

    def first_order_at_end(self, step):
        """Whether the last step of the schedule (index ``step``) falls back to first order."""
        config, n = self.config, len(self.all_timesteps)
        return step == n - 1 and (
            config.euler_at_final or (config.lower_order_final and n < 15) or config.final_sigmas_type == "zero"
        )

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1); returns the sampled x_0. Deterministic."""
        sigmas = self.sigmas
        x0_prev, h_prev = None, None
        for i, t in enumerate(self.timesteps):
            alpha, s = alpha_sigma(sigmas[i])
            alpha_next, s_next = alpha_sigma(sigmas[i + 1])
            h = (torch.log(alpha_next) - torch.log(s_next)) - (torch.log(alpha) - torch.log(s))  # λ' - λ

            model_output = model_fn(x, t)
            x0 = x0_from_scaled_output(model_output, x, alpha, s, self.config.prediction_type)
            x = x.float()  # diffusers takes this step in float32 (see "Precision" in base.py)

            if x0_prev is None or self.first_order_at_end(self.begin_index + i):
                x_next = (s_next / s) * x - (alpha_next * (torch.exp(-h) - 1.0)) * x0
            else:
                r = h_prev / h
                D0, D1 = x0, (1.0 / r) * (x0 - x0_prev)
                x_next = (
                    (s_next / s) * x
                    - (alpha_next * (torch.exp(-h) - 1.0)) * D0
                    - 0.5 * (alpha_next * (torch.exp(-h) - 1.0)) * D1
                )
            x0_prev, h_prev = x0, h
            x = self.report(callback, i, t, x_next.to(model_output.dtype), x0)
        return x
