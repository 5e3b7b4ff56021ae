"""Where a sampler steps: its timesteps, its noise levels σ, their spacing, and img2img's late start.

Every sampler calls the network at a few of the T = 1000 training timesteps. This module decides which, once for
all of them; each sampler file then shows only *how* it steps between them. Three families of plans:

* ``discrete_plan`` (DDPM, DDIM, PNDM): integer timesteps, no σ's; the latent is x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε.
* ``k_diffusion_plan`` (Euler, Euler ancestral, Heun, LMS, DPM2, DPM++ SDE): σ_t = sqrt((1-ᾱ_t)/ᾱ_t) interpolated at
  the spaced timesteps, the latent x = x_0 + σ ε; re-spaced σ's span the interpolated ones and get fractional
  timesteps.
* ``solver_plan`` (the DPM-Solver family: DPM++ 2M, UniPC, DEIS, singlestep): timesteps from steps + 1 points with the
  last dropped; re-spaced σ's span the training ones; timesteps are integers.

Spacing of the timesteps (``timestep_spacing``, Lin et al. 2023, table 2): *leading* 0, k, 2k, ... (+ steps_offset);
*trailing* T-1 downwards in steps of T/steps; *linspace* evenly from 0 to T-1. Re-spacing of the σ's
(``sigma_spacing``): *karras* (Karras et al. 2022: even in σ^(1/ρ), ρ = 7), *exponential* (even in log σ), *beta*
(the quantiles of a Beta(0.6, 0.6) distribution, Lee et al. 2024: dense at both ends).

img2img starts late: with ``strength`` s only the last int(steps · s) steps run (``late_start``).
Quirks of diffusers that parity needs are marked "diffusers quirk:" and explained where they occur.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .beta_quantile import beta_quantile

SIGMA_SPACINGS = ("karras", "exponential", "beta")


@dataclass
class Plan:
    """Where a sampler steps, for the whole schedule (img2img's start is applied by the sampler)."""

    timesteps: torch.Tensor  # (calls,) the timestep of each network call
    sigmas: torch.Tensor | None = None  # (steps + 1,) float32: the σ before each step, then the σ after the last
    call_sigmas: torch.Tensor | None = None  # (calls,) the σ of the latent before each call (default sigmas[:-1])

    def __post_init__(self):
        if self.sigmas is not None and self.call_sigmas is None:
            self.call_sigmas = self.sigmas[:-1]


def train_sigmas(schedule, zero_snr=False):
    """σ_t at every training timestep, (T,) float32 numpy. With zero terminal SNR, ᾱ_{T-1} = 0 would make the last σ
    infinite; diffusers substitutes ᾱ = 2⁻²⁴ (σ ≈ 4096), and so do we."""
    alphas_cumprod = schedule.alphas_cumprod
    if zero_snr:
        alphas_cumprod[-1] = 2**-24
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).numpy()


def spaced_timesteps(config, steps):
    """The ``steps`` training timesteps to visit, largest first, as a float64 numpy array (steps,).

    leading:  0, k, 2k, ... with k = T // steps, plus steps_offset (Stable Diffusion: 981, 961, ..., 1)
    trailing: T-1, then down in steps of T / steps, rounded (always starts at the noisiest step)
    linspace: evenly from 0 to T-1, not rounded (discrete plans round them)
    """
    T = config.num_train_timesteps
    if config.timestep_spacing == "leading":
        return (np.arange(steps) * (T // steps)).round()[::-1] + float(config.steps_offset)
    if config.timestep_spacing == "trailing":
        return np.arange(T, 0, -T / steps).round() - 1
    # linspace: evenly spaced, rounded to float32 (diffusers' σ-schedulers interpolate at those float32 values)
    return np.linspace(0, T - 1, steps, dtype=np.float32)[::-1].astype(np.float64)


def solver_timesteps(config, steps):
    """DPM-Solver's spacing: linspace and leading place steps + 1 points and drop the last. (steps,) float64."""
    T = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1]
    if config.timestep_spacing == "leading":
        return (np.arange(steps + 1) * (T // (steps + 1))).round()[::-1][:-1] + config.steps_offset
    return np.arange(T, 0, -T / steps).round() - 1


def karras_sigmas(sigma_min, sigma_max, n, rho=7.0):
    """Karras et al. (2022) noise levels: evenly spaced in σ^(1/ρ) from σ_max down to σ_min. (n,) float64."""
    ramp = np.linspace(0, 1, n)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(sigma_min, sigma_max, n):
    """Noise levels evenly spaced in log σ from σ_max down to σ_min. (n,) float64."""
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), n))


def beta_sigmas(sigma_min, sigma_max, n, alpha=0.6, beta=0.6):
    """Noise levels at the quantiles 1, ..., 0 of a Beta(α, β) distribution, scaled to [σ_min, σ_max]. (n,) float64.

    σ_i = σ_min + F⁻¹(1 - i/(n-1)) (σ_max - σ_min), F the Beta CDF; with α = β = 0.6 the steps crowd both ends."""
    return np.array([sigma_min + beta_quantile(q, alpha, beta) * (sigma_max - sigma_min)
                     for q in 1 - np.linspace(0, 1, n)])


RESPACINGS = {"karras": karras_sigmas, "exponential": exponential_sigmas, "beta": beta_sigmas}


def sigma_to_t(sigmas, log_train_sigmas):
    """The fractional training timestep of each σ: interpolate linearly in log σ between neighbouring steps.

    sigmas: (n,) float64; log_train_sigmas: (T,) increasing log σ_t. Returns (n,) float64.
    """
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    # last training step whose log σ is <= log_sigma (0 if none), kept one below the end so `high` exists
    low = (np.searchsorted(log_train_sigmas, log_sigma, side="right") - 1).clip(0, len(log_train_sigmas) - 2)
    high = low + 1
    w = (log_train_sigmas[low] - log_sigma) / (log_train_sigmas[low] - log_train_sigmas[high])
    w = np.clip(w, 0, 1)
    return (1 - w) * low + w * high


def final_sigma(kind, train):
    """The σ after the last step: 0 ("zero") or σ of training step 0 ("sigma_min")."""
    return float(train[0]) if kind == "sigma_min" else 0.0


def discrete_plan(config, steps):
    """Integer timesteps only (DDPM, DDIM, PNDM)."""
    return Plan(torch.from_numpy(spaced_timesteps(config, steps).round().astype(np.int64)))


def k_diffusion_plan(config, steps, spacing, schedule, final="zero"):
    """σ's interpolated at the spaced timesteps (re-spaced between the first and the last of them); fractional
    float32 timesteps. sigmas: (steps + 1,)."""
    train = train_sigmas(schedule, config.rescale_betas_zero_snr)
    timesteps = spaced_timesteps(config, steps)
    sigmas = np.interp(timesteps, np.arange(len(train)), train)  # (steps,) float64
    if spacing:
        sigmas = RESPACINGS[spacing](sigmas[-1].item(), sigmas[0].item(), steps)
        timesteps = sigma_to_t(sigmas, np.log(train))
    sigmas = np.append(sigmas, final_sigma(final, train)).astype(np.float32)
    return Plan(torch.from_numpy(timesteps.astype(np.float32)), torch.from_numpy(sigmas))


def solver_plan(config, steps, spacing, schedule, final="zero", round_karras=True):
    """The DPM-Solver family's plan: integer timesteps from ``solver_timesteps``; re-spaced σ's span the training
    σ's, and their timesteps are rounded (Karras; others are truncated). ``final``: "zero", "sigma_min" or "last"
    (the last re-spaced σ repeated: DEIS). sigmas: (steps + 1,)."""
    train = train_sigmas(schedule, config.rescale_betas_zero_snr)
    timesteps = solver_timesteps(config, steps)
    if spacing:
        sigmas = RESPACINGS[spacing](train[0].item(), train[-1].item(), steps)
        timesteps = sigma_to_t(sigmas, np.log(train))
        if spacing == "karras" and round_karras:
            timesteps = timesteps.round()
    else:
        sigmas = np.interp(timesteps, np.arange(len(train)), train)
    last = sigmas[-1] if final == "last" and spacing else final_sigma(final if final != "last" else "sigma_min", train)
    sigmas = np.append(sigmas, last).astype(np.float32)
    return Plan(torch.from_numpy(timesteps.astype(np.int64)), torch.from_numpy(sigmas))


def late_start(steps, strength):
    """img2img: how many of the ``steps`` steps to skip, steps - int(steps · strength) (diffusers' get_timesteps)."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got {strength!r}")
    run_steps = min(int(steps * strength), steps)
    if run_steps == 0:
        raise ValueError(
            f"strength {strength} with {steps} steps leaves no step to run; use strength >= {1 / steps:.3g} or more steps"
        )
    return steps - run_steps
