"""DPM++ 2S (Lu et al., 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
Algorithm 1): the singlestep DPM-Solver++, matching diffusers' ``DPMSolverSinglestepScheduler`` (algorithm_type
"dpmsolver++", solver_order 1, 2 or 3, solver_type "midpoint" or "heun").

Same latent and log-SNR time as DPM++ 2M (dpmpp_2m.py): x = α x_0 + s ε, λ = log(α / s). A multistep solver
reuses the x_0 predictions of earlier steps; a singlestep one groups the steps into blocks of k = 1, 2 or 3 and
takes ONE update of order k over the whole block, from the latent at its start, x_s, to the block's end t. The
network calls inside the block are its intermediate points: their x_0's enter through differences with the first,
m_j = x0 at the block's j-th point (m_0 at the start), r_j = (λ_j - λ_s) / h, h = λ_t - λ_s:

    x_t = (s_t / s_s) x_s - α_t (e^{-h} - 1) m_0                                                      (order 1: DDIM)
    order 2, D1 = (m_1 - m_0) / r_1:
          - ½ α_t (e^{-h} - 1) D1                                                                          (midpoint)
          + α_t ((e^{-h} - 1) / h + 1) D1                          (heun: x_0 integrated as a line in λ, Taylor form)
    order 3, D1_j = (m_j - m_0) / r_j (j = 1, 2):
          + α_t ((e^{-h} - 1) / h + 1) D1_2                                                                (midpoint)
          + α_t ((e^{-h} - 1) / h + 1) D1 - α_t ((e^{-h} - 1 + h) / h² - ½) D2                                 (heun)
            with D1 = (r_2 D1_1 - r_1 D1_2) / (r_2 - r_1), D2 = 2 (D1_2 - D1_1) / (r_2 - r_1)

So inside a block of order k the steps have orders 1, 2, ..., k, each restarting from x_s: step j of the block is
the update of order j to the block's j-th end, and the network is called there. ``order_list`` lays out the blocks.
A1111's "DPM++ 2S a" is a different method (see ``DPMPPSinglestepSampler``).
"""

from dataclasses import replace

import torch

from ..schedule import denoised_from_output
from .base import Sampler, alpha_sigma, log_snr
from .steps import SIGMA_SPACINGS, solver_plan


def order_list(steps, order, lower_order_final, final_sigmas_type):
    """The order of each step (diffusers' ``get_order_list``): blocks 1, 2, ..., order, then one shorter block for the
    steps left. The last step is first order when the last σ is 0, and with ``lower_order_final`` when the steps
    divide into whole blocks (diffusers forces lower_order_final on when they do not, or when the last σ is 0)."""
    blocks, rest = divmod(steps, order)
    orders = [*range(1, order + 1)] * blocks + [*range(1, rest + 1)]
    if final_sigmas_type == "zero" or (lower_order_final and rest == 0):
        orders[-1] = 1
    return orders


class DPMPPSinglestepSampler(Sampler):
    """DPM++ 2S. Not A1111's "DPM++ 2S a" (k-diffusion's sample_dpmpp_2s_ancestral), which calls the network twice per
    step, at σ and at the midpoint in λ of a step down to k-diffusion's ancestral σ_down, then adds noise up to σ'.
    diffusers has no scheduler for that method."""

    name = "dpmpp_2s"
    accuracy = 2
    diffusers_class = "DPMSolverSinglestepScheduler"
    diffusers_options = {"algorithm_type": "dpmsolver++"}  # whatever the model's file says: the name decides
    spacings = SIGMA_SPACINGS
    supports_zero_snr = False  # DPMSolverSinglestepScheduler has no rescale_betas_zero_snr
    defaults = {"lower_order_final": False}  # DPMSolverSinglestepScheduler's, where the other solvers' is True
    latent = "alpha_sigma"

    def plan(self):
        # diffusers parity: DPMSolverSinglestepScheduler has no timestep_spacing (nor steps_offset): always linspace
        return solver_plan(replace(self.config, timestep_spacing="linspace"), self.steps, self.spacing, self.schedule,
                           self.config.final_sigmas_type, lambda_min_clipped=self.config.lambda_min_clipped)

    def update(self, x, x0s, sigmas):
        """The update of order k = len(x0s) from x at sigmas[0] to sigmas[-1], x0s[j] at sigmas[j] (see above)."""
        (_, s), (alpha_t, s_t) = alpha_sigma(sigmas[0]), alpha_sigma(sigmas[-1])
        lambda_s = log_snr(sigmas[0])
        h = log_snr(sigmas[-1]) - lambda_s
        r = [(log_snr(sigma) - lambda_s) / h for sigma in sigmas[1:-1]]  # r_1 (, r_2)
        D1 = [(1.0 / r_j) * (m_j - x0s[0]) for r_j, m_j in zip(r, x0s[1:])]  # D1_1 (, D1_2)
        em1, heun = torch.exp(-h) - 1.0, self.config.solver_type == "heun"  # diffusers maps "logrho" to midpoint
        phi = alpha_t * (em1 / h + 1.0)  # the weight of a first difference in the Taylor form
        x_t = (s_t / s) * x - (alpha_t * em1) * x0s[0]
        if len(x0s) == 2 and heun:
            x_t = x_t + phi * D1[0]
        elif len(x0s) == 2:
            x_t = x_t - 0.5 * (alpha_t * em1) * D1[0]
        elif len(x0s) == 3 and heun:
            D1_mixed = (r[1] * D1[0] - r[0] * D1[1]) / (r[1] - r[0])
            D2 = 2.0 * (D1[1] - D1[0]) / (r[1] - r[0])
            x_t = x_t + phi * D1_mixed - (alpha_t * ((em1 + h) / h**2 - 0.5)) * D2
        elif len(x0s) == 3:
            x_t = x_t + phi * D1[1]
        return x_t

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1); returns the sampled x_0. Deterministic; steps in the latent's dtype."""
        config, sigmas = self.config, self.sigmas
        orders = order_list(self.steps, config.solver_order, config.lower_order_final, config.final_sigmas_type)
        for i, t in enumerate(self.timesteps):
            alpha, s = alpha_sigma(sigmas[i])
            x0 = denoised_from_output(model_fn(x, t), x, config.prediction_type, s, alpha)
            # diffusers parity: img2img may start inside a block; there the order is cut to the x_0's seen so far
            order = min(orders[self.begin_index + i], i + 1)
            if order == 1:  # a block starts here
                x_start, x0s = x, []
            x0s.append(x0)
            x_next = self.update(x_start, x0s, sigmas[i + 1 - order : i + 2])
            x = self.report(callback, i, t, x_next, x0)
        return x
