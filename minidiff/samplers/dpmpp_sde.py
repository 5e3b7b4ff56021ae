"""DPM++ SDE: the singlestep second-order DPM-Solver++ (2S) of the reverse-time SDE, its noise from a Brownian tree,
matching diffusers' ``DPMSolverSDEScheduler`` (k-diffusion's ``sample_dpmpp_sde`` with eta = 1, r = 1/2; Lu et al.,
2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"). A1111 and ComfyUI call it
"DPM++ SDE".

It works on the σ-form latent x = x_0 + σ ε in the time t = -log σ. A move from σ_a towards σ_b splits, as Euler
ancestral does, σ_b² = σ_down² + σ_up² with σ_down = σ_b² / σ_a; the ODE's exact solution for a constant x_0 carries
x down to σ_down, and noise of std σ_up brings it back to σ_b:

    move(x, x_0, σ_a -> σ_b) = (σ_down / σ_a) x - (e^{t_a - t_down} - 1) x_0 + σ_up z

Each step σ -> σ' (h = t' - t) moves to the midpoint σ_mid = e^{-(t + h/2)} with the x_0 at σ, then takes the whole
step from x again, with the x_0 predicted at the midpoint (two network calls):

    x_mid = move(x, x_0(x, σ), σ -> σ_mid)       = e^{-h} x + (1 - e^{-h}) x_0 + σ_mid sqrt(1 - e^{-h}) z_1
    x'    = move(x, x_0(x_mid, σ_mid), σ -> σ')  = e^{-2h} x + (1 - e^{-2h}) x_0(x_mid) + σ' sqrt(1 - e^{-2h}) z_2

The last step, to σ' = 0, is one Euler call x' = x + (0 - σ)(x - x_0) / σ, which lands on x_0. The noise z between
σ_a and σ_b is the increment of one Brownian path W(σ), z = (W(σ_b) - W(σ_a)) / sqrt|σ_b - σ_a| (minidiff/brownian.py),
so z_2 holds z_1's part of the path, and the noise between two noise levels is the same whatever the steps.

The path is fixed by a seed: the config's ``noise_sampler_seed`` where set (as in diffusers: every run then adds the
same path), else ``brownian_seed(generator)``, one int drawn from the run's generator (one per sample from a list of
generators, each sample its own path); with no generator, diffusers' own draw from torch's global generator.
diffusers' pipelines do not pass their generator to this scheduler: to reproduce a seeded minidiff run there, set
its ``noise_sampler_seed`` to that seed. The callback sees x_mid, then x', and the x_0 just predicted.
"""

import torch

from ..brownian import BrownianTreeNoise
from ..schedule import denoised_from_output
from .base import SigmaSampler, to_d
from .steps import SIGMA_SPACINGS, dpmpp_sde_plan, get_ancestral_step


def brownian_seed(generator):
    """The Brownian tree's seed drawn from ``generator``: torch.randint(0, 2**63 - 1, ()) as an int, a list of ints
    from a list of generators (one each), None from None (then the tree draws its own from torch's global one)."""
    if isinstance(generator, (list, tuple)):
        return [brownian_seed(g) for g in generator]
    if generator is None:
        return None
    return torch.randint(0, 2**63 - 1, (), generator=generator, device=generator.device).item()


def t_fn(sigma):
    return sigma.log().neg()  # t = -log σ


def sigma_fn(t):
    return t.neg().exp()  # σ = e^{-t}


class DPMPPSDESampler(SigmaSampler):
    name = "dpmpp_sde"
    diffusers_class = "DPMSolverSDEScheduler"
    spacings = SIGMA_SPACINGS
    order = 2
    accuracy = 2
    stochastic = True
    supports_zero_snr = False

    def plan(self):
        """Two calls per step, at σ_i and at the step's midpoint in t = -log σ (``steps.dpmpp_sde_plan``)."""
        return dpmpp_sde_plan(self.config, self.steps, self.spacing, self.schedule)

    def add_noise(self, x0, noise, step_index=0):
        """``Sampler.add_noise``, except before a midpoint call: there, x0 is noised to the σ that step ends at."""
        # diffusers parity: add_noise at a midpoint call (odd index) reads σ_{i+1}, not σ_mid, so inpainting re-noises
        # its known region to σ_{i+1} before the midpoint evaluation (as KDPM2's does)
        midpoint = step_index % 2 == 1 and step_index < len(self.timesteps)
        return super().add_noise(x0, noise, step_index + 1 if midpoint else step_index)

    def sample(self, model_fn, x, generator=None, callback=None, s_noise=1.0):
        """x: (B, C, H, W) noise of std ``init_noise_sigma``; returns the sampled x_0. generator: one torch.Generator,
        one per sample, or None (module docstring); s_noise scales the added noise (1: the SDE's)."""
        sigmas, timesteps, all_sigmas = self.sigmas, self.timesteps, self.all_sigmas
        if isinstance(generator, (list, tuple)) and len(generator) != len(x):
            raise ValueError(f"got a list of {len(generator)} generators for a batch of {len(x)}; pass one generator "
                             f"per batch element, or a single generator for the whole batch")
        seed = self.config.noise_sampler_seed
        seed = brownian_seed(generator) if seed is None else seed
        # the path spans the whole schedule's σ's, the skipped ones of img2img included (as in diffusers)
        noise = BrownianTreeNoise(x, all_sigmas[all_sigmas > 0].min().item(), all_sigmas.max().item(), seed)

        def denoise(x, sigma, t):
            return denoised_from_output(model_fn(self.scale_input(x, sigma), t), x, self.config.prediction_type, sigma)

        def move(x, x0, t, sigma_to):
            """From σ = e^{-t} down to σ_down with x0 held, then noise up to ``sigma_to``."""
            sigma_from = sigma_fn(t)
            # capped: rounding can take σ_up past σ_to when σ_to << σ_from (k-diffusion's guard, which diffusers has)
            sigma_down, sigma_up = get_ancestral_step(sigma_from, sigma_to, capped=True)
            t_down = t_fn(sigma_down)
            x = (sigma_fn(t_down) / sigma_from) * x - (t - t_down).expm1() * x0
            return x + noise(sigma_from, sigma_to) * s_noise * sigma_up

        call = 0
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            denoised = denoise(x, sigma, timesteps[call])
            if sigma_next == 0:  # the last step: one Euler step to σ' = 0
                x = self.report(callback, call, timesteps[call], x + to_d(x, sigma, denoised) * (sigma_next - sigma),
                                denoised)
                break
            t, t_next = t_fn(sigma), t_fn(sigma_next)
            sigma_mid = self.sigma_at(call + 1)  # e^{-(t + h/2)}
            x_mid = self.report(callback, call, timesteps[call], move(x, denoised, t, sigma_mid), denoised)
            denoised = denoise(x_mid, sigma_mid, timesteps[call + 1])
            x = self.report(callback, call + 1, timesteps[call + 1], move(x, denoised, t, sigma_fn(t_next)), denoised)
            call += 2
        return x
