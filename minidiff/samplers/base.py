"""What every sampler shares: its settings, img2img's late start, and the three forms a noisy latent takes.

A sampler walks a latent from noise to a clean sample. *Where* it steps (timesteps, σ's) comes from one
``steps.Plan`` (see steps.py); *how* it steps is its ``sample`` method. The latent takes one of three forms
(the class attribute ``latent``):

* "alpha_bar" (DDPM, DDIM, PNDM): x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε, pure noise N(0, I).
* "sigma" (Euler, Heun, LMS, DPM2, ...: ``SigmaSampler``): k-diffusion's x = x_0 + σ ε with σ = sqrt((1-ᾱ)/ᾱ); the
  network sees x / sqrt(σ² + 1) and pure noise is N(0, σ_max²).
* "alpha_sigma" (the DPM-Solver family): the ᾱ-form latent x = α x_0 + s ε written with the σ's of the plan,
  α = 1/sqrt(σ² + 1), s = σ α.

Precision: schedules are float32, built as diffusers builds them, and the per-step scalars stay float32. A sampler
keeps the latent in the dtype it is given (the pipelines give the U-Net's, as diffusers' pipelines do) and takes each
step with the arithmetic of the matching diffusers scheduler: some upcast the latent to float32 for the update and
round the result to the network output's dtype (so a float64 latent is rounded to float32 too), others compute in
the latent's own dtype, the 0-dim float32 scalars leaving it unchanged (PyTorch's type promotion). So with latent
and network in float16 every step equals diffusers' bit for bit, and float64 runs agree with it to 1e-6.
"""

import numbers
from dataclasses import replace

import torch

from ..schedule import NoiseSchedule
from .steps import SIGMA_SPACINGS, late_start


def to_d(x, sigma, denoised):
    """The slope dx/dσ of the probability-flow ODE in σ-space: (x - x_0) / σ."""
    return (x - denoised) / sigma


def alpha_sigma(sigma):
    """(α, s) of the ᾱ-form latent at σ-space noise level σ: α = 1 / sqrt(σ² + 1), s = σ α."""
    alpha = 1 / (sigma**2 + 1) ** 0.5
    return alpha, sigma * alpha


def log_snr(sigma):
    """DPM-Solver's time λ = log α - log s (half the log signal-to-noise ratio) at σ-space level σ, as diffusers
    computes it; 0-dim float32. λ grows as the noise shrinks: +inf at σ = 0."""
    alpha, s = alpha_sigma(sigma)
    return torch.log(alpha) - torch.log(s)


# Class defaults of settings that most diffusers classes share; a sampler's ``defaults`` overrides them (DDIM's
# leading timesteps, dpmpp_2s's lower_order_final).
SHARED_DEFAULTS = {"timestep_spacing": "linspace", "lower_order_final": True}


def config_spacing(config):
    """The σ spacing a scheduler config asks for (use_karras_sigmas, ...), or None."""
    asked = [name for name in SIGMA_SPACINGS if getattr(config, f"use_{name}_sigmas", False)]
    return asked[0] if asked else None  # SchedulerConfig allows one at most


class Sampler:
    """Base class: checks the settings, builds the plan, applies img2img's strength, noises clean latents."""

    name = ""  # the name make_sampler knows it by
    diffusers_class = ""  # the diffusers scheduler it reproduces step for step
    diffusers_options = {}  # the settings that make that class this sampler (where one class serves several)
    order = 1  # network calls per step: img2img skips whole steps, i.e. `order` entries of the timesteps
    accuracy = 1  # the method's order of accuracy (its global error shrinks as (step size)^accuracy)
    stochastic = False  # whether it draws fresh noise (so the generator matters)
    spacings = ()  # the σ re-spacings it offers (of steps.SIGMA_SPACINGS)
    defaults = {}  # settings whose default differs between diffusers' classes (timestep_spacing, ...), used where
    # the config has None, over SHARED_DEFAULTS
    supports_zero_snr = True  # some diffusers classes (Heun, LMS, ...) have no zero-terminal-SNR option
    latent = "alpha_bar"  # the form of the noisy latent: "alpha_bar", "sigma" or "alpha_sigma" (module docstring)
    registry = {}  # name -> class, filled as each sampler class is defined (for error messages)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            Sampler.registry[cls.name] = cls

    @classmethod
    def names_with(cls, test):
        """The names of the samplers whose class passes ``test``, for messages that say what to use instead."""
        return ", ".join(name for name, sampler in Sampler.registry.items() if test(sampler))

    def __init__(self, config, steps, karras=None, eta=0.0, strength=1.0, sigmas=None):
        T = config.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= T:
            raise ValueError(f"steps must be an integer from 1 to num_train_timesteps={T}, got {steps!r}")
        if eta != 0 and self.name != "ddim":
            raise ValueError(f"eta applies only to the ddim sampler, got eta={eta} for {self.name}")
        if config.rescale_betas_zero_snr and not self.supports_zero_snr:
            raise ValueError(f"rescale_betas_zero_snr is not available for {self.name} (as in diffusers); use "
                             f"{self.names_with(lambda sampler: sampler.supports_zero_snr)}")
        self.spacing = self.choose_spacing(config, karras, sigmas)
        defaults = {**SHARED_DEFAULTS, **self.defaults}
        unset = {key: value for key, value in defaults.items() if getattr(config, key) is None}
        self.config = replace(config, **unset)
        self.steps, self.eta = int(steps), eta
        self.karras = self.spacing == "karras"
        self.schedule = NoiseSchedule.from_config(config)
        plan = self.plan()
        self.all_timesteps, self.all_sigmas, self.call_sigmas = plan.timesteps, plan.sigmas, plan.call_sigmas

        self.t_start = late_start(self.steps, strength)  # steps skipped by img2img
        self.begin_index = self.t_start * self.order  # calls skipped
        self.timesteps = self.all_timesteps[self.begin_index :]  # (calls,)

    def choose_spacing(self, config, karras, sigmas):
        """The σ spacing: ``sigmas`` if given, else karras=True/False, else the config's (where this sampler has it)."""
        if sigmas is not None or karras:
            spacing = sigmas if sigmas is not None else "karras"
            if spacing not in SIGMA_SPACINGS:
                raise ValueError(f"unknown σ spacing {spacing!r}; choose one of {', '.join(SIGMA_SPACINGS)}")
            if spacing not in self.spacings:
                offering = self.names_with(lambda sampler: spacing in sampler.spacings)
                raise ValueError(f"{spacing} sigmas are available for {offering}, not for {self.name}")
            return spacing
        if karras is False:
            return None
        spacing = config_spacing(config)
        return spacing if spacing in self.spacings else None  # a config-level default may not apply

    def plan(self):
        """Where this sampler steps: a ``steps.Plan`` for the whole schedule."""
        raise NotImplementedError

    @property
    def sigmas(self):
        """The σ before each step from the img2img start, and the σ after the last. (steps run + 1,) float32."""
        return self.all_sigmas[self.t_start :]

    @property
    def init_noise_sigma(self):
        """Standard deviation of the pure-noise start: x_T = randn · init_noise_sigma. σ-form latents start at σ_max,
        or sqrt(σ_max² + 1) with leading spacing (diffusers' choice); the others at 1."""
        if self.latent != "sigma":
            return 1.0
        sigma_max = self.all_sigmas.max()
        if self.config.timestep_spacing == "leading":
            return float((sigma_max**2 + 1) ** 0.5)
        return float(sigma_max)

    def sigma_at(self, step_index):
        """The σ-space noise level σ = sqrt((1 - ᾱ) / ᾱ) of the latent before call ``step_index`` (float32)."""
        if self.call_sigmas is None:
            return self.schedule.sigmas[self.timesteps[step_index]]
        return self.call_sigmas[self.begin_index + step_index]

    def add_noise(self, x0, noise, step_index=0):
        """Noise clean x0 (B, C, H, W) to the level before call ``step_index``, in this sampler's latent form."""
        if not 0 <= step_index < len(self.timesteps):
            raise ValueError(f"step_index must be in 0..{len(self.timesteps) - 1}, got {step_index}")
        if self.latent == "alpha_bar":  # sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε
            return self.schedule.add_noise(x0, noise, self.timesteps[step_index].expand(x0.shape[0]))
        sigma = self.sigma_at(step_index).to(x0.device, x0.dtype)
        if self.latent == "sigma":  # x0 + σ ε
            return x0 + noise * sigma
        alpha, s = alpha_sigma(sigma)  # α x0 + s ε
        return alpha * x0 + s * noise

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
    """Base of the σ-form samplers (k-diffusion's x = x_0 + σ ε)."""

    latent = "sigma"

    @staticmethod
    def scale_input(x, sigma):
        """What the network sees: x / sqrt(σ² + 1), the ᾱ-form latent it was trained on."""
        return x / (sigma**2 + 1) ** 0.5
