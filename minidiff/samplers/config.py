"""``SchedulerConfig``: the settings of a sampler, read from a diffusers ``scheduler_config.json``.

A Stable Diffusion checkpoint ships one ``scheduler/scheduler_config.json`` (SD 1.5's names the PNDM
scheduler), and diffusers lets any scheduler be built from it. minidiff does the same: every sampler reads the
fields below. Keys a checkpoint may carry that change nothing here (``_class_name``, ``_diffusers_version``, ...)
are ignored; settings minidiff does not implement raise a ValueError that names the supported values.

A key missing from the file takes Stable Diffusion's value (the defaults below), except ``timestep_spacing``,
``algorithm_type``, ``solver_type`` and ``lower_order_final``: there, as in diffusers (where each scheduler class has
its own default, and ``X.from_config`` does not carry over values a file left out), a missing value (None) means the
sampler's class default: "leading" for ddpm, ddim, pndm and lcm and "linspace" for the others; "dpmsolver++"
and "midpoint" for dpmpp_2m, "deis" and "logrho" for deis, "bh2" for unipc; lower_order_final True, but False for
dpmpp_2s (``Sampler.defaults``). ``skip_prk_steps`` (pndm only) defaults to PNDMScheduler's false, though SD's files set it.
SD 1.5's file has no ``timestep_spacing``, so diffusers' pipelines run DDIM on leading timesteps but Euler, Heun,
LMS and DPM++ on linspace ones, and so does minidiff. Written back (``to_dict``), a missing value stays missing
rather than becoming null (which diffusers' schedulers refuse), so diffusers falls back to the same class defaults.
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..schedule import BETA_SCHEDULES, PREDICTION_TYPES

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# Settings with one meaning each; the value is the list of what minidiff accepts.
_CHOICES = {
    "beta_schedule": BETA_SCHEDULES,
    "prediction_type": PREDICTION_TYPES,
    "timestep_spacing": TIMESTEP_SPACINGS,
    "interpolation_type": ("linear",),
    "solver_order": (1, 2, 3),
    # each class maps the other's onto its own, as diffusers does; the sampler's name picks ODE or SDE (dpmpp_2m_sde)
    "algorithm_type": ("dpmsolver++", "sde-dpmsolver++", "deis"),
    "solver_type": ("midpoint", "heun", "logrho", "bh1", "bh2"),
    "final_sigmas_type": ("zero", "sigma_min"),
}

# Settings whose default differs between diffusers' classes: None means the sampler's (see the module docstring).
_CLASS_DEFAULTS = ("timestep_spacing", "algorithm_type", "solver_type")

# diffusers options minidiff leaves out: accepted only at the value that switches them off.
_UNSUPPORTED = {
    "thresholding": (False,),
    "variance_type": (None, "fixed_small"),
    "timestep_type": ("discrete",),
    "use_lu_lambdas": (False,),
    "use_flow_sigmas": (False,),
    "use_dynamic_shifting": (False,),
    "sigma_min": (None,),
    "sigma_max": (None,),
}


@dataclass
class SchedulerConfig:
    """The fields of a diffusers scheduler config that minidiff's samplers honour (defaults: Stable Diffusion's)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # linear | scaled_linear | squaredcos_cap_v2
    trained_betas: list | None = None  # explicit betas, overriding the three above
    prediction_type: str = "epsilon"  # epsilon | v_prediction | sample
    timestep_spacing: str | None = None  # leading | trailing | linspace | None: the sampler's diffusers default
    steps_offset: int = 1  # added to "leading" timesteps
    clip_sample: bool = False  # clamp predicted x_0 (ddpm, ddim, heun; the others ignore it, as in diffusers)
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = False  # ddim, pndm: the step after the last one is ᾱ = 1 (else ᾱ_0)
    skip_prk_steps: bool | None = None  # pndm: PLMS from the start (SD's files say true), else (false, or None:
    # PNDMScheduler's default) Runge–Kutta steps first
    class_name: str | None = None  # the file's "_class_name": the diffusers scheduler the model names (written back)
    rescale_betas_zero_snr: bool = False  # rescale betas so the last timestep has SNR 0 (SD 2.1 v-models)
    interpolation_type: str = "linear"  # euler: σ interpolated linearly between training timesteps
    use_karras_sigmas: bool = False  # default σ spacings for make_sampler(sigmas=None), where the sampler has them
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    solver_order: int = 2  # dpmpp_2m, dpmpp_2m_sde: 2 only; deis, dpmpp_2s, unipc: 1, 2 or 3
    algorithm_type: str | None = None  # dpmpp_2m "dpmsolver++", deis "deis" | None: the sampler's diffusers default
    solver_type: str | None = None  # dpmpp_2m "midpoint" (or "heun"), deis "logrho", unipc "bh2" (or "bh1") | None
    lower_order_final: bool | None = None  # lower orders at the end: dpmpp_2m, deis under 15 steps; dpmpp_2s, unipc
    # always | None: the sampler's diffusers default (True; False for dpmpp_2s)
    euler_at_final: bool = False  # dpmpp_2m: always first order on the last step
    final_sigmas_type: str = "zero"  # euler, dpmpp_2m, unipc: the last σ is 0 ("zero") or σ_0 ("sigma_min")
    predict_x0: bool = True  # unipc: the update on x_0 predictions (else on ε predictions)
    disable_corrector: list = field(default_factory=list)  # unipc: the steps whose result is not corrected
    lambda_min_clipped: float = -math.inf  # dpmpp_2m, dpmpp_2s: no timesteps where log(α/s) is below it (cosine)
    original_inference_steps: int = 50  # lcm: the distillation's schedule, N timesteps k-1, 2k-1, ... (k = T // N)
    timestep_scaling: float = 10.0  # lcm: the boundary scalings c_skip, c_out are taken at t · timestep_scaling
    noise_sampler_seed: int | list | None = None  # dpmpp_sde: the Brownian tree's seed for every run (an int, or one
    # per sample); None: drawn from the run's generator

    def __post_init__(self):
        asked = [name for name in ("karras", "exponential", "beta") if getattr(self, f"use_{name}_sigmas")]
        if len(asked) > 1:
            raise ValueError(f"the scheduler config sets {' and '.join(f'use_{n}_sigmas' for n in asked)}; keep one")
        for name, valid in _CHOICES.items():
            value = getattr(self, name)
            if value not in valid and not (name in _CLASS_DEFAULTS and value is None):
                raise ValueError(f"{name} {value!r} is not supported; choose one of {', '.join(map(repr, valid))}")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(self.trained_betas)} values but num_train_timesteps is "
                f"{self.num_train_timesteps}; give one beta per training timestep"
            )

    @classmethod
    def from_dict(cls, d):
        """Build from a dict of diffusers config keys; unknown keys are ignored, unsupported settings raise."""
        for key, allowed in _UNSUPPORTED.items():
            if key in d and d[key] not in allowed:
                raise ValueError(
                    f"{key}={d[key]!r} is not supported by minidiff; use {' or '.join(map(repr, allowed))} "
                    f"(or remove the key)"
                )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known}, class_name=d.get("_class_name"))

    @classmethod
    def from_json(cls, path):
        """Read ``scheduler_config.json``: give the file, its folder, or a model folder with ``scheduler/`` in it."""
        path = Path(path)
        for candidate in (path, path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
            if candidate.is_file():
                return cls.from_dict(json.loads(candidate.read_text()))
        raise ValueError(
            f"no scheduler config at {path}: expected a scheduler_config.json file, a folder holding one, "
            f"or a model folder with scheduler/scheduler_config.json"
        )

    def to_dict(self):
        """The fields as a plain dict, in the key names of diffusers' scheduler_config.json.

        A field left unset (None: no ``timestep_spacing``, no ``trained_betas``) is left out rather than written
        as null, so that diffusers, reading the dict, applies each scheduler class's own default, as minidiff does.
        """
        d = {name: value for name, value in asdict(self).items() if value is not None}
        if "class_name" in d:
            d["_class_name"] = d.pop("class_name")
        return d
