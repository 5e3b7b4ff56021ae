"""DPM2 and DPM2 ancestral against diffusers' KDPM2DiscreteScheduler and KDPM2AncestralDiscreteScheduler: the
interleaved midpoint plan, every σ re-spacing, 1 to 50 steps in three dtypes, img2img, lists of generators, and the
last step down to σ = 0 (one Euler call). The shared matrix (tests/test_samplers.py) runs both on every timestep
spacing, prediction type and dtype at 7 and 25 steps, img2img, Karras σ's and inpainting through the callback."""

import itertools

import diffusers
import pytest
import torch
from test_samplers import (SPACINGS, TOLERANCE, assert_same_trajectory, config_dict, rel_err, run_diffusers,
                           run_minidiff, stand_in_model)

from minidiff.samplers import SchedulerConfig, make_sampler
from minidiff.samplers.steps import get_ancestral_step

NAMES = ("dpm2", "dpm2_a")
CLASSES = {"dpm2": diffusers.KDPM2DiscreteScheduler, "dpm2_a": diffusers.KDPM2AncestralDiscreteScheduler}
STEPS = (1, 2, 7, 25, 50)
SIGMA_SPACINGS = (None, "karras", "exponential", "beta")


def dpm2_config(spacing="linspace", prediction_type="epsilon", sigmas=None, **overrides):
    """A complete config; sigmas: None or a σ re-spacing, set as the use_*_sigmas flag a model's file carries."""
    flags = {f"use_{name}_sigmas": name == sigmas for name in ("karras", "exponential", "beta")}
    return {**config_dict(spacing, prediction_type), **flags, **overrides}


def reference(name, d, steps):
    scheduler = CLASSES[name].from_config(d)
    scheduler.set_timesteps(steps)
    return scheduler


def assert_same_beta_trajectory(name, d, steps, dtype=torch.float64, strength=1.0):
    """``assert_same_trajectory`` for Beta σ's, whose float64 timesteps differ from diffusers' in the last bits
    (minidiff's Beta quantiles are its own, not scipy's): the same latents at timesteps equal to 1e-9."""
    g = torch.Generator().manual_seed(1234)
    x0, noise = torch.randn(2, 2, 4, 8, 8, generator=g, dtype=dtype)
    args = (name, d, steps, x0, noise, 0, strength)
    (ref_timesteps, ref), (timesteps, ours) = run_diffusers(*args), run_minidiff(*args)
    torch.testing.assert_close(timesteps, ref_timesteps, rtol=0, atol=1e-9)
    assert len(ours) == len(ref) == 2 * int(steps * strength) - 1
    assert all(rel_err(a, b) <= TOLERANCE[dtype] for a, b in zip(ours, ref))  # NaN fails too


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spacing, sigmas", itertools.product(SPACINGS, SIGMA_SPACINGS))
def test_interleaved_timesteps_and_midpoint_sigmas_equal_diffusers(name, spacing, sigmas):
    """diffusers lists t_0, t_mid_0, t_1, ..., t_{n-1}; every σ after the first twice (then 0 a third time) and the
    midpoints likewise, with the last step's midpoint 0; the ancestral class also lists σ_up and σ_down."""
    d = dpm2_config(spacing, sigmas=sigmas)
    ref = CLASSES[name].from_config(d)
    for steps in STEPS:
        ref.set_timesteps(steps)
        sampler = make_sampler(name, SchedulerConfig.from_dict(d), steps)
        assert sampler.timesteps.dtype == ref.timesteps.dtype, steps  # float64 for re-spaced σ's, else float32
        if sigmas == "beta":  # minidiff's Beta quantiles differ from scipy's in the last bits of the float64 σ's
            torch.testing.assert_close(sampler.timesteps, ref.timesteps, rtol=0, atol=1e-9)
        else:
            assert torch.equal(sampler.timesteps, ref.timesteps), steps
        assert torch.equal(sampler.all_sigmas, ref.sigmas[::2]), steps
        # the σ of each call: σ_i, then the midpoint, which KDPM2 lists at 2i + 1, the ancestral class at 2i
        ref_mid = ref.sigmas_interpol[1::2] if name == "dpm2" else ref.sigmas_interpol[::2]
        assert torch.equal(sampler.call_sigmas[::2], sampler.all_sigmas[:-1]), steps
        assert torch.equal(sampler.call_sigmas[1::2], ref_mid[: steps - 1]), steps
        assert ref_mid[steps - 1] == 0  # the last step has no midpoint (diffusers lists 0)
        if name == "dpm2_a":
            sigma_down, sigma_up = get_ancestral_step(sampler.all_sigmas[:-1], sampler.all_sigmas[1:])
            assert torch.equal(sigma_down[:-1], ref.sigmas_down[::2][: steps - 1])
            assert torch.equal(sigma_up, ref.sigmas_up[::2][:steps])


def test_ancestral_midpoint_is_the_next_sigma():
    """σ_down = σ'² / σ, so the ancestral step's midpoint sqrt(σ σ_down) is σ' itself (to float32 rounding)."""
    sampler = make_sampler("dpm2_a", SchedulerConfig.from_dict(dpm2_config()), 25)
    torch.testing.assert_close(sampler.call_sigmas[1::2], sampler.all_sigmas[1:-1], rtol=1e-5, atol=0)
    plain = make_sampler("dpm2", SchedulerConfig.from_dict(dpm2_config()), 25)
    geometric_mean = (plain.all_sigmas[:-2] * plain.all_sigmas[1:-1]).sqrt()
    torch.testing.assert_close(plain.call_sigmas[1::2], geometric_mean, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", STEPS)
def test_latent_after_every_call_equals_diffusers_in_float64_float32_and_float16(name, steps):
    for i, prediction_type in enumerate(("epsilon", "v_prediction")):
        d = dpm2_config(SPACINGS[(i + steps) % 3], prediction_type)
        assert_same_trajectory(name, d, steps, torch.float64)  # 1e-6
        assert_same_trajectory(name, d, steps, torch.float32)  # 1e-5
        assert_same_trajectory(name, d, steps, torch.float16)  # bit for bit


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sigmas", ["karras", "exponential", "beta"])
def test_every_sigma_spacing_from_the_config_matches_diffusers(name, sigmas):
    check = assert_same_beta_trajectory if sigmas == "beta" else assert_same_trajectory
    for steps in STEPS:
        check(name, dpm2_config("trailing", "v_prediction", sigmas), steps)
    check(name, dpm2_config("leading", sigmas=sigmas), 10, torch.float16)
    check(name, dpm2_config("linspace", sigmas=sigmas), 10, torch.float32, strength=0.5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strength", [0.2, 0.5, 1.0])
def test_img2img_starts_order_2_calls_late_like_diffusers(name, strength):
    """The pipeline skips t_start whole steps, i.e. t_start * 2 entries of the call list (scheduler.order = 2)."""
    d = dpm2_config("leading", "v_prediction", "exponential")
    sampler = make_sampler(name, SchedulerConfig.from_dict(d), 10, strength=strength)
    t_start = 10 - int(10 * strength)
    assert torch.equal(sampler.timesteps, reference(name, d, 10).timesteps[2 * t_start :])
    assert_same_trajectory(name, d, 10, strength=strength)
    assert_same_trajectory(name, d, 10, torch.float16, strength=strength)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strength, dtype", [(1.0, torch.float32), (0.6, torch.float64), (0.6, torch.float16)])
def test_inpainting_blend_before_midpoint_calls_equals_diffusers(name, strength, dtype):
    """The callback after a step's first call sees x_mid; inpainting replaces its known region with x0 noised by
    add_noise(x0, noise, i + 1), which (as diffusers' add_noise) uses σ_{i+1} there, not σ_mid."""
    d = dpm2_config("leading", "v_prediction", "karras")
    assert_same_trajectory(name, d, 8, dtype, strength=strength, masked=True)
    sampler = make_sampler(name, SchedulerConfig.from_dict(d), 8, strength=strength)
    x0, noise = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)  # so add_noise gives the σ itself
    for call in range(len(sampler.timesteps)):
        level = sampler.sigma_at(call + call % 2)  # a midpoint call (odd) takes the σ of the call after it
        assert torch.equal(sampler.add_noise(x0, noise, call), x0 + noise * level), call


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_last_step_to_sigma_zero_is_one_euler_call_k_diffusion_issue_43(name, steps):
    """k-diffusion issue #43: near σ = 0 the network is least reliable, and DPM2's midpoint would be σ_mid = 0,
    where the slope (x - x_0) / σ_mid does not exist. So the last step is first order: one call at σ_{n-1} and the
    Euler step x' = x + (0 - σ) d, which is exactly that call's x_0. It is also diffusers' last latent."""
    d = dpm2_config("trailing")
    sampler = make_sampler(name, SchedulerConfig.from_dict(d), steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) * sampler.init_noise_sigma
    calls, seen = [], []

    def model(x_in, t):
        calls.append(t)
        return stand_in_model(x_in, t)

    ours = sampler.sample(model, x, generator=torch.Generator().manual_seed(1),
                          callback=lambda i, t, x, x0: seen.append((i, x, x0)))
    assert len(calls) == 2 * steps - 1 and calls[-1] == sampler.timesteps[-1]  # 2 calls a step, 1 for the last
    last_call, last_x, last_x0 = seen[-1]
    assert last_call == 2 * steps - 2 and last_x is ours
    torch.testing.assert_close(ours, last_x0, rtol=1e-12, atol=1e-12)  # first order: landed on its x_0
    assert torch.isfinite(ours).all()

    ref = reference(name, d, steps)
    ref_x = x.clone()
    generator = torch.Generator().manual_seed(1)
    for t in ref.timesteps:
        kwargs = {"generator": generator} if name == "dpm2_a" else {}
        step = ref.step(stand_in_model(ref.scale_model_input(ref_x, t), t), t, ref_x, **kwargs)
        ref_x = step.prev_sample
    assert rel_err(ours, ref_x) <= 1e-6
    assert rel_err(last_x0, step.pred_original_sample) <= 1e-6


def test_list_of_generators_draws_per_sample_noise_like_diffusers():
    d = dpm2_config("trailing")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = reference("dpm2_a", d, 6)
    ref_generators = [torch.Generator().manual_seed(s) for s in (10, 11)]
    ref_x = x * ref.init_noise_sigma
    for t in ref.timesteps:
        model_output = stand_in_model(ref.scale_model_input(ref_x, t), t)
        ref_x = ref.step(model_output, t, ref_x, generator=ref_generators).prev_sample
    sampler = make_sampler("dpm2_a", SchedulerConfig.from_dict(d), 6)
    generators = [torch.Generator().manual_seed(s) for s in (10, 11)]
    ours = sampler.sample(stand_in_model, x * sampler.init_noise_sigma, generator=generators)
    assert rel_err(ours, ref_x) <= 1e-5
    alone = sampler.sample(stand_in_model, x[1:] * sampler.init_noise_sigma,
                           generator=[torch.Generator().manual_seed(11)])
    assert rel_err(ours[1:], alone) <= 1e-6  # each sample's noise comes from its own generator


@pytest.mark.parametrize("name", NAMES)
def test_sample_prediction_of_a_fixed_x0_lands_on_it(name):
    """diffusers' KDPM2 classes refuse prediction_type="sample"; minidiff takes the output as x_0. A network that
    always predicts the same x_0 has every step's slope point at it, and the last (Euler) step lands on it."""
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sampler = make_sampler(name, SchedulerConfig.from_dict(dpm2_config(prediction_type="sample")), 5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = sampler.sample(lambda x_in, t: target, x * sampler.init_noise_sigma, generator=torch.Generator())
    torch.testing.assert_close(out, target, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_zero_terminal_snr_is_refused_as_diffusers_has_no_such_option(name):
    with pytest.raises(ValueError, match="rescale_betas_zero_snr is not available for dpm2"):
        make_sampler(name, SchedulerConfig(rescale_betas_zero_snr=True), 10)
