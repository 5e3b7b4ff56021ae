"""Samplers: turn noise into a clean latent by calling the network at a few timesteps.

    from minidiff.samplers import SAMPLER_NAMES, SchedulerConfig, make_sampler
    config = SchedulerConfig.from_json("weights/sd15/scheduler")
    sampler = make_sampler("euler", config, steps=25)
    x = torch.randn(1, 4, 64, 64) * sampler.init_noise_sigma
    x0 = sampler.sample(lambda x_in, t: unet(x_in, t, text), x)

Each sampler reproduces one diffusers scheduler step for step (same timesteps, same σ's, same noise draws):

    name       diffusers class                     idea
    ddpm       DDPMScheduler                       ancestral sampling of the reverse chain (stochastic)
    ddim       DDIMScheduler                       deterministic jump via predicted x_0 and ε (eta > 0: stochastic)
    euler      EulerDiscreteScheduler              first-order ODE solver in σ-space        (karras=True allowed)
    euler_a    EulerAncestralDiscreteScheduler     Euler down to σ_down, fresh noise up to σ' (stochastic)
    heun       HeunDiscreteScheduler               second-order ODE solver, 2 calls per step  (karras=True allowed)
    lms        LMSDiscreteScheduler                4th-order linear multistep in σ           (karras=True allowed)
    dpmpp_2m   DPMSolverMultistepScheduler         DPM-Solver++ 2M in log-SNR time           (karras=True allowed)

The interface every sampler shares:

    sampler.timesteps          the timesteps the network is called with, in order (after img2img's late start)
    sampler.init_noise_sigma   pure-noise start: randn * init_noise_sigma
    sampler.add_noise(x0, noise, step_index=0)   a clean latent noised to the level before call `step_index`
    sampler.sample(model_fn, x, generator=None, callback=None)
        model_fn(x_in, t) -> network output (ε, v or x_0 per config.prediction_type); x_in is already scaled
        callback(i, t, x, x0_pred) -> None or a replacement x, after call i
"""

from ..noise import randn  # the package's one noise function, re-exported for lessons
from .base import Sampler
from .config import SchedulerConfig
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpmpp_2m import DPMPP2MSampler
from .euler import EulerSampler
from .euler_ancestral import EulerAncestralSampler
from .heun import HeunSampler
from .lms import LMSSampler

SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "euler": EulerSampler,
    "euler_a": EulerAncestralSampler,
    "heun": HeunSampler,
    "lms": LMSSampler,
    "dpmpp_2m": DPMPP2MSampler,
}
SAMPLER_NAMES = tuple(SAMPLERS)
KARRAS_SAMPLERS = tuple(name for name, sampler in SAMPLERS.items() if "karras" in sampler.spacings)


def make_sampler(name, config, steps, karras=None, eta=0.0, strength=1.0, sigmas=None):
    """Build sampler ``name`` for ``steps`` steps. sigmas: a σ spacing ("karras", "exponential", "beta") or None for
    the config's (``use_karras_sigmas``, ...) where the sampler offers it; karras=True is sigmas="karras" and
    karras=False turns the config's spacing off; eta is DDIM's noise scale; strength in (0, 1] runs only the last
    int(steps * strength) steps (img2img)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return SAMPLERS[name](config, steps, karras=karras, eta=eta, strength=strength, sigmas=sigmas)


__all__ = ["KARRAS_SAMPLERS", "SAMPLER_NAMES", "Sampler", "SchedulerConfig", "make_sampler", "randn"]
