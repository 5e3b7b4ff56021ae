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

import torch

from ..schedule import denoised_from_output
from .base import Sampler, alpha_sigma
from .steps import SIGMA_SPACINGS, solver_plan


class DPMPP2MSampler(Sampler):
    name = "dpmpp_2m"
    diffusers_class = "DPMSolverMultistepScheduler"
    spacings = SIGMA_SPACINGS
    latent = "alpha_sigma"

    def plan(self):
        # diffusers quirk: Karras timesteps are rounded except under the cosine schedule
        return solver_plan(self.config, self.steps, self.spacing, self.schedule, self.config.final_sigmas_type,
                           round_karras=self.config.beta_schedule != "squaredcos_cap_v2")

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
            x0 = denoised_from_output(model_output, x, self.config.prediction_type, s, alpha)
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
