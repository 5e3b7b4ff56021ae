"""DPM++ 2S against diffusers' DPMSolverSinglestepScheduler: the order list, orders 1-3 with both solver types,
lower_order_final and final_sigmas_type, the three σ re-spacings, lambda_min_clipped on the cosine schedule, every
prediction type, and img2img starts that fall inside a block. The shared matrix (tests/test_samplers.py) covers the
default order 2 on every (ignored) timestep spacing and dtype."""

import itertools

import diffusers
import pytest
import torch
from test_samplers import (
    PREDICTION_TYPES,
    assert_runs_from_the_first_of_repeated_timesteps,
    assert_same_trajectory,
    config_dict,
    diffusers_scheduler,
)

from minidiff.samplers import SchedulerConfig, make_sampler
from minidiff.samplers.dpmpp_singlestep import order_list

STEPS = (1, 2, 7, 25, 50)
SIGMA_SPACINGS = (None, "karras", "exponential", "beta")


def single_config(prediction_type="epsilon", sigmas=None, **overrides):
    """A complete config; sigmas: None or a σ re-spacing, set as the use_*_sigmas flag a model's file carries."""
    flags = {f"use_{name}_sigmas": name == sigmas for name in ("karras", "exponential", "beta")}
    return {**config_dict("linspace", prediction_type), **flags, **overrides}


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("final_sigmas_type", ["zero", "sigma_min"])
def test_order_list_is_diffusers_get_order_list(order, final_sigmas_type):
    for steps, lower_order_final in itertools.product(range(1, 40), (False, True)):
        ref = diffusers.DPMSolverSinglestepScheduler(solver_order=order, lower_order_final=lower_order_final,
                                                     final_sigmas_type=final_sigmas_type)
        ref.set_timesteps(steps)  # may switch lower_order_final on (uneven blocks, a last σ of 0), as ours does
        assert order_list(steps, order, lower_order_final, final_sigmas_type) == ref.order_list, steps


def test_order_list_reads_as_blocks():
    assert order_list(7, 2, True, "sigma_min") == [1, 2, 1, 2, 1, 2, 1]
    assert order_list(8, 2, True, "sigma_min") == [1, 2, 1, 2, 1, 2, 1, 1]
    assert order_list(8, 2, False, "sigma_min") == [1, 2, 1, 2, 1, 2, 1, 2]
    assert order_list(8, 3, False, "zero") == [1, 2, 3, 1, 2, 3, 1, 1]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("steps", STEPS)
def test_every_order_and_solver_type_matches_diffusers_in_float64_and_float32(order, solver_type, steps):
    for prediction_type in PREDICTION_TYPES:
        d = single_config(prediction_type, solver_order=order, solver_type=solver_type)
        assert_same_trajectory("dpmpp_2s", d, steps, torch.float64)
        assert_same_trajectory("dpmpp_2s", d, steps, torch.float32)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("lower_order_final", [False, True])
@pytest.mark.parametrize("final_sigmas_type", ["zero", "sigma_min"])
def test_lower_order_final_and_final_sigmas_type_match_diffusers(order, lower_order_final, final_sigmas_type):
    for steps, solver_type in itertools.product((6, 7, 12, 25), ("midpoint", "heun")):  # whole blocks and not
        d = single_config(solver_order=order, solver_type=solver_type, lower_order_final=lower_order_final,
                          final_sigmas_type=final_sigmas_type)
        assert_same_trajectory("dpmpp_2s", d, steps)


@pytest.mark.parametrize("sigmas", SIGMA_SPACINGS)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_sigma_spacing_matches_diffusers(sigmas, order):
    for steps in STEPS if sigmas != "beta" else STEPS[:-1]:  # diffusers' own loop fails there: see the next test
        d = single_config("v_prediction", sigmas, solver_order=order, solver_type=("midpoint", "heun")[steps % 2])
        ref = diffusers_scheduler("dpmpp_2s", d, steps)
        sampler = make_sampler("dpmpp_2s", SchedulerConfig.from_dict(d), steps)
        assert torch.equal(sampler.timesteps, ref.timesteps) and torch.equal(sampler.all_sigmas, ref.sigmas)
        assert_same_trajectory("dpmpp_2s", d, steps)


def test_beta_sigmas_whose_first_timestep_repeats_run_from_the_first_step():
    """As for the other DPM-Solvers: with 50 beta σ's the first two timesteps are both 999; diffusers, not told where
    it starts, takes the second and runs off the end of its σ's; told to start at 0 it matches minidiff."""
    assert_runs_from_the_first_of_repeated_timesteps("dpmpp_2s", single_config(sigmas="beta"))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_lambda_min_clipped_keeps_timesteps_off_the_cosine_schedules_end_like_diffusers(order):
    d = single_config(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1, solver_order=order)
    for steps in STEPS:
        ref = diffusers_scheduler("dpmpp_2s", d, steps)
        sampler = make_sampler("dpmpp_2s", SchedulerConfig.from_dict(d), steps)
        assert torch.equal(sampler.timesteps, ref.timesteps) and torch.equal(sampler.all_sigmas, ref.sigmas)
        assert_same_trajectory("dpmpp_2s", d, steps)
    unclipped = make_sampler("dpmpp_2s", SchedulerConfig.from_dict({**d, "lambda_min_clipped": float("-inf")}), 7)
    assert sampler.timesteps[0] < unclipped.timesteps[0]  # the clip bites


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("strength", [0.3, 0.56, 0.6, 0.75])  # 25 steps: starts at steps 18, 11, 10, 7
def test_img2img_starting_inside_a_block_matches_diffusers(order, strength):
    """diffusers lowers the order of the first steps to the x_0's seen since the start, whatever its order list says."""
    for solver_type, dtype in itertools.product(("midpoint", "heun"), (torch.float64, torch.float32)):
        d = single_config("v_prediction", solver_order=order, solver_type=solver_type)
        assert_same_trajectory("dpmpp_2s", d, 25, dtype, strength=strength)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_steps_in_the_latents_dtype_bit_for_bit(order, dtype):
    d = single_config("v_prediction", solver_order=order, solver_type="heun", final_sigmas_type="sigma_min",
                      lower_order_final=False)  # 12 steps: whole blocks to the end
    assert_same_trajectory("dpmpp_2s", d, 12, dtype)
    assert_same_trajectory("dpmpp_2s", d, 12, dtype, masked=True)


def test_the_models_timestep_spacing_and_algorithm_type_change_nothing_as_in_diffusers():
    """DPMSolverSinglestepScheduler has no timestep_spacing; and dpmpp_2s runs the ODE whatever algorithm_type says."""
    reference = make_sampler("dpmpp_2s", SchedulerConfig.from_dict(single_config()), 10)
    for overrides in (dict(timestep_spacing="leading", steps_offset=1), dict(timestep_spacing="trailing"),
                      dict(algorithm_type="sde-dpmsolver++")):
        d = single_config(**overrides)
        assert torch.equal(make_sampler("dpmpp_2s", SchedulerConfig.from_dict(d), 10).timesteps, reference.timesteps)
        assert_same_trajectory("dpmpp_2s", d, 10)


def test_a_missing_lower_order_final_means_false_as_in_diffusers_and_true_for_the_multistep_solvers():
    """DPMSolverSinglestepScheduler's default is False, the multistep solvers' True. They differ only where the last
    σ is σ_0 and the steps fill whole blocks; written back, the missing key stays missing."""
    d = single_config(final_sigmas_type="sigma_min")  # no lower_order_final
    config = SchedulerConfig.from_dict(d)
    assert config.lower_order_final is None and "lower_order_final" not in config.to_dict()
    assert make_sampler("dpmpp_2s", config, 12).config.lower_order_final is False
    assert make_sampler("dpmpp_2m", config, 12).config.lower_order_final is True
    assert diffusers_scheduler("dpmpp_2s", d, 12).order_list[-1] == 2
    assert_same_trajectory("dpmpp_2s", d, 12)
    assert_same_trajectory("dpmpp_2m", d, 12)


def test_zero_terminal_snr_is_refused_as_diffusers_has_no_such_option():
    with pytest.raises(ValueError, match="rescale_betas_zero_snr is not available for dpmpp_2s"):
        make_sampler("dpmpp_2s", SchedulerConfig(rescale_betas_zero_snr=True), 10)
