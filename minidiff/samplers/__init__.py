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
    pndm       PNDMScheduler                       PLMS: 4-step Adams–Bashforth in ε with DDIM's transfer (SD 1.x's)
    euler      EulerDiscreteScheduler              first-order ODE solver in σ-space        (karras=True allowed)
    euler_a    EulerAncestralDiscreteScheduler     Euler down to σ_down, fresh noise up to σ' (stochastic)
    heun       HeunDiscreteScheduler               second-order ODE solver, 2 calls per step  (karras=True allowed)
    lms        LMSDiscreteScheduler                4th-order linear multistep in σ           (karras=True allowed)
    dpm2       KDPM2DiscreteScheduler              midpoint method in log σ, 2 calls per step (karras=True allowed)
    dpm2_a     KDPM2AncestralDiscreteScheduler     DPM2 down to σ_down, fresh noise up to σ' (stochastic; karras too)
    dpmpp_2m   DPMSolverMultistepScheduler         DPM-Solver++ 2M in log-SNR time           (karras=True allowed)
    dpmpp_2m_sde  DPMSolverMultistepScheduler      DPM++ 2M of the reverse SDE: fresh noise each step (stochastic)
    dpmpp_sde  DPMSolverSDEScheduler               DPM++ 2S of the SDE, Brownian-tree noise, 2 calls (stochastic)
    dpmpp_2s   DPMSolverSinglestepScheduler        DPM-Solver++ in blocks of orders 1, 2(, 3)  (karras=True allowed)
    deis       DEISMultistepScheduler              exponential integrator, orders 1-3, in ρ  (karras=True allowed)
    unipc      UniPCMultistepScheduler             predictor-corrector, orders 1-3, in λ     (karras=True allowed)
    lcm        LCMScheduler                        consistency jumps to x_0, re-noised (an LCM's; stochastic)

The interface every sampler shares:

    sampler.timesteps          the timesteps the network is called with, in order (after img2img's late start)
    sampler.init_noise_sigma   pure-noise start: randn * init_noise_sigma
    sampler.add_noise(x0, noise, step_index=0)   a clean latent noised to the level before call `step_index`
    sampler.sample(model_fn, x, generator=None, callback=None)
        model_fn(x_in, t) -> network output (ε, v or x_0 per config.prediction_type); x_in is already scaled
        callback(i, t, x, x0_pred) -> None or a replacement x, after call i
"""

from dataclasses import replace

from ..noise import randn  # the package's one noise function, re-exported for lessons
from ..sampler_names import resolve
from .base import Sampler
from .config import SchedulerConfig
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpm2 import DPM2AncestralSampler, DPM2Sampler
from .deis import DEISSampler
from .dpmpp_2m import DPMPP2MSampler
from .dpmpp_2m_sde import DPMPP2MSDESampler
from .dpmpp_sde import DPMPPSDESampler
from .dpmpp_singlestep import DPMPPSinglestepSampler
from .euler import EulerSampler
from .euler_ancestral import EulerAncestralSampler
from .heun import HeunSampler
from .lcm import LCMSampler
from .lms import LMSSampler
from .pndm import PNDMSampler
from .unipc import UniPCSampler

SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "pndm": PNDMSampler,
    "euler": EulerSampler,
    "euler_a": EulerAncestralSampler,
    "heun": HeunSampler,
    "lms": LMSSampler,
    "dpm2": DPM2Sampler,
    "dpm2_a": DPM2AncestralSampler,
    "dpmpp_2m": DPMPP2MSampler,
    "dpmpp_2m_sde": DPMPP2MSDESampler,
    "dpmpp_sde": DPMPPSDESampler,
    "dpmpp_2s": DPMPPSinglestepSampler,
    "deis": DEISSampler,
    "unipc": UniPCSampler,
    "lcm": LCMSampler,
}
SAMPLER_NAMES = tuple(SAMPLERS)
KARRAS_SAMPLERS = tuple(name for name, sampler in SAMPLERS.items() if "karras" in sampler.spacings)


def make_sampler(name, config, steps, karras=None, eta=0.0, strength=1.0, sigmas=None):
    """Build sampler ``name`` for ``steps`` steps.

    name: minidiff's name or an A1111/ComfyUI one, optionally with a σ spacing ("DPM++ 2M Karras", "euler beta");
    sigmas: a σ spacing ("karras", "exponential", "beta"), else the name's, else the config's (``use_karras_sigmas``,
    ...) where the sampler offers it; karras=True is sigmas="karras", karras=False turns the config's off; eta is
    DDIM's noise scale; strength in (0, 1] runs only the last int(steps * strength) steps (img2img; lcm runs all
    steps, from the least noisy part of its schedule).
    """
    name, spacing, settings = resolve(name, SAMPLER_NAMES)
    if sigmas is None and karras is None:
        sigmas = spacing
    return SAMPLERS[name](replace(config, **settings), steps, karras=karras, eta=eta, strength=strength,
                          sigmas=sigmas)


# The defaults of diffusers' classes for the settings that tell apart samplers sharing a class (diffusers_options).
CLASS_DEFAULTS = {
    "DPMSolverMultistepScheduler": {"algorithm_type": "dpmsolver++"},
    "DPMSolverSinglestepScheduler": {"algorithm_type": "dpmsolver++"},
}


def default_sampler_for(class_name, config=None):
    """The sampler that reproduces diffusers' scheduler ``class_name`` set up by ``config`` (the dict of its
    scheduler_config.json), or None where minidiff has none: default_sampler_for("PNDMScheduler", d) == "pndm".
    Where one class serves several samplers, the config's values of their ``diffusers_options`` decide."""
    given = {key: value for key, value in (config or {}).items() if value is not None}
    settings = {**CLASS_DEFAULTS.get(class_name, {}), **given}
    matches = [name for name, sampler in SAMPLERS.items() if sampler.diffusers_class == class_name
               and all(settings.get(key) == value for key, value in sampler.diffusers_options.items())]
    return matches[0] if len(matches) == 1 else None


__all__ = ["KARRAS_SAMPLERS", "SAMPLER_NAMES", "Sampler", "SchedulerConfig", "default_sampler_for", "make_sampler",
           "randn"]
