"""minidiff's samplers against diffusers' schedulers: same timesteps and σ's, same latent after every step.

Both sides are driven by the same stand-in network (a smooth nonlinear function of x and t), the same starting
noise and the same generator seed, so stochastic samplers are compared exactly, not statistically.
Tolerances (max relative error, |a - b|.max() / |b|.max(), after every step): 1e-6 in float64, 1e-5 in float32,
and 0 in float16 and bfloat16, where both sides take the same operations in the same dtypes.
"""

import itertools
import json

import diffusers
import pytest
import torch
from test_scheduler_config import SD15_SCHEDULER_FILE

from minidiff.cli import main
from minidiff.samplers import KARRAS_SAMPLERS, SAMPLER_NAMES, SAMPLERS, SchedulerConfig, make_sampler

# every sampler's diffusers twin, read from the sampler table (a new sampler is compared as soon as it is listed)
DIFFUSERS_CLASSES = {name: getattr(diffusers, sampler.diffusers_class) for name, sampler in SAMPLERS.items()}
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-5, torch.float16: 0.0, torch.bfloat16: 0.0}
SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def config_dict(spacing="leading", prediction_type="epsilon", karras=False, **overrides):
    """A complete scheduler config (so no class default differs between diffusers' classes and ours)."""
    d = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        steps_offset=1 if spacing == "leading" else 0,
        clip_sample=False,
        set_alpha_to_one=False,
        use_karras_sigmas=karras,
        skip_prk_steps=True,  # pndm: PLMS only, as SD's files say (tests/test_sampler_pndm.py runs the warm-up)
    )
    return {**d, **overrides}


def stand_in_model(x, t):
    """A smooth, nonlinear stand-in for the U-Net: its output depends on both the latent and the timestep."""
    return 0.3 * torch.tanh(x) * torch.cos(t / 300) + 0.1 * x


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


def diffusers_scheduler(name, d, steps):
    scheduler = DIFFUSERS_CLASSES[name].from_config({**d, **SAMPLERS[name].diffusers_options})
    scheduler.set_timesteps(steps)
    return scheduler


def run_diffusers(name, d, steps, x0, noise, seed, strength=1.0, eta=0.0, mask=None):
    """diffusers' denoising loop as its SD pipelines write it (txt2img, img2img, and inpainting's blending)."""
    scheduler = diffusers_scheduler(name, d, steps)
    timesteps = scheduler.timesteps
    if name == "lcm" and strength < 1:  # LatentConsistencyModelImg2ImgPipeline: strength picks every step's t
        scheduler.set_timesteps(steps, strength=strength)
        timesteps = scheduler.timesteps
    elif strength < 1 or mask is not None:  # StableDiffusionImg2ImgPipeline.get_timesteps
        t_start = steps - min(int(steps * strength), steps)
        timesteps = timesteps[t_start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
    if strength < 1:
        x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))
    else:
        x = noise * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(seed)
    kwargs = {"eta": eta} if name == "ddim" else {}
    if name == "dpmpp_sde":  # DPMSolverSDEScheduler takes no generator: the seed of its noise, drawn as minidiff does
        scheduler.noise_sampler_seed = torch.randint(0, 2**63 - 1, (), generator=generator).item()
    elif SAMPLERS[name].stochastic or name == "ddim":
        kwargs["generator"] = generator
    latents = []
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(x, t)
        x = scheduler.step(stand_in_model(model_input, t), t, x, **kwargs).prev_sample
        if mask is not None:  # StableDiffusionInpaintPipeline with a 4-channel U-Net
            known = x0
            if i < len(timesteps) - 1:
                known = scheduler.add_noise(x0, noise, torch.tensor([timesteps[i + 1]]))
            x = (1 - mask) * known + mask * x
        latents.append(x)
    return timesteps, latents


def run_minidiff(name, d, steps, x0, noise, seed, strength=1.0, eta=0.0, mask=None):
    sampler = make_sampler(name, SchedulerConfig.from_dict(d), steps, eta=eta, strength=strength)
    x = sampler.add_noise(x0, noise, 0) if strength < 1 else noise * sampler.init_noise_sigma
    latents = []

    def callback(i, t, x, x0_pred):
        if mask is not None:
            known = sampler.add_noise(x0, noise, i + 1) if i < len(sampler.timesteps) - 1 else x0
            x = (1 - mask) * known + mask * x
        latents.append(x)
        return x

    sampler.sample(stand_in_model, x, generator=torch.Generator().manual_seed(seed), callback=callback)
    return sampler.timesteps, latents


def assert_runs_from_the_first_of_repeated_timesteps(name, d, steps=50):
    """Beta σ's crowd σ_max: with 50 steps the first two timesteps of a DPM-Solver-style plan are equal. diffusers'
    scheduler, not told where it starts (as in StableDiffusionPipeline), looks the first timestep up, takes its
    second occurrence and runs off the end of its σ's; told to start at 0 it matches minidiff, which starts at the
    first step."""
    x0, noise = torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = diffusers_scheduler(name, d, steps)
    assert ref.timesteps[0] == ref.timesteps[1]
    with pytest.raises(IndexError):
        x = noise
        for t in ref.timesteps:
            x = ref.step(stand_in_model(x, t), t, x).prev_sample
    ref = diffusers_scheduler(name, d, steps)
    ref.set_begin_index(0)
    x, ref_latents = noise, []
    for t in ref.timesteps:
        x = ref.step(stand_in_model(x, t), t, x).prev_sample
        ref_latents.append(x)
    _, ours = run_minidiff(name, d, steps, x0, noise, 0)
    assert max(rel_err(a, b) for a, b in zip(ours, ref_latents, strict=True)) <= 1e-6


def assert_same_trajectory(name, d, steps, dtype=torch.float64, strength=1.0, eta=0.0, masked=False, seed=0):
    g = torch.Generator().manual_seed(1234)
    x0 = torch.randn(2, 4, 8, 8, generator=g, dtype=dtype)  # a "clean latent" for img2img starts
    noise = torch.randn(2, 4, 8, 8, generator=g, dtype=dtype)
    mask = (torch.rand(1, 1, 8, 8, generator=g) > 0.5).to(dtype) if masked else None
    args = (name, d, steps, x0, noise, seed, strength, eta, mask)
    ref_timesteps, ref = run_diffusers(*args)
    timesteps, ours = run_minidiff(*args)
    assert torch.equal(timesteps, ref_timesteps)
    assert len(ours) == len(ref) > 0
    errors = [rel_err(a, b) for a, b in zip(ours, ref)]
    worst = max(range(len(errors)), key=lambda k: errors[k] if errors[k] == errors[k] else float("inf"))  # NaN worst
    assert all(e <= TOLERANCE[dtype] for e in errors), f"step {worst}: {errors[worst]:.2e}"  # NaN fails too
    assert ours[-1].dtype == dtype


# ---------------------------------------------------------------------------------------------------------------
# Timesteps and σ's: the full matrix


TIMESTEP_CASES = [
    (name, spacing, karras)
    for name, spacing, karras in itertools.product(SAMPLER_NAMES, SPACINGS, (False, True))
    if not karras or name in KARRAS_SAMPLERS
]


@pytest.mark.parametrize("name, spacing, karras", TIMESTEP_CASES)
def test_timesteps_and_sigmas_equal_diffusers(name, spacing, karras):
    for prediction_type in PREDICTION_TYPES:
        if name == "pndm" and prediction_type == "sample":
            continue  # refused, as diffusers' PNDMScheduler refuses it
        d = config_dict(spacing, prediction_type, karras)
        ref = DIFFUSERS_CLASSES[name].from_config({**d, **SAMPLERS[name].diffusers_options})
        for steps in (1, 2, 7, 25, 50):
            ref.set_timesteps(steps)
            sampler = make_sampler(name, SchedulerConfig.from_dict(d), steps)
            case = (prediction_type, steps)
            assert sampler.timesteps.dtype == ref.timesteps.dtype, case
            assert torch.equal(sampler.timesteps, ref.timesteps), case
            assert sampler.init_noise_sigma == float(ref.init_noise_sigma), case
            if name in ("ddpm", "ddim", "lcm", "pndm"):
                continue
            # diffusers' Heun (and DPMSolverSDE) lists every σ after the first twice (one per network call)
            ref_sigmas = torch.cat([ref.sigmas[:1], ref.sigmas[1::2]]) if name in ("heun", "dpmpp_sde") else ref.sigmas
            if name in ("dpm2", "dpm2_a"):  # KDPM2's list too, with σ = 0 listed three times at the end
                ref_sigmas = ref.sigmas[::2]
            assert torch.equal(sampler.all_sigmas, ref_sigmas), case


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "euler_a", "dpmpp_2m"])
@pytest.mark.parametrize("overrides", [dict(rescale_betas_zero_snr=True), dict(beta_schedule="squaredcos_cap_v2")])
def test_timesteps_equal_diffusers_for_zero_snr_and_cosine_schedules(name, overrides):
    for spacing, steps in itertools.product(SPACINGS, (1, 7, 50)):
        d = config_dict(spacing, **overrides)
        ref = diffusers_scheduler(name, d, steps)
        sampler = make_sampler(name, SchedulerConfig.from_dict(d), steps)
        assert torch.equal(sampler.timesteps, ref.timesteps)
        assert sampler.init_noise_sigma == float(ref.init_noise_sigma)
        if sampler.all_sigmas is not None:
            assert torch.equal(sampler.all_sigmas, ref.sigmas)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_img2img_timesteps_are_diffusers_get_timesteps(name, strength):
    if name == "lcm":
        pytest.skip("LCMScheduler picks img2img's timesteps in set_timesteps(strength=...); test_sampler_lcm.py")
    d = config_dict()
    ref = diffusers_scheduler(name, d, 25)
    t_start = 25 - int(25 * strength)
    sampler = make_sampler(name, SchedulerConfig.from_dict(d), 25, strength=strength)
    assert torch.equal(sampler.timesteps, ref.timesteps[t_start * ref.order :])


# ---------------------------------------------------------------------------------------------------------------
# Trajectories: every sampler x every prediction type x two step counts x two dtypes

TRAJECTORY_CASES = [
    pytest.param(name, pt, steps, dtype, id=f"{name}-{pt}-{steps}-{str(dtype)[6:]}")
    for name, pt, steps, dtype in itertools.product(
        SAMPLER_NAMES, PREDICTION_TYPES, (7, 25), (torch.float64, torch.float32)
    )
    # diffusers' EulerAncestralDiscreteScheduler raises NotImplementedError for prediction_type="sample"
    # (minidiff supports it: x_0 is the output), so there is nothing to compare against; PNDMScheduler raises a
    # ValueError for it, and so does minidiff's pndm (tests/test_sampler_pndm.py); both KDPM2 classes raise
    # NotImplementedError (minidiff's dpm2, dpm2_a take x_0 as the output), and so does DPMSolverSDEScheduler
    if not (name in ("euler_a", "pndm", "dpm2", "dpm2_a", "dpmpp_sde") and pt == "sample")
]


@pytest.mark.parametrize("name, prediction_type, steps, dtype", TRAJECTORY_CASES)
def test_latent_after_every_step_equals_diffusers(name, prediction_type, steps, dtype):
    # every spacing appears for every sampler across the prediction types
    spacing = SPACINGS[(SAMPLER_NAMES.index(name) + PREDICTION_TYPES.index(prediction_type) + steps) % 3]
    eta = 0.5 if name == "ddim" else 0.0  # the stochastic DDIM; eta = 0 is covered below
    assert_same_trajectory(name, config_dict(spacing, prediction_type), steps, dtype, eta=eta)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_latent_after_every_step_equals_diffusers_bit_for_bit(name, prediction_type, dtype):
    """The latent keeps its half-precision dtype from step to step, and each step rounds where diffusers' does
    (Euler, Euler a and DPM++ 2M in float32 internally, the others in the latent's dtype)."""
    eta = 0.5 if name == "ddim" else 0.0
    assert_same_trajectory(name, config_dict("trailing", prediction_type), 10, dtype, eta=eta)
    assert_same_trajectory(name, config_dict("leading", prediction_type), 10, dtype, strength=0.6)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("strength", [0.3, 0.75])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_img2img_trajectory_equals_diffusers(name, strength, dtype):
    if name == "lcm" and strength == 0.3:
        pytest.skip("LCMScheduler refuses 25 steps from the int(50 * 0.3) = 15 timesteps strength 0.3 leaves it")
    assert_same_trajectory(name, config_dict("leading", "v_prediction"), 25, dtype, strength=strength)


@pytest.mark.parametrize("name", KARRAS_SAMPLERS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_karras_trajectory_equals_diffusers(name, prediction_type):
    if name in ("dpm2", "dpm2_a", "dpmpp_sde") and prediction_type == "sample":
        pytest.skip("diffusers' KDPM2 and DPMSolverSDE classes raise NotImplementedError for prediction_type='sample'")
    assert_same_trajectory(name, config_dict("linspace", prediction_type, karras=True), 25)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_inpainting_blend_through_callback_equals_diffusers(name):
    """Replacing x in the callback with known content noised by add_noise(x0, noise, i + 1) matches diffusers'
    inpainting loop, which noises with ``scheduler.add_noise(x0, noise, timesteps[i + 1])``."""
    assert_same_trajectory(name, config_dict("trailing"), 7, masked=True)


OPTION_CASES = [
    ("ddim", dict(clip_sample=True, set_alpha_to_one=True, beta_schedule="linear"), 0.0),
    ("ddim", dict(timestep_spacing="linspace", steps_offset=0), 0.0),
    ("ddpm", dict(clip_sample=True, clip_sample_range=0.5, beta_schedule="squaredcos_cap_v2"), 0.0),
    ("heun", dict(clip_sample=True, clip_sample_range=0.8), 0.0),
    ("euler", dict(final_sigmas_type="sigma_min"), 0.0),
    ("dpmpp_2m", dict(final_sigmas_type="sigma_min", lower_order_final=False), 0.0),
    ("dpmpp_2m", dict(final_sigmas_type="sigma_min", euler_at_final=True), 0.0),
    ("dpmpp_2m", dict(final_sigmas_type="sigma_min", lower_order_final=True), 0.0),
] + [
    (name, dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing",
                steps_offset=0), eta)
    for name, eta in [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0), ("euler", 0.0), ("euler_a", 0.0), ("dpmpp_2m", 0.0)]
]  # fmt: skip


@pytest.mark.parametrize("name, overrides, eta", OPTION_CASES)
def test_config_options_trajectory_equals_diffusers(name, overrides, eta):
    assert_same_trajectory(name, {**config_dict(), **overrides}, 10, eta=eta)  # < 15: lower_order_final counts


def test_ddim_with_eta_1_at_zero_terminal_snr_stays_finite():
    """At ᾱ_T = 0 with eta = 1, DDIM's direction weight 1 - ᾱ' - s² is exactly 0 and rounds to about -1e-8 in
    float32; diffusers' DDIMScheduler then takes the square root of a negative number and returns NaN for the whole
    run. minidiff clamps the weight at 0."""
    d = {**config_dict(), "rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
         "timestep_spacing": "trailing", "steps_offset": 0}
    g = torch.Generator().manual_seed(1234)
    x0, noise = torch.randn(2, 2, 4, 8, 8, generator=g, dtype=torch.float64)
    _, trajectory = run_minidiff("ddim", d, 10, x0, noise, 0, 1.0, 1.0, None)
    assert all(torch.isfinite(x).all() for x in trajectory)


def test_list_of_generators_draws_per_sample_noise_like_diffusers():
    d = config_dict("trailing")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ref_scheduler = diffusers_scheduler("euler_a", d, 5)
    ref_generators = [torch.Generator().manual_seed(s) for s in (10, 11)]
    ref = x * ref_scheduler.init_noise_sigma
    for t in ref_scheduler.timesteps:
        model_output = stand_in_model(ref_scheduler.scale_model_input(ref, t), t)
        ref = ref_scheduler.step(model_output, t, ref, generator=ref_generators).prev_sample
    sampler = make_sampler("euler_a", SchedulerConfig.from_dict(d), 5)
    generators = [torch.Generator().manual_seed(s) for s in (10, 11)]
    ours = sampler.sample(stand_in_model, x * sampler.init_noise_sigma, generator=generators)
    assert rel_err(ours, ref) <= 1e-6


# ---------------------------------------------------------------------------------------------------------------
# Stable Diffusion 1.5's real config


def test_sd15_scheduler_config_loads_and_drives_every_sampler_like_diffusers(tmp_path):
    """The file names PNDM; a diffusers user swaps schedulers with ``X.from_config(pipe.scheduler.config)``, which
    keeps the file's values and gives the rest the new class's defaults (leading spacing for DDPM and DDIM,
    linspace for the others). minidiff resolves a missing timestep_spacing the same way."""
    folder = tmp_path / "sd15" / "scheduler"
    folder.mkdir(parents=True)
    (folder / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_FILE))
    config = SchedulerConfig.from_json(tmp_path / "sd15")  # the model folder
    assert config == SchedulerConfig.from_json(folder) == SchedulerConfig.from_json(folder / "scheduler_config.json")
    assert SchedulerConfig.from_dict(config.to_dict()) == config
    pndm_config = diffusers.PNDMScheduler.from_pretrained(folder).config
    for name in SAMPLER_NAMES:
        ref = DIFFUSERS_CLASSES[name].from_config({**pndm_config, **SAMPLERS[name].diffusers_options})
        ref.set_timesteps(10)
        sampler = make_sampler(name, config, 10)
        assert torch.equal(sampler.timesteps, ref.timesteps), name
        # DPMSolverSinglestepScheduler has no timestep_spacing: it always steps on linspace timesteps
        assert sampler.config.timestep_spacing == ref.config.get("timestep_spacing", "linspace")
        assert_same_trajectory(name, SD15_SCHEDULER_FILE, 4)


# ---------------------------------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda c: make_sampler("dpm_fast", c, 10), "dpmpp_2m"),
        (lambda c: make_sampler("euler", c, 0), "from 1 to num_train_timesteps=1000"),
        (lambda c: make_sampler("euler", c, 1001), "from 1 to num_train_timesteps=1000"),
        (lambda c: make_sampler("euler", c, 10, strength=0.0), "(0, 1]"),
        (lambda c: make_sampler("euler", c, 10, strength=1.5), "(0, 1]"),
        (lambda c: make_sampler("euler", c, 10, strength=0.05), "no step to run"),
        (lambda c: make_sampler("ddim", c, 10, karras=True), "euler, heun"),
        (lambda c: make_sampler("euler", c, 10, eta=0.5), "only to the ddim"),
        (lambda c: make_sampler("euler", c, 10).add_noise(torch.zeros(1), torch.zeros(1), 10), "0..9"),
        (lambda c: SchedulerConfig(timestep_spacing="even"), "'leading', 'trailing', 'linspace'"),
        (lambda c: SchedulerConfig(prediction_type="flow"), "'epsilon', 'v_prediction', 'sample'"),
        (lambda c: SchedulerConfig(beta_schedule="sigmoid"), "'linear', 'scaled_linear', 'squaredcos_cap_v2'"),
        (lambda c: SchedulerConfig(algorithm_type="dpmsolver"), "'dpmsolver++', 'sde-dpmsolver++'"),
        (lambda c: SchedulerConfig.from_dict({"thresholding": True}), "thresholding=True is not supported"),
        (lambda c: SchedulerConfig.from_dict({"use_lu_lambdas": True}), "use False"),
        (lambda c: SchedulerConfig(use_karras_sigmas=True, use_beta_sigmas=True), "keep one"),
        (lambda c: SchedulerConfig.from_json("/nonexistent"), "scheduler_config.json"),
        (lambda c: make_sampler("heun", SchedulerConfig(rescale_betas_zero_snr=True), 10), "euler_a"),
    ],
)
def test_bad_arguments_raise_value_error_naming_valid_choices(call, fragment):
    with pytest.raises(ValueError) as info:
        call(SchedulerConfig())
    assert fragment in str(info.value)


def test_config_level_karras_applies_only_where_supported():
    config = SchedulerConfig(use_karras_sigmas=True)
    assert make_sampler("euler", config, 10).karras
    assert not make_sampler("euler", config, 10, karras=False).karras
    assert not make_sampler("ddim", config, 10).karras  # ignored, as diffusers' DDIMScheduler ignores it


# ---------------------------------------------------------------------------------------------------------------
# Command line


def test_schedule_command_prints_table_and_plots(tmp_path, capsys):
    plot = tmp_path / "sigmas.png"
    assert main(["schedule", "--sampler", "euler", "--steps", "5", "--karras", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    sampler = make_sampler("euler", SchedulerConfig(), 5, karras=True)
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert len(rows) == 5
    assert [float(r[1]) for r in rows] == pytest.approx(sampler.timesteps.tolist(), rel=1e-3)
    assert [float(r[2]) for r in rows] == pytest.approx(sampler.sigmas[:-1].tolist(), rel=1e-5)
    assert plot.stat().st_size > 1000


def test_schedule_command_reads_a_config_and_reports_errors(tmp_path, capsys):
    (tmp_path / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_FILE))
    assert main(["schedule", "--sampler", "ddim", "--steps", "3", "--config", str(tmp_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[0].isdigit()]
    assert [r[1] for r in rows] == ["667", "334", "1"]  # leading: 0, 333, 666 reversed, plus steps_offset 1
    assert main(["schedule", "--sampler", "dpm_fast"]) == 1  # (plms is pndm's ComfyUI name)
    assert "choose one of ddpm" in capsys.readouterr().err
