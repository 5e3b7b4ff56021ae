"""DPM++ 2M (Lu et al., 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"):
the second-order multistep DPM-Solver++, matching diffusers' ``DPMSolverMultistepScheduler`` (solver_order 2,
algorithm_type "dpmsolver++", solver_type "midpoint" or "heun").

It works on the ᾱ-form latent x_t = α_t x_0 + s_t ε (α = 1/sqrt(σ² + 1), s = σ α) in "log-SNR time"
λ = log(α / s). With h = λ_{i+1} - λ_i, the exact solution of the ODE for a constant x_0 prediction gives
the first-order step (it is DDIM), and the previous step's x_0 adds a correction (the "2M", two-step multistep,
the paper's Algorithm 2) through the divided difference D1 = (x0_i - x0_{i-1}) / r, r = h_{i-1} / h:

    x_{i+1} = (s_{i+1} / s_i) x_i - α_{i+1} (e^{-h} - 1) x0_i                                        (first order)
              - ½ α_{i+1} (e^{-h} - 1) D1                                                             (midpoint)
              + α_{i+1} ((e^{-h} - 1) / h + 1) D1                (heun: x_0 integrated as a line in λ, Taylor form)

The first step has no previous x_0; the last step is first order too when ``final_sigmas_type`` is "zero",
with ``euler_at_final``, or with ``lower_order_final`` and fewer than 15 steps (all as in diffusers).
dpmpp_2m_sde takes the same steps with the stochastic update.
"""

import torch

from ..schedule import denoised_from_output
from .base import Sampler, alpha_sigma, log_snr
from .steps import SIGMA_SPACINGS, solver_plan


def step_between(sigma, sigma_next):
    """(α, s), (α', s') of the ᾱ-form latent at σ and σ', and the step h = λ' - λ in log-SNR time (0-dim)."""
    return alpha_sigma(sigma), alpha_sigma(sigma_next), log_snr(sigma_next) - log_snr(sigma)


class DPMPP2MSampler(Sampler):
    name = "dpmpp_2m"
    accuracy = 2
    diffusers_class = "DPMSolverMultistepScheduler"
    diffusers_options = {"algorithm_type": "dpmsolver++"}  # whatever the model's file says: the name decides
    spacings = SIGMA_SPACINGS
    latent = "alpha_sigma"

    def plan(self):
        if self.config.solver_order != 2:
            raise ValueError(f"{self.name} is a second-order solver, got solver_order={self.config.solver_order}; "
                             f"set it to 2, or use dpmpp_2s (orders 1, 2 and 3)")
        # diffusers parity: Karras timesteps are rounded except under the cosine schedule
        return solver_plan(self.config, self.steps, self.spacing, self.schedule, self.config.final_sigmas_type,
                           round_karras=self.config.beta_schedule != "squaredcos_cap_v2",
                           lambda_min_clipped=self.config.lambda_min_clipped)

    def first_order_at_end(self, step):
        """Whether the last step of the schedule (index ``step``) falls back to first order."""
        config, n = self.config, len(self.all_timesteps)
        return step == n - 1 and (
            config.euler_at_final or (config.lower_order_final and n < 15) or config.final_sigmas_type == "zero"
        )

    def divided_difference(self, i, x0, x0_prev, h, h_prev):
        """D1 = (x0_i - x0_{i-1}) / r, r = h_{i-1} / h, for step i from the img2img start; None where the step is
        first order (the first one, and the last as ``first_order_at_end`` says)."""
        if x0_prev is None or self.first_order_at_end(self.begin_index + i):
            return None
        return (1.0 / (h_prev / h)) * (x0 - x0_prev)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1); returns the sampled x_0. Deterministic."""
        sigmas, heun = self.sigmas, self.config.solver_type == "heun"  # diffusers maps DEIS's "logrho" to midpoint
        x0_prev, h_prev = None, None
        for i, t in enumerate(self.timesteps):
            (alpha, s), (alpha_next, s_next), h = step_between(sigmas[i], sigmas[i + 1])
            model_output = model_fn(x, t)
            x0 = denoised_from_output(model_output, x, self.config.prediction_type, s, alpha)
            x = x.float()  # diffusers takes this step in float32 (see "Precision" in base.py)

            em1 = torch.exp(-h) - 1.0  # e^{-h} - 1
            x_next = (s_next / s) * x - (alpha_next * em1) * x0
            D1 = self.divided_difference(i, x0, x0_prev, h, h_prev)
            if D1 is not None and heun:
                x_next = x_next + (alpha_next * (em1 / h + 1.0)) * D1
            elif D1 is not None:
                x_next = x_next - 0.5 * (alpha_next * em1) * D1
            x0_prev, h_prev = x0, h
            x = self.report(callback, i, t, x_next.to(model_output.dtype), x0)
        return x
