"""DPM++ 2M SDE (Lu et al., 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
its SDE variant): the second-order multistep solver of the reverse-time *SDE*, matching diffusers'
``DPMSolverMultistepScheduler`` with algorithm_type "sde-dpmsolver++" (solver_order 2, solver_type "midpoint" or
"heun"). A1111 and ComfyUI call it "DPM++ 2M SDE".

Same latent, steps and log-SNR time as DPM++ 2M (dpmpp_2m.py): x = α x_0 + s ε, λ = log(α / s), h = λ_{i+1} - λ_i.
Solving the SDE exactly for a constant x_0 prediction over one step gives a contraction of the latent towards x_0
plus fresh Gaussian noise z ~ N(0, I), drawn at every step:

    x_{i+1} = (s_{i+1} / s_i) e^{-h} x_i + α_{i+1} (1 - e^{-2h}) x0_i + s_{i+1} sqrt(1 - e^{-2h}) z    (first order)

The noise put back, s_{i+1}² (1 - e^{-2h}), is what the contraction takes out, so x_{i+1} has the noise level s_{i+1}.
The second order adds, with the same divided difference D1 = (x0_i - x0_{i-1}) / r, r = h_{i-1} / h, as DPM++ 2M:

    + ½ α_{i+1} (1 - e^{-2h}) D1                                                         (midpoint)
    + α_{i+1} ((1 - e^{-2h}) / (-2h) + 1) D1                                              (heun)

The weights of x0 and D1 are the ODE's with h doubled: the SDE moves faster towards x_0 and adds noise back. Which
steps are first order (the first; the last as in DPM++ 2M) comes from ``DPMPP2MSampler``.
"""

import torch

from ..noise import randn
from ..schedule import denoised_from_output
from .dpmpp_2m import DPMPP2MSampler, step_between


class DPMPP2MSDESampler(DPMPP2MSampler):
    name = "dpmpp_2m_sde"
    diffusers_options = {"algorithm_type": "sde-dpmsolver++"}
    stochastic = True

    def sample(self, model_fn, x, generator=None, callback=None):
        """x: (B, C, H, W) noise (std 1); returns the sampled x_0. generator: one torch.Generator or one per sample."""
        sigmas, heun = self.sigmas, self.config.solver_type == "heun"  # diffusers maps DEIS's "logrho" to midpoint
        x0_prev, h_prev = None, None
        for i, t in enumerate(self.timesteps):
            (alpha, s), (alpha_next, s_next), h = step_between(sigmas[i], sigmas[i + 1])
            model_output = model_fn(x, t)
            x0 = denoised_from_output(model_output, x, self.config.prediction_type, s, alpha)
            x = x.float()  # diffusers takes this step in float32 (see "Precision" in base.py)
            # drawn at every step, the last included (where s' = 0 multiplies it), as diffusers draws it
            z = randn(model_output.shape, generator, torch.float32, model_output.device)

            one_minus = 1 - torch.exp(-2.0 * h)  # 1 - e^{-2h}
            x_next = (s_next / s * torch.exp(-h)) * x + (alpha_next * one_minus) * x0
            D1 = self.divided_difference(i, x0, x0_prev, h, h_prev)
            if D1 is not None and heun:
                x_next = x_next + (alpha_next * (one_minus / (-2.0 * h) + 1.0)) * D1
            elif D1 is not None:
                x_next = x_next + 0.5 * (alpha_next * one_minus) * D1
            x_next = x_next + s_next * torch.sqrt(one_minus) * z
            x0_prev, h_prev = x0, h
            x = self.report(callback, i, t, x_next.to(model_output.dtype), x0)
        return x
