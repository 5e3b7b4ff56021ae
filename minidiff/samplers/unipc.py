"""UniPC (Zhao et al., 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"),
matching diffusers' ``UniPCMultistepScheduler``: a multistep predictor (UniP) whose result is then corrected (UniC)
with the network output at the new point, the output the next step needs anyway, so one network call per step.

On the ᾱ-form latent x = α x_0 + s ε (α = 1/sqrt(σ² + 1), s = σ α) in log-SNR time λ = log(α / s), step i goes from
λ_i to λ_{i+1}, h = λ_{i+1} - λ_i. The model outputs m are x_0 predictions (``predict_x0``, the default) or ε
predictions: m_i at x_i, and those of the steps before (``solver_order`` are kept) enter as divided differences

    D_k = (m_{i-k} - m_i) / r_k,      r_k = (λ_{i-k} - λ_i) / h,      k = 1 .. p-1

UniP-p, the predictor of order p, with ĥ = -h for x_0 predictions and ĥ = h for ε predictions:

    x_{i+1} = (s_{i+1}/s_i) x_i - α_{i+1} (e^ĥ - 1) m_i - α_{i+1} B(h) Σ_k a_k D_k        (x_0 predictions)
    x_{i+1} = (α_{i+1}/α_i) x_i - s_{i+1} (e^ĥ - 1) m_i - s_{i+1} B(h) Σ_k a_k D_k        (ε predictions)

UniC-p, the corrector: the network is called at the predicted x_{i+1}; its output m_{i+1} adds one difference,
D_p = m_{i+1} - m_i at r_p = 1, and the same update is taken again from x_i with weights c_1 .. c_p. The corrected
x_{i+1} starts step i+1 (the output m_{i+1} is kept as it is):

    x^c_{i+1} = (s_{i+1}/s_i) x_i - α_{i+1} (e^ĥ - 1) m_i - α_{i+1} B(h) (Σ_{k<p} c_k D_k + c_p D_p)

The weights satisfy the order conditions Σ_k a_k r_k^(j-1) = g_j / B(h) (j = 1 .. p-1 for a, 1 .. p for c), with
g_j = j! ĥ φ_{j+1}(ĥ), φ_1(ĥ) = (e^ĥ - 1)/ĥ, φ_{j+1} = (φ_j - 1/j!)/ĥ; B(h) = ĥ ("bh1") or e^ĥ - 1 ("bh2"). A single
difference gets the weight 1/2 (UniP-2, UniC-1) rather than g_1 / B(h). The order p rises by one a step from 1 to
``solver_order`` and, with ``lower_order_final``, falls over the last steps (p <= steps left); the corrector takes
the order of the step it corrects, from the second step on, except after the steps in ``disable_corrector``.
A last step to σ = 0 (h = ∞, first order) lands on the x_0 that m_i implies, the update's limit; diffusers
evaluates B(h) · 0 there and returns NaN for bh1 and for ε predictions.
"""

import torch

from ..schedule import denoised_from_output
from .base import Sampler, alpha_sigma, log_snr
from .steps import SIGMA_SPACINGS, solver_plan


def noise_from_output(model_output, x, prediction_type, alpha, s):
    """The predicted ε, with diffusers' arithmetic: ε itself, ε = α v + s x, or ε = (x - α x_0) / s."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha * model_output + s * x
    return (x - alpha * model_output) / s


def order_weights(rks, hh, B_h):
    """The weights w solving Σ_k w_k r_k^(j-1) = g_j / B(h) for j = 1 .. len(rks), g_j = j! ĥ φ_{j+1}(ĥ). (n,)"""
    rks = torch.stack(rks)  # (n,)
    R = torch.stack([rks**j for j in range(len(rks))])  # (n, n): row j holds r_k^j
    b, factorial, h_phi = [], 1, torch.expm1(hh) / hh - 1  # h_phi = ĥ φ_{j+1}(ĥ), here j = 1
    for j in range(1, len(rks) + 1):
        b.append(h_phi * factorial / B_h)
        factorial *= j + 1
        h_phi = h_phi / hh - 1 / factorial
    return torch.linalg.solve(R, torch.stack(b))


def weighted_sum(w, D):
    """Σ_k w_k D_k for w (K,) and K tensors D_k (B, C, H, W), contracted as diffusers does (same rounding)."""
    return torch.einsum("k,bkc...->bc...", w, torch.stack(D, dim=1))


class UniPCSampler(Sampler):
    name = "unipc"
    accuracy = 3  # UniC raises UniP-p to order p + 1; the default solver_order is 2
    diffusers_class = "UniPCMultistepScheduler"
    spacings = SIGMA_SPACINGS
    latent = "alpha_sigma"
    defaults = {"solver_type": "bh2"}

    def plan(self):
        config = self.config
        if not config.lower_order_final and config.final_sigmas_type == "zero" and config.solver_order > 1:
            raise ValueError("unipc with lower_order_final=False and final_sigmas_type='zero' ends with a step of "
                             "order 2 or more to σ = 0, which is undefined; set one of them back to its default")
        # diffusers parity: with a re-spacing, "sigma_min" ends on the last re-spaced σ repeated (a step of h = 0)
        final = "last" if config.final_sigmas_type == "sigma_min" else "zero"
        return solver_plan(config, self.steps, self.spacing, self.schedule, final)

    def update(self, x, outputs, i, order, m_new=None):
        """UniP (or UniC with the output m_new at the new point) of order p from x at σ_i to σ_{i+1}; i indexes the
        whole schedule, outputs holds the m's up to step i, newest last."""
        sigmas, config = self.all_sigmas, self.config
        (alpha, s), (alpha_next, s_next) = alpha_sigma(sigmas[i]), alpha_sigma(sigmas[i + 1])
        m0 = outputs[-1]
        if sigmas[i + 1] == sigmas[i]:  # a step of h = 0 (see plan) leaves x as it is
            return x
        if s_next == 0:  # the limit h -> ∞ of the first-order step (module docstring)
            return (m0 if config.predict_x0 else (x - s * m0) / alpha).to(x.dtype)
        h = log_snr(sigmas[i + 1]) - log_snr(sigmas[i])
        hh = -h if config.predict_x0 else h  # ĥ
        # diffusers parity: a midpoint/heun/logrho solver_type (DPM-Solver's, DEIS's) means bh2
        B_h = hh if config.solver_type == "bh1" else torch.expm1(hh)
        ratio, weight = (s_next / s, alpha_next) if config.predict_x0 else (alpha_next / alpha, s_next)
        x_next = ratio * x - (weight * torch.expm1(hh)) * m0
        rks = [(log_snr(sigmas[i - k]) - log_snr(sigmas[i])) / h for k in range(1, order)]  # r_1 .. r_{p-1}
        D = [(outputs[-1 - k] - m0) / r for k, r in enumerate(rks, 1)]
        if m_new is not None:  # UniC: D_p at r_p = 1
            rks, D = rks + [torch.ones(())], D + [m_new - m0]
        if not D:  # UniP-1: the first-order step alone
            return x_next.to(x.dtype)
        # diffusers parity: a single difference (UniP-2, UniC-1) gets the weight 1/2, not g_1 / B(h)
        w = (torch.full((1,), 0.5) if len(D) == 1 else order_weights(rks, hh, B_h)).to(x.device, x.dtype)
        if m_new is None:
            res = weighted_sum(w, D)
        else:  # diffusers adds the new point's term after the sum over the old ones
            res = (weighted_sum(w[:-1], D[:-1]) if len(D) > 1 else 0) + w[-1] * D[-1]
        return (x_next - (weight * B_h) * res).to(x.dtype)

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1); returns the sampled x_0. Deterministic; steps in the latent's dtype."""
        config, n = self.config, len(self.all_timesteps)
        outputs, x_start, order = [], None, 1  # the last m's, newest last; the last predictor's start and order
        for i, t in enumerate(self.timesteps):
            step = self.begin_index + i  # the index in the whole schedule
            alpha, s = alpha_sigma(self.all_sigmas[step])
            model_output = model_fn(x, t)
            x0 = denoised_from_output(model_output, x, config.prediction_type, s, alpha)
            m = x0 if config.predict_x0 else noise_from_output(model_output, x, config.prediction_type, alpha, s)
            if x_start is not None and step - 1 not in config.disable_corrector:
                x = self.update(x_start, outputs, step - 1, order, m_new=m)  # UniC: correct the last step
            outputs = (outputs + [m])[-config.solver_order :]
            order = min(config.solver_order, len(outputs))  # warm-up: as many orders as outputs
            if config.lower_order_final:
                order = min(order, n - step)  # and down again over the last steps
            x_start = x
            x = self.report(callback, i, t, self.update(x, outputs, step, order), x0)
        return x
