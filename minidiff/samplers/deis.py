"""DEIS (Zhang & Chen, 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"): the multistep
exponential integrator in ρ-space, matching diffusers' ``DEISMultistepScheduler`` (algorithm_type "deis", solver_type
"logrho", solver_order 1, 2 or 3).

On the ᾱ-form latent x = α x_0 + s ε (α = 1/sqrt(σ² + 1), s = σ α), the scaled latent x/α moves with ρ = s/α (= σ)
exactly as dx̄/dρ = ε, so a step from ρ_i to ρ_{i+1} is an integral of the predicted noise:

    x_{i+1} / α_{i+1} = x_i / α_i + ∫_{ρ_i}^{ρ_{i+1}} ε(ρ) dρ

DEIS fits ε by the Lagrange polynomial in log ρ through the last k predictions ε_i, ε_{i-1}, ... (k = the order)
and integrates it exactly. With u = log ρ, ℓ_j the basis polynomial that is 1 at u_{i-j} and 0 at the other nodes,

    x_{i+1} = α_{i+1} (x_i / α_i + Σ_j c_j ε_{i-j}),    c_j = ∫_{ρ_i}^{ρ_{i+1}} ℓ_j(log ρ) dρ = F_j(ρ_{i+1}) - F_j(ρ_i)

    order 1:  c_0 = ρ_{i+1} - ρ_i, written as  x_{i+1} = (α_{i+1}/α_i) x_i - s_{i+1} (e^h - 1) ε_i,  h = λ_{i+1} - λ_i
              (λ = log α/s; this is DDIM)
    order 2:  F(ρ) = ρ (u - c - 1) / (b - c)                       ℓ(u) = (u - c) / (b - c)
    order 3:  F(ρ) = ρ [(u - c)(u - d) - (2u - c - d) + 2] / ((b - c)(b - d))   ℓ(u) = (u - c)(u - d) / ((b - c)(b - d))

where b is the node's own log ρ and c, d the others' (∫ p(u) e^u du = e^u (p - p' + p'')). The first steps have
fewer ε's and use a lower order; with ``lower_order_final`` and fewer than 15 steps, so do the last two.
"""

import numpy as np
import torch

from ..schedule import denoised_from_output
from .base import Sampler, alpha_sigma, log_snr
from .steps import SIGMA_SPACINGS, solver_plan


def antiderivative(rho, b, c, d=None):
    """F(ρ) above for nodes with log ρ = b (the basis polynomial's own), c and optionally d; float32 numpy scalars."""
    u = np.log(rho)
    if d is None:
        return rho * (u - c - 1) / (b - c)
    # diffusers parity: the numerator is expanded as below and evaluated in float32; F(ρ_{i+1}) - F(ρ_i) cancels
    # heavily when steps are short, so only the same arithmetic agrees with diffusers to 1e-6
    return rho * (c * (d - u + 1) - d * u + d + u**2 - 2 * u + 2) / ((b - c) * (b - d))


def log_rho_coefficients(rho_next, rhos):
    """c_j = F_j(ρ_{i+1}) - F_j(ρ_i) for the nodes rhos = (ρ_i, ρ_{i-1}[, ρ_{i-2}]), as 0-dim float32 tensors."""
    logs = [np.log(rho) for rho in rhos]
    coefficients = []
    for j in range(len(rhos)):
        nodes = logs[j:] + logs[:j]  # the node's own log ρ first, then the others in turn (as diffusers orders them)
        coefficients.append(torch.tensor(antiderivative(rho_next, *nodes) - antiderivative(rhos[0], *nodes)))
    return coefficients


def rho_of(sigma):
    """ρ = s/α of the ᾱ-form latent at σ-space level σ (σ itself, up to float32 rounding), a float32 numpy scalar."""
    alpha, s = alpha_sigma(sigma)
    return (s / alpha).numpy()


class DEISSampler(Sampler):
    name = "deis"
    accuracy = 2  # with the default solver_order 2 (solver_order k: k)
    diffusers_class = "DEISMultistepScheduler"
    spacings = SIGMA_SPACINGS
    supports_zero_snr = False  # DEISMultistepScheduler has no rescale_betas_zero_snr
    latent = "alpha_sigma"
    defaults = {"algorithm_type": "deis", "solver_type": "logrho"}

    def plan(self):
        if self.config.algorithm_type not in ("deis", "dpmsolver++"):  # diffusers maps dpmsolver++ onto deis
            raise ValueError(f"deis has no algorithm_type {self.config.algorithm_type!r}; use 'deis' or remove the key")
        # diffusers parity: without a re-spacing the last σ is σ_0 of training (sigma_min); with one it is the last
        # re-spaced σ repeated, so the final step there has h = 0 and leaves the latent as it is
        return solver_plan(self.config, self.steps, self.spacing, self.schedule, final="last")

    def step_order(self, step, taken):
        """The order of step ``step`` of the schedule, ``taken`` steps after the start: at most the ε's there are, and
        with lower_order_final and fewer than 15 steps, at most the steps left (1 on the last, 2 on the one before)."""
        order, n = min(self.config.solver_order, taken + 1), len(self.all_timesteps)
        if self.config.lower_order_final and n < 15:
            order = min(order, n - step)
        return order

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1); returns the sampled x_0. Deterministic; steps in the latent's dtype."""
        sigmas = self.sigmas
        eps_history = []  # the last solver_order predicted ε's, newest last
        for i, t in enumerate(self.timesteps):
            alpha, s = alpha_sigma(sigmas[i])
            alpha_next, s_next = alpha_sigma(sigmas[i + 1])
            model_output = model_fn(x, t)
            x0 = denoised_from_output(model_output, x, self.config.prediction_type, s, alpha)
            eps = (x - alpha * x0) / s  # DEIS integrates ε; diffusers recovers it from x_0 for every prediction type
            eps_history = (eps_history + [eps])[-self.config.solver_order :]

            order = self.step_order(self.begin_index + i, i)
            if order == 1:
                h = log_snr(sigmas[i + 1]) - log_snr(sigmas[i])  # λ' - λ
                x_next = (alpha_next / alpha) * x - (s_next * (torch.exp(h) - 1.0)) * eps
            else:
                rhos = [rho_of(sigmas[i - j]) for j in range(order)]  # ρ_i, ρ_{i-1}, ...
                coefficients = log_rho_coefficients(rho_of(sigmas[i + 1]), rhos)
                x_bar = x / alpha
                for c, eps_j in zip(coefficients, reversed(eps_history)):  # ε_i, ε_{i-1}, ...
                    x_bar = x_bar + c * eps_j
                x_next = alpha_next * x_bar
            x = self.report(callback, i, t, x_next, x0)
        return x
