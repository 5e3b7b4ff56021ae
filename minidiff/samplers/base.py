"""What every sampler shares: choosing the timesteps, img2img's late start and the noise levels σ.

A sampler walks a latent from noise to a clean sample in ``steps`` steps, calling the network at a few of the
T = 1000 training timesteps. Two families:

* ᾱ-samplers (DDPM, DDIM) work with x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε and start from pure noise N(0, I).
* σ-samplers (Euler, Euler ancestral, Heun, LMS) work k-diffusion style with x = x_0 + σ ε, σ_t = sqrt((1-ᾱ)/ᾱ):
  the latent is divided by sqrt(σ² + 1) before the network sees it, and pure noise is N(0, σ_max²).
  DPM++ 2M uses the same σ's but keeps the ᾱ-form latent (x_t = α x_0 + σ_t ε with α = 1/sqrt(σ² + 1)).

img2img starts late: with ``strength`` s, only the last int(steps · s) steps run, from a clean latent noised to
the level of the first of them (``add_noise(x0, noise, 0)``).

Precision: schedules are float32, built as diffusers builds them, and the per-step scalars (ᾱ_t, σ_i) stay
float32. A sampler keeps the latent in the dtype it is given (the pipelines give the U-Net's, as diffusers'
pipelines do) and takes each step with the arithmetic of the matching diffusers scheduler: Euler, Euler ancestral
and DPM++ 2M upcast the latent to float32 for the update and round the result to the network output's dtype
(so a float64 latent is rounded to float32 too); DDPM, DDIM, Heun and LMS compute in the latent's own dtype,
the 0-dim float32 scalars leaving it unchanged (PyTorch's type promotion). So with latent and network in float16
every step equals diffusers' bit for bit, and float64 runs agree with it to 1e-6 rather than a few 1e-7 beyond.
"""

import numbers
from dataclasses import replace

import numpy as np
import torch

from ..schedule import NoiseSchedule



def spaced_timesteps(config, steps):
    """The ``steps`` training timesteps to visit, largest first, as a float64 numpy array (steps,).

    leading:  0, k, 2k, ... with k = T // steps, plus steps_offset (Stable Diffusion: 981, 961, ..., 1)
    trailing: T-1, then down in steps of T / steps, rounded (always starts at the noisiest step)
    linspace: evenly from 0 to T-1, not rounded (ᾱ-samplers round them)
    """
    T = config.num_train_timesteps
    if config.timestep_spacing == "leading":
        return (np.arange(steps) * (T // steps)).round()[::-1] + float(config.steps_offset)
    if config.timestep_spacing == "trailing":
        return np.arange(T, 0, -T / steps).round() - 1
    # linspace: evenly spaced, rounded to float32 (diffusers' σ-schedulers interpolate at those float32 values)
    return np.linspace(0, T - 1, steps, dtype=np.float32)[::-1].astype(np.float64)


def karras_sigmas(sigma_min, sigma_max, n, rho=7.0):
    """Karras et al. (2022) noise levels: evenly spaced in σ^(1/ρ) from σ_max down to σ_min. (n,) float64."""
    ramp = np.linspace(0, 1, n)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


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


def to_d(x, sigma, denoised):
    """The slope dx/dσ of the probability-flow ODE in σ-space: (x - x_0) / σ."""
    return (x - denoised) / sigma


def denoised_from_output(model_output, x, sigma, prediction_type):
    """x_0 from the network output for a σ-space latent x = x_0 + σ ε (the network saw x / sqrt(σ² + 1)).

    epsilon: x - σ ε;   v_prediction: x / (σ² + 1) - σ v / sqrt(σ² + 1);   sample: the output itself.
    """
    if prediction_type == "epsilon":
        return x - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + x / (sigma**2 + 1)
    return model_output


class Sampler:
    """Base class: picks the timesteps, applies img2img's strength and noises clean latents for a late start.

    Subclasses set ``all_timesteps`` (the whole schedule) in ``make_schedule`` and write ``sample``.
    """

    order = 1  # network calls per step: img2img skips whole steps, i.e. `order` entries of the timesteps
    name = ""  # the name make_sampler knows it by
    diffusers_class = ""  # the diffusers scheduler it reproduces step for step
    supports_karras = False  # whether Karras σ's (karras=True) apply
    default_spacing = "linspace"  # the timestep_spacing of the matching diffusers class, used when config has none

    def __init__(self, config, steps, karras=None, eta=0.0, strength=1.0):
        T = config.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
            raise ValueError(f"steps must be an integer from 1 to num_train_timesteps={T}, got {steps!r}")
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got {strength!r}")
        if eta != 0 and self.name != "ddim":
            raise ValueError(f"eta applies only to the ddim sampler, got eta={eta} for {self.name}")
        if karras and not self.supports_karras:
            raise ValueError(f"karras sigmas are available for euler, heun, lms, dpmpp_2m, not for {self.name}")
        self.config = replace(config, timestep_spacing=config.timestep_spacing or self.default_spacing)
        self.steps, self.eta = int(steps), eta
        self.karras = config.use_karras_sigmas if karras is None else karras
        self.karras = bool(self.karras) and self.supports_karras  # a config-level default may not apply
        self.schedule = NoiseSchedule.from_config(config)
        self.make_schedule()

        # img2img: skip the first steps - int(steps * strength) steps (diffusers' get_timesteps)
        run_steps = min(int(steps * strength), steps)
        if run_steps == 0:
            raise ValueError(
                f"strength {strength} with {steps} steps leaves no step to run; "
                f"use strength >= {1 / steps:.3g} or more steps"
            )
        self.t_start = steps - run_steps
        self.begin_index = self.t_start * self.order
        self.timesteps = self.all_timesteps[self.begin_index :]  # (calls,)

    def make_schedule(self):
        raise NotImplementedError

    @property
    def init_noise_sigma(self):
        """Standard deviation of the pure-noise start: x_T = randn · init_noise_sigma."""
        return 1.0

    def _check_step_index(self, step_index):
        if not 0 <= step_index < len(self.timesteps):
            raise ValueError(f"step_index must be in 0..{len(self.timesteps) - 1}, got {step_index}")

    def sigma_at(self, step_index):
        """The σ-space noise level σ = sqrt((1 - ᾱ) / ᾱ) of the latent before call ``step_index`` (float32)."""
        return self.schedule.sigmas[self.timesteps[step_index]]

    def add_noise(self, x0, noise, step_index=0):
        """Noise clean x0 (B, C, H, W) to the level before call ``step_index``: sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε."""
        self._check_step_index(step_index)
        t = self.timesteps[step_index].expand(x0.shape[0])  # (B,)
        return self.schedule.add_noise(x0, noise, t)

    def sample(self, model_fn, x, generator=None, callback=None):
        """Run the loop: model_fn(x_in, t) -> network output; callback(i, t, x, x0_pred) may replace x."""
        raise NotImplementedError

    @staticmethod
    def report(callback, i, t, x, x0):
        """Call the user's callback after call i; it may return a replacement latent (inpainting does)."""
        if callback is None:
            return x
        replaced = callback(i, t, x, x0)
        return x if replaced is None else replaced


class SigmaSampler(Sampler):
    """Base of the σ-space samplers (Euler, Euler ancestral, Heun, LMS): x = x_0 + σ ε.

    ``all_sigmas`` has one σ per entry of ``all_timesteps`` plus a final 0; ``sigmas`` is its img2img slice.
    """

    supports_zero_snr = True  # diffusers' Heun and LMS schedulers have no zero-terminal-SNR option

    def make_schedule(self):
        if self.config.rescale_betas_zero_snr and not self.supports_zero_snr:
            raise ValueError(
                f"rescale_betas_zero_snr is not available for {self.name} (as in diffusers); "
                f"use ddim, ddpm, euler, euler_a or dpmpp_2m"
            )
        train_sigmas = self.train_sigmas()
        timesteps = spaced_timesteps(self.config, self.steps)
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)  # (steps,) float64
        if self.karras:
            sigmas = karras_sigmas(sigmas[-1].item(), sigmas[0].item(), self.steps)
            timesteps = sigma_to_t(sigmas, np.log(train_sigmas))
        self.all_sigmas = torch.from_numpy(np.append(sigmas, self.final_sigma()).astype(np.float32))  # (steps+1,)
        self.all_timesteps = torch.from_numpy(timesteps.astype(np.float32))  # (steps,)

    def train_sigmas(self):
        """σ_t at every training timestep, (T,) float32 numpy. With zero terminal SNR, ᾱ_{T-1} = 0 would make the
        last σ infinite; diffusers substitutes ᾱ = 2⁻²⁴ (σ ≈ 4096), and so do we."""
        alphas_cumprod = self.schedule.alphas_cumprod
        if self.config.rescale_betas_zero_snr:
            alphas_cumprod[-1] = 2**-24
        return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).numpy()

    def final_sigma(self):
        return 0.0

    @property
    def sigmas(self):
        """The σ before each call and the final one, from the img2img start. (calls + 1,) float32."""
        return self.all_sigmas[self.begin_index :]

    @property
    def init_noise_sigma(self):
        """σ_max for linspace/trailing spacing, sqrt(σ_max² + 1) for leading (as diffusers chooses)."""
        sigma_max = self.all_sigmas.max()
        if self.config.timestep_spacing == "leading":
            return float((sigma_max**2 + 1) ** 0.5)
        return float(sigma_max)

    def sigma_at(self, step_index):
        return self.sigmas[step_index]

    def add_noise(self, x0, noise, step_index=0):
        """Noise clean x0 (B, C, H, W) to the level before call ``step_index``: x0 + σ ε."""
        self._check_step_index(step_index)
        return x0 + noise * self.sigma_at(step_index).to(x0.device, x0.dtype)

    @staticmethod
    def scale_input(x, sigma):
        """What the network sees: x / sqrt(σ² + 1), the ᾱ-form latent it was trained on."""
        return x / (sigma**2 + 1) ** 0.5
