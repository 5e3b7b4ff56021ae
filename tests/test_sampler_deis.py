"""DEIS against diffusers' DEISMultistepScheduler: orders 1-3, lower_order_final, the three σ re-spacings (whose last σ
is repeated, not σ_0), img2img starts, every prediction type; and the ρ-space coefficients as the math states them.
The shared matrix (tests/test_samplers.py) covers the default order 2 on every timestep spacing and dtype."""

import itertools

import diffusers
import numpy as np
import pytest
import torch
from test_samplers import (
    PREDICTION_TYPES,
    SPACINGS,
    assert_runs_from_the_first_of_repeated_timesteps,
    assert_same_trajectory,
    config_dict,
    diffusers_scheduler,
    run_minidiff,
)

from minidiff.samplers import SAMPLER_NAMES, SchedulerConfig, make_sampler
from minidiff.samplers.deis import log_rho_coefficients

SIGMA_SPACINGS = (None, "karras", "exponential", "beta")
STEPS = (1, 2, 7, 25, 50)


def deis_config(spacing="linspace", prediction_type="epsilon", sigmas=None, **overrides):
    """A complete DEIS config; sigmas: None or a σ re-spacing, set as the use_*_sigmas flag a file would carry."""
    flags = {f"use_{name}_sigmas": name == sigmas for name in ("karras", "exponential", "beta")}
    return {**config_dict(spacing, prediction_type), **flags, **overrides}


@pytest.mark.parametrize("sigmas", SIGMA_SPACINGS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_and_sigmas_equal_diffusers_for_every_spacing(sigmas, spacing):
    """Including the last σ: σ_0 of training without a re-spacing, the last re-spaced σ repeated with one."""
    for beta_schedule, steps in itertools.product(("scaled_linear", "linear", "squaredcos_cap_v2"), STEPS):
        d = deis_config(spacing, sigmas=sigmas, beta_schedule=beta_schedule)
        ref = diffusers_scheduler("deis", d, steps)
        sampler = make_sampler("deis", SchedulerConfig.from_dict(d), steps)
        assert sampler.spacing == sigmas
        assert torch.equal(sampler.timesteps, ref.timesteps), (beta_schedule, steps)
        assert torch.equal(sampler.all_sigmas, ref.sigmas), (beta_schedule, steps)
        if sigmas:
            assert sampler.all_sigmas[-1] == sampler.all_sigmas[-2]


TRAJECTORY_CASES = [
    pytest.param(order, final, sigmas, steps, id=f"order{order}-{'final' if final else 'nofinal'}-{sigmas}-{steps}")
    for order, final, sigmas, steps in itertools.product((1, 2, 3), (True, False), SIGMA_SPACINGS, STEPS)
    if (sigmas, steps) != ("beta", 50)  # diffusers' own loop fails there: see the test after this one
]


@pytest.mark.parametrize("order, lower_order_final, sigmas, steps", TRAJECTORY_CASES)
def test_latent_after_every_step_equals_diffusers_in_float64(order, lower_order_final, sigmas, steps):
    spacing = SPACINGS[(order + steps) % 3]
    d = deis_config(spacing, sigmas=sigmas, solver_order=order, lower_order_final=lower_order_final)
    assert_same_trajectory("deis", d, steps, torch.float64)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_beta_sigmas_whose_first_timestep_repeats_run_from_the_first_step(order):
    """Beta σ's crowd σ_max: with 50 steps the first two timesteps are both 998. diffusers' scheduler, not told
    where it starts (as in StableDiffusionPipeline), looks the first timestep up, takes its second occurrence and
    runs off the end of its σ's; told to start at 0 it matches minidiff, which starts at the first step."""
    assert_runs_from_the_first_of_repeated_timesteps("deis", deis_config(sigmas="beta", solver_order=order))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("sigmas", SIGMA_SPACINGS)
@pytest.mark.parametrize("steps", [7, 25])
def test_latent_after_every_step_equals_diffusers_in_float32(order, sigmas, steps):
    assert_same_trajectory("deis", deis_config("trailing", sigmas=sigmas, solver_order=order), steps, torch.float32)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sigmas", [None, "karras"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_third_order_with_every_prediction_type_equals_diffusers(prediction_type, sigmas, dtype):
    assert_same_trajectory("deis", deis_config("leading", prediction_type, sigmas, solver_order=3), 12, dtype)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("strength", [0.3, 0.5, 0.75])
@pytest.mark.parametrize("sigmas", SIGMA_SPACINGS)
def test_img2img_start_equals_diffusers(order, strength, sigmas):
    """A late start takes the first steps at lower order again (diffusers counts the steps it took, not the index)."""
    d = deis_config("leading", "v_prediction", sigmas, solver_order=order)
    for steps, dtype in [(10, torch.float64), (25, torch.float64), (25, torch.float32)]:
        assert_same_trajectory("deis", d, steps, dtype, strength=strength)


def final_latent(steps=10, **overrides):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 1, 4, 8, 8, generator=g, dtype=torch.float64)
    return run_minidiff("deis", deis_config(**overrides), steps, x0, noise, 0)[1][-1]


def test_solver_order_and_lower_order_final_change_the_result():
    """So the parity tests above compare different updates, not the same one three times."""
    ends = [final_latent(solver_order=order) for order in (1, 2, 3)]
    assert all((a - b).abs().max() > 1e-4 for a, b in itertools.combinations(ends, 2))
    assert (final_latent(lower_order_final=False) - final_latent(lower_order_final=True)).abs().max() > 1e-4
    # from 15 steps on, lower_order_final no longer applies (as in diffusers)
    assert torch.equal(final_latent(15, lower_order_final=False), final_latent(15, lower_order_final=True))


def test_log_rho_coefficients_integrate_polynomials_in_log_rho_exactly():
    """c_j = ∫ ℓ_j(log ρ) dρ: the basis sums to 1, so Σ c_j = ρ_{i+1} - ρ_i; and for ε(ρ) = (log ρ)², which the
    3-node polynomial reproduces, Σ c_j ε_j = ∫ (log ρ)² dρ = [ρ ((log ρ)² - 2 log ρ + 2)]."""
    rhos = [np.float32(1.2), np.float32(2.0), np.float32(3.5)]  # ρ_i, ρ_{i-1}, ρ_{i-2}
    rho_next = np.float32(0.7)
    for nodes in (rhos[:2], rhos):
        assert sum(float(c) for c in log_rho_coefficients(rho_next, nodes)) == pytest.approx(0.7 - 1.2, rel=1e-5)
    integral = sum(float(c) * float(np.log(r)) ** 2 for c, r in zip(log_rho_coefficients(rho_next, rhos), rhos))
    antiderivative = lambda r: r * (np.log(r) ** 2 - 2 * np.log(r) + 2)  # noqa: E731
    assert integral == pytest.approx(antiderivative(0.7) - antiderivative(1.2), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Settings: per-class defaults and files that carry another sampler's


def test_unset_algorithm_and_solver_type_take_deis_class_defaults_like_diffusers():
    config = SchedulerConfig.from_dict(config_dict())  # a file without either key, like Stable Diffusion's
    assert config.algorithm_type is config.solver_type is None
    assert "algorithm_type" not in config.to_dict() and "solver_type" not in config.to_dict()
    ref = diffusers_scheduler("deis", config_dict(), 10).config
    sampler = make_sampler("deis", config, 10)
    assert (sampler.config.algorithm_type, sampler.config.solver_type) == (ref.algorithm_type, ref.solver_type)


def test_a_file_with_deis_settings_loads_and_drives_every_sampler():
    """diffusers maps DEIS's algorithm_type and solver_type onto DPM-Solver's and back, so a file saved from either
    class drives the other one unchanged."""
    deis_file = deis_config(algorithm_type="deis", solver_type="logrho", solver_order=2)
    config = SchedulerConfig.from_dict(deis_file)
    for name in SAMPLER_NAMES:
        assert len(make_sampler(name, config, 10).timesteps) > 0, name
    assert_same_trajectory("dpmpp_2m", deis_file, 10)
    assert_same_trajectory("deis", deis_config(algorithm_type="dpmsolver++", solver_type="midpoint"), 10)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: make_sampler("deis", SchedulerConfig(rescale_betas_zero_snr=True), 10), "not available for deis"),
        (lambda: SchedulerConfig(solver_order=4), "1, 2, 3"),
        (lambda: SchedulerConfig(algorithm_type="dpmsolver"), "'deis'"),
        (lambda: SchedulerConfig(solver_type="bh3"), "'logrho'"),
    ],
)
def test_settings_deis_cannot_honour_raise_value_error(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


def test_deis_refuses_an_sde_algorithm_type_where_the_config_accepts_one():
    config = SchedulerConfig()
    config.algorithm_type = "sde-dpmsolver++"  # accepted for dpmpp_2m_sde where that sampler exists
    with pytest.raises(ValueError, match="use 'deis'"):
        make_sampler("deis", config, 10)
    with pytest.raises(NotImplementedError):  # diffusers' class refuses it too
        diffusers.DEISMultistepScheduler(algorithm_type="sde-dpmsolver++")
