"""DPM++ 2M SDE against diffusers' DPMSolverMultistepScheduler with algorithm_type "sde-dpmsolver++": both solver
types, the last-step options, the three σ re-spacings, every prediction type, img2img, lists of generators; and the
options dpmpp_2m gained beside it (solver_type "heun", lambda_min_clipped). Noise is drawn from the same seeded
generator on both sides, so the stochastic runs are compared exactly. The shared matrix (tests/test_samplers.py)
covers the default midpoint solver on every timestep spacing and dtype."""

import itertools

import diffusers
import pytest
import torch
from test_samplers import PREDICTION_TYPES, SPACINGS, assert_same_trajectory, config_dict, rel_err, stand_in_model

from minidiff.samplers import SAMPLERS, SchedulerConfig, make_sampler

STEPS = (1, 2, 7, 25, 50)
SIGMA_SPACINGS = (None, "karras", "exponential", "beta")


def sde_config(spacing="linspace", prediction_type="epsilon", sigmas=None, **overrides):
    """A complete config; sigmas: None or a σ re-spacing, set as the use_*_sigmas flag a model's file carries."""
    flags = {f"use_{name}_sigmas": name == sigmas for name in ("karras", "exponential", "beta")}
    return {**config_dict(spacing, prediction_type), **flags, **overrides}


@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "dpmpp_2m"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("steps", STEPS)
def test_both_solver_types_match_diffusers_in_float64_and_float32(name, solver_type, steps):
    for i, prediction_type in enumerate(PREDICTION_TYPES):
        d = sde_config(SPACINGS[(i + steps) % 3], prediction_type, solver_type=solver_type)
        assert_same_trajectory(name, d, steps, torch.float64)
        assert_same_trajectory(name, d, steps, torch.float32)


@pytest.mark.parametrize("sigmas", SIGMA_SPACINGS)
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_every_sigma_spacing_matches_diffusers(sigmas, solver_type):
    for steps in STEPS if sigmas != "beta" else STEPS[:-1]:  # diffusers' own loop fails there: see the next test
        d = sde_config("trailing", "v_prediction", sigmas, solver_type=solver_type)
        assert_same_trajectory("dpmpp_2m_sde", d, steps)


def test_beta_sigmas_whose_first_timestep_repeats_run_from_the_first_step():
    """Beta σ's crowd σ_max: with 50 steps the first two timesteps are both 999. diffusers' scheduler, not told
    where it starts (as in StableDiffusionPipeline), takes the second occurrence and runs off the end of its σ's;
    told to start at 0 it matches minidiff, which starts at the first step."""
    d, steps = sde_config(sigmas="beta"), 50
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = diffusers.DPMSolverMultistepScheduler.from_config(d, algorithm_type="sde-dpmsolver++")
    ref.set_timesteps(steps)
    assert ref.timesteps[0] == ref.timesteps[1]
    with pytest.raises(IndexError):
        run_diffusers_loop(ref, x, torch.Generator().manual_seed(1))
    ref.set_timesteps(steps)
    ref.set_begin_index(0)
    expected = run_diffusers_loop(ref, x, torch.Generator().manual_seed(1))
    sampler = make_sampler("dpmpp_2m_sde", SchedulerConfig.from_dict(d), steps)
    assert rel_err(sampler.sample(stand_in_model, x, generator=torch.Generator().manual_seed(1)), expected) <= 1e-6


def run_diffusers_loop(scheduler, x, generator):
    for t in scheduler.timesteps:
        x = scheduler.step(stand_in_model(x, t), t, x, generator=generator).prev_sample
    return x


LAST_STEP_OPTIONS = [
    dict(final_sigmas_type="sigma_min", lower_order_final=False),
    dict(final_sigmas_type="sigma_min", lower_order_final=True),
    dict(final_sigmas_type="sigma_min", lower_order_final=False, euler_at_final=True),
    dict(final_sigmas_type="zero", lower_order_final=False),
]


@pytest.mark.parametrize("options", LAST_STEP_OPTIONS)
@pytest.mark.parametrize("steps", [2, 7, 25])  # 25 >= 15: lower_order_final no longer applies
def test_last_step_options_match_diffusers(options, steps):
    for solver_type in ("midpoint", "heun"):
        assert_same_trajectory("dpmpp_2m_sde", sde_config(solver_type=solver_type, **options), steps)


@pytest.mark.parametrize("strength", [0.3, 0.75])
@pytest.mark.parametrize("sigmas", [None, "karras"])
def test_img2img_and_inpainting_match_diffusers(strength, sigmas):
    d = sde_config("leading", "v_prediction", sigmas, solver_type="heun")
    assert_same_trajectory("dpmpp_2m_sde", d, 25, torch.float64, strength=strength)
    assert_same_trajectory("dpmpp_2m_sde", d, 25, torch.float32, strength=strength)
    assert_same_trajectory("dpmpp_2m_sde", d, 10, masked=True)


def test_zero_terminal_snr_matches_diffusers():
    d = sde_config("trailing", "v_prediction", rescale_betas_zero_snr=True)
    for steps in (1, 7, 25):
        assert_same_trajectory("dpmpp_2m_sde", d, steps)


@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "dpmpp_2m"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_lambda_min_clipped_keeps_timesteps_off_the_cosine_schedules_end_like_diffusers(name, spacing):
    d = sde_config(spacing, beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1)
    for steps in STEPS:
        ref = diffusers.DPMSolverMultistepScheduler.from_config(d, **SAMPLERS[name].diffusers_options)
        ref.set_timesteps(steps)
        sampler = make_sampler(name, SchedulerConfig.from_dict(d), steps)
        assert torch.equal(sampler.timesteps, ref.timesteps) and torch.equal(sampler.all_sigmas, ref.sigmas)
    clipped = make_sampler(name, SchedulerConfig.from_dict(d), 7)
    unclipped = make_sampler(name, SchedulerConfig.from_dict({**d, "lambda_min_clipped": float("-inf")}), 7)
    assert clipped.timesteps[0] < unclipped.timesteps[0]  # the clip bites
    assert_same_trajectory(name, d, 7)


def run_with_generators(name, d, steps, seeds):
    """(minidiff's result, diffusers') for a batch of two equal starts, run with one generator per sample."""
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64).repeat(2, 1, 1, 1)
    ref_scheduler = diffusers.DPMSolverMultistepScheduler.from_config(d, algorithm_type="sde-dpmsolver++")
    ref_scheduler.set_timesteps(steps)
    ref = run_diffusers_loop(ref_scheduler, x, [torch.Generator().manual_seed(s) for s in seeds])
    sampler = make_sampler(name, SchedulerConfig.from_dict(d), steps)
    ours = sampler.sample(stand_in_model, x, generator=[torch.Generator().manual_seed(s) for s in seeds])
    return ours, ref


def test_a_list_of_generators_draws_each_samples_noise_from_its_own_like_diffusers():
    d = sde_config("trailing", solver_type="heun")
    ours, ref = run_with_generators("dpmpp_2m_sde", d, 7, (10, 11))
    assert rel_err(ours, ref) <= 1e-6
    alone, _ = run_with_generators("dpmpp_2m_sde", d, 7, (11, 12))  # sample 1 now has the seed sample 0 had
    assert torch.equal(ours[1], alone[0]) and not torch.equal(ours[0], alone[0])


def test_the_noise_is_fresh_each_step_and_set_by_the_generator():
    d, x = sde_config(), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sampler = make_sampler("dpmpp_2m_sde", SchedulerConfig.from_dict(d), 10)
    runs = [sampler.sample(stand_in_model, x, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and rel_err(runs[0], runs[2]) > 1e-3
    ode = make_sampler("dpmpp_2m", SchedulerConfig.from_dict(d), 10).sample(stand_in_model, x)
    assert rel_err(runs[0], ode) > 1e-3


def test_the_sampler_name_decides_ode_or_sde_whatever_the_file_says():
    """A model's file may name either algorithm: it loads, dpmpp_2m runs the ODE and dpmpp_2m_sde the SDE."""
    for algorithm_type in ("dpmsolver++", "sde-dpmsolver++"):
        d = sde_config(algorithm_type=algorithm_type)
        assert SchedulerConfig.from_dict(d).algorithm_type == algorithm_type
        assert_same_trajectory("dpmpp_2m", d, 7)  # diffusers told "dpmsolver++" (diffusers_options)
        assert_same_trajectory("dpmpp_2m_sde", d, 7)


@pytest.mark.parametrize("name, order", itertools.product(["dpmpp_2m", "dpmpp_2m_sde"], [1, 3]))
def test_other_solver_orders_are_refused_in_one_line(name, order):
    with pytest.raises(ValueError, match=f"solver_order={order}; set it to 2, or use dpmpp_2s"):
        make_sampler(name, SchedulerConfig(solver_order=order), 10)
