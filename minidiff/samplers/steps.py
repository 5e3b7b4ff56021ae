"""Where a sampler steps: its timesteps, its noise levels σ, their spacing, and img2img's late start.

Every sampler calls the network at a few of the T = 1000 training timesteps. This module decides which, once for
all of them; each sampler file then shows only *how* it steps between them. The families of plans:

* ``discrete_plan`` (DDPM, DDIM, PNDM): integer timesteps, no σ's; the latent is x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε.
* ``k_diffusion_plan`` (Euler, Euler ancestral, Heun, LMS): σ_t = sqrt((1-ᾱ_t)/ᾱ_t) interpolated at the spaced
  timesteps, the latent x = x_0 + σ ε; re-spaced σ's span the interpolated ones and get fractional timesteps.
* ``midpoint_plan`` (DPM2, DPM2 ancestral): k_diffusion_plan's σ's and a second call at each step's log-σ midpoint.
* ``dpmpp_sde_plan`` (DPM++ SDE): the same calls, from float64 timesteps and σ's (``k_diffusion_sigmas``).
* ``solver_plan`` (the DPM-Solver family: DPM++ 2M, UniPC, DEIS, singlestep): timesteps from steps + 1 points with the
  last dropped; re-spaced σ's span the training ones; timesteps are integers.
* ``lcm_plan`` (LCM): integer timesteps picked evenly from the distillation's own schedule k-1, 2k-1, ..., T-1.

Spacing of the timesteps (``timestep_spacing``, Lin et al. 2023, table 2): *leading* 0, k, 2k, ... (+ steps_offset);
*trailing* T-1 downwards in steps of T/steps; *linspace* evenly from 0 to T-1. The σ's may then be re-spaced
(karras, exponential, beta: spacings.py) and mapped back to timesteps (``sigma_to_t``).

img2img starts late: with ``strength`` s only the last int(steps · s) steps run (``late_start``); LCM instead
picks all its steps from the least noisy int(original_inference_steps · s) of its schedule (``lcm_plan``).
Quirks of diffusers that parity needs are marked "diffusers parity:" and explained where they occur.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from .spacings import RESPACINGS, SIGMA_SPACINGS, sigma_to_t  # noqa: F401  (SIGMA_SPACINGS: for the samplers)


@dataclass
class Plan:
    """Where a sampler steps, for the whole schedule (img2img's start is applied by the sampler)."""

    timesteps: torch.Tensor  # (calls,) the timestep of each network call
    sigmas: torch.Tensor | None = None  # (steps + 1,) float32: the σ before each step, then the σ after the last
    call_sigmas: torch.Tensor | None = None  # (calls,) the σ of the latent before each call (default sigmas[:-1])

    def __post_init__(self):
        if self.sigmas is not None and self.call_sigmas is None:
            self.call_sigmas = self.sigmas[:-1]


def train_alphas_cumprod(schedule, zero_snr=False):
    """ᾱ_t at every training timestep, (T,) float32. With zero terminal SNR, ᾱ_{T-1} = 0 would make the last σ
    infinite; diffusers substitutes ᾱ = 2⁻²⁴ (σ ≈ 4096), and so do we."""
    alphas_cumprod = schedule.alphas_cumprod
    if zero_snr:
        alphas_cumprod[-1] = 2**-24
    return alphas_cumprod


def train_sigmas(schedule, zero_snr=False):
    """σ_t at every training timestep, (T,) float32 numpy (zero terminal SNR as in ``train_alphas_cumprod``)."""
    alphas_cumprod = train_alphas_cumprod(schedule, zero_snr)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).numpy()


def unclipped_steps(schedule, lambda_min_clipped, zero_snr=False):
    """How many training timesteps, from t = 0, have log-SNR λ_t = log α_t - log s_t >= ``lambda_min_clipped``
    (α_t = sqrt(ᾱ_t), s_t = sqrt(1 - ᾱ_t)): the DPM-Solver family steps only there (-inf: all T). diffusers offers
    the clip for the cosine schedule, whose λ plunges over its last steps."""
    alphas_cumprod = train_alphas_cumprod(schedule, zero_snr)
    log_snr = torch.log(alphas_cumprod.sqrt()) - torch.log((1 - alphas_cumprod).sqrt())  # (T,) decreasing
    return len(log_snr) - int(torch.searchsorted(log_snr.flip(0), lambda_min_clipped))


def spaced_timesteps(config, steps, float64=False):
    """The ``steps`` training timesteps to visit, largest first, as a float64 numpy array (steps,).

    leading:  0, k, 2k, ... with k = T // steps, plus steps_offset (Stable Diffusion: 981, 961, ..., 1)
    trailing: T-1, then down in steps of T / steps, rounded (always starts at the noisiest step)
    linspace: evenly from 0 to T-1, not rounded (discrete plans round them), nor (``float64``) rounded to float32
    """
    T = config.num_train_timesteps
    if config.timestep_spacing == "leading":
        return (np.arange(steps) * (T // steps)).round()[::-1] + float(config.steps_offset)
    if config.timestep_spacing == "trailing":
        return np.arange(T, 0, -T / steps).round() - 1
    # linspace: evenly spaced, rounded to float32 (diffusers' σ-schedulers interpolate there; DPMSolverSDE: float64)
    return np.linspace(0, T - 1, steps, dtype=np.float64 if float64 else np.float32)[::-1].astype(np.float64)


def solver_timesteps(config, steps, last=None):
    """DPM-Solver's spacing: linspace and leading place steps + 1 points and drop the last. (steps,) float64.
    ``last``: the timesteps stay below it (default T; ``unclipped_steps`` clips them)."""
    T = config.num_train_timesteps
    last = T if last is None else last
    if config.timestep_spacing == "linspace":
        return np.linspace(0, last - 1, steps + 1).round()[::-1][:-1]
    if config.timestep_spacing == "leading":
        return (np.arange(steps + 1) * (last // (steps + 1))).round()[::-1][:-1] + config.steps_offset
    return np.arange(last, 0, -T / steps).round() - 1


def final_sigma(kind, train):
    """The σ after the last step: 0 ("zero") or σ of training step 0 ("sigma_min")."""
    return float(train[0]) if kind == "sigma_min" else 0.0


def discrete_plan(config, steps):
    """Integer timesteps only (DDPM, DDIM, PNDM). They index ᾱ_t, so each must be a training timestep 0..T-1:
    leading spacing starts at (steps - 1) · (T // steps) + steps_offset, which is T itself at steps = T with
    offset 1 (where diffusers' DDPM and DDIM fail at their first step with an IndexError)."""
    timesteps = spaced_timesteps(config, steps).round().astype(np.int64)
    T = config.num_train_timesteps
    if timesteps[0] >= T:
        fewer = max((s for s in range(1, steps) if (s - 1) * (T // s) + config.steps_offset < T), default=None)
        raise ValueError(
            f"{steps} steps with leading spacing and steps_offset {config.steps_offset} start at timestep "
            f"{timesteps[0]}, past the last training timestep {T - 1}: use "
            f"{f'{fewer} steps or fewer, or ' if fewer else ''}timestep_spacing \"trailing\" in the scheduler config")
    return Plan(torch.from_numpy(timesteps))


def pndm_plan(config, steps, runge_kutta=False):
    """PNDM's call list: the discrete timesteps t_0 > t_1 > ... > t_{n-1}, some visited more than once.

    PLMS only:           t_0, t_1, t_1, t_2, ..., t_{n-1}    (the warm-up step's second call is at t_1 too)
    Runge–Kutta warm-up: t_i, t_{i+1} + h, t_{i+1} + h, t_{i+1} for i = 0, 1, 2, then t_3, ..., t_{n-1};
                         h = (T // steps) // 2, the midpoint of a *leading* step (steps >= 4)
    """
    t = discrete_plan(config, steps).timesteps  # (steps,)
    if not runge_kutta:
        return Plan(torch.cat([t[:2], t[1:]]))  # (steps + 1,), or (1,) for one step
    h = config.num_train_timesteps // steps // 2
    rk = torch.stack([t[:3], t[1:4] + h, t[1:4] + h, t[1:4]], dim=1).flatten()  # (12,): 3 steps of 4 calls
    return Plan(torch.cat([rk, t[3:]]))  # (steps + 9,)


def lcm_plan(config, steps, strength=1.0):
    """LCM's skipping-step timesteps (Luo et al. 2023): integer, largest first. (steps,) int64.

    Distillation visited t_j = j k - 1 for j = 1 .. N, k = T // N, N = ``original_inference_steps`` (50: 19, 39,
    ..., 999). Sampling keeps the first n = int(N · strength) of them (img2img: the least noisy) and, listed
    largest first, takes those at the indices floor(i n / steps), i = 0 .. steps - 1.
    """
    T, N = config.num_train_timesteps, config.original_inference_steps
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got {strength!r}")
    if not 1 <= N <= T:
        raise ValueError(f"original_inference_steps must be from 1 to num_train_timesteps={T}, got {N}")
    if steps > N:
        raise ValueError(f"lcm takes at most original_inference_steps={N} steps, got {steps}; use fewer steps")
    k = T // N
    candidates = (np.arange(1, int(N * strength) + 1) * k - 1)[::-1]  # (n,) largest first
    if len(candidates) < steps:
        raise ValueError(f"strength {strength} leaves {len(candidates)} of lcm's {N} timesteps for {steps} steps; "
                         f"use at most {len(candidates)} steps or strength >= {steps / N:.3g}")
    indices = np.floor(np.linspace(0, len(candidates), steps, endpoint=False)).astype(np.int64)
    return Plan(torch.from_numpy(candidates[indices].copy()))


def k_diffusion_sigmas(config, steps, spacing, train, float64=False):
    """The spaced timesteps and their σ's, interpolated in the training σ's ``train`` (re-spaced between the first and
    the last, at fractional timesteps): two (steps,) float64 arrays, unrounded. float64: see ``spaced_timesteps``."""
    timesteps = spaced_timesteps(config, steps, float64)
    sigmas = np.interp(timesteps, np.arange(len(train)), train)  # (steps,) float64
    if spacing:
        sigmas = RESPACINGS[spacing](sigmas[-1].item(), sigmas[0].item(), steps)
        timesteps = sigma_to_t(sigmas, np.log(train))
    return timesteps, sigmas


def k_diffusion_plan(config, steps, spacing, schedule, final="zero", round_karras=False, float64_respaced=False):
    """σ's interpolated at the spaced timesteps (re-spaced between the first and the last of them); fractional
    float32 timesteps (``round_karras``: Karras σ's get integer ones; ``float64_respaced``: re-spaced σ's keep
    float64 ones; both as KDPM2 has them). sigmas: (steps + 1,)."""
    train = train_sigmas(schedule, config.rescale_betas_zero_snr)
    timesteps, sigmas = k_diffusion_sigmas(config, steps, spacing, train)
    if spacing == "karras" and round_karras:
        timesteps = timesteps.round()
    sigmas = np.append(sigmas, final_sigma(final, train)).astype(np.float32)
    dtype = np.float64 if spacing and float64_respaced else np.float32
    return Plan(torch.from_numpy(timesteps.astype(dtype)), torch.from_numpy(sigmas))


def get_ancestral_step(sigma_from, sigma_to, capped=False):
    """Split the step σ_from -> σ_to of an ancestral sampler into a deterministic part down to σ_down and fresh noise
    of std σ_up, with σ_to² = σ_down² + σ_up²:  σ_up = sqrt(σ_to² (σ_from² - σ_to²) / σ_from²), ``capped`` at σ_to."""
    sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    sigma_up = torch.minimum(sigma_to, sigma_up) if capped else sigma_up
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def midpoint_plan(config, steps, spacing, schedule, ancestral=False):
    """DPM2's plan: each step σ_i -> σ_{i+1} calls the network at σ_i and at the midpoint in log σ between σ_i and
    where the step ends, σ_end = σ_{i+1} (or, ``ancestral``, σ_down of ``get_ancestral_step``, which makes the
    midpoint σ_{i+1} itself, up to rounding, as σ_down = σ_{i+1}² / σ_i):

        σ_mid = exp((log σ_i + log σ_end) / 2);   the last step, to σ = 0, has none: it is one Euler call.

    timesteps t_0, t_mid_0, t_1, ..., t_{n-1} and call_sigmas σ_0, σ_mid_0, σ_1, ..., σ_{n-1}: (2 steps - 1,).
    """
    plan = k_diffusion_plan(config, steps, spacing, schedule, round_karras=True, float64_respaced=True)
    timesteps, sigmas = plan.timesteps, plan.sigmas  # (steps,), (steps + 1,)
    sigma, sigma_next = sigmas[:-2], sigmas[1:-1]  # (steps - 1,) every step but the last
    # diffusers parity: the two classes take the midpoint from opposite ends (lerp), which rounds differently
    if not ancestral:
        mid = sigma_next.log().lerp(sigma.log(), 0.5).exp()
    else:
        mid = sigma.log().lerp(get_ancestral_step(sigma, sigma_next)[0].log(), 0.5).exp()
    # diffusers parity: the midpoints' timesteps are computed from σ_mid in float32 arithmetic
    log_train = np.log(train_sigmas(schedule, config.rescale_betas_zero_snr))
    mid_t = torch.from_numpy(sigma_to_t(mid.numpy(), log_train)).to(timesteps.dtype)
    calls = torch.stack([timesteps[:-1], mid_t], dim=1).flatten()  # t_0, t_mid_0, t_1, t_mid_1, ...
    call_sigmas = torch.stack([sigma, mid], dim=1).flatten()  # σ_0, σ_mid_0, σ_1, σ_mid_1, ...
    return Plan(torch.cat([calls, timesteps[-1:]]), sigmas, torch.cat([call_sigmas, sigmas[-2:-1]]))


def dpmpp_sde_plan(config, steps, spacing, schedule):
    """DPM++ SDE's plan: DPM2's calls (``midpoint_plan``), the midpoint in t = -log σ: t_mid = (t_i + t_{i+1}) / 2,
    σ_mid = e^{-t_mid}; the timesteps float64 throughout, as DPMSolverSDEScheduler has them."""
    train = train_sigmas(schedule)
    timesteps, sigmas = k_diffusion_sigmas(config, steps, spacing, train, float64=True)  # (steps,) each
    # diffusers parity: the midpoints' timesteps come from the float64 σ's, the σ_mid of the step from float32 ones
    t = -np.log(sigmas)  # (steps,) float64; the midpoints below: (steps - 1,), every step but the last
    mid_t = torch.from_numpy(sigma_to_t(np.exp(-(t[:-1] + (t[1:] - t[:-1]) * 0.5)), np.log(train)))
    timesteps, sigmas = torch.from_numpy(timesteps), torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
    t = sigmas[:-1].log().neg()  # float32, as the step computes it
    mid = (t[:-1] + (t[1:] - t[:-1]) * 0.5).neg().exp()
    calls = torch.stack([timesteps[:-1], mid_t], dim=1).flatten()  # t_0, t_mid_0, t_1, t_mid_1, ...
    call_sigmas = torch.stack([sigmas[:-2], mid], dim=1).flatten()  # σ_0, σ_mid_0, σ_1, σ_mid_1, ...
    return Plan(torch.cat([calls, timesteps[-1:]]), sigmas, torch.cat([call_sigmas, sigmas[-2:-1]]))


def solver_plan(config, steps, spacing, schedule, final="zero", round_karras=True, lambda_min_clipped=-math.inf):
    """The DPM-Solver family's plan: integer timesteps from ``solver_timesteps``, only where the log-SNR λ_t is at
    least ``lambda_min_clipped`` (``unclipped_steps``); re-spaced σ's span the training σ's, and their timesteps are
    rounded (Karras; others are truncated). ``final``: "zero", "sigma_min" or "last" (DEIS, UniPC's sigma_min: the
    last re-spaced σ repeated, σ_0 without a re-spacing). sigmas: (steps + 1,)."""
    train = train_sigmas(schedule, config.rescale_betas_zero_snr)
    kept = unclipped_steps(schedule, lambda_min_clipped, config.rescale_betas_zero_snr)
    timesteps = solver_timesteps(config, steps, kept)
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
