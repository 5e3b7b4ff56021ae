"""LMS: the linear multistep (Adams–Bashforth) solver of the probability-flow ODE in σ-space, matching diffusers'
``LMSDiscreteScheduler`` (k-diffusion's ``sample_lms``, order 4).

It reuses the slopes d_i = (x_i - x_0) / σ_i of the last (up to) four steps: fit the polynomial through them in
σ and integrate it over the step, so

    x_{i+1} = x_i + Σ_j c_{ij} d_{i-j},      c_{ij} = ∫_{σ_i}^{σ_{i+1}} ℓ_j(σ) dσ

where ℓ_j is the Lagrange basis polynomial on the nodes σ_i, σ_{i-1}, ... that is 1 at σ_{i-j} and 0 at the others.
"""

import numpy as np
import torch

from ..schedule import denoised_from_output
from .base import SigmaSampler, to_d
from .steps import SIGMA_SPACINGS, k_diffusion_plan

# The 21-point Gauss–Kronrod rule on [-1, 1] (the first rule of scipy.integrate.quad): nodes >= 0 and weights.
_KRONROD_X = [0.0, 0.14887433898163121, 0.29439286270146020, 0.43339539412924719, 0.56275713466860468,
              0.67940956829902441, 0.78081772658641690, 0.86506336668898451, 0.93015749135570823,
              0.97390652851717172, 0.99565716302580808]
_KRONROD_W = [0.14944555400291691, 0.14773910490133849, 0.14277593857706008, 0.13470921731147333,
              0.12349197626206585, 0.10938715880229764, 0.09312545458369761, 0.07503967481091995,
              0.05475589657435200, 0.03255816230796473, 0.01169463886737187]
KRONROD_NODES = np.concatenate([-np.array(_KRONROD_X[:0:-1]), _KRONROD_X])  # (21,)
KRONROD_WEIGHTS = np.concatenate([np.array(_KRONROD_W[:0:-1]), _KRONROD_W])  # (21,)


def lms_coefficient(sigmas, i, j, order):
    """c_ij = ∫_{σ_i}^{σ_{i+1}} ℓ_j(σ) dσ, ℓ_j the Lagrange basis on σ_i, ..., σ_{i-order+1} for σ_{i-j}.

    sigmas: (n,) float32 tensor. Any Gauss rule integrates this cubic exactly; we use the 21-point Gauss–Kronrod
    rule and evaluate ℓ_j in float32 because diffusers does (scipy's quad over float32 σ's). Near the end of a
    schedule the c_ij are large and cancel, so that rounding is visible and matching it keeps us within 1e-6.
    """
    a, b = sigmas[i].item(), sigmas[i + 1].item()
    tau = torch.tensor((a + b) / 2 + (b - a) / 2 * KRONROD_NODES).float()  # (21,) points in [σ_{i+1}, σ_i]
    basis = torch.ones(21)
    for k in range(order):
        if k != j:  # a factor (σ - σ_{i-k}) / (σ_{i-j} - σ_{i-k}): 0 at the other node, 1 at σ_{i-j}
            basis = basis * ((tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k]))
    return float((basis.double().numpy() * KRONROD_WEIGHTS).sum() * (b - a) / 2)


class LMSSampler(SigmaSampler):
    name = "lms"
    accuracy = 4
    diffusers_class = "LMSDiscreteScheduler"
    spacings = SIGMA_SPACINGS
    max_order = 4
    supports_zero_snr = False

    def plan(self):
        return k_diffusion_plan(self.config, self.steps, self.spacing, self.schedule)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise of std ``init_noise_sigma``; returns the sampled x_0. Deterministic."""
        sigmas = self.sigmas
        slopes = []  # the last max_order slopes d, newest last
        for i, t in enumerate(self.timesteps):
            sigma = sigmas[i]
            model_output = model_fn(self.scale_input(x, sigma), t)
            denoised = denoised_from_output(model_output, x, self.config.prediction_type, sigma)
            slopes = (slopes + [to_d(x, sigma, denoised)])[-self.max_order :]
            # diffusers parity: the order counts from the position in the whole schedule, so after an img2img
            # start the first steps use high-order coefficients for the few slopes there are
            step = self.begin_index + i
            order = min(step + 1, self.max_order)
            coeffs = [lms_coefficient(self.all_sigmas, step, j, order) for j in range(order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(slopes)))
            x = self.report(callback, i, t, x, denoised)
        return x
